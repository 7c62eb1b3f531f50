#!/usr/bin/env bash
# The local stack on loopback, idempotently:
#   Tansu (Kafka API, memory storage)        127.0.0.1:19092
#   schema registry DEVELOPMENT STAND-IN     127.0.0.1:18081   (credit-dev registry-standin)
#   PostgreSQL                               127.0.0.1:5432    (the running server, else Debian's, started)
# and the topics, created through the Kafka admin API.
#
# Usage: scripts/stack.sh up|down|status
# Env:   CREDIT_WORKER_BIN  the credit-worker binary (default target/release/credit-worker)
#        CREDIT_DEV_BIN     the credit-dev binary (default: credit-dev beside CREDIT_WORKER_BIN)
#        PARTITIONS         partitions per topic (default 4)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
state="$root/.stack"
mkdir -p "$state/logs" "$state/run"
bin=${CREDIT_WORKER_BIN:-$root/target/release/credit-worker}
dev_bin=${CREDIT_DEV_BIN:-$(dirname "$bin")/credit-dev}
kafka_port=19092
registry_port=18081
partitions=${PARTITIONS:-4}
topics=(loan-applications loan-decisions loan-applications-dlq credit-alerts loan-outcomes)

log() { printf '[stack] %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 100); do port_open "$port" && return 0; sleep 0.1; done
  log "$name did not open port $port; see $state/logs"; return 1
}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

start_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  ls /etc/postgresql/*/main >/dev/null 2>&1 || { log "no PostgreSQL server: run scripts/bootstrap.sh"; return 1; }
  log "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 100); do pg_isready -q -h 127.0.0.1 -p 5432 && return 0; sleep 0.2; done
  log "PostgreSQL did not start"; return 1
}

ensure_database() {
  local name=$1
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE \"$name\"" 2>/dev/null || true
  fi
}

start_tansu() {
  port_open $kafka_port && return 0
  log "starting Tansu on 127.0.0.1:$kafka_port (memory storage)"
  nohup "$root/.tools/bin/tansu" broker \
    --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine "memory://tansu/" \
    >"$state/logs/tansu.log" 2>&1 9>&- &
  echo $! >"$state/run/tansu.pid"
  wait_port $kafka_port Tansu
}

start_registry() {
  port_open $registry_port && return 0
  [ -x "$dev_bin" ] || { log "missing $dev_bin: build it first (cargo build --bins)"; return 1; }
  log "starting the schema registry development stand-in on 127.0.0.1:$registry_port"
  nohup "$dev_bin" registry-standin --listen "127.0.0.1:$registry_port" --state-file "$state/registry.json" \
    >"$state/logs/registry.log" 2>&1 9>&- &
  echo $! >"$state/run/registry.pid"
  wait_port $registry_port "registry stand-in"
}

# Stops the process in run/<name>.pid and waits (up to 10 s) until it has exited, so that an
# `up` right after a `down` finds its port free and starts a new process.
stop_pidfile() {
  local file="$state/run/$1.pid" pid
  if [ -f "$file" ]; then
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    rm -f "$file"
  fi
}

# The local key that seals protected attributes in audit rows (created once, readable by this
# user only; deleting it makes the local audit rows' protected attributes unreadable).
ensure_protected_key() {
  local key="$state/protected.key"
  [ -s "$key" ] && return 0
  ( umask 077; printf '1 %s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" >"$key.tmp" && mv "$key.tmp" "$key" )
  log "created the local protected-attribute key $key"
}

case "${1:-up}" in
  up)
    exec 9>"$state/run/stack.lock"
    flock 9
    bash scripts/bootstrap.sh >&2
    start_postgres
    ensure_database credit_worker
    start_tansu
    start_registry
    ensure_protected_key
    # A broker that has just opened its port may not answer admin requests yet: retry.
    for attempt in 1 2 3 4 5 6; do
      "$bin" create-topics --bootstrap-servers "127.0.0.1:$kafka_port" --partitions "$partitions" "${topics[@]}" >&2 && break
      [ "$attempt" -lt 6 ] || { log "creating topics failed"; exit 1; }
      sleep 2
    done
    log "up: kafka 127.0.0.1:$kafka_port, registry http://127.0.0.1:$registry_port, postgres 127.0.0.1:5432/credit_worker"
    ;;
  down)
    for name in demo-worker demo-prometheus demo-alertmanager demo-alert-receiver; do stop_pidfile "$name"; done
    stop_pidfile registry
    stop_pidfile tansu
    rm -f "$state/registry.json"
    log "stopped Tansu and the registry stand-in (PostgreSQL left running)"
    ;;
  status)
    port_open $kafka_port && log "tansu: up" || log "tansu: down"
    port_open $registry_port && log "registry stand-in: up" || log "registry stand-in: down"
    pg_isready -q -h 127.0.0.1 -p 5432 && log "postgres: up" || log "postgres: down"
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
