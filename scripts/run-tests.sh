#!/usr/bin/env bash
# Runs the test suite (release profile, as `make build`): cargo-nextest when installed (it is on the
# project's machines), else cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --release --locked --profile ci --no-fail-fast
else
  exec cargo test --release --locked --no-fail-fast -- --test-threads 2
fi
