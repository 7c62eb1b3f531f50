//! Announcements to Kafka. Decisions and dead letters go out in Kafka transactions that also
//! commit the consumer's offsets (`send_offsets_to_transaction`): a `read_committed` reader sees
//! each batch's announcements exactly once, or not at all until the batch is retried.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::TopicPartitionList;

use super::SinkError;
use crate::domain::{DeadLetter, InputRecord};

/// Header names on dead-letter records.
pub mod headers {
    pub const ERROR_KIND: &str = "dlq.error.kind";
    pub const ERROR_MESSAGE: &str = "dlq.error.message";
    pub const SOURCE_TOPIC: &str = "dlq.source.topic";
    pub const SOURCE_PARTITION: &str = "dlq.source.partition";
    pub const SOURCE_OFFSET: &str = "dlq.source.offset";
    pub const FAILED_AT: &str = "dlq.failed_at";
    /// On decisions and dead letters: `<producer run>:<transaction number>`, the Kafka
    /// transaction the record went out in (records of one transaction share it).
    pub const TRANSACTION: &str = "credit.transaction";
}

/// A record to announce.
pub enum Publication<'a> {
    Decision { application_id: &'a str, payload: &'a [u8] },
    DeadLetter { record: &'a InputRecord, reason: &'a DeadLetter },
}

/// How long one transaction step may take before it counts as failed.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a flush sleeps between looks at what is still in flight.
const FLUSH_STEP: Duration = Duration::from_micros(250);

/// How often a transaction step is tried while librdkafka says retrying it can help (a step
/// that timed out is resumed, not started again).
const STEP_ATTEMPTS: u32 = 3;

/// A producer without a polling thread: [`DecisionProducer::publish`] serves its events.
type Transactional = BaseProducer<DefaultProducerContext>;

/// The transactional producer of the decisions and dead-letter topics. Its calls block: run
/// them off the async runtime. A producer left unusable (a fatal error such as a broker that
/// lost its transaction state, or a transaction neither committed nor aborted in time) is
/// replaced by a new one with the same transactional id, whose initialisation settles the old
/// transaction at the coordinator; a producer fenced by another instance with that id is not
/// replaced: that instance took over, this one must stop.
pub struct DecisionProducer {
    producer: std::sync::Mutex<std::sync::Arc<Transactional>>,
    /// Set when the current producer must be replaced before its next transaction.
    discarded: std::sync::atomic::AtomicBool,
    config: ClientConfig,
    decisions_topic: String,
    dead_letter_topic: String,
    /// This producer's run: random, new on every start.
    run: String,
    /// Transactions begun so far.
    transactions: std::sync::atomic::AtomicU64,
}

/// Error codes that mean another instance with our transactional id took over.
fn fenced(code: RDKafkaErrorCode) -> bool {
    matches!(code, RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::Fenced | RDKafkaErrorCode::InvalidProducerEpoch)
}

/// The transactional producer's configuration.
fn transactional_config(
    bootstrap_servers: &str,
    client_properties: &BTreeMap<String, String>,
    transactional_id: &str,
) -> ClientConfig {
    let mut config = client_config(bootstrap_servers, client_properties);
    config.set("transactional.id", transactional_id).set("enable.idempotence", "true");
    config
}

pub(super) fn client_config(bootstrap_servers: &str, client_properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap_servers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (key, value) in client_properties {
        config.set(key, value);
    }
    config
}

