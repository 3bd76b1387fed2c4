#!/usr/bin/env bash
# Timings of the three operator commands against a local `switchyard dev`:
#
#   scripts/timings.sh [repetitions]      (default 5)
#
# Each repetition runs, through the real binary and with the dev stack's
# addresses from dev.json:
#
#   switchyard deploy vN   -> to the standby colour, until its instances pass
#                             in Consul and answer vN on /version ("verified
#                             standby"); measured by the command itself
#                             (elapsed_ms) and as wall time.       target <= 10 s
#   switchyard switch      -> route key write until every proxy serves the new
#                             generation (cutover_ms).             target <= 100 ms
#   switchyard rollback    -> the same for the way back (cutover_ms). target <= 100 ms
#
# and prints, per command, the median and max over the repetitions with the
# exact command line, then one summary line. It exits non-zero when a command
# fails or a median misses its target.
#
# Knobs: PROFILE=debug|release (default debug), BUILD=0 to skip the build,
# KEEP=1 to keep the work directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=${1:-5}
PROFILE=${PROFILE:-debug}
BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
SERVICE=hello-service

case "$REPS" in '' | *[!0-9]*) echo "usage: $0 [repetitions]" >&2; exit 2 ;; esac
[ "$REPS" -ge 1 ] || { echo "usage: $0 [repetitions>=1]" >&2; exit 2; }

log() { printf 'timings.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"
if [ "${BUILD:-1}" != 0 ]; then
  flag=()
  [ "$PROFILE" = release ] && flag=(--release)
  log "building ($PROFILE) switchyard and hello-service"
  (cd "$ROOT" && cargo build "${flag[@]}" -p switchyard -p hello-service >&2) || die "build failed"
fi
for b in switchyard hello-service; do
  [ -x "$BIN_DIR/$b" ] || die "$BIN_DIR/$b is missing"
done
export PATH="$BIN_DIR:$PATH"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-timings.XXXXXX")
DEV_PID=""
OK=0
stop_dev() {
  [ -n "$DEV_PID" ] || return 0
  local kids p i
  kids=$(pgrep -P "$DEV_PID" 2>/dev/null || true)
  kill -TERM "$DEV_PID" 2>/dev/null || true
  for i in $(seq 1 300); do
    kill -0 "$DEV_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$DEV_PID" 2>/dev/null || true
  wait "$DEV_PID" 2>/dev/null || true
  for p in $kids; do kill -KILL "$p" 2>/dev/null || true; done
}
cleanup() {
  local rc=$?
  stop_dev
  if [ $OK -eq 1 ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$1" "$2"; }

mkdir -p "$WORK/data" "$WORK/state"
switchyard dev --ephemeral --data-dir "$WORK/data" \
  --consul-addr 127.0.0.1:0 --nomad-addr 127.0.0.1:0 \
  --proxy-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 >"$WORK/dev.log" 2>&1 &
DEV_PID=$!
for _ in $(seq 1 1200); do
  [ -s "$WORK/data/dev.json" ] && break
  kill -0 "$DEV_PID" 2>/dev/null || { tail -20 "$WORK/dev.log" >&2; die "switchyard dev exited early"; }
  sleep 0.1
done
[ -s "$WORK/data/dev.json" ] || die "no dev.json after 120 s (see $WORK/dev.log)"
CONSUL=$(json_field "$WORK/data/dev.json" consul)
NOMAD=$(json_field "$WORK/data/dev.json" nomad)
ADMIN=$(json_field "$WORK/data/dev.json" admin)
PROXY=$(json_field "$WORK/data/dev.json" proxy)
export CONSUL_HTTP_ADDR="http://$CONSUL" NOMAD_ADDR="http://$NOMAD"
CTL=(--proxy "http://$ADMIN" --state-dir "$WORK/state" --json)

for _ in $(seq 1 1200); do
  passing=$(curl -fsS "http://$CONSUL/v1/health/service/$SERVICE?passing" 2>/dev/null |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
  [ "$passing" -ge 4 ] && curl -fsS -o /dev/null "http://$PROXY/hello" 2>/dev/null && break
  sleep 0.1
done
[ "${passing:-0}" -ge 4 ] || die "stack not ready (see $WORK/dev.log)"
log "stack ready: proxy $PROXY, admin $ADMIN, consul $CONSUL, nomad $NOMAD"

now_ms() { date +%s%3N; }
# run <name> <json field> <command...>: runs it, appends "<field> <wall>" to $WORK/<name>.
run() {
  local name=$1 field=$2 t0 t1 out
  shift 2
  t0=$(now_ms)
  if ! out=$("$@" 2>>"$WORK/$name.log"); then
    tail -5 "$WORK/$name.log" >&2
    die "$name failed: $*"
  fi
  t1=$(now_ms)
  printf '%s\n' "$out" >>"$WORK/$name.json.log"
  local v
  v=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$field" <<<"$out")
  echo "$v $((t1 - t0))" >>"$WORK/$name"
  log "$name: $field=$v ms, wall $((t1 - t0)) ms"
}

for i in $(seq 1 "$REPS"); do
  v=v$((i % 2 == 1 ? 3 : 4))
  run deploy elapsed_ms switchyard deploy "$v" --deadline 60s "${CTL[@]}"
  run switch cutover_ms switchyard switch "${CTL[@]}"
  run rollback cutover_ms switchyard rollback "${CTL[@]}"
done

python3 - "$WORK" "$REPS" <<'EOF'
import statistics, sys
work, reps = sys.argv[1], int(sys.argv[2])
rows = [
    ("deploy", "switchyard deploy vN --deadline 60s --proxy http://$ADMIN --state-dir D --json", "elapsed_ms", 10000),
    ("switch", "switchyard switch --proxy http://$ADMIN --state-dir D --json", "cutover_ms", 100),
    ("rollback", "switchyard rollback --proxy http://$ADMIN --state-dir D --json", "cutover_ms", 100),
]
ok = True
summary = []
for name, cmd, field, target in rows:
    vals, walls = [], []
    for line in open(f"{work}/{name}"):
        v, w = line.split()
        vals.append(int(v)); walls.append(int(w))
    med, mx = statistics.median(vals), max(vals)
    good = med <= target
    ok &= good
    print(f"{name:8} {field}: median {med:.0f} ms, max {mx} ms (target <= {target} ms: {'ok' if good else 'MISSED'}); "
          f"wall incl. process start: median {statistics.median(walls):.0f} ms, max {max(walls)} ms; n={len(vals)}; command: {cmd}")
    summary.append(f"{name}_median_ms={med:.0f} {name}_max_ms={mx}")
print("timings reps=%d %s" % (reps, " ".join(summary)))
sys.exit(0 if ok else 1)
EOF
OK=1
