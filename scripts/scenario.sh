#!/usr/bin/env bash
# Zero-downtime proof: run a k6 scenario against a local switchyard stack
# while switches (and deploys) happen, then judge the run with stale-check.
#
#   scripts/scenario.sh <quick|switch|deploy|websocket|upgrade|all>
#
# For each scenario it starts a fresh `switchyard dev --ephemeral` on
# ephemeral ports, waits for dev.json and the proxy's /readyz, runs k6 with
# the switch loop (POST /switch once a second, every acknowledgement logged
# as a JSON line) or the deploy loop (`switchyard deploy` to the standby
# colour, `switchyard switch`, repeat) alongside, stops everything, runs
# stale-check and prints one line:
#
#   scenario=switch requests=N failed=N stale=N p50=… p95=… p99=… posts=N switches=N deploys=N
#
# The upgrade scenario runs the static stack (always) and, under load, replaces
# the proxy process with `switchyard proxy --upgrade` and reloads it with
# SIGHUP, alternately, UPGRADES times each; every old process must exit 0.
#
# The switch and deploy loads send a quarter of their requests as POST /echo
# with a 4 KiB body (k6/lib/common.js); those runs must contain POSTs.
#
# It exits non-zero if anything failed or any response was stale.
#
# Environment knobs (all optional):
#   PROFILE=release|debug   which build to use (default release)
#   STACK=dev|static        `dev` (default) runs `switchyard dev`; `static`
#                           assembles hello-service x4 + `switchyard proxy`
#                           with static pools (no Consul/Nomad; not for deploy)
#   SWITCHES=62             switches in the switch scenario (at least 60)
#   ROUNDS=4                deploy+switch rounds in the deploy scenario
#   RATE=200                requests per second (switch / deploy / upgrade scenarios)
#   UPGRADES=4              binary upgrades (and as many reloads) in the upgrade scenario
#   KEEP=1                  keep the work directory (k6 JSON, logs) on success
#   BUILD=0                 use the binaries already built instead of building
set -euo pipefail

LOG_TAG=scenario.sh
PROFILE=${PROFILE:-release}
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STACK=${STACK:-dev}
SWITCHES=${SWITCHES:-62}
ROUNDS=${ROUNDS:-4}
RATE=${RATE:-200}
UPGRADES=${UPGRADES:-4}

usage() {
  echo "usage: $0 <quick|switch|deploy|websocket|upgrade|all>" >&2
  exit 2
}
[ $# -eq 1 ] || usage
case "$1" in quick | switch | deploy | websocket | upgrade | all) ;; *) usage ;; esac

ensure_tools() {
  require_tools
  ensure_k6
  build_binaries "switchyard, hello-service, stale-check" switchyard hello-service switchyard-loadcheck
  use_binaries switchyard hello-service stale-check
}

install_cleanup "logs and k6 output"

# ---------------------------------------------------------------------------
# The stack: `switchyard dev` (start_dev, in lib.sh) or a static one
# ---------------------------------------------------------------------------

start_static() { # dir
  local dir=$1 ports=() i v
  for i in 1 2 3 4; do ports+=("$(free_port)"); done
  for i in 0 1 2 3; do
    v=v1
    [ $i -ge 2 ] && v=v2
    "$BIN_DIR/hello-service" --port "${ports[$i]}" --version $v >"$dir/hello-$i.log" 2>&1 &
    PIDS+=("$!")
  done
  PROXY=127.0.0.1:$(free_port)
  ADMIN=127.0.0.1:$(free_port)
  cat >"$dir/proxy.toml" <<EOF
[listener]
address = "$PROXY"
[admin]
address = "$ADMIN"
[log]
access_log = false
level = "info"
[shutdown]
deregister_delay = "1s"
[upgrade]
socket = "$dir/upgrade.sock"
[[services]]
name = "$SERVICE"
static = { active = ["127.0.0.1:${ports[0]}", "127.0.0.1:${ports[1]}"], standby = ["127.0.0.1:${ports[2]}", "127.0.0.1:${ports[3]}"], active_version = "v1", standby_version = "v2" }
EOF
  "$BIN_DIR/switchyard" proxy --config "$dir/proxy.toml" >"$dir/proxy.log" 2>&1 &
  PROXY_PID=$!
  PIDS+=("$PROXY_PID")
}

