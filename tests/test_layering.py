"""The architecture rules a reader relies on: the decoding core is pure torch, only `runner/`
imports Ray, only `io/` talks to storage (boto3, pyarrow.fs, Parquet files), only `io/storage.py` and
its backends (`io/storage_s3.py`, `io/storage_local.py`) hold the clients, and only `io/backends.py`
(the factory) imports the backends; every import goes down the
layers of docs/design.md section 1; the runtime path never reaches training code; and the size and
cycle rules: no module over 350 lines, no function over 50 (docstrings not counted), no import cycle.

What the import rules see: every absolute import anywhere in a file (lazy and type-only ones too), plus
the imports by name that no `import` statement shows: the model loaders and factories that
`models/loading.py` imports with importlib, and the subcommands `cli.py` imports. Relative imports would
slip past them, so there must be none. Code run through `eval`/`exec` or imported by a third-party
library (Ray unpickling an actor) stays invisible; there is none of the first, and the second goes
through `runner/`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sjd_batch"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules_importing(prefixes: tuple[str, ...]) -> set[str]:
    hits = set()
    for path in PACKAGE.rglob("*.py"):
        if any(n == p or n.startswith(p + ".") for n in _imports(path) for p in prefixes):
            hits.add(path.relative_to(PACKAGE).as_posix())
    return hits


def test_importing_the_core_loads_no_heavy_library():
    code = (
        "import sys, sjd_batch.decoding as d; d.resolve_method('sjd-vp');"
        "bad = [m for m in ('ray', 'boto3', 'pyarrow', 'PIL', 'transformers') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the decoding core pulled in: {out.stdout.strip()}"


def test_core_imports_only_torch_and_stdlib():
    allowed_third_party = {"torch"}
    for path in (PACKAGE / "decoding").rglob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "sjd_batch":
                assert name.startswith("sjd_batch.decoding"), f"{path.name} imports {name}"
            elif top not in sys.stdlib_module_names:
                assert top in allowed_third_party, f"{path.name} imports {name}"


def test_only_runner_imports_ray():
    assert _modules_importing(("ray",)) <= {"runner/__init__.py", "runner/jobs_api.py"}


def test_only_storage_imports_boto3_and_arrow_filesystems():
    # storage.py's two backends: storage_s3.py (boto3 client, pyarrow S3FileSystem) and
    # storage_local.py (pyarrow LocalFileSystem for a folder root).
    allowed = {"io/storage.py", "io/storage_s3.py", "io/storage_local.py"}
    assert _modules_importing(("boto3", "botocore", "pyarrow.fs")) <= allowed


def test_only_io_reads_and_writes_storage():
    """Outside `io/`, nothing opens Parquet files or datasets or talks to a filesystem client: it asks
    the io layer, which owns every key (`io/layout.py`)."""
    hits = _modules_importing(("boto3", "botocore", "pyarrow.fs", "pyarrow.parquet", "pyarrow.dataset"))
    assert sorted(h for h in hits if not h.startswith("io/")) == []
    # everything else opens a root with `io/backends.py`'s `open_storage`
    backends = _modules_importing(("sjd_batch.io.storage_s3", "sjd_batch.io.storage_local"))
    assert backends <= {"io/backends.py"}


# Known breaches, each to be removed by the change that fixes it; a listed breach that is gone fails
# the test too, so the lists only shrink.
OVERSIZED: set[str] = set()
KNOWN_CYCLES: list[list[str]] = []


def _code_lines(node: ast.AST) -> int:
    """A function's lines, without its docstring."""
    lines = node.end_lineno - node.lineno + 1
    if ast.get_docstring(node, clean=False) is not None:
        lines -= node.body[0].end_lineno - node.body[0].lineno + 1
    return lines


