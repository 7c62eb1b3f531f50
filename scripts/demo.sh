#!/usr/bin/env bash
# `make demo`: the main job end to end on local defaults.
# Brings the stack up, starts the worker, replays the German Credit data set (1000 applications)
# plus deliberately malformed records, waits until every event is decided or dead-lettered,
# and prints a summary. Then it replays a biased scenario and shows the disparate-impact alert
# reach a real Alertmanager (Prometheus evaluates the shipped rules, windows scaled to seconds),
# the model-risk receiver's notification and the worker's own alert event on the alerts topic,
# and writes the run's model-risk report (report.html, report.json).
# The worker, Prometheus and Alertmanager keep running afterwards so they can be explored;
# `make stack-down` stops them and the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin="$root/target/release/credit-worker"
dev="$root/target/release/credit-dev"
state="$root/.stack"
metrics_url="http://127.0.0.1:9464/metrics"
database_url="postgres://postgres@127.0.0.1:5432/credit_worker"
malformed=11
alerting="$state/alerting"
alertmanager_url="http://127.0.0.1:19093"

CREDIT_WORKER_BIN="$bin" bash scripts/stack.sh up

for name in demo-worker demo-prometheus demo-alertmanager demo-alert-receiver; do
  if [ -f "$state/run/$name.pid" ]; then
    pid=$(cat "$state/run/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
done

# The admin API needs a token: a fresh random one per demo, readable only by this user.
token_file="$state/run/admin-token"
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$token_file")

worker_started_ms=$(date +%s%3N)
echo "== starting the worker with credit-v2 as shadow challenger (log: .stack/logs/worker-demo.log)"
# The demo's alerts hold for 5 s before they fire (60 s in config/default.toml), evaluated each second.
CREDIT_WORKER__MODEL__SHADOW_DIRECTORY=models/credit-v2 CREDIT_WORKER__ADMIN__TOKEN_FILE="$token_file" \
  CREDIT_WORKER__ALERTS__SUSTAIN_SECONDS=5 CREDIT_WORKER__ALERTS__EVALUATION_INTERVAL_MS=1000 \
  "$bin" worker --config config/default.toml >"$state/logs/worker-demo.log" 2>&1 &
echo $! >"$state/run/demo-worker.pid"
for _ in $(seq 1 300); do
  curl -fsS http://127.0.0.1:9464/ready >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS http://127.0.0.1:9464/ready >/dev/null || { echo "worker not ready; see .stack/logs/worker-demo.log"; exit 1; }

echo "== starting Prometheus (:19090) and Alertmanager (:19093) with the shipped rules and routing, windows scaled to seconds"
rm -rf "$alerting"
"$dev" alert-configs --out "$alerting" --alertmanager 127.0.0.1:19093 --receiver-url http://127.0.0.1:19094
"$dev" alert-receiver --listen 127.0.0.1:19094 --log "$alerting/notifications.log" \
  >"$state/logs/alert-receiver-demo.log" 2>&1 &
echo $! >"$state/run/demo-alert-receiver.pid"
prometheus-alertmanager --config.file="$alerting/alertmanager.yml" --storage.path="$alerting/alertmanager" \
  --web.listen-address=127.0.0.1:19093 --cluster.listen-address= >"$state/logs/alertmanager-demo.log" 2>&1 &
echo $! >"$state/run/demo-alertmanager.pid"
prometheus --config.file="$alerting/prometheus.yml" --storage.tsdb.path="$alerting/tsdb" \
  --web.listen-address=127.0.0.1:19090 >"$state/logs/prometheus-demo.log" 2>&1 &
echo $! >"$state/run/demo-prometheus.pid"

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
echo
echo "== a biased scenario: applicants aged <= 25 made to look riskier (ids $run_id-biased-*), 500/s for up to 60 s"
"$dev" replay --id-prefix "$run_id-biased" --inject bias --protected independent --rate 500 --count 30000 >/dev/null &
replay_pid=$!
started=$(date +%s)
echo "== Alertmanager ($alertmanager_url) lists:"
"$dev" wait-alert --alertmanager "$alertmanager_url" --alertname CreditWorkerDisparateImpact \
  --label attribute=age_band --label group='<=25' --timeout-seconds 90
echo "  ($(($(date +%s) - started)) s after the biased replay began)"
for _ in $(seq 1 150); do
  grep -q "^/model-risk .*CreditWorkerDisparateImpact" "$alerting/notifications.log" 2>/dev/null && break
  sleep 0.2
done
if grep -q "^/model-risk .*CreditWorkerDisparateImpact" "$alerting/notifications.log" 2>/dev/null; then
  echo "== routed to the model-risk receiver (/model-risk) $(($(date +%s) - started)) s after the biased replay began"
else
  echo "== the model-risk receiver got no notification yet; see .stack/logs/alertmanager-demo.log"
fi
kill "$replay_pid" 2>/dev/null || true
wait "$replay_pid" 2>/dev/null || true
# A worker restarted within the hour rebuilds its window with an earlier run's biased decisions,
# and its alert fires (once) as it starts.
echo "== the worker's own alert events on the alerts topic (credit-alerts) since it started:"
"$dev" alert-events --since-ms "$worker_started_ms" --at-least 1

echo
echo "== the model-risk report of this run (event time since the worker started)"
report_dir="$state/reports/$run_id"
"$bin" report --config config/default.toml --from "$(date -u -d "@$((worker_started_ms / 1000 - 60))" +%Y-%m-%dT%H:%M:%SZ)" \
  --out "$report_dir"
echo "   open $report_dir/report.html (self-contained; the same figures in report.json)"

cat <<MSG

Look further (the worker is still running, pid $(cat "$state/run/demo-worker.pid")):
  metrics     curl -s $metrics_url | grep credit_worker_
  readiness   curl -s http://127.0.0.1:9464/ready
  audit rows  psql $database_url -c "SELECT application_id, decision, round(probability_of_default::numeric, 3) AS pd, model_version FROM decision_audit WHERE application_id LIKE '$run_id-%' ORDER BY application_id LIMIT 10"
  models      curl -s -H "Authorization: Bearer \$(cat $token_file)" http://127.0.0.1:9464/admin/model
  alerts      $alertmanager_url/#/alerts, Prometheus http://127.0.0.1:19090/alerts
  notified    $alerting/notifications.log
  report      $report_dir/report.html
  worker log  .stack/logs/worker-demo.log
  stop        make stack-down
MSG