start_stack() { # dir
  case "$STACK" in
    dev) start_dev "$1" ;;
    static) start_static "$1" ;;
    *) die "STACK must be dev or static" ;;
  esac
  wait_ready "$1"
  log "stack ($STACK) ready: proxy $PROXY admin $ADMIN${CONSUL:+ consul $CONSUL}${NOMAD:+ nomad $NOMAD}"
}

active_version() { pool_state | cut -d' ' -f1; }

# ---------------------------------------------------------------------------
# Switch and deploy loops
# ---------------------------------------------------------------------------

# Appends `{"requested_ms":…,"acked_ms":…,"active_version":"…"}`.
log_switch() { # file requested acked version
  printf '{"requested_ms":%s,"acked_ms":%s,"active_version":"%s"}\n' "$2" "$3" "$4" >>"$1"
}

# The starting state, so requests before the first switch are judged too.
log_start() { # file
  local t v
  t=$(now_ms)
  v=$(active_version)
  [ -n "$v" ] || die "no active version in /status"
  printf '{"acked_ms":%s,"active_version":"%s"}\n' "$t" "$v" >>"$1"
}

# POST /switch every second until $2 switches are acknowledged or the
# deadline passes. Writes the number of failed calls to $1.fail.
switch_loop() { # log count deadline_ms
  local file=$1 want=$2 deadline=$3 n=0 fails=0 t0 t1 code v
  while [ $n -lt "$want" ] && [ "$(now_ms)" -lt "$deadline" ]; do
    t0=$(now_ms)
    code=$(curl -s -o "$file.last" -w '%{http_code}' --max-time 15 -X POST \
      "http://$ADMIN/switch?service=$SERVICE" || echo 000)
    t1=$(now_ms)
    if [ "$code" = 200 ]; then
      v=$(active_version)
      log_switch "$file" "$t0" "$t1" "$v"
      n=$((n + 1))
    else
      fails=$((fails + 1))
      log "switch answered $code: $(head -c 300 "$file.last" 2>/dev/null)"
    fi
    local left=$((t0 + 1000 - $(now_ms)))
    [ $left -gt 0 ] && sleep "$(printf '0.%03d' "$left")"
  done
  echo "$fails" >"$file.fail"
}

cli() {
  CONSUL_HTTP_ADDR="http://$CONSUL" NOMAD_ADDR="http://$NOMAD" \
    "$BIN_DIR/switchyard" "$@"
}

# Every 3 s, alternately: a binary upgrade (`proxy --upgrade`, then the old
# process must exit 0 within its grace period) or a SIGHUP reload of a changed
# file (retry attempts, log level), UPGRADES times each. Writes
# "upgrades reloads failures" to $1.
upgrade_loop() { # out
  local out=$1 dir=$2 upgrades=0 reloads=0 fails=0 round old rc seen
  for round in $(seq 1 $((UPGRADES * 2))); do
    sleep 3
    if [ $((round % 2)) -eq 1 ]; then
      old=$PROXY_PID
      "$BIN_DIR/switchyard" proxy --config "$dir/proxy.toml" --upgrade >"$dir/proxy-$round.log" 2>&1 &
      PROXY_PID=$!
      PIDS+=("$PROXY_PID")
      # The old process drains within its grace period (default 30 s), then exits.
      for _ in $(seq 1 350); do
        kill -0 "$old" 2>/dev/null || break
        sleep 0.1
      done
      rc=0
      if kill -0 "$old" 2>/dev/null; then
        rc=timeout
      else
        wait "$old" || rc=$?
      fi
      if [ "$rc" = 0 ] && kill -0 "$PROXY_PID" 2>/dev/null; then
        upgrades=$((upgrades + 1))
        log "upgrade $upgrades: process $old handed over to $PROXY_PID and exited 0"
      else
        fails=$((fails + 1))
        log "upgrade round $round: old process exited $rc (new one alive: $(kill -0 "$PROXY_PID" 2>/dev/null && echo yes || echo no))"
      fi
    else
      sed -i "s/^level = .*/level = \"info,round$round=debug\"/" "$dir/proxy.toml"
      seen=$(cat "$dir"/proxy*.log | grep -c 'configuration reloaded' || true)
      kill -HUP "$PROXY_PID"
      for _ in $(seq 1 50); do
        [ "$(cat "$dir"/proxy*.log | grep -c 'configuration reloaded' || true)" -gt "$seen" ] && break
        sleep 0.1
      done
      if [ "$(cat "$dir"/proxy*.log | grep -c 'configuration reloaded' || true)" -gt "$seen" ]; then
        reloads=$((reloads + 1))
      else
        fails=$((fails + 1))
        log "reload round $round: no 'configuration reloaded' in the proxy log"
      fi
    fi
  done
  echo "$upgrades $reloads $fails" >"$out"
}