def test_module_and_function_sizes():
    found = set()
    for path in PACKAGE.rglob("*.py"):
        rel, text = path.relative_to(PACKAGE).as_posix(), path.read_text()
        if len(text.splitlines()) > 350:
            found.add(rel)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _code_lines(node) > 50:
                found.add(f"{rel}:{node.name}")
    assert found == OVERSIZED


def _static_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in the file (lazy and type-only imports too:
    a cycle hidden in a function is still a cycle for the reader)."""
    files = {p.relative_to(PACKAGE.parent).with_suffix("").as_posix().replace("/", "."): p
             for p in PACKAGE.rglob("*.py")}
    names = {m.removesuffix(".__init__"): m for m in files}
    graph = {}
    for module, path in files.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module
                            for a in node.names}
        graph[module] = {names[t] for t in targets if t in names} - {module}
    return graph


def _imports_by_name() -> dict[str, set[str]]:
    """The imports that are strings: family loaders and registered factories ("module:function", imported
    by `models/loading.py`) and subcommand modules (imported by `cli.py`)."""
    from sjd_batch.cli import COMMANDS
    from sjd_batch.models.registry import FAMILIES, MODELS

    targets = {f.loader for f in FAMILIES.values()} | {m.factory for m in MODELS.values() if m.factory}
    return {"sjd_batch.models.loading": {t.partition(":")[0] for t in targets},
            "sjd_batch.cli": {module for module, _ in COMMANDS.values()}}


def _module_graph() -> dict[str, set[str]]:
    graph = _static_graph()
    for module, targets in _imports_by_name().items():
        for target in targets:
            found = [m for m in (target, f"{target}.__init__") if m in graph]
            assert found, f"{module} imports {target} by name, and there is no such module"
            graph[module].add(found[0])
    return graph


def test_there_are_no_relative_imports():  # the rules above read absolute imports only
    relative = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.ImportFrom) and node.level]
    assert relative == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    cycles = _cycles(_module_graph())
    found = [[m.removeprefix("sjd_batch.").replace(".", "/") + ".py" for m in c] for c in cycles]
    assert sorted(found) == KNOWN_CYCLES


def test_importing_the_package_is_cheap():
    code = "import sys, sjd_batch; print(','.join(m for m in ('torch', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# The layers of docs/design.md section 1, lowest first, by top-level module or package of sjd_batch. A
# module may import from its own band and the bands below it, never above. Every name is in the tree
# (test_every_layer_name_is_in_the_tree), so the list cannot keep a module that is gone.
LAYERS = [
    {"decoding"},
    {"io", "notices"},
    {"api", "calibration", "timing", "tuning", "throughput", "projection"},
    {"models"},
    {"config", "config_errors", "training"},
    {"identity", "planning"},
    {"job", "stages"},
    {"worker"},
    {"progress"},
    {"driver", "ray_address"},
    {"runner"},
    {"commands", "report", "cli", "__init__"},
]


def test_every_layer_name_is_in_the_tree():
    present = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
               if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert sorted(set().union(*LAYERS) - present) == []


def _band(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    bands = [i for i, band in enumerate(LAYERS) if top in band]
    assert bands, f"sjd_batch/{top} is in no layer: place it in LAYERS here and in docs/design.md section 1"
    return bands[0]


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if _band(b) > _band(a))


def test_imports_go_down_the_layers():
    assert _upward(_module_graph()) == []


def test_the_layer_rule_can_fail():  # negative control: the decoding core importing the runner
    assert _upward({"sjd_batch.decoding.jacobi": {"sjd_batch.runner"}, "sjd_batch.runner": set()}) == [
        "sjd_batch.decoding.jacobi -> sjd_batch.runner"]


def _reachable(graph: dict[str, set[str]], roots: tuple[str, ...]) -> set[str]:
    """Every module that importing `roots` can load: their imports, transitively, and the packages
    around each (importing a.b.c runs a/__init__.py and a/b/__init__.py)."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.removesuffix(".__init__").split(".")
        todo += [".".join(parts[:i]) + ".__init__" for i in range(1, len(parts))]
        todo += graph.get(module, ())
    return seen


