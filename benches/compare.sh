#!/usr/bin/env bash
# switchyard vs nginx vs haproxy, side by side, on the same two upstreams,
# with hyper's floor (benches/hyper_floor.rs: the least a proxy on hyper's
# HTTP/1 connections does per request) as a fourth, for reference.
#
#   benches/compare.sh            # 5 rounds of A B C, 6 s each (about 2 min)
#   ROUNDS=7 DURATION=10 CONNS=50 benches/compare.sh
#   SWITCHYARD_BIN=path/to/switchyard FLOOR_BIN=path/to/hyper-floor benches/compare.sh
#                                 # skip the builds
#
# switchyard runs config/bench.toml as shipped (default runtime and limits)
# with only its addresses moved: every listener here (the proxy's traffic
# and admin ports, the two upstreams, nginx and haproxy) gets a free port
# on 127.0.0.1, so the benchmark runs beside a `switchyard dev` on the
# default ports. SWITCHYARD_CONFIG points at another file; its
# 127.0.0.1:8080, :8081, :9001 and :9002 are moved the same way.
# Setup (2-core machine): the two upstreams (nginx `return 200`, one worker)
# and wrk share CPU 0; the proxy under test runs alone on CPU 1 (switchyard
# sizes its runtime to that one CPU; nginx: worker_processes 1, upstream
# keepalive; haproxy: nbthread 1, http-reuse always). Each run: 2 s warm-up,
# then DURATION s measured. The figure that separates proxies is the proxy's
# own CPU time per request: (utime + stime of the proxy process over the
# measured run) / requests. The machine is noisy, so only ratios within one
# round mean something: each round prints switchyard's CPU per request and
# p99 divided by the others', and the summary gives the medians of those.
# Everything listens on 127.0.0.1 only.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-6}
CONNS=${CONNS:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${SWITCHYARD_CONFIG:-$ROOT/config/bench.toml}
WORK=$(mktemp -d /tmp/switchyard-bench.XXXXXX)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in up nginx haproxy; do
    [ -f "$WORK/$f.pid" ] && kill "$(cat "$WORK/$f.pid")" 2>/dev/null || true
  done
  sleep 0.3
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP1=$(free_port); UP2=$(free_port); NGINX_PORT=$(free_port); HAPROXY_PORT=$(free_port)
FLOOR_PORT=$(free_port)
PX=$(free_port); ADMIN=$(free_port)
sed -e "s/127.0.0.1:8080/127.0.0.1:$PX/; s/127.0.0.1:8081/127.0.0.1:$ADMIN/" \
  -e "s/127.0.0.1:9001/127.0.0.1:$UP1/; s/127.0.0.1:9002/127.0.0.1:$UP2/" \
  "$CONFIG" > "$WORK/switchyard.toml"
PROXY_PORT=$(awk -F'"' '/^address/ {n = split($2, a, ":"); print a[n]; exit}' "$WORK/switchyard.toml")
busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if busy "$PROXY_PORT"; then echo "compare.sh: 127.0.0.1:$PROXY_PORT (from $CONFIG) is already in use" >&2; exit 1; fi

need() {
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$1" ]; then
    echo "installing $2 ..." >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}
need nginx nginx-light
need wrk wrk
need haproxy haproxy
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

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

# --- upstreams: nginx, return 200 with a 46-byte body, on CPU 0 -------------
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
taskset -c 0 "$NGINX" -c "$WORK/up.conf" -p "$WORK/up"

# --- nginx as the proxy under test, on CPU 1 --------------------------------
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
daemon on;
pid $WORK/nginx.pid;
error_log $WORK/px/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/px; proxy_temp_path $WORK/px;
  fastcgi_temp_path $WORK/px; uwsgi_temp_path $WORK/px; scgi_temp_path $WORK/px;
  upstream pool { server 127.0.0.1:$UP1; server 127.0.0.1:$UP2; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
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
taskset -c 1 "$NGINX" -c "$WORK/nginx.conf" -p "$WORK/px"

# --- haproxy as the proxy under test, on CPU 1 -------------------------------
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  daemon
  pidfile $WORK/haproxy.pid
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend px
  bind 127.0.0.1:$HAPROXY_PORT
  option forwardfor
  default_backend pool
backend pool
  balance roundrobin
  server up1 127.0.0.1:$UP1
  server up2 127.0.0.1:$UP2
CONF
taskset -c 1 "$HAPROXY" -q -f "$WORK/haproxy.cfg"

# --- switchyard, on CPU 1, the configuration as shipped ----------------------
taskset -c 1 "$SWITCHYARD" proxy --config "$WORK/switchyard.toml" 2>"$WORK/switchyard.log" &
PIDS+=($!)
SY_PID=$!
# --- hyper's floor, on CPU 1 -------------------------------------------------
taskset -c 1 "$FLOOR" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$UP1" "127.0.0.1:$UP2" 2>"$WORK/floor.log" &
PIDS+=($!)
FLOOR_PID=$!
sleep 0.5
curl -fsS "http://127.0.0.1:$FLOOR_PORT/" >/dev/null
curl -fsS "http://127.0.0.1:$PROXY_PORT/" >/dev/null
curl -fsS "http://127.0.0.1:$NGINX_PORT/" >/dev/null
curl -fsS "http://127.0.0.1:$HAPROXY_PORT/" >/dev/null
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)
HAPROXY_PID=$(cat "$WORK/haproxy.pid")

TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

# One measured run: prints "req/s p50_ms p99_ms non2xx errors cpu_us user_us sys_us" (per request).
run() {
  local port=$1 pid=$2
  taskset -c 0 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$port/" >/dev/null
  local u1 s1 u2 s2
  read -r u1 s1 < <(cpu_ticks "$pid")
  local out; out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/")
  read -r u2 s2 < <(cpu_ticks "$pid")
  local reqs; reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local p50; p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  local p99; p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  local errs; errs=$(echo "$out" | awk '/Socket errors/ {print $4+$6+$8+$10}')
  local cpu; cpu=$(awk -v u="$((u2 - u1))" -v s="$((s2 - s1))" -v t="$TICKS" -v r="$reqs" \
    'BEGIN { printf "%.2f %.2f %.2f", (u+s)/t*1e6/r, u/t*1e6/r, s/t*1e6/r }')
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") ${non2xx:-0} ${errs:-0} $cpu"
}
to_ms() {
  local v=$1
  case "$v" in
    *us) awk -v x="${v%us}" 'BEGIN { printf "%.3f", x/1000 }' ;;
    *ms) awk -v x="${v%ms}" 'BEGIN { printf "%.3f", x }' ;;
    *s) awk -v x="${v%s}" 'BEGIN { printf "%.3f", x*1000 }' ;;
    *) echo "$v" ;;
  esac
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); wrk -t1 -c$CONNS -d${DURATION}s; $ROUNDS rounds A B C; switchyard --config $CONFIG"
printf "%-6s %-10s %10s %8s %8s %7s %7s %10s %8s %8s\n" round proxy "req/s" "p50 ms" "p99 ms" non2xx errors "CPU us/req" "user us" "sys us"
: > "$WORK/results"
: > "$WORK/ratios"
for r in $(seq 1 "$ROUNDS"); do
  for who in switchyard nginx haproxy floor; do
    case $who in
      switchyard) res=$(run "$PROXY_PORT" "$SY_PID") ;;
      floor) res=$(run "$FLOOR_PORT" "$FLOOR_PID") ;;
      nginx) res=$(run "$NGINX_PORT" "$NGINX_WORKER") ;;
      haproxy) res=$(run "$HAPROXY_PORT" "$HAPROXY_PID") ;;
    esac
    echo "$r $who $res" >> "$WORK/results"
    # shellcheck disable=SC2086
    printf "%-6s %-10s %10s %8s %8s %7s %7s %10s %8s %8s\n" "$r" "$who" $res
  done
  # Same-round ratios, switchyard over nginx and over haproxy (CPU per
  # request, p99), and hyper's floor over nginx and switchyard over it (CPU).
  awk -v r="$r" '$1==r { cpu[$2]=$8; p99[$2]=$5 }
    END { printf "%s %.3f %.3f %.3f %.3f %.3f %.3f\n", r, cpu["switchyard"]/cpu["nginx"], p99["switchyard"]/p99["nginx"],
          cpu["switchyard"]/cpu["haproxy"], p99["switchyard"]/p99["haproxy"],
          cpu["floor"]/cpu["nginx"], cpu["switchyard"]/cpu["floor"] }' "$WORK/results" >> "$WORK/ratios"
  tail -1 "$WORK/ratios" | awk '{ printf "       round %s: switchyard / nginx: CPU %.2f x, p99 %.2f x; switchyard / haproxy: CPU %.2f x, p99 %.2f x; floor / nginx: CPU %.2f x; switchyard / floor: CPU %.2f x\n", $1, $2, $3, $4, $5, $6, $7 }'
