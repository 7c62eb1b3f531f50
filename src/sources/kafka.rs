//! The Kafka consumer: batches of records copied into one buffer each, offsets stored only when told, partition
//! assignment tracked for readiness and metrics.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{info, warn};

use super::{Assignment, RecordBuffer, SourceError};
use crate::domain::InputRecord;
use crate::telemetry::{Metrics, Readiness};

/// A change in this replica's input partitions.
#[derive(Debug, Clone, PartialEq)]
pub enum PartitionEvent {
    /// Newly assigned partitions with their assignment epochs (0 without an [`Assignment`]).
    Assigned {
        partitions: Vec<(i32, u64)>,
        at: chrono::DateTime<Utc>,
    },
    Revoked {
        partitions: Vec<i32>,
    },
}

/// Consumer callbacks: log rebalances and report assignment changes. Nothing blocks here: with
/// auto-commit librdkafka commits stored offsets on revoke itself, and the input consumer's
/// offsets are committed in the decisions' Kafka transactions.
pub struct SourceContext {
    /// The input consumer reports assignment to metrics and readiness; others (outcomes) do not.
    primary: Option<(Metrics, Arc<Readiness>)>,
    /// Kept in step with the consumer's assignment, inside the rebalance callbacks, so no record
    /// of a partition is handed out before the partition is registered.
    assignment: Option<Arc<Assignment>>,
    partition_events: UnboundedSender<PartitionEvent>,
}

fn partition_ids(list: &TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|element| element.partition()).collect()
}

