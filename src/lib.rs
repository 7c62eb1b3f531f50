//! A streaming credit-decision worker: consumes loan applications from Kafka, scores them with
//! a LightGBM model, decides approve / review / decline, publishes decisions, dead-letters bad
//! input and writes one audit row per decision to PostgreSQL.
//!
//! # Layout
//!
//! - [`config`]: TOML file + environment overrides → validated [`config::WorkerConfig`].
//! - [`events`]: the Avro event types and their bundled schemas.
//! - [`dataset`]: the German Credit CSV as typed applications (training and replay).
//! - [`source`]: the Kafka consumer: batches of records, partition assignment.
//! - [`decode`]: Confluent wire format → [`events::LoanApplication`], writer schemas from the registry.
//! - [`features`]: validation and feature mapping from the model card (pure).
//! - [`model`]: model directories, the model card, compiled trees (scoring and TreeSHAP), scoring threads, lifecycle (activate, rollback, shadow), training.
//! - [`decision`]: cutoffs → outcome, deterministic decision ids (pure).
//! - [`reasons`]: adverse-action reason codes from TreeSHAP contributions and a versioned catalogue (pure).
//! - [`process`]: one batch through decode → features → score → decide, on a scoring thread (pure CPU work).
//! - [`window`]: event-time rolling windows of counts (bucketed, concurrent).
//! - [`fairness`]: approval rates per protected group, disparate impact and parity with intervals.
//! - [`drift`]: PSI of features and score against the training histograms.
//! - [`outcomes`]: delayed outcomes joined to decisions: equal opportunity and rolling AUC per group.
//! - [`alerts`]: sustained, hysteretic alert state machines (pure).
//! - [`monitoring`]: feeds the monitors, rebuilds them from the audit table, evaluates alerts, exports gauges.
//! - [`offsets`]: which offsets may be stored once a batch is durable (pure).
//! - [`publish`]: decisions and dead letters to Kafka.
//! - [`audit`]: audit rows to PostgreSQL, idempotently, hash-chained; verification, re-scoring and retention.
//! - [`shadow`]: champion/challenger comparison (agreement, score and per-group approval differences).
//! - [`metrics`]: Prometheus metrics.
//! - [`http`]: `/metrics`, `/health`, `/ready`, `/fairness`.
//! - [`admin`]: token-protected model lifecycle endpoints.
//! - [`worker`]: wires the stages together; `run(config, shutdown)`.
//! - [`replay`]: turns the CSV into events on a topic (load generator, test driver).
//! - [`registry_standin`]: a development stand-in for the Schema Registry REST subset we use.
//! - [`summary`]: the end-of-run report printed by `make demo`.

pub mod admin;
pub mod alerts;
pub mod audit;
pub mod config;
pub mod dataset;
pub mod decision;
pub mod decode;
pub mod drift;
pub mod events;
pub mod fairness;
pub mod features;
pub mod http;
pub mod metrics;
pub mod model;
pub mod monitoring;
pub mod offsets;
pub mod outcomes;
pub mod process;
pub mod publish;
pub mod reasons;
pub mod registry_standin;
pub mod replay;
pub mod shadow;
pub mod source;
pub mod summary;
pub mod window;
pub mod worker;
