#!/usr/bin/env bash
# Image entrypoint: `docker run IMAGE run job.yaml` runs `sjd-batch run job.yaml`; a program found on
# PATH (bash, ray, python, ...) runs as given. So one image serves `docker run`, KubeRay (which sets its
# own command) and `ray up` with docker (which starts the container with `bash`).
set -euo pipefail

if [[ $# -eq 0 || "$1" == -* ]] || ! type -P "$1" >/dev/null; then
  exec sjd-batch "$@"  # a subcommand (run, submit, stats, ...) or an option
fi
exec "$@"