# deploy vN to the standby colour, switch to it; ROUNDS times.
deploy_loop() { # log deploys_file
  local file=$1 out=$2 round v before t0 t1 after i deploys=0 fails=0
  for round in $(seq 1 "$ROUNDS"); do
    v="v$((round + 2))"
    log "deploy round $round: $v"
    if cli deploy "$v" --proxy "http://$ADMIN" --state-dir "$WORK/state" >>"$WORK/deploy.log" 2>&1; then
      deploys=$((deploys + 1))
    else
      fails=$((fails + 1))
      log "switchyard deploy $v failed: $(tail -1 "$WORK/deploy.log") (full log: $WORK/deploy.log)"
      break
    fi
    # Switching needs the new standby fully passing.
    for i in $(seq 1 300); do
      read -r _ a b <<<"$(pool_state)" && [ "$b" -ge "$a" ] && break
      sleep 0.1
    done
    before=$(active_version)
    t0=$(now_ms)
    if ! cli switch --proxy "http://$ADMIN" --state-dir "$WORK/state" >>"$WORK/deploy.log" 2>&1; then
      fails=$((fails + 1))
      log "switchyard switch failed: $(tail -1 "$WORK/deploy.log") (full log: $WORK/deploy.log)"
      break
    fi
    # Acknowledged = the CLI returned and this proxy serves the new version.
    for i in $(seq 1 100); do
      after=$(active_version)
      [ "$after" != "$before" ] && break
      sleep 0.05
    done
    t1=$(now_ms)
    [ "$after" = "$v" ] || { fails=$((fails + 1)); log "after switching, $after is active, not $v"; break; }
    log_switch "$file" "$t0" "$t1" "$after"
    sleep 2
  done
  echo "$deploys $fails" >"$out"
}

# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------

