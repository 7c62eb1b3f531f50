#!/usr/bin/env bash
# `make demo`: the main job end to end on local defaults.
# Brings the stack up, starts the worker, replays the German Credit data set (1000 applications)
# plus deliberately malformed records, waits until every event is decided or dead-lettered,
# and prints a summary. The worker keeps running afterwards so its endpoints can be explored;
# `make stack-down` stops it and the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin="$root/target/release/credit-worker"
dev="$root/target/release/credit-dev"
state="$root/.stack"
metrics_url="http://127.0.0.1:9464/metrics"
database_url="postgres://postgres@127.0.0.1:5432/credit_worker"
malformed=11

CREDIT_WORKER_BIN="$bin" bash scripts/stack.sh up

if [ -f "$state/run/demo-worker.pid" ]; then
  kill "$(cat "$state/run/demo-worker.pid")" 2>/dev/null || true
  sleep 1
fi

# The admin API needs a token: a fresh random one per demo, readable only by this user.
token_file="$state/run/admin-token"
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$token_file")

echo "== starting the worker with credit-v2 as shadow challenger (log: .stack/logs/worker-demo.log)"
CREDIT_WORKER__MODEL__SHADOW_DIRECTORY=models/credit-v2 CREDIT_WORKER__ADMIN__TOKEN_FILE="$token_file" \
  "$bin" worker --config config/default.toml >"$state/logs/worker-demo.log" 2>&1 &
echo $! >"$state/run/demo-worker.pid"
for _ in $(seq 1 300); do
  curl -fsS http://127.0.0.1:9464/ready >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS http://127.0.0.1:9464/ready >/dev/null || { echo "worker not ready; see .stack/logs/worker-demo.log"; exit 1; }

run_id="demo-$(date -u +%Y%m%dT%H%M%S)"
rows=$(($(wc -l <data/german_credit.csv) - 1))
echo "== replaying $rows applications + $malformed malformed records (ids $run_id-*)"
"$dev" replay --id-prefix "$run_id" --malformed "$malformed"

echo "== waiting until every event is decided or dead-lettered"
expected=$((rows + malformed))
for _ in $(seq 1 600); do
  decided=$(psql "$database_url" -tAc "SELECT count(*) FROM decision_audit WHERE application_id LIKE '$run_id-%'")
  dead=$("$dev" metric --url "$metrics_url" credit_worker_dead_letters_total 2>/dev/null || echo 0)
  [ "$decided" -ge "$rows" ] && [ "${dead%.*}" -ge "$malformed" ] && break
  sleep 0.2
done
[ "$decided" -ge "$rows" ] || { echo "timed out: $decided of $rows decided; see .stack/logs/worker-demo.log"; exit 1; }

echo "== publishing the observed outcomes (delayed labels) of the $rows applications"
"$dev" replay --id-prefix "$run_id" --outcomes-topic loan-outcomes --outcomes-only
for _ in $(seq 1 300); do
  matched=$("$dev" metric --url "$metrics_url" credit_worker_outcomes_total --label result=matched 2>/dev/null || echo 0)
  [ "${matched%.*}" -ge "$rows" ] && break
  sleep 0.2
done
sleep 6 # one evaluation interval, so the gauges and /fairness include the outcomes

echo
"$dev" summary --database-url "$database_url" --metrics-url "$metrics_url" --id-prefix "$run_id" --replayed "$expected"
echo
echo "== reproducing this run's decisions from the audit table (hash chains + re-scoring)"
"$bin" audit verify --database-url "$database_url" --models-root models --id-prefix "$run_id"
cat <<MSG

Look further (the worker is still running, pid $(cat "$state/run/demo-worker.pid")):
  metrics     curl -s $metrics_url | grep credit_worker_
  readiness   curl -s http://127.0.0.1:9464/ready
  audit rows  psql $database_url -c "SELECT application_id, decision, round(probability_of_default::numeric, 3) AS pd, model_version FROM decision_audit WHERE application_id LIKE '$run_id-%' ORDER BY application_id LIMIT 10"
  models      curl -s -H "Authorization: Bearer \$(cat $token_file)" http://127.0.0.1:9464/admin/model
  worker log  .stack/logs/worker-demo.log
  stop        make stack-down
MSG
