//! The alert state changes emitted in the period, read back from the alerts topic (committed
//! records only) from the offsets of the period's start. A partition's end offset is not
//! trusted (Tansu reports its last batch's start + 1): reading stops once every partition has
//! passed the period's end, or nothing has arrived for `idle`.

use std::time::{Duration, Instant};

use apache_avro::reader::datum::GenericDatumReader;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::ReportError;
use crate::config::KafkaConfig;
use crate::domain::{MonitoringAlert, MONITORING_ALERT};

/// Bytes before the Avro body: magic byte and schema id.
const WIRE_HEADER: usize = 5;

/// The alert events of `kafka.alerts_topic` emitted in `[from_ms, to_ms)`, oldest first.
pub fn emitted(
    kafka: &KafkaConfig,
    from_ms: i64,
    to_ms: i64,
    idle: Duration,
) -> Result<Vec<MonitoringAlert>, ReportError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", format!("credit-worker-report-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50");
    for (key, value) in &kafka.client_properties {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create()?;
    let topic = kafka.alerts_topic.as_str();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|entry| entry.name() == topic)
        .flat_map(|entry| entry.partitions().iter().map(|partition| partition.id()))
        .collect();
    if partitions.is_empty() {
        return Err(ReportError::NoAlertsTopic(topic.to_owned()));
    }
    let mut wanted = TopicPartitionList::new();
    for partition in &partitions {
        wanted.add_partition_offset(topic, *partition, Offset::Offset(from_ms))?;
    }
    let starts = consumer.offsets_for_times(wanted, Duration::from_secs(10))?;
    consumer.assign(&starts)?;
    let reader = GenericDatumReader::builder(&MONITORING_ALERT)
        .build()
        .map_err(|error| ReportError::Alert(error.to_string()))?;
    let mut passed: Vec<i32> = Vec::new();
    let mut alerts = Vec::new();
    let mut last_arrival = Instant::now();
    while passed.len() < partitions.len() && last_arrival.elapsed() < idle {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else { continue };
        let message = message?;
        last_arrival = Instant::now();
        let body = message.payload().and_then(|payload| payload.get(WIRE_HEADER..)).unwrap_or_default();
        let alert: MonitoringAlert = match reader.read_deser(&mut &body[..]) {
            Ok(alert) => alert,
            Err(error) => {
                tracing::warn!(partition = message.partition(), offset = message.offset(), %error, "an alert event that does not decode is left out");
                continue;
            }
        };
        if alert.emitted_at >= to_ms {
            if !passed.contains(&message.partition()) {
                passed.push(message.partition());
            }
        } else if alert.emitted_at >= from_ms {
            alerts.push(alert);
        }
    }
    alerts.sort_by_key(|alert| alert.emitted_at);
    Ok(alerts)
}