done

median() { sort -n | awk '{a[NR]=$1} END { if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
col() { awk -v w="$1" -v c="$2" '$2==w {print $c}' "$WORK/results" | median; }
echo
for who in switchyard nginx haproxy floor; do
  printf "median %-10s %s req/s, p50 %s ms, p99 %s ms, CPU %s us/req (user %s, sys %s)\n" "$who" \
    "$(col "$who" 3)" "$(col "$who" 4)" "$(col "$who" 5)" "$(col "$who" 8)" "$(col "$who" 9)" "$(col "$who" 10)"
done
ratio() { awk -v c="$1" '{print $c}' "$WORK/ratios" | median; }
per_round=$(awk '{printf "%s%.2f", (NR > 1 ? " " : ""), $2}' "$WORK/ratios")
bad=$(awk '$2=="switchyard" {s+=$6+$7} END {print s+0}' "$WORK/results")
printf "summary: switchyard/nginx CPU per request %.2f x (median of %s rounds: %s), p99 %.2f x; switchyard/haproxy CPU %.2f x, p99 %.2f x; switchyard non-2xx + socket errors %s (goal: <= 1.00 x, <= 1.00 x, 0); hyper floor/nginx CPU %.2f x, switchyard/floor CPU %.2f x\n" \
  "$(ratio 2)" "$ROUNDS" "$per_round" "$(ratio 3)" "$(ratio 4)" "$(ratio 5)" "$bad" "$(ratio 6)" "$(ratio 7)"
