"""Static checks of the deployment files in infra/ (no Docker daemon, Kubernetes or AWS needed).

Every manifest parses; every image, file and command they name exists in the repository (a Dockerfile's
COPY sources inside the .dockerignore'd context, console scripts in pyproject.toml, job files in jobs/ or
in a ConfigMap defined next to the RayJob); the cluster shapes agree with the job they run (one actor
per GPU); S3 credentials only ever come from Secrets; the `ray up` YAML passes Ray's own schema; and the
IAM policy, evaluated on the job's own keys, allows exactly the job's bucket and prefix.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from sjd_batch import cli
from sjd_batch.config import JobConfig, load_job

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
CLUSTER_JOB = REPO / "jobs" / "cluster_s3.yaml"
ENTRYPOINT = INFRA / "docker" / "entrypoint.sh"
DOCKERFILES = {"gpu": INFRA / "docker" / "Dockerfile.gpu", "cpu": INFRA / "docker" / "Dockerfile.cpu"}
TORCH_INDEX = {"gpu": "https://download.pytorch.org/whl/cu128", "cpu": "https://download.pytorch.org/whl/cpu"}
CREDENTIAL_VARS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN"}
# GPUs per instance for the EC2 GPU families a `ray up` worker may use.
EC2_GPUS = {"g4dn.xlarge": 1, "g4dn.2xlarge": 1, "g5.xlarge": 1, "g5.2xlarge": 1, "g5.12xlarge": 4,
            "g6.xlarge": 1, "g6e.xlarge": 1, "p4d.24xlarge": 8, "p5.48xlarge": 8}


# ---------------------------------------------------------------------------------------------- helpers

@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pinned(name: str) -> str:
    """The exact version pyproject.toml pins `name` to (e.g. torch -> 2.13.0)."""
    for dep in pyproject()["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==(\S+)", dep)
        if m:
            return m.group(2)
    raise AssertionError(f"pyproject.toml does not pin {name}")


def console_scripts() -> set[str]:
    return set(pyproject()["project"]["scripts"])


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path}: no YAML document"
    return docs


def k8s(kind: str, path: Path) -> dict[str, Any]:
    found = [d for d in yaml_docs(path) if d.get("kind") == kind]
    assert len(found) == 1, f"{path}: expected one {kind}, found {len(found)}"
    return found[0]


def raycluster_spec() -> dict[str, Any]:
    return k8s("RayCluster", INFRA / "kuberay" / "raycluster.yaml")["spec"]


def rayjob() -> dict[str, Any]:
    return k8s("RayJob", INFRA / "kuberay" / "rayjob.yaml")


def pod_specs(cluster_spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "head", cluster_spec["headGroupSpec"]["template"]["spec"]
    for group in cluster_spec["workerGroupSpecs"]:
        yield group["groupName"], group["template"]["spec"]


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping inside a parsed YAML/JSON document."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def cpu_quantity(q: str | int | float) -> float:
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, backslash continuations joined."""
    out, current = [], ""
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.endswith("\\"):
            current += text[:-1] + " "
            continue
        op, _, args = (current + text).partition(" ")
        out.append((op.upper(), args.strip()))
        current = ""
    assert not current, f"{path}: ends inside a continued line"
    return out


def copy_sources(args: str) -> tuple[list[str], str]:
    """Sources and destination of a COPY/ADD (shell or JSON form, flags dropped)."""
    parts = json.loads(args) if args.startswith("[") else shlex.split(args)
    parts = [p for p in parts if not p.startswith("--")]
    return parts[:-1], parts[-1]


def documented_tag(path: Path) -> str:
    m = re.search(r"^# image: (\S+)$", path.read_text(), re.M)
    assert m, f"{path}: no '# image: NAME:TAG' line naming the tag the manifests use"
    return m.group(1)


def _glob(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus `**`)."""
    out, i, p = "", 0, pattern.strip("/")
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(p[i], re.escape(p[i]))
            i += 1
    return re.compile(out)


def in_build_context(path: str) -> bool:
    """Docker's rule: the last .dockerignore pattern matching the path or a parent of it decides."""
    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for rule in rules:
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        regex = _glob(rule.lstrip("!"))
        if any(regex.fullmatch(c) for c in candidates):
            included = negate
    return included


