//! Alert events go out on a plain producer, apart from the decisions' transactions: at least
//! once, each send awaited.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::kafka::client_config;
use super::SinkError;

/// A plain producer for alert events (state changes, at least once).
pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    /// Creates the producer (acks=all; extra properties passed through).
    pub fn new(bootstrap_servers: &str, client_properties: &BTreeMap<String, String>) -> Result<Self, SinkError> {
        Ok(Self { producer: client_config(bootstrap_servers, client_properties).create()? })
    }

    /// Sends one record and waits for the broker's acknowledgement.
    pub async fn send(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), SinkError> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        self.producer.send(record, Duration::from_secs(30)).await.map_err(|(error, _)| error)?;
        Ok(())
    }

    /// Waits for queued records to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        Ok(self.producer.flush(timeout)?)
    }
}
