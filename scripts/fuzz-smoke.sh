#!/usr/bin/env bash
# Runs every fuzz target on the stable toolchain for a fixed budget and
# fails on any panic. Usage: scripts/fuzz-smoke.sh [seconds-per-target]
# (default 20). SMOKE_SEED=<n> replays a run's mutation sequence.
set -euo pipefail
seconds="${1:-20}"
cd "$(dirname "$0")/../fuzz"
cargo build --release --bin smoke
exec ./target/release/smoke "$seconds" config consul_json request_path