def tracked_files(under: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", under], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.split()


# ---------------------------------------------------------------------------------------------- parsing

def test_every_manifest_parses() -> None:
    files = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    assert {p.relative_to(INFRA).as_posix() for p in files} >= {
        "kuberay/raycluster.yaml", "kuberay/rayjob.yaml", "kuberay/s3-secret.example.yaml",
        "aws/cluster.yaml", "aws/iam-policy.json"}
    for path in files:
        docs = [json.loads(path.read_text())] if path.suffix == ".json" else yaml_docs(path)
        for doc in docs:
            assert isinstance(doc, dict), f"{path}: a document is not a mapping"
            if "apiVersion" in doc:  # a Kubernetes object
                assert doc.get("kind") and doc.get("metadata", {}).get("name"), f"{path}: kind/metadata.name"
    assert isinstance(load_job(CLUSTER_JOB), JobConfig)


def test_readme_covers_every_file() -> None:
    readme = (INFRA / "README.md").read_text()
    for path in INFRA.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert path.relative_to(INFRA).as_posix() in readme, f"infra/README.md never mentions {path}"


# ---------------------------------------------------------------------------------------------- images

@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_dockerfile(variant: str) -> None:
    path = DOCKERFILES[variant]
    steps = dockerfile(path)
    ops = [op for op, _ in steps]
    base = steps[0][1]
    assert ops[0] == "FROM" and ops.count("FROM") == 1
    assert ":" in base and not base.endswith(":latest"), f"{path}: base image tag not pinned: {base}"
    if variant == "gpu":  # a CUDA base whose Ubuntu has Python 3.12, like the CPU image
        assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-(base|runtime|cudnn-runtime)-ubuntu24\.04", base), base
    else:
        assert re.fullmatch(r"python:3\.12-slim-\w+", base), base

    assert documented_tag(path) == f"sjd-batch:{pyproject()['project']['version']}-{variant}"

    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for op, a in steps if op == "ARG")
    runs = [a for op, a in steps if op == "RUN"]
    torch_step = next(i for i, r in enumerate(runs) if "pip install" in r and "torch==" in r)
    assert args["TORCH_VERSION"] == pinned("torch") and args["TORCH_INDEX_URL"] == TORCH_INDEX[variant]
    assert "${TORCH_VERSION}" in runs[torch_step] and "${TORCH_INDEX_URL}" in runs[torch_step]
    package_step = next(i for i, r in enumerate(runs) if re.search(r"pip install /tmp/sjd-batch\b", r))
    assert torch_step < package_step, "torch must be installed before sjd-batch, or pip pulls PyPI's build"

    copies = [copy_sources(a) for op, a in steps if op in ("COPY", "ADD")]
    for sources, _ in copies:
        for src in sources:
            assert (REPO / src).exists(), f"{path}: COPY source {src} is not in the repository"
            assert in_build_context(src), f"{path}: COPY source {src} is excluded by .dockerignore"
            if (REPO / src).is_dir():
                files = [f for f in tracked_files(src) if "__pycache__" not in f]
                assert files and all(in_build_context(f) for f in files), f"{src}: files left out of context"
    assert {"pyproject.toml", "README.md", "sjd_batch"} <= {s for srcs, _ in copies for s in srcs}

    # Non-root, numerically (Kubernetes' runAsNonRoot cannot check a user name), and the user exists.
    user = [a for op, a in steps if op == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or gid.isdigit() and int(gid) != 0), user
    assert any(f"--uid {uid}" in r and "useradd" in r for r in runs), f"{path}: no user with uid {uid}"
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN"), "RUN after USER runs as sjd"

    # ENTRYPOINT: the repo's entrypoint.sh, copied to the path the exec form names.
    entry = json.loads(next(a for op, a in steps if op == "ENTRYPOINT"))
    assert ([str(ENTRYPOINT.relative_to(REPO))], entry[0]) in copies
    assert json.loads(next(a for op, a in steps if op == "CMD")) == ["--help"]


def test_no_credentials_baked_into_images() -> None:
    for path in DOCKERFILES.values():
        for op, args in dockerfile(path):
            if op in ("ENV", "ARG"):
                assert not any(v in args for v in CREDENTIAL_VARS), f"{path}: {op} {args}"


def test_dockerignore_keeps_the_context_small() -> None:
    for path in (".venv/bin/python", ".git/HEAD", "outputs/demo/job.json", ".local-dev/env",
                 "tests/conftest.py", "sjd_batch/__pycache__/cli.cpython-311.pyc"):
        assert not in_build_context(path), f"{path} would be sent to the Docker daemon"
    assert in_build_context("sjd_batch/assets/shapes-t2i/sjd_batch.json")


