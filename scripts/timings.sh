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

LOG_TAG=timings.sh
PROFILE=${PROFILE:-debug}
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REPS=${1:-5}
# Give the dev stack longer to stop than lib.sh's default: it drains the
# proxy, then stops every allocation.
STOP_GRACE_S=30

case "$REPS" in '' | *[!0-9]*) echo "usage: $0 [repetitions]" >&2; exit 2 ;; esac
[ "$REPS" -ge 1 ] || { echo "usage: $0 [repetitions>=1]" >&2; exit 2; }

require_tools
build_binaries "switchyard and hello-service" switchyard hello-service
use_binaries switchyard hello-service

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-timings.XXXXXX")
install_cleanup logs

mkdir -p "$WORK/state"
start_dev "$WORK"
export CONSUL_HTTP_ADDR="http://$CONSUL" NOMAD_ADDR="http://$NOMAD"
CTL=(--proxy "http://$ADMIN" --state-dir "$WORK/state" --json)

wait_ready "$WORK/dev.log" "$DEV_PID" "switchyard dev"
log "stack ready: proxy $PROXY, admin $ADMIN, consul $CONSUL, nomad $NOMAD"

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
