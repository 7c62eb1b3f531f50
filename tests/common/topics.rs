//! Topics read back from the beginning, and a group's committed offsets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{unique, BOOTSTRAP};

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

/// Reads `topic` from the beginning (no group, `read_committed`) until `expected` records
/// arrived or `timeout`.
pub fn read_topic(topic: &str, expected: usize, timeout: Duration) -> Vec<ReadRecord> {
    read_topic_until(topic, timeout, |records| records.len() >= expected)
}

/// Reads `topic` from the beginning until `expected` distinct keys arrived (duplicates allowed).
pub fn read_topic_keys(topic: &str, expected: usize, timeout: Duration) -> Vec<ReadRecord> {
    let mut keys = std::collections::HashSet::new();
    let mut seen = 0;
    read_topic_until(topic, timeout, move |records| {
        for record in &records[seen..] {
            keys.insert(record.key.clone());
        }
        seen = records.len();
        keys.len() >= expected
    })
}

fn read_topic_until(topic: &str, timeout: Duration, done: impl FnMut(&[ReadRecord]) -> bool) -> Vec<ReadRecord> {
    read_topic_as(BOOTSTRAP, topic, "read_committed", timeout, done)
}

/// [`read_topic`] on the broker at `bootstrap`.
pub fn read_topic_at(bootstrap: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<ReadRecord> {
    read_topic_as(bootstrap, topic, "read_committed", timeout, |records| records.len() >= expected)
}

/// Reads `topic` as a plain `read_uncommitted` consumer would (on Apache Kafka it also sees the
/// records of open and aborted transactions).
pub fn read_topic_uncommitted(topic: &str, expected: usize, timeout: Duration) -> Vec<ReadRecord> {
    read_topic_as(BOOTSTRAP, topic, "read_uncommitted", timeout, |records| records.len() >= expected)
}

fn read_topic_as(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
    timeout: Duration,
    mut done: impl FnMut(&[ReadRecord]) -> bool,
) -> Vec<ReadRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment.add_partition_offset(topic, partition.id(), Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while !done(&records) && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            records.push(ReadRecord {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(|key| String::from_utf8_lossy(key).into_owned()),
                value: message.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
    records
}

/// Offsets committed by `group` for `topic` (partition → offset; absent = none committed).
pub fn committed_offsets(group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", BOOTSTRAP).set("group.id", group).create().unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|element| match element.offset() {
            Offset::Offset(offset) => Some((element.partition(), offset)),
            _ => None,
        })
        .collect()
}
