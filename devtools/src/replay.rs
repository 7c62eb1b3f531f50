//! `replay`: turns the German Credit CSV into `LoanApplication` events on a topic, with unique
//! ids, current event times, an optional rate limit, looping past the data set, and optional
//! deliberately malformed records (for testing the dead-letter path).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use schema_registry_converter::async_impl::avro::AvroEncoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};

use crate::dataset::{read_german_credit, LabeledApplication};
use credit_worker::domain::{LoanApplication, LoanOutcome, LOAN_APPLICATION_SCHEMA, LOAN_OUTCOME_SCHEMA};

/// Options of `credit-dev replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayOptions {
    /// German Credit CSV to replay.
    #[arg(long, default_value = "data/german_credit.csv")]
    pub data: PathBuf,
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:19092")]
    pub bootstrap_servers: String,
    /// Schema registry URL.
    #[arg(long, default_value = "http://127.0.0.1:18081")]
    pub schema_registry_url: String,
    /// Topic to produce to.
    #[arg(long, default_value = "loan-applications")]
    pub topic: String,
    /// Valid events to produce; past the data set's size the rows repeat (with new ids). Default: one pass.
    #[arg(long)]
    pub count: Option<usize>,
    /// Events per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Prefix of application ids (`<prefix>-00000001`).
    #[arg(long, default_value = "app")]
    pub id_prefix: String,
    /// Malformed records to add, cycling through every kind in [`MALFORMED_KINDS`].
    #[arg(long, default_value_t = 0)]
    pub malformed: usize,
    /// `independent` re-assigns the protected attributes across rows at random (seeded), so they
    /// carry no information about the credit features: a replay without bias.
    #[arg(long, value_enum, default_value = "as-recorded")]
    pub protected: ProtectedMode,
    /// Deliberate distortions: `bias` worsens the credit features of applicants aged 25 or
    /// younger; `drift` triples credit amounts and lengthens durations by 24 months for everyone.
    #[arg(long, value_enum)]
    pub inject: Vec<Injection>,
    /// Also publish each valid application's observed outcome (the data set's label) to this
    /// topic, after the applications.
    #[arg(long)]
    pub outcomes_topic: Option<String>,
    /// With `--outcomes-topic`: publish only the outcomes (of applications replayed earlier with
    /// the same `--id-prefix` and `--count`), as the lender's outcome feed would, later.
    #[arg(long, requires = "outcomes_topic")]
    pub outcomes_only: bool,
    /// Seed for `--protected independent`.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Every application's event time, in ms since the epoch (default: when it is produced);
    /// for testing the event-time policy with hostile values.
    #[arg(long, allow_negative_numbers = true)]
    pub event_time_ms: Option<i64>,
    /// The producer's `linger.ms`: how long a record may wait to share a request (it adds to
    /// every event's latency).
    #[arg(long, default_value_t = 10)]
    pub linger_ms: u32,
}

/// How protected attributes are replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtectedMode {
    AsRecorded,
    Independent,
}

/// A deliberate distortion of the replayed data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Injection {
    Bias,
    Drift,
}

/// Applies the protected-attribute mode and the injections to the data set's rows.
pub fn scenario_rows(
    mut rows: Vec<LabeledApplication>,
    protected: ProtectedMode,
    inject: &[Injection],
    seed: u64,
) -> Vec<LabeledApplication> {
    if protected == ProtectedMode::Independent {
        let mut attributes: Vec<_> = rows.iter().map(|row| row.protected_attributes.clone()).collect();
        attributes.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        for (row, attributes) in rows.iter_mut().zip(attributes) {
            row.protected_attributes = attributes;
        }
    }
    for row in &mut rows {
        let request = &mut row.credit_request;
        if inject.contains(&Injection::Bias) && row.protected_attributes.age_in_years.is_some_and(|age| age <= 25) {
            request.status_of_existing_checking_account = Some("... < 0 DM".into());
            request.savings_account_and_bonds = Some("... < 100 DM".into());
            request.credit_history = Some("delay in paying off in the past".into());
            request.duration_in_month = request.duration_in_month.map(|months| (months * 2).min(72));
        }
        if inject.contains(&Injection::Drift) {
            request.credit_amount = request.credit_amount.map(|amount| (amount * 3.0).min(1_000_000.0));
            request.duration_in_month = request.duration_in_month.map(|months| (months + 24).min(120));
        }
    }
    rows
}

/// Deliberately malformed records and the dead-letter reason each must get.
pub const MALFORMED_KINDS: [(&str, &str); 11] = [
    ("bad-magic", "bad_framing"),
    ("short-header", "bad_framing"),
    ("unknown-schema", "unknown_schema"),
    ("truncated-avro", "avro_decode"),
    ("missing-field", "missing_field"),
    ("unknown-category", "unknown_category"),
    ("zero-duration", "out_of_range"),
    ("negative-amount", "out_of_range"),
    ("nan-amount", "not_finite"),
    ("empty-value", "empty_value"),
    ("trailing-bytes", "trailing_bytes"),
];