def test_entrypoint_dispatches_to_sjd_batch() -> None:
    import os
    import shutil

    assert "exec sjd-batch" in ENTRYPOINT.read_text() and "sjd-batch" in console_scripts()
    assert os.access(ENTRYPOINT, os.X_OK)
    mode = subprocess.run(["git", "ls-files", "-s", str(ENTRYPOINT)], cwd=REPO, capture_output=True,
                          text=True)
    assert mode.stdout == "" or mode.stdout.startswith("100755"), "COPY keeps the git mode: commit it +x"

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # A subcommand that were also a program on PATH would run that program instead.
    assert not [c for c in cli.COMMANDS if shutil.which(c, path=env["PATH"])]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=60)

    top = run("--help")
    assert top.returncode == 0 and "usage: sjd-batch" in top.stdout and "status" in top.stdout
    sub = run("status", "--help")
    assert sub.returncode == 0 and sub.stdout.startswith("usage: sjd-batch status")
    other = run("sh", "-c", "echo passthrough $0", "ok")
    assert other.returncode == 0 and other.stdout.strip() == "passthrough ok"


# ---------------------------------------------------------------------------------------------- KubeRay

def test_kuberay_cluster_and_job_agree() -> None:
    """The RayJob's cluster is raycluster.yaml's, plus the job file mount: no silent drift."""
    job_spec = copy.deepcopy(rayjob()["spec"]["rayClusterSpec"])
    head = job_spec["headGroupSpec"]["template"]["spec"]
    mount_names = {v["name"] for v in head["volumes"] if "configMap" in v}
    assert len(mount_names) == 1
    head["volumes"] = [v for v in head["volumes"] if v["name"] not in mount_names]
    for c in head["containers"]:
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] not in mount_names]
    assert job_spec == raycluster_spec()


@pytest.mark.parametrize("which", ["raycluster", "rayjob"])
def test_kuberay_cluster_shape(which: str) -> None:
    doc = k8s("RayCluster", INFRA / "kuberay" / "raycluster.yaml") if which == "raycluster" else rayjob()
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"] if which == "raycluster" else doc["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == pinned("ray"), "the image's Ray and the operator's idea of it must match"
    assert spec["authOptions"]["mode"] == "token"

    image = documented_tag(DOCKERFILES["gpu"])
    uid = int([a for op, a in dockerfile(DOCKERFILES["gpu"]) if op == "USER"][-1].split(":")[0])
    for name, pod in pod_specs(spec):
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == uid, f"{name}: not the image's user"
        for c in pod["containers"]:
            assert c["image"] == image, f"{name}: image {c['image']} is not the one Dockerfile.gpu builds"

    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {}), "the head needs no GPU"

    job = load_job(CLUSTER_JOB)
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    assert len(gpu_groups) == 1
    group = gpu_groups[0]
    worker = group["template"]["spec"]["containers"][0]["resources"]
    gpus = int(worker["limits"]["nvidia.com/gpu"])
    assert gpus == 1 and int(worker["requests"]["nvidia.com/gpu"]) == gpus
    assert job.run.gpus_per_actor == 1, "one actor per GPU"
    actors_per_pod = int(gpus // job.run.gpus_per_actor)
    # The runner sizes its pool from the GPUs present when the job starts: no scaling from fewer pods.
    assert group["minReplicas"] == group["replicas"] == group["maxReplicas"]
    assert group["replicas"] * actors_per_pod == job.run.num_actors
    assert job.run.cpus_per_actor * actors_per_pod <= cpu_quantity(worker["limits"]["cpu"])
    tolerations = group["template"]["spec"].get("tolerations", [])
    assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations), "GPU nodes are usually tainted"


