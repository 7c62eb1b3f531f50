//! A streaming credit-decision worker: consumes loan applications from Kafka, scores them with a
//! LightGBM model, decides approve / review / decline with adverse-action reasons, publishes
//! decisions, dead-letters bad input, writes one audit row per decision to PostgreSQL, and keeps
//! fairness and drift monitors with alerts.
//!
//! # Layout
//!
//! The data flow of one worker process, and the folder that owns each step:
//!
//! ```text
//! Kafka ─► sources ─► codec ─► domain (validate, features) ─► model (score, TreeSHAP)
//!                                   │ bad input                      │
//!                                   ▼                                ▼
//!                            dead-letter topic      domain (decide, reasons, audit row)
//!                                                                    │
//!                       sinks: audit rows ─► PostgreSQL, decisions ─► Kafka
//!                                                                    │ durable
//!                                                                    ▼
//!                monitor: fairness, drift, outcomes, alerts ─► http (/metrics, /fairness)
//! ```
//!
//! - [`app`]: wiring, the pipeline (intake and sink stages), retry and shutdown; `run(config, shutdown)`.
//! - [`config`]: raw TOML, environment overlay, secrets → a validated [`config::WorkerConfig`].
//! - [`domain`]: pure events, features, the decision policy, reasons, groups, the audit row and its hash.
//! - [`model`]: model bundles and cards, compiled trees, scoring threads, the model lifecycle.
//! - [`codec`]: Confluent wire format and Avro; the schema registry client; protected attributes
//!   sealed for storage.
//! - [`sources`]: the Kafka consumer and which offsets may be stored (public for the consumer
//!   group tests).
//! - `sinks`: decisions and dead letters to Kafka; audit rows and outcomes to PostgreSQL.
//! - [`monitor`]: windows, fairness, drift, outcomes, alerts, shadow comparison (pure); the
//!   evaluator and the rebuild kept apart.
//! - [`http`]: `/metrics`, `/health`, `/ready`, `/fairness` and the admin routes.
//! - [`ops`]: `audit verify` and `audit purge`.
//! - [`telemetry`]: the Prometheus metrics and readiness flags every stage reports to.
//! - [`error`]: the retry classes every folder's error enum answers.
//!
//! Dependencies point one way (`tests/layout.rs` checks it): `error` ← `domain` ← `config`,
//! `codec`, `sinks`, `telemetry` ← `model`, `sources` ← `monitor` ← `http`, `ops` ← `app`.
//! Sources and sinks never use `http`; `domain` and the pure parts of `monitor` do no I/O.
//! Development tools (the registry stand-in, replay, summary, training) live in the
//! `credit-devtools` crate, outside the worker binary.

pub mod app;
pub mod codec;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod model;
pub mod monitor;
pub mod ops;
mod sinks;
pub mod sources;
pub mod telemetry;
