#!/usr/bin/env bash
# `make bench`: throughput and latency on the local stack, then the hot stages alone.
#   1. builds the release binary and (re)starts the local stack around it, with a fresh broker so
#      earlier runs' topics do not weigh on it;
#   2. benches/pipeline.rs: pre-loads BENCH_EVENTS events (default 200000), runs the worker from
#      cold, offers BENCH_RATE events/s (default 5000) for the latency run; champion alone and with
#      a shadow challenger, and with BENCH_PREFILL (default 50M) generated rows already in the audit
#      table; then kill -9 → first new audit row (recovery); table on stdout, JSON in
#      target/bench/pipeline-*.json;
#      extra arguments go to the pipeline bench (e.g. --scenario champion --scenario recovery);
#   3. benches/stages.rs (criterion): decode, features, scoring, TreeSHAP, window, audit hash,
#      a whole 500-record batch; reports in target/criterion.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${BENCH_EVENTS:-200000}
rate=${BENCH_RATE:-5000}
prefill=${BENCH_PREFILL:-50000000}
# The test targets too, as `make build`: one feature set, nothing built twice.
cargo build --release --locked --bins --tests
export CREDIT_WORKER_BIN="$PWD/target/release/credit-worker"
bash scripts/stack.sh down >/dev/null 2>&1 || true
bash scripts/stack.sh up
cargo bench --locked --bench pipeline -- --events "$events" --rate "$rate" --prefill "$prefill" "$@"
cargo bench --locked --bench stages -- --warm-up-time 1 --measurement-time 3