def test_rayjob_runs_the_repo_job() -> None:
    spec = rayjob()["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["sjd-batch", "run"] and "sjd-batch" in console_scripts() and "run" in cli.COMMANDS
    parser = __import__("argparse").ArgumentParser(prog="sjd-batch run", exit_on_error=False)
    __import__("sjd_batch.commands.run", fromlist=["x"]).add_arguments(parser)
    args = parser.parse_args(argv[2:])
    assert args.no_progress, "progress bars flood non-TTY driver logs"
    assert spec["shutdownAfterJobFinishes"] is True

    # The job file is mounted on the head from a ConfigMap defined in the same file.
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = head["containers"][0]["volumeMounts"]
    mount = next(m for m in mounts if args.job.startswith(m["mountPath"] + "/"))
    volume = next(v for v in head["volumes"] if v["name"] == mount["name"])
    configmap = k8s("ConfigMap", INFRA / "kuberay" / "rayjob.yaml")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    text = configmap["data"][Path(args.job).name]
    # ...and it is jobs/cluster_s3.yaml: the same validated job, so the same job id.
    assert yaml.safe_load(text) == yaml.safe_load(CLUSTER_JOB.read_text())
    assert load_job(CLUSTER_JOB) == _load_text(text)


def _load_text(text: str) -> JobConfig:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        return load_job(f.name)


def test_s3_credentials_only_from_secrets() -> None:
    secret = k8s("Secret", INFRA / "kuberay" / "s3-secret.example.yaml")
    secret_keys = set(secret["stringData"])
    for name in ("raycluster.yaml", "rayjob.yaml"):
        spec = raycluster_spec() if name == "raycluster.yaml" else rayjob()["spec"]["rayClusterSpec"]
        for group, pod in pod_specs(spec):
            for c in pod["containers"]:
                env = {e["name"]: e for e in c.get("env", [])}
                for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    ref = env[var]["valueFrom"]["secretKeyRef"]
                    assert ref["name"] == secret["metadata"]["name"], (name, group)
                    assert ref["key"] in secret_keys, (name, group)
                for e in env.values():
                    if e["name"] in CREDENTIAL_VARS:
                        assert "value" not in e, f"{name} {group}: {e['name']} has an inline value"
                for src in c.get("envFrom", []):
                    assert set(src) <= {"secretRef", "prefix"}, f"{name} {group}: envFrom must be a Secret"

    # Nowhere in infra/ a literal credential: only the .example Secret holds values, and placeholders.
    for path in INFRA.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), f"{path}: an AWS access key id"
        if path.suffix in (".yaml", ".yml", ".json"):
            docs = [json.loads(text)] if path.suffix == ".json" else yaml_docs(path)
            for node in (n for d in docs for n in walk(d)):
                assert not (node.get("name") in CREDENTIAL_VARS and "value" in node), f"{path}: inline {node}"
                for key, value in node.items():
                    if key in CREDENTIAL_VARS and isinstance(value, str):
                        assert path.name.endswith(".example.yaml") and value.startswith("REPLACE_"), (
                            f"{path}: a literal {key}")
    for value in secret["stringData"].values():
        assert value.startswith("REPLACE_"), "the example Secret must hold placeholders only"


# ---------------------------------------------------------------------------------------------- ray up

def test_ray_up_cluster() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml_docs(INFRA / "aws" / "cluster.yaml")[0]
    validate_config(prepare_config(copy.deepcopy(raw)))  # Ray's own schema, as `ray up` checks it
    assert raw["provider"]["type"] == "aws"
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert "GPU" not in head.get("resources", {})
    assert not head["node_config"]["InstanceType"].startswith(("g", "p")), "a GPU instance for the head"
    workers = {name: t for name, t in types.items() if name != raw["head_node_type"]}
    assert len(workers) == 1
    worker = next(iter(workers.values()))
    instance = worker["node_config"]["InstanceType"]
    assert instance in EC2_GPUS, f"{instance} is not a known GPU instance type"
    assert worker["resources"]["GPU"] == EC2_GPUS[instance]
    for t in types.values():
        assert t["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")

    job = load_job(CLUSTER_JOB)
    actors_per_node = int(worker["resources"]["GPU"] // job.run.gpus_per_actor)
    assert job.run.gpus_per_actor == 1 and actors_per_node == 1
    assert worker["min_workers"] == worker["max_workers"] <= raw["max_workers"]
    assert worker["min_workers"] * actors_per_node == job.run.num_actors
    assert job.run.cpus_per_actor * actors_per_node <= worker["resources"]["CPU"]

    # The repository is mounted and installed, CUDA torch first, pinned like the package and the image.
    mounts = {remote: local for remote, local in raw["file_mounts"].items()}
    repo_mount = next(remote for remote, local in mounts.items() if (REPO / local).resolve() == REPO)
    assert (REPO / mounts[repo_mount] / "pyproject.toml").exists()
    setup = raw["setup_commands"]
    torch_step = next(i for i, c in enumerate(setup) if "torch==" in c)
    assert f"torch=={pinned('torch')}" in setup[torch_step] and TORCH_INDEX["gpu"] in setup[torch_step]
    install = re.compile(rf"pip install .*{re.escape(repo_mount)}\b")
    package_step = next(i for i, c in enumerate(setup) if install.search(c))
    assert torch_step < package_step

    # Every program the start commands run is a console script of the installed packages.
    from importlib.metadata import entry_points

    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    for cmd in raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]:
        for program in re.findall(r"~/venv/bin/([\w-]+)", cmd):
            assert program in scripts, f"{program} is not installed by the setup commands"
    for cmd in (raw["head_start_ray_commands"][-1], raw["worker_start_ray_commands"][-1]):
        assert "RAY_AUTH_MODE=token" in cmd and "ray start" in cmd
    assert "~/.ray/auth_token" in mounts, "every node needs the cluster's token"


