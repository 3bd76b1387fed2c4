#!/usr/bin/env bash
# switchyard vs nginx, side by side, on the same two upstreams.
#
#   benches/compare.sh            # 3 rounds of A B A B, 10 s each
#   ROUNDS=5 DURATION=15 CONNS=50 benches/compare.sh
#   SWITCHYARD_BIN=path/to/switchyard benches/compare.sh   # skip the build
#
# Setup (2-core machine): two upstreams (nginx `return 200`, one worker) and
# wrk share CPU 0; the proxy under test runs alone on CPU 1 with one worker
# thread (switchyard: runtime.worker_threads = 1; nginx: worker_processes 1,
# upstream keepalive). Each run: 2 s warm-up, then DURATION s measured.
# The figure that separates proxies is the proxy's own CPU time per request:
# (utime + stime of the proxy process over the measured run) / requests.
# Everything listens on 127.0.0.1 only.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/switchyard-bench.XXXXXX)
PROXY_PORT=18080
NGINX_PORT=18090
UP1=19001
UP2=19002
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/up.pid" ] && kill "$(cat "$WORK/up.pid")" 2>/dev/null || true
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  sleep 0.3
  rm -rf "$WORK"
}
trap cleanup EXIT

need() {
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$1" ]; then
    echo "installing $2 ..." >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}
need nginx nginx-light
need wrk wrk
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ -n "${SWITCHYARD_BIN:-}" ]; then
  SWITCHYARD=$SWITCHYARD_BIN
else
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin switchyard
  SWITCHYARD="$ROOT/target/release/switchyard"
fi

# --- upstreams: nginx, return 200 with a 46-byte body, on CPU 0 -------------
mkdir -p "$WORK/up" "$WORK/px"
cat > "$WORK/up.conf" <<EOF
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
EOF
taskset -c 0 "$NGINX" -c "$WORK/up.conf" -p "$WORK/up"

# --- nginx as the proxy under test, on CPU 1 --------------------------------
cat > "$WORK/nginx.conf" <<EOF
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
EOF
taskset -c 1 "$NGINX" -c "$WORK/nginx.conf" -p "$WORK/px"

# --- switchyard, on CPU 1, one worker thread ---------------------------------
cat > "$WORK/switchyard.toml" <<EOF
[listener]
address = "127.0.0.1:$PROXY_PORT"
[admin]
enabled = false
[log]
level = "warn"
access_log = false
[runtime]
worker_threads = 1
[[services]]
name = "bench"
balance = "round_robin"
static = { active = ["127.0.0.1:$UP1", "127.0.0.1:$UP2"] }
EOF
taskset -c 1 "$SWITCHYARD" proxy --config "$WORK/switchyard.toml" 2>"$WORK/switchyard.log" &
PIDS+=($!)
SY_PID=$!
sleep 0.5
curl -fsS "http://127.0.0.1:$PROXY_PORT/" >/dev/null
curl -fsS "http://127.0.0.1:$NGINX_PORT/" >/dev/null
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)

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

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); wrk -t1 -c$CONNS -d${DURATION}s; $ROUNDS rounds A B"
printf "%-6s %-10s %10s %8s %8s %7s %7s %10s %8s %8s\n" round proxy "req/s" "p50 ms" "p99 ms" non2xx errors "CPU us/req" "user us" "sys us"
: > "$WORK/results"
for r in $(seq 1 "$ROUNDS"); do
  for who in switchyard nginx; do
    if [ "$who" = switchyard ]; then res=$(run $PROXY_PORT $SY_PID); else res=$(run $NGINX_PORT "$NGINX_WORKER"); fi
    echo "$who $res" >> "$WORK/results"
    # shellcheck disable=SC2086
    printf "%-6s %-10s %10s %8s %8s %7s %7s %10s %8s %8s\n" "$r" "$who" $res
  done
done

# Medians and the ratio.
median() { sort -n | awk '{a[NR]=$1} END { if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
for who in switchyard nginx; do
  for col in 2 3 4 7 8 9; do
    awk -v w="$who" -v c="$col" '$1==w {print $c}' "$WORK/results" | median > "$WORK/med.$who.$col"
  done
done
sy_cpu=$(cat "$WORK/med.switchyard.7"); ng_cpu=$(cat "$WORK/med.nginx.7")
echo
for who in switchyard nginx; do
  printf "median %-10s %s req/s, p50 %s ms, p99 %s ms, CPU %s us/req (user %s, sys %s)\n" "$who" \
    "$(cat "$WORK/med.$who.2")" "$(cat "$WORK/med.$who.3")" "$(cat "$WORK/med.$who.4")" \
    "$(cat "$WORK/med.$who.7")" "$(cat "$WORK/med.$who.8")" "$(cat "$WORK/med.$who.9")"
done
awk -v a="$sy_cpu" -v b="$ng_cpu" 'BEGIN { printf "CPU per request, switchyard / nginx = %.2f (target <= 0.75)\n", a/b }'
non2xx=$(awk '$1=="switchyard" {s+=$5+$6} END {print s+0}' "$WORK/results")
echo "switchyard non-2xx + socket errors over all runs: $non2xx"