# What a job run loads: the Ray runner, the local driver (and through them the worker, the stages and
# every model loader) and the public generate()/load_model().
RUNTIME_ROOTS = ("sjd_batch.runner", "sjd_batch.driver", "sjd_batch.commands.run", "sjd_batch.api",
                 "sjd_batch.models.loading")


def test_the_runtime_path_reaches_no_training_code():
    # training code (generators, checkers, training loops, model cards) stays off the runtime path
    reached = _reachable(_module_graph(), RUNTIME_ROOTS)
    assert "sjd_batch.models.shapes.model" in reached  # the closure does follow the loaders
    assert sorted(m for m in reached if m.startswith("sjd_batch.training")) == []


def test_reachability_follows_imports_and_packages():  # negative control for the test above
    graph = {"a.x": {"a.y"}, "a.y": {"b.z"}, "b.__init__": {"t.q"}, "b.z": set()}
    assert _reachable(graph, ("a.x",)) == {"a.x", "a.__init__", "a.y", "b.z", "b.__init__", "t.q",
                                           "t.__init__"}


def test_cycle_finder_finds_cycles():  # the negative control: the rule above can fail
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_repository_stands_alone():
    """Nothing points at documents outside the repository (a clone must be readable on its own), every
    `docs/*.md` a source file names exists, and so does every section of docs/design.md it cites."""
    import re

    root = PACKAGE.parent
    files = [*PACKAGE.rglob("*.py"), *(root / "tests").rglob("*.py"), *(root / "docs").rglob("*.md"),
             root / "README.md"]
    # `§N` numbered the sections of the reference documents; the repository's docs say "section N". An
    # issue of the tracker is no document of the repository either: say what it asked for instead.
    # `[s]` matches "s" and keeps this file from naming the folders it refuses (a scan for them would
    # otherwise find this pattern itself).
    outside = re.compile(r"\.\./[s]hared|[s]hared/docs|\b(algorithms|infra|style)\.md|(?<![-/\w])models\.md|§"
                         r"|\bissues? #?\d|\bthe issue\b", re.IGNORECASE)
    named = re.compile(r"docs/[\w/.-]+\.md")
    cited = re.compile(r"docs/design\.md,? section (\d+)")
    sections = set(re.findall(r"^## (\d+)\. ", (root / "docs" / "design.md").read_text(), re.MULTILINE))
    pending: set[str] = set()  # docs being written with their code; remove each once it exists
    assert not [doc for doc in pending if (root / doc).is_file()], "it exists now: take it off `pending`"
    for path in files:
        text = path.read_text(encoding="utf-8")
        if path == Path(__file__):
            continue  # the patterns above
        assert not outside.search(text), f"{path.relative_to(root)} cites a document outside the repository"
        for doc in set(named.findall(text)) - pending:
            assert (root / doc).is_file(), f"{path.relative_to(root)} names {doc}, which does not exist"
        for n in cited.findall(text):
            assert n in sections, f"{path.relative_to(root)} cites docs/design.md section {n}: there is none"


def test_gitignore_ignores_a_venv_that_is_a_symlink():
    # `.venv/` matches folders only: a worktree whose .venv links to another checkout's was committed
    # once, and checking that commit out replaced the real virtual environment with a link to itself
    root = PACKAGE.parent
    if not (root / ".git").exists():
        return  # an sdist or a copy without git: nothing to check
    probe = subprocess.run(["git", "-C", str(root), "check-ignore", "--no-index", "-q", ".venv"], check=False)
    assert probe.returncode == 0, ".gitignore must ignore `.venv` itself (no trailing slash)"
    tracked = subprocess.run(["git", "-C", str(root), "ls-files", ".venv"], capture_output=True, text=True)
    assert tracked.stdout.strip() == ""