/// What a replay produced.
#[derive(Debug, Clone, Copy)]
pub struct ReplayReport {
    pub valid: usize,
    pub malformed: usize,
    pub elapsed: Duration,
}

/// Produces the events and waits until the broker acknowledged all of them.
pub async fn replay(options: &ReplayOptions) -> Result<ReplayReport> {
    let rows = read_german_credit(&options.data)?;
    anyhow::ensure!(!rows.is_empty(), "{} has no rows", options.data.display());
    let rows = scenario_rows(rows, options.protected, &options.inject, options.seed);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &options.bootstrap_servers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", options.linger_ms.to_string())
        .set("message.timeout.ms", "60000")
        .create()
        .context("creating the Kafka producer")?;
    let registry = SrSettings::new_builder(options.schema_registry_url.clone())
        .set_timeout(Duration::from_secs(5))
        .build()
        .context("schema registry settings")?;
    let encoder = AvroEncoder::new(registry);
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        options.topic.clone(),
        false,
        SuppliedSchema::new(None, SchemaType::Avro, LOAN_APPLICATION_SCHEMA.to_owned()),
    );

    let valid = options.count.unwrap_or(rows.len());
    let total = valid + options.malformed;
    let progress = ProgressBar::new(total as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} replay [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    warm_up(&producer, &encoder, &strategy, &options.topic, &rows[0]).await?;
    let started = Instant::now();
    if options.outcomes_only {
        let topic = options.outcomes_topic.as_deref().context("--outcomes-only needs --outcomes-topic")?;
        publish_outcomes(&producer, &encoder, topic, options, &rows, valid).await?;
        producer.flush(Duration::from_secs(30)).context("flushing the producer")?;
        return Ok(ReplayReport { valid, malformed: 0, elapsed: started.elapsed() });
    }
    let mut deliveries = Deliveries::new(&producer, Some(&progress));
    for index in 0..total {
        if options.rate > 0.0 {
            let due = started + Duration::from_secs_f64(index as f64 / options.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let row = &rows[index % rows.len()];
        let (key, value) = if index < valid {
            let id = format!("{}-{:08}", options.id_prefix, index + 1);
            let bytes = encoder
                .encode_struct(application(&id, row, options.event_time_ms), &strategy)
                .await
                .context("encoding an application")?;
            (id, Some(bytes))
        } else {
            let (kind, _) = MALFORMED_KINDS[(index - valid) % MALFORMED_KINDS.len()];
            let id = format!("{}-bad-{:05}-{kind}", options.id_prefix, index - valid + 1);
            let bytes = malformed(kind, &id, row, &encoder, &strategy).await?;
            (id, bytes)
        };
        deliveries.send(&options.topic, &key, value.as_deref()).await?;
    }
    deliveries.finish().await?;
    producer.flush(Duration::from_secs(30)).context("flushing the producer")?;
    progress.finish_and_clear();
    if let Some(topic) = &options.outcomes_topic {
        publish_outcomes(&producer, &encoder, topic, options, &rows, valid).await?;
        producer.flush(Duration::from_secs(30)).context("flushing the producer")?;
    }
    Ok(ReplayReport { valid, malformed: options.malformed, elapsed: started.elapsed() })
}

async fn publish_outcomes(
    producer: &FutureProducer,
    encoder: &AvroEncoder,
    topic: &str,
    options: &ReplayOptions,
    rows: &[LabeledApplication],
    valid: usize,
) -> Result<()> {
    let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
        topic.to_owned(),
        false,
        SuppliedSchema::new(None, SchemaType::Avro, LOAN_OUTCOME_SCHEMA.to_owned()),
    );
    let mut deliveries = Deliveries::new(producer, None);
    for index in 0..valid {
        let outcome = LoanOutcome {
            application_id: format!("{}-{:08}", options.id_prefix, index + 1),
            defaulted: rows[index % rows.len()].defaulted,
            observed_at: chrono::Utc::now().timestamp_millis(),
        };
        let bytes = encoder.encode_struct(&outcome, &strategy).await.context("encoding an outcome")?;
        deliveries.send(topic, &outcome.application_id, Some(&bytes)).await?;
    }
    deliveries.finish().await
}

/// Connects the producer and looks the schema up before the first event is timed, so that a
/// rate limit and event times start from a ready producer.
async fn warm_up(
    producer: &FutureProducer,
    encoder: &AvroEncoder,
    strategy: &SubjectNameStrategy,
    topic: &str,
    row: &LabeledApplication,
) -> Result<()> {
    let (connecting, name) = (producer.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || connecting.client().fetch_metadata(Some(&name), Duration::from_secs(30)))
        .await?
        .with_context(|| format!("reading the metadata of {topic}"))?;
    encoder.encode_struct(application("warm-up", row, None), strategy).await.context("looking the schema up")?;
    Ok(())
}

/// Records handed to librdkafka as soon as they are made (so rate limits and event times hold),
/// acknowledgements collected as they arrive; a full local queue waits for acknowledgements.
struct Deliveries<'a> {
    producer: &'a FutureProducer,
    pending: FuturesUnordered<DeliveryFuture>,
    progress: Option<&'a ProgressBar>,
}

