#!/usr/bin/env bash
# Runs tests/compat/consul_client.py (py-consul) against `switchyard dev
# --no-nomad`, outside the Rust test harness: handy when changing the dev
# Consul by hand. Usage: tests/compat/consul_client.sh [path/to/switchyard]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../../target/debug/switchyard}"
python3 -c 'import consul' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check 'py-consul>=1.5,<2'
data="$(mktemp -d)"
"$bin" dev --no-nomad --ephemeral --data-dir "$data" --consul-addr 127.0.0.1:0 2>"$data/dev.log" &
pid=$!
cleanup() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
    [ -f "$data/dev.json" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$data/dev.log" >&2; exit 1; }
    sleep 0.1
done
consul="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["consul"])' "$data/dev.json")"
python3 "$here/consul_client.py" "${consul%:*}" "${consul##*:}"
