//! Alert events: the monitors are evaluated every `alerts.evaluation_interval_ms`, and each alert
//! state change is published to the alerts topic, retried until acknowledged.

use std::sync::Arc;
use std::time::Duration;

use apache_avro::writer::datum::GenericDatumWriter;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::retry::RetryPolicy;
use crate::codec::encode_framed;
use crate::domain::MONITORING_ALERT;
use crate::monitor::Monitoring;
use crate::sinks::Publisher;

/// Where alert events go.
pub struct AlertOutput {
    pub publisher: Arc<Publisher>,
    pub topic: String,
    pub schema_id: u32,
    pub retry: RetryPolicy,
}

/// Evaluates every `interval` until `shutdown`, publishing alert events.
pub async fn run_evaluator(
    monitoring: Arc<Monitoring>,
    output: AlertOutput,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let writer = GenericDatumWriter::builder(&MONITORING_ALERT).build().expect("bundled alert schema");
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for alert in monitoring.evaluate(Utc::now().timestamp_millis()) {
            let payload = match encode_framed(&writer, &alert, output.schema_id) {
                Ok(payload) => payload,
                Err(error) => {
                    warn!(%error, "cannot encode an alert event");
                    continue;
                }
            };
            info!(alert = %alert.alert_key, state = ?alert.state, value = alert.value, "alert state change");
            let send = || output.publisher.send(&output.topic, &alert.alert_key, &payload);
            let published = output
                .retry
                .run(&shutdown, send, |error, _| warn!(%error, "publishing an alert failed; retrying"))
                .await;
            if published.is_err() {
                return;
            }
        }
        monitoring.evaluation_published();
    }
}
