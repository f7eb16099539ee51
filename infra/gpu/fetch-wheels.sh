#!/usr/bin/env bash
# Download, on a machine that reaches PyPI, the wheels infra/gpu/wheels.txt lists, for the GPU
# machine's Python (default 3.12, x86-64 Linux), into .whl/ (or $WHEELS; .gitignore keeps .whl/ out of
# git). Send that folder along with the tree (about 15 MB); device-bench.sh installs it there.
#
#   bash infra/gpu/fetch-wheels.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYVER="${1:-3.12}"
DEST="${WHEELS:-.whl}"
PY="${PYTHON:-python3}"
mkdir -p "$DEST"
mapfile -t PACKAGES < <(grep -v '^#' infra/gpu/wheels.txt | grep -v '^$')
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$DEST" "${PACKAGES[@]}"
ls -1 "$DEST"
du -sh "$DEST"