impl DecisionProducer {
    /// Creates the producer with `transactional_id` and initialises its transactions, fencing
    /// any earlier incarnation with the same id (blocking).
    pub fn start(
        bootstrap_servers: &str,
        client_properties: &BTreeMap<String, String>,
        transactional_id: &str,
        decisions_topic: &str,
        dead_letter_topic: &str,
    ) -> Result<Self, SinkError> {
        let config = transactional_config(bootstrap_servers, client_properties, transactional_id);
        let producer = std::sync::Arc::new(initialised(&config)?);
        Ok(Self {
            producer: std::sync::Mutex::new(producer),
            discarded: std::sync::atomic::AtomicBool::new(false),
            config,
            decisions_topic: decisions_topic.to_owned(),
            dead_letter_topic: dead_letter_topic.to_owned(),
            run: format!("{:016x}", rand::random::<u64>()),
            transactions: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// This producer's run, the first part of its records' [`headers::TRANSACTION`].
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The producer to use, replacing one discarded or left unusable by a fatal error that is
    /// not fencing (blocking). Once this returns, the transactions of replaced producers are
    /// settled: committed or aborted at the coordinator.
    fn current(&self) -> Result<std::sync::Arc<Transactional>, SinkError> {
        use std::sync::atomic::Ordering;
        let mut producer = self.producer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let fatal = producer.client().fatal_error();
        if let Some((code, reason)) = &fatal {
            if fenced(*code) {
                return Err(SinkError::Fenced(reason.clone()));
            }
            tracing::warn!(%code, %reason, "the transactional producer failed fatally; starting a new one");
        }
        if fatal.is_some() || self.discarded.load(Ordering::Acquire) {
            let fresh = std::sync::Arc::new(initialised(&self.config)?);
            self.discarded.store(false, Ordering::Release);
            let old = std::mem::replace(&mut *producer, fresh);
            // Dropping waits on librdkafka; the old producer is fenced already.
            let _ = std::thread::Builder::new().name("producer-drop".into()).spawn(move || drop(old));
        }
        Ok(std::sync::Arc::clone(&producer))
    }

    /// Settles the transactions of a producer left in doubt by replacing it (blocking): after
    /// this, the group's committed offsets show whether its last transaction committed.
    pub fn settle(&self) -> Result<(), SinkError> {
        self.current().map(drop)
    }

    /// Marks the current producer for replacement: its transaction state is not known.
    fn discard(&self) {
        tracing::warn!("the transactional producer's transaction is unsettled; it will be replaced");
        self.discarded.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Aborts the transaction of `producer`, or discards the producer if that fails.
    fn abort(&self, producer: &Transactional) {
        if producer.client().fatal_error().is_some() {
            return;
        }
        if let Err(error) = resumed("abort_transaction", || producer.abort_transaction(TRANSACTION_TIMEOUT)) {
            tracing::warn!(%error, "aborting the transaction failed");
            self.discard();
        }
    }

    /// Drops the producer, waiting at most `timeout` for librdkafka to let go of it.
    pub fn close(self, timeout: Duration) {
        let (closed, done) = std::sync::mpsc::channel();
        let _ = std::thread::Builder::new().name("producer-close".into()).spawn(move || {
            drop(self);
            let _ = closed.send(());
        });
        if done.recv_timeout(timeout).is_err() {
            tracing::warn!(?timeout, "the producer did not close in time; leaving it to the process exit");
        }
    }

    /// Announces `publications` and commits `offsets` for the consumer group `group`, in one
    /// transaction (blocking). On failure before the commit was asked for, the transaction is
    /// aborted: nothing of it is visible. A commit that fails without saying it was not applied
    /// leaves the transaction in doubt ([`SinkError::InDoubt`]): the producer is replaced, and
    /// the caller finds the outcome in the group's committed offsets.
    pub fn publish(
        &self,
        publications: &[Publication<'_>],
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), SinkError> {
        let producer = self.current()?;
        if let Err(error) = producer.begin_transaction() {
            self.discard();
            return Err(error.into());
        }
        let number = self.transactions.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let transaction = format!("{}:{number}", self.run);
        let sent = self.send_all(&producer, &transaction, publications).and_then(|()| {
            let step = || producer.send_offsets_to_transaction(offsets, group, TRANSACTION_TIMEOUT);
            resumed("send_offsets_to_transaction", step)?;
            Ok(flush(&producer, TRANSACTION_TIMEOUT)?)
        });
        if let Err(error) = sent {
            self.abort(&producer);
            return Err(error);
        }
        // rdkafka flushes the queue before it asks for the commit: a flush that times out before
        // any commit was asked for leaves the transaction open, to be aborted.
        let requested = std::cell::Cell::new(false);
        let commit = || {
            let result = producer.commit_transaction(TRANSACTION_TIMEOUT);
            requested.set(requested.get() || !matches!(result, Err(KafkaError::Flush(_))));
            result
        };
        match resumed("commit_transaction", commit) {
            Ok(()) => Ok(()),
            Err(error @ KafkaError::Flush(_)) if !requested.get() => {
                self.abort(&producer);
                Err(error.into())
            }
            Err(KafkaError::Transaction(error)) if error.txn_requires_abort() => {
                self.abort(&producer);
                Err(KafkaError::Transaction(error).into())
            }
            Err(error) => {
                self.discard();
                Err(SinkError::InDoubt(error.to_string()))
            }
        }
    }

    fn send_all(
        &self,
        producer: &Transactional,
        transaction: &str,
        publications: &[Publication<'_>],
    ) -> Result<(), SinkError> {
        let failed_at = Utc::now().to_rfc3339();
        for publication in publications {
            match publication {
                Publication::Decision { application_id, payload } => {
                    let record = BaseRecord::<'_, str, [u8]>::to(&self.decisions_topic)
                        .key(application_id)
                        .payload(payload)
                        .headers(OwnedHeaders::new().insert(header(headers::TRANSACTION, transaction)));
                    send(producer, record)?;
                }
                Publication::DeadLetter { record, reason } => {
                    let (partition, offset) = (record.partition.to_string(), record.offset.to_string());
                    let headers = OwnedHeaders::new()
                        .insert(header(headers::ERROR_KIND, reason.kind))
                        .insert(header(headers::ERROR_MESSAGE, &reason.message))
                        .insert(header(headers::SOURCE_TOPIC, &record.topic))
                        .insert(header(headers::SOURCE_PARTITION, &partition))
                        .insert(header(headers::SOURCE_OFFSET, &offset))
                        .insert(header(headers::FAILED_AT, &failed_at))
                        .insert(header(headers::TRANSACTION, transaction));
                    let mut out = BaseRecord::<'_, [u8], [u8]>::to(&self.dead_letter_topic).headers(headers);
                    if let Some(key) = &record.key {
                        out = out.key(&key[..]);
                    }
                    if let Some(value) = &record.value {
                        out = out.payload(&value[..]);
                    }
                    send(producer, out)?;
                }
            }
        }
        Ok(())
    }
}

/// Runs a transaction `step`, resuming it while librdkafka says retrying can help (a timeout),
/// at most [`STEP_ATTEMPTS`] times.
fn resumed(name: &str, mut step: impl FnMut() -> rdkafka::error::KafkaResult<()>) -> rdkafka::error::KafkaResult<()> {
    let mut attempt = 1;
    loop {
        match step() {
            Err(KafkaError::Transaction(error)) if error.is_retriable() && attempt < STEP_ATTEMPTS => {
                tracing::warn!(%error, attempt, step = name, "a transaction step failed; resuming it");
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Waits until every queued record is delivered, serving delivery reports. rdkafka's own flush
/// (the one `commit_transaction` starts with) polls in steps that never end early, of up to
/// 100 ms: every commit took 100 ms. Here each step asks librdkafka to flush without waiting (it
/// sends lingering records at once), serves one event, and sleeps [`FLUSH_STEP`].
fn flush(producer: &Transactional, timeout: Duration) -> rdkafka::error::KafkaResult<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match producer.flush(Duration::ZERO) {
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) if std::time::Instant::now() < deadline => {
                producer.poll(Duration::ZERO);
                std::thread::sleep(FLUSH_STEP);
            }
            result => return result,
        }
    }
}

/// A producer with `config`, its transactions initialised (fencing an earlier incarnation).
fn initialised(config: &ClientConfig) -> Result<Transactional, SinkError> {
    let producer: Transactional = config.create()?;
    producer.init_transactions(TRANSACTION_TIMEOUT)?;
    Ok(producer)
}

/// Queues one record, waiting while librdkafka's queue is full.
fn send<K: rdkafka::message::ToBytes + ?Sized, P: rdkafka::message::ToBytes + ?Sized>(
    producer: &Transactional,
    mut record: BaseRecord<'_, K, P>,
) -> Result<(), SinkError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => return Err(error.into()),
        }
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header { key, value: Some(value) }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;

    use super::*;

    /// A transaction commits as soon as its records are delivered. With rdkafka's own flush
    /// (inside `commit_transaction`), every commit waited out a 100 ms poll step: five
    /// transactions took over 500 ms against librdkafka's in-process mock cluster.
    #[test]
    fn a_commit_does_not_wait_out_a_poll_step() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("decisions", 2, 1).expect("topic");
        let config = transactional_config(&cluster.bootstrap_servers(), &BTreeMap::new(), "flush-test");
        let producer = initialised(&config).expect("transactional producer");
        let started = std::time::Instant::now();
        for transaction in 0..5 {
            producer.begin_transaction().expect("begin");
            for index in 0..100 {
                let key = format!("{transaction}-{index}");
                send(&producer, BaseRecord::<'_, str, [u8]>::to("decisions").key(&key).payload(&b"decision"[..]))
                    .expect("send");
            }
            flush(&producer, TRANSACTION_TIMEOUT).expect("flush");
            assert_eq!(producer.in_flight_count(), 0, "every record delivered");
            producer.commit_transaction(TRANSACTION_TIMEOUT).expect("commit");
        }
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(400), "five transactions took {elapsed:?}");
    }

    /// A record the broker refuses for good fails its transaction, and the flush returns soon
    /// after the refusal rather than at its timeout.
    #[test]
    fn a_refused_record_fails_its_transaction_promptly() {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("decisions", 1, 1).expect("topic");
        let config = transactional_config(&cluster.bootstrap_servers(), &BTreeMap::new(), "refused-test");
        let producer = initialised(&config).expect("transactional producer");
        producer.begin_transaction().expect("begin");
        let refusal = RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
        cluster.request_errors(RDKafkaApiKey::Produce, &[refusal; 5]);
        send(&producer, BaseRecord::<'_, str, [u8]>::to("decisions").key("k").payload(&b"decision"[..])).expect("send");
        let started = std::time::Instant::now();
        let flushed = flush(&producer, TRANSACTION_TIMEOUT);
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(2), "the flush took {elapsed:?} ({flushed:?})");
        assert!(
            producer.commit_transaction(TRANSACTION_TIMEOUT).is_err(),
            "a transaction with a refused record committed"
        );
    }
}
