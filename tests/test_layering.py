"""The architecture rules a reader relies on: the decoding core is pure torch, only `runner.py`
imports Ray, only `io/storage.py` and its backends (`io/storage_s3.py`, `io/storage_local.py`) talk
to boto3 / pyarrow.fs."""

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
    assert _modules_importing(("ray",)) <= {"runner.py"}


def test_only_storage_imports_boto3_and_arrow_filesystems():
    # storage.py's two backends: storage_s3.py (boto3 client, pyarrow S3FileSystem) and
    # storage_local.py (pyarrow LocalFileSystem for a folder root).
    allowed = {"io/storage.py", "io/storage_s3.py", "io/storage_local.py"}
    assert _modules_importing(("boto3", "botocore", "pyarrow.fs")) <= allowed


def test_importing_the_package_is_cheap():
    code = "import sys, sjd_batch; print(','.join(m for m in ('torch', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_only_training_commands_import_the_training_package():
    # training code (generators, checkers' training data, training loops) stays off the runtime path
    allowed = {"commands/train_textures.py"}
    hits = {p for p in _modules_importing(("sjd_batch.training",)) if not p.startswith("training/")}
    assert hits <= allowed, hits
