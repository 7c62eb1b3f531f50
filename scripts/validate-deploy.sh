#!/usr/bin/env bash
# Validates docker-compose.yml, Dockerfile, deploy/ (Kubernetes) and .github/workflows offline,
# with the pinned validators that scripts/bootstrap.sh installed (.tools/validate,
# .tools/compose-spec). Installs nothing: without them it says to run the bootstrap and fails.
# Usage: scripts/validate-deploy.sh [--root DIR] [--binary PATH] | --write-prometheusrule
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/.tools"
schema="$tools/compose-spec/package/lib/compose-spec/schema/compose-spec.json"
if [ ! -f "$tools/validate/.complete" ] || [ ! -f "$schema" ]; then
  echo "[validate] the pinned validators are not installed: run scripts/bootstrap.sh (make setup) first" >&2
  exit 2
fi
export PATH="$tools/validate/bin:$PATH"
exec "$tools/validate/bin/python" scripts/validate_deploy.py --binary "${CREDIT_WORKER_BIN:-$root/target/release/credit-worker}" \
  --compose-schema "$schema" "$@"
