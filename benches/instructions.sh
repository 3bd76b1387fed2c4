#!/usr/bin/env bash
# User-space instructions per proxied request, switchyard vs nginx, counted
# by valgrind's callgrind: a figure the machine's noise cannot move, for
# comparing builds and changes (compare.sh measures time; this counts work).
#
#   benches/instructions.sh                    # builds the release binary
#   SWITCHYARD_BIN=path/to/switchyard FLOOR_BIN=path/to/hyper-floor benches/instructions.sh
#   DURATION=10 benches/instructions.sh
#
# hyper's floor (benches/hyper_floor.rs: the least a proxy on hyper's HTTP/1
# connections does per request) is counted the same way, so the figures
# split switchyard's count into hyper's share and switchyard's own.
# The proxies run under callgrind in front of the same two nginx upstreams
# (`return 200`, 46-byte body), one at a time; wrk -t1 -c50 warms each up,
# the counters are zeroed, then DURATION s of load are counted and divided
# by the requests wrk completed. switchyard runs config/bench.toml with only
# its addresses moved to free ports; nginx runs one worker with upstream
# keepalive, as in compare.sh. Kernel work is not counted (callgrind sees
# user space only); both proxies make the same system calls per request.
# Under callgrind everything runs ~50 x slower, so the request counts are
# small; the per-request figure is stable to about 1 %.
set -euo pipefail

DURATION=${DURATION:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/switchyard-instr.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/up.pid" ] && kill "$(cat "$WORK/up.pid")" 2>/dev/null || true
  sleep 0.3
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in valgrind callgrind_control callgrind_annotate wrk; do
  command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is required (apt-get install valgrind wrk)" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "instructions.sh: nginx is required (apt-get install nginx-light)" >&2; exit 1; }

if [ -n "${SWITCHYARD_BIN:-}" ]; then
  SWITCHYARD=$SWITCHYARD_BIN
else
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin switchyard
  SWITCHYARD="$ROOT/target/release/switchyard"
fi
if [ -n "${FLOOR_BIN:-}" ]; then
  FLOOR=$FLOOR_BIN
else
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --example hyper-floor
  FLOOR="$ROOT/target/release/examples/hyper-floor"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP1=$(free_port); UP2=$(free_port); PX=$(free_port); ADMIN=$(free_port); NG=$(free_port)
FL=$(free_port)

mkdir -p "$WORK/up" "$WORK/px"
cat > "$WORK/up.conf" <<CONF
worker_processes 1;
daemon on;
pid $WORK/up.pid;
error_log $WORK/up/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/up; proxy_temp_path $WORK/up;
  fastcgi_temp_path $WORK/up; uwsgi_temp_path $WORK/up; scgi_temp_path $WORK/up;
  server { listen 127.0.0.1:$UP1; location / { return 200 "hello from upstream one, 46 bytes of text!!\n"; } }
  server { listen 127.0.0.1:$UP2; location / { return 200 "hello from upstream two, 46 bytes of text!!\n"; } }
}
CONF
"$NGINX" -c "$WORK/up.conf" -p "$WORK/up"

sed -e "s/127.0.0.1:8080/127.0.0.1:$PX/; s/127.0.0.1:8081/127.0.0.1:$ADMIN/" \
  -e "s/127.0.0.1:9001/127.0.0.1:$UP1/; s/127.0.0.1:9002/127.0.0.1:$UP2/" \
  "$ROOT/config/bench.toml" > "$WORK/bench.toml"

cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
error_log $WORK/px/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/px; proxy_temp_path $WORK/px;
  fastcgi_temp_path $WORK/px; uwsgi_temp_path $WORK/px; scgi_temp_path $WORK/px;
  upstream pool { server 127.0.0.1:$UP1; server 127.0.0.1:$UP2; keepalive 128; }
  server {
    listen 127.0.0.1:$NG;
    location / {
      proxy_pass http://pool;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF

# count NAME PORT CMD...: prints instructions per request.
count() {
  local name=$1 port=$2; shift 2
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.out" "$@" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.2
  done
  wrk -t1 -c50 -d3s "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -z "$pid" >/dev/null
  local requests
  requests=$(wrk -t1 -c50 -d"${DURATION}s" "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
  callgrind_control -d "$pid" >/dev/null
  sleep 1
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local total
  total=$(callgrind_annotate --threshold=100 "$WORK/$name.out".1 2>/dev/null |
    awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  echo $((total / requests))
}

sy=$(count switchyard "$PX" "$SWITCHYARD" proxy --config "$WORK/bench.toml")
ng=$(count nginx "$NG" "$NGINX" -c "$WORK/nginx.conf" -p "$WORK/px")
fl=$(count floor "$FL" "$FLOOR" "127.0.0.1:$FL" "127.0.0.1:$UP1" "127.0.0.1:$UP2")
ratio=$(awk -v a="$sy" -v b="$ng" 'BEGIN { printf "%.2f", a / b }')
floor_ratio=$(awk -v a="$fl" -v b="$ng" 'BEGIN { printf "%.2f", a / b }')
echo "instructions per request (user space): switchyard=$sy nginx=$ng ratio=$ratio; hyper floor=$fl (floor/nginx=$floor_ratio, switchyard's own=$((sy - fl)))"