impl<'a> Deliveries<'a> {
    fn new(producer: &'a FutureProducer, progress: Option<&'a ProgressBar>) -> Self {
        Self { producer, pending: FuturesUnordered::new(), progress }
    }

    async fn send(&mut self, topic: &str, key: &str, value: Option<&[u8]>) -> Result<()> {
        loop {
            let mut record = FutureRecord::<str, [u8]>::to(topic).key(key);
            if let Some(value) = value {
                record = record.payload(value);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => match self.pending.next().await
                {
                    Some(result) => self.check(result)?,
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                },
                Err((error, _)) => return Err(error).context("producing a record"),
            }
        }
        while let Some(Some(result)) = self.pending.next().now_or_never() {
            self.check(result)?;
        }
        Ok(())
    }

    fn check(&self, result: Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>) -> Result<()> {
        match result {
            Ok(Ok(_)) => {
                if let Some(progress) = self.progress {
                    progress.inc(1);
                }
                Ok(())
            }
            Ok(Err((error, _))) => Err(error).context("delivering a record"),
            Err(_) => anyhow::bail!("the producer went away before acknowledging a record"),
        }
    }

    async fn finish(mut self) -> Result<()> {
        while let Some(result) = self.pending.next().await {
            self.check(result)?;
        }
        Ok(())
    }
}

fn application(id: &str, row: &LabeledApplication, event_time_ms: Option<i64>) -> LoanApplication {
    LoanApplication {
        application_id: id.to_owned(),
        event_time: event_time_ms.unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
        credit_request: row.credit_request.clone(),
        protected_attributes: row.protected_attributes.clone(),
    }
}

async fn malformed(
    kind: &str,
    id: &str,
    row: &LabeledApplication,
    encoder: &AvroEncoder,
    strategy: &SubjectNameStrategy,
) -> Result<Option<Vec<u8>>> {
    let mut event = application(id, row, None);
    let request = &mut event.credit_request;
    match kind {
        "missing-field" => request.credit_amount = None,
        "unknown-category" => request.purpose = Some("space travel".into()),
        "zero-duration" => request.duration_in_month = Some(0),
        "negative-amount" => request.credit_amount = Some(-100.0),
        "nan-amount" => request.credit_amount = Some(f64::NAN),
        _ => {}
    }
    let mut bytes = encoder.encode_struct(&event, strategy).await.context("encoding an application")?;
    match kind {
        "bad-magic" => bytes[0] = 1,
        "short-header" => bytes.truncate(3),
        "unknown-schema" => bytes[1..5].copy_from_slice(&0x7fff_fff0u32.to_be_bytes()),
        "truncated-avro" => bytes.truncate(5 + (bytes.len() - 5) / 2),
        "trailing-bytes" => bytes.extend_from_slice(&[0x02, 0x04, 0x06]),
        "empty-value" => return Ok(None),
        _ => {}
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<LabeledApplication> {
        read_german_credit(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/german_credit.csv")))
            .unwrap()
    }

    /// `independent` permutes the protected attributes (same multiset, other rows), leaving the
    /// credit features alone; `bias` touches only the young; `drift` touches everyone.
    #[test]
    fn scenarios_change_what_they_say() {
        let original = rows();
        let independent = scenario_rows(original.clone(), ProtectedMode::Independent, &[], 7);
        let ages = |rows: &[LabeledApplication]| {
            let mut ages: Vec<_> = rows.iter().map(|row| row.protected_attributes.age_in_years).collect();
            ages.sort();
            ages
        };
        assert_eq!(ages(&independent), ages(&original));
        let moved =
            original.iter().zip(&independent).filter(|(a, b)| a.protected_attributes != b.protected_attributes).count();
        assert!(moved > 500, "{moved}");
        assert!(original.iter().zip(&independent).all(|(a, b)| a.credit_request == b.credit_request));

        let biased = scenario_rows(original.clone(), ProtectedMode::AsRecorded, &[Injection::Bias], 7);
        for (before, after) in original.iter().zip(&biased) {
            let young = before.protected_attributes.age_in_years.is_some_and(|age| age <= 25);
            assert_eq!(before.credit_request != after.credit_request, young);
        }
        let drifted = scenario_rows(original.clone(), ProtectedMode::AsRecorded, &[Injection::Drift], 7);
        assert!(original
            .iter()
            .zip(&drifted)
            .all(|(a, b)| b.credit_request.credit_amount.unwrap() == (a.credit_request.credit_amount.unwrap() * 3.0)));
    }
}