run_scenario() { # name
  local name=$1 dir="$WORK/$1" k6rc=0 loop_pid="" script env=() fails=0 deploys=0 switches=0
  mkdir -p "$dir"
  if [ "$name" = deploy ] && [ "$STACK" != dev ]; then
    die "the deploy scenario needs STACK=dev"
  fi
  CONSUL="" NOMAD=""
  local stack=$STACK upgrades="" reloads=""
  # An upgrade replaces the `switchyard proxy` process: the static stack.
  [ "$name" = upgrade ] && STACK=static
  start_stack "$dir"
  STACK=$stack
  local switchlog="$dir/switches.jsonl"
  : >"$switchlog"
  log_start "$switchlog"

  case "$name" in
    quick)
      script=quick.js
      env=(-e VUS=10 -e DURATION=15s)
      ;;
    switch)
      script=switch-under-load.js
      env=(-e "RATE=$RATE" -e "DURATION=$((SWITCHES + 8))s")
      ;;
    deploy)
      script=deploy-under-load.js
      env=(-e "RATE=$((RATE * 3 / 4))" -e "DURATION=$((ROUNDS * 10 + 15))s")
      ;;
    websocket)
      script=websocket.js
      env=(-e VUS=10 -e DURATION=40s -e SESSION_S=12)
      ;;
    upgrade)
      script=switch-under-load.js
      env=(-e "RATE=$RATE" -e "DURATION=$((UPGRADES * 6 + 12))s")
      ;;
  esac

  log "running k6 $script"
  k6 run --quiet --no-color --out "json=$dir/k6.json" -e "BASE=http://$PROXY" "${env[@]}" \
    "$ROOT/k6/$script" >"$dir/k6.log" 2>&1 &
  local k6pid=$!
  PIDS+=("$k6pid")
  sleep 2

  case "$name" in
    switch)
      switch_loop "$switchlog" "$SWITCHES" "$(($(now_ms) + (SWITCHES + 5) * 1000))" &
      loop_pid=$!
      ;;
    websocket)
      switch_loop "$switchlog" 35 "$(($(now_ms) + 36000))" &
      loop_pid=$!
      ;;
    deploy)
      deploy_loop "$switchlog" "$dir/deploys" &
      loop_pid=$!
      ;;
  esac
  if [ -n "$loop_pid" ]; then
    PIDS+=("$loop_pid")
    wait "$loop_pid" || fails=$((fails + 1))
  fi
  if [ "$name" = upgrade ]; then
    # In this shell: the processes it starts are its children (wait needs that).
    upgrade_loop "$dir/upgrades" "$dir"
    read -r upgrades reloads ufails <"$dir/upgrades"
    fails=$((fails + ufails))
  fi
  wait "$k6pid" || k6rc=$?
  stop_all

  switches=$(($(wc -l <"$switchlog") - 1))
  [ -f "$switchlog.fail" ] && fails=$((fails + $(cat "$switchlog.fail")))
  if [ -f "$dir/deploys" ]; then
    read -r deploys dfails <"$dir/deploys"
    fails=$((fails + dfails))
  fi

  local verdict vrc=0
  verdict=$("$BIN_DIR/stale-check" --k6 "$dir/k6.json" --switches "$switchlog" 2>"$dir/stale-check.log") || vrc=$?
  echo "scenario=$name ${verdict:-requests=? failed=? stale=?} switches=$switches deploys=$deploys${upgrades:+ upgrades=$upgrades reloads=$reloads}"

  local bad=0
  [ $vrc -eq 0 ] || { bad=1; sed 's/^/  /' "$dir/stale-check.log" >&2; }
  [ $k6rc -eq 0 ] || { bad=1; log "$name: k6 exited $k6rc (thresholds crossed?); see $dir/k6.log"; tail -30 "$dir/k6.log" >&2; }
  [ $fails -eq 0 ] || { bad=1; log "$name: $fails switch/deploy call(s) failed"; }
  case "$name" in
    switch) [ $switches -ge 60 ] || { bad=1; log "switch: only $switches switches (need 60)"; } ;;
    websocket) [ $switches -ge 20 ] || { bad=1; log "websocket: only $switches switches"; } ;;
    deploy) [ "$deploys" -ge "$ROUNDS" ] || { bad=1; log "deploy: only $deploys of $ROUNDS deploys"; } ;;
    upgrade) [ "${upgrades:-0}" -ge "$UPGRADES" ] && [ "${reloads:-0}" -ge "$UPGRADES" ] ||
      { bad=1; log "upgrade: only $upgrades upgrades and $reloads reloads of $UPGRADES"; } ;;
  esac
  # The switch and deploy loads mix POSTs with a body into the GETs; a run
  # without any proves nothing about non-idempotent traffic.
  case "$name" in
    switch | deploy | upgrade)
      local posts
      posts=$(sed -n 's/.* posts=\([0-9]*\).*/\1/p' <<<"$verdict")
      [ "${posts:-0}" -gt 0 ] || { bad=1; log "$name: no POST in the run"; }
      ;;
  esac
  if [ $bad -ne 0 ]; then
    return 1
  fi
  return 0
}

ensure_tools
WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-scenario.XXXXXX")
if [ "$1" = all ]; then
  SCENARIOS=(quick switch deploy websocket upgrade)
  [ "$STACK" = dev ] || SCENARIOS=(quick switch websocket upgrade)
else
  SCENARIOS=("$1")
fi
rc=0
for s in "${SCENARIOS[@]}"; do
  run_scenario "$s" || rc=1
done
exit $rc
