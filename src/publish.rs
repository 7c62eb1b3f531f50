//! Decisions and dead letters to Kafka. A batch counts as published only when the broker
//! has acknowledged every record of it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use futures::future::try_join_all;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::process::{DeadLetter, InputRecord};

/// Header names on dead-letter records.
pub mod headers {
    pub const ERROR_KIND: &str = "dlq.error.kind";
    pub const ERROR_MESSAGE: &str = "dlq.error.message";
    pub const SOURCE_TOPIC: &str = "dlq.source.topic";
    pub const SOURCE_PARTITION: &str = "dlq.source.partition";
    pub const SOURCE_OFFSET: &str = "dlq.source.offset";
    pub const FAILED_AT: &str = "dlq.failed_at";
}

/// Producer for the decisions and dead-letter topics.
pub struct Publisher {
    producer: FutureProducer,
    decisions_topic: String,
    dead_letter_topic: String,
}

/// A record to publish.
pub enum Publication<'a> {
    Decision { application_id: &'a str, payload: &'a [u8] },
    DeadLetter { record: &'a InputRecord, reason: &'a DeadLetter },
}

impl Publisher {
    /// Creates the producer (acks=all; extra properties passed through).
    pub fn new(
        bootstrap_servers: &str,
        client_properties: &BTreeMap<String, String>,
        decisions_topic: &str,
        dead_letter_topic: &str,
    ) -> Result<Self, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap_servers)
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        for (key, value) in client_properties {
            config.set(key, value);
        }
        Ok(Self {
            producer: config.create()?,
            decisions_topic: decisions_topic.to_owned(),
            dead_letter_topic: dead_letter_topic.to_owned(),
        })
    }

    /// Sends every publication and waits until the broker acknowledged all of them.
    pub async fn publish_all(&self, publications: &[Publication<'_>]) -> Result<(), KafkaError> {
        let failed_at = Utc::now().to_rfc3339();
        let deliveries = publications.iter().map(|publication| async {
            let result = match publication {
                Publication::Decision { application_id, payload } => {
                    let record = FutureRecord::to(&self.decisions_topic).key(*application_id).payload(*payload);
                    self.producer.send(record, Duration::from_secs(30)).await
                }
                Publication::DeadLetter { record, reason } => {
                    let partition = record.partition.to_string();
                    let offset = record.offset.to_string();
                    let headers = OwnedHeaders::new()
                        .insert(header(headers::ERROR_KIND, reason.kind))
                        .insert(header(headers::ERROR_MESSAGE, &reason.message))
                        .insert(header(headers::SOURCE_TOPIC, &record.topic))
                        .insert(header(headers::SOURCE_PARTITION, &partition))
                        .insert(header(headers::SOURCE_OFFSET, &offset))
                        .insert(header(headers::FAILED_AT, &failed_at));
                    let mut out: FutureRecord<'_, [u8], [u8]> =
                        FutureRecord::to(&self.dead_letter_topic).headers(headers);
                    if let Some(key) = &record.key {
                        out = out.key(key.as_slice());
                    }
                    if let Some(value) = &record.value {
                        out = out.payload(value.as_slice());
                    }
                    self.producer.send(out, Duration::from_secs(30)).await
                }
            };
            result.map(|_| ()).map_err(|(error, _)| error)
        });
        try_join_all(deliveries).await.map(|_| ())
    }

    /// Sends one record and waits for the broker's acknowledgement.
    pub async fn send(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), KafkaError> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        self.producer.send(record, Duration::from_secs(30)).await.map(|_| ()).map_err(|(error, _)| error)
    }

    /// Waits for queued records to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header { key, value: Some(value) }
}