impl ClientContext for SourceContext {
    /// Consumer lag per assigned partition, from librdkafka's statistics (`statistics.interval.ms`).
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some((metrics, _)) = &self.primary else { return };
        metrics.consumer_lag.reset();
        for topic in statistics.topics.values() {
            for (partition, stats) in &topic.partitions {
                if *partition >= 0 && stats.consumer_lag >= 0 {
                    metrics.consumer_lag.with_label_values(&[&partition.to_string()]).set(stats.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            info!(partitions = partitions.count(), "partitions revoked");
            let partitions = partition_ids(partitions);
            if let Some(assignment) = &self.assignment {
                assignment.revoked(&partitions);
            }
            let _ = self.partition_events.send(PartitionEvent::Revoked { partitions });
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = consumer.assignment().map(|list| list.count()).unwrap_or(0);
        if let Some((metrics, readiness)) = &self.primary {
            metrics.assigned_partitions.set(assigned as i64);
            readiness.consumer_joined.store(true, Ordering::Release);
        }
        match rebalance {
            Rebalance::Assign(partitions) => {
                info!(assigned = partitions.count(), "partitions assigned");
                let partitions = partition_ids(partitions);
                let epochs = match &self.assignment {
                    Some(assignment) => {
                        let epochs = assignment.assigned(&partitions);
                        partitions.iter().map(|partition| (*partition, epochs[partition])).collect()
                    }
                    None => partitions.iter().map(|partition| (*partition, 0)).collect(),
                };
                let event = PartitionEvent::Assigned { partitions: epochs, at: Utc::now() };
                let _ = self.partition_events.send(event);
            }
            Rebalance::Revoke(_) => info!(remaining = assigned, "partitions revoked"),
            Rebalance::Error(error) => warn!(%error, "rebalance error"),
        }
    }
}

/// How a consumer is set up.
pub struct SourceOptions<'a> {
    pub bootstrap_servers: &'a str,
    pub group_id: &'a str,
    pub topic: &'a str,
    pub session_timeout_ms: u64,
    /// Static membership (`group.instance.id`): a restarted member gets its partitions back
    /// without waiting for a rebalance.
    pub instance_id: Option<&'a str>,
    /// Offsets are committed in Kafka transactions (no auto-commit; `read_committed`), rather
    /// than stored with [`Source::store`] and auto-committed.
    pub transactional: bool,
    /// Longest wait of a fetch for records (`fetch.wait.max.ms`). A broker that does not answer
    /// a long poll early (Tansu) holds records up to this long, and every empty poll costs it
    /// CPU: short for the input, long for a topic whose latency does not matter.
    pub fetch_wait_max_ms: u32,
    pub client_properties: &'a BTreeMap<String, String>,
}

/// A consumer of one topic (the input topic, or the outcomes topic).
pub struct Source {
    consumer: StreamConsumer<SourceContext>,
    topic: String,
}

impl Source {
    /// Subscribes as `options` say, with cooperative-sticky assignment.
    pub fn subscribe(
        options: &SourceOptions<'_>,
        primary: Option<(Metrics, Arc<Readiness>)>,
        assignment: Option<Arc<Assignment>>,
    ) -> Result<(Self, UnboundedReceiver<PartitionEvent>), SourceError> {
        let session_timeout_ms = options.session_timeout_ms;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", options.bootstrap_servers)
            .set("group.id", options.group_id)
            .set("enable.auto.commit", (!options.transactional).to_string())
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", session_timeout_ms.to_string())
            .set("heartbeat.interval.ms", (session_timeout_ms / 3).max(100).to_string())
            .set("partition.assignment.strategy", "cooperative-sticky")
            // Overridable through kafka.client_properties.
            .set("fetch.wait.max.ms", options.fetch_wait_max_ms.to_string())
            // Bounds the prefetched backlog in memory (librdkafka's default is 64 MiB).
            .set("queued.max.messages.kbytes", "16384")
            .set("statistics.interval.ms", "5000");
        if let Some(instance_id) = options.instance_id {
            config.set("group.instance.id", instance_id);
        }
        for (key, value) in options.client_properties {
            config.set(key, value);
        }
        let (sender, receiver) = unbounded_channel();
        let context = SourceContext { primary, assignment, partition_events: sender };
        let consumer: StreamConsumer<SourceContext> = config.create_with_context(context)?;
        consumer.subscribe(&[options.topic])?;
        Ok((Self { consumer, topic: options.topic.to_owned() }, receiver))
    }

    /// Closes the consumer, waiting at most `timeout` (librdkafka's close can wait on the broker,
    /// and nothing is left to commit by then: the process may exit without it).
    pub fn close(self, timeout: Duration) {
        let (closed, done) = std::sync::mpsc::channel();
        let _ = std::thread::Builder::new().name("consumer-close".into()).spawn(move || {
            drop(self);
            let _ = closed.send(());
        });
        if done.recv_timeout(timeout).is_err() {
            warn!(?timeout, "the consumer did not close in time; leaving it to the process exit");
        }
    }

    /// The consumer group's current metadata, for committing offsets in a Kafka transaction.
    pub fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    /// Waits for one record, then takes what the consumer has fetched already, up to
    /// `max_records`; with a `max_wait` above zero it also waits that long for more to arrive.
    pub async fn next_batch(&self, max_records: usize, max_wait: Duration) -> Vec<InputRecord> {
        let mut batch = RecordBuffer::new(Arc::from(self.topic.as_str()), max_records);
        loop {
            match self.consumer.recv().await {
                Ok(message) => break copy(&mut batch, &message),
                Err(error) => {
                    warn!(%error, "consumer error");
                    self.count_error();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        while batch.len() < max_records {
            let ready = match self.consumer.recv().now_or_never() {
                Some(ready) => ready,
                None if max_wait.is_zero() => break,
                None => match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(received) => received,
                    Err(_) => break,
                },
            };
            match ready {
                Ok(message) => copy(&mut batch, &message),
                Err(error) => {
                    warn!(%error, "consumer error");
                    self.count_error();
                }
            }
        }
        batch.finish()
    }

    /// Stores the next offsets to consume (committed by the next auto-commit or [`Source::commit`]).
    /// Partitions no longer assigned are skipped: their records will be redelivered elsewhere.
    pub fn store(&self, next_offsets: &[(Arc<str>, i32, i64)]) {
        for (topic, partition, offset) in next_offsets {
            let mut list = TopicPartitionList::new();
            if list.add_partition_offset(topic, *partition, Offset::Offset(*offset)).is_ok() {
                if let Err(error) = self.consumer.store_offsets(&list) {
                    warn!(%error, partition, "offset not stored (partition revoked?)");
                }
            }
        }
    }

    fn count_error(&self) {
        if let Some((metrics, _)) = &self.consumer.context().primary {
            metrics.errors.with_label_values(&["kafka_consume"]).inc();
        }
    }

    /// Commits `offsets` for the group now (blocking), checked against the group's generation.
    pub fn commit_offsets(&self, offsets: &TopicPartitionList) -> Result<(), SourceError> {
        Ok(self.consumer.commit(offsets, CommitMode::Sync)?)
    }

    /// Whether the group's committed offsets reach `offsets` on every partition (blocking; with
    /// `read_committed`, offsets of a transaction still being settled are waited for).
    pub fn committed_through(&self, offsets: &TopicPartitionList) -> Result<bool, SourceError> {
        let committed = self.consumer.committed_offsets(offsets.clone(), Duration::from_secs(10))?;
        Ok(offsets.elements().iter().all(|wanted| {
            let reached = committed.find_partition(wanted.topic(), wanted.partition()).map(|element| element.offset());
            matches!((reached, wanted.offset()), (Some(Offset::Offset(reached)), Offset::Offset(wanted)) if reached >= wanted)
        }))
    }

    /// Commits stored offsets now.
    pub fn commit(&self) -> Result<(), SourceError> {
        Ok(self.consumer.commit_consumer_state(CommitMode::Sync)?)
    }
}

fn copy(batch: &mut RecordBuffer, message: &rdkafka::message::BorrowedMessage<'_>) {
    batch.push(message.partition(), message.offset(), message.key(), message.payload(), Utc::now());
}

/// Offsets as librdkafka takes them: (topic, partition, next offset to consume).
pub fn partition_list(offsets: &[(Arc<str>, i32, i64)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    list
}
