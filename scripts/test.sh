#!/usr/bin/env bash
# The whole suite, as CI runs it:
#   1. build every binary (the dev-stack and controller tests run the real
#      hello-service processes),
#   2. unit and end-to-end tests (real sockets on 127.0.0.1:0),
#   3. a short fuzz smoke run of every fuzz target,
#   4. the zero-downtime proofs with real k6 against `switchyard dev`:
#      switch-under-load and deploy-under-load, judged by stale-check; and
#      against `switchyard proxy` replaced by `proxy --upgrade` and reloaded
#      with SIGHUP under load.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo build --workspace --bins"
cargo build --workspace --bins --locked

echo "==> cargo test --workspace"
cargo test --workspace --locked

if [ -x scripts/fuzz-smoke.sh ]; then
  echo "==> fuzz smoke"
  scripts/fuzz-smoke.sh "${FUZZ_SECONDS:-10}"
fi

echo "==> k6: switch under load, deploy under load, upgrade and reload under load"
PROFILE=debug BUILD=0 scripts/scenario.sh switch
PROFILE=debug BUILD=0 scripts/scenario.sh deploy
PROFILE=debug BUILD=0 scripts/scenario.sh upgrade
