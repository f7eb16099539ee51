#!/usr/bin/env bash
# `sjd-batch bench-gpu` on a lent GPU machine: a copy of this tree without .git, a python3 that holds a
# CUDA build of torch, and no package index. Installs the wheels of .whl/ (infra/gpu/fetch-wheels.sh)
# into a scratch folder, says what it runs on, then runs the bench (8-minute budget by default).
#
#   SJD_GIT_REVISION=<commit> bash infra/gpu/device-bench.sh OUT [bench-gpu options]
#
# SJD_GIT_REVISION: the commit the tree was copied from, recorded in every JSON (the copy has no .git).
# PYTHON: the interpreter (default python3). WHEELS: the wheels (default .whl). SITE: where they are
# installed (default /tmp/sjd-site).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:?usage: device-bench.sh OUT [bench-gpu options]}"
shift
PY="${PYTHON:-python3}"
SITE="${SITE:-/tmp/sjd-site}"
WHEELS="${WHEELS:-.whl}"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
"$PY" - <<'PYEOF'
import importlib.util, sys
missing = [m for m in ("torch", "transformers", "pydantic", "pyarrow", "yaml", "PIL") if not importlib.util.find_spec(m)]
if missing:
    sys.exit(f"missing here: {', '.join(missing)}. Run infra/gpu/fetch-wheels.sh where pip reaches PyPI "
             "and send .whl/ with the tree")
import torch, transformers, pydantic
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"pydantic {pydantic.__version__}: {gpu}")
PYEOF
exec "$PY" -m sjd_batch.cli bench-gpu --out "$OUT" "$@"