# ---------------------------------------------------------------------------------------------- IAM

def iam_allows(policy: dict[str, Any], action: str, resource: str, prefix: str | None = None) -> bool:
    """A small IAM evaluator for this policy's features: Allow/Deny, wildcards, s3:prefix conditions."""
    allowed = False
    for st in policy["Statement"]:
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        resources = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in resources):
            continue
        if not all(_condition(op, cond, prefix) for op, cond in st.get("Condition", {}).items()):
            continue
        if st["Effect"] == "Deny":
            return False
        allowed = True
    return allowed


def _condition(op: str, cond: dict[str, Any], prefix: str | None) -> bool:
    (key, values), = cond.items()
    assert key == "s3:prefix", f"the test evaluator knows only s3:prefix, not {key}"
    values = [values] if isinstance(values, str) else values
    if prefix is None:
        return op.endswith("IfExists")
    if op.startswith("StringLike"):
        return any(fnmatch.fnmatchcase(prefix, v) for v in values)
    if op.startswith("StringEquals"):
        return prefix in values
    raise AssertionError(f"the test evaluator does not know {op}")


def _s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.rstrip("/") + "/"


def test_iam_policy_limits_s3_to_the_job() -> None:
    policy = json.loads((INFRA / "aws" / "iam-policy.json").read_text())
    assert policy["Version"] == "2012-10-17"
    for st in policy["Statement"]:
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        assert all(a.startswith("s3:") and "*" not in a for a in actions), f"{st['Sid']}: wildcard action"
        resources = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        assert all(r.startswith("arn:aws:s3:::") and r != "arn:aws:s3:::*" for r in resources)

    job = load_job(CLUSTER_JOB)
    (in_bucket, in_prefix), = [_s3(u) for u in job.input.uris]
    out_bucket, out_prefix = _s3(job.output.uri)
    obj = "arn:aws:s3:::{}/{}".format
    ok = [  # what a run of jobs/cluster_s3.yaml does
        ("s3:ListBucket", f"arn:aws:s3:::{in_bucket}", None),  # HeadBucket: the bucket check
        ("s3:ListBucket", f"arn:aws:s3:::{in_bucket}", in_prefix),
        ("s3:GetObject", obj(in_bucket, in_prefix + "part-0.parquet"), None),
        ("s3:ListBucket", f"arn:aws:s3:::{out_bucket}", out_prefix),
        ("s3:GetObject", obj(out_bucket, out_prefix + "job.json"), None),
        ("s3:PutObject", obj(out_bucket, out_prefix + "_commits/shard=00000.json"), None),
        ("s3:PutObject", obj(out_bucket, out_prefix + "images/shard-00000.tar"), None),
        ("s3:DeleteObject", obj(out_bucket, out_prefix + "_partial/shard=00000/batch-0.parquet"), None),
        ("s3:ListBucketMultipartUploads", f"arn:aws:s3:::{out_bucket}", None),
        ("s3:AbortMultipartUpload", obj(out_bucket, out_prefix + "images/shard-00000.tar"), None),
    ]
    denied = [  # anything else
        ("s3:PutObject", obj(in_bucket, in_prefix + "part-0.parquet"), None),  # inputs are read-only
        ("s3:DeleteObject", obj(in_bucket, in_prefix + "part-0.parquet"), None),
        ("s3:GetObject", obj(in_bucket, "other-team/secret.parquet"), None),
        ("s3:ListBucket", f"arn:aws:s3:::{in_bucket}", "other-team/"),
        ("s3:GetObject", obj(in_bucket + "-other", in_prefix + "part-0.parquet"), None),
        ("s3:PutObject", obj("another-bucket", out_prefix + "job.json"), None),
        ("s3:DeleteBucket", f"arn:aws:s3:::{out_bucket}", None),
        ("s3:PutBucketPolicy", f"arn:aws:s3:::{out_bucket}", None),
    ]
    for action, resource, prefix in ok:
        assert iam_allows(policy, action, resource, prefix), f"denied, needed: {action} {resource} {prefix}"
    for action, resource, prefix in denied:
        assert not iam_allows(policy, action, resource, prefix), f"allowed: {action} {resource} {prefix}"


def test_local_dev_state_is_ignored() -> None:
    assert "/.local-dev/" in (REPO / ".gitignore").read_text().split()
