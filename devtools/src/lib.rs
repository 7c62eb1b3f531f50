//! Development tools for the credit worker, kept out of the worker binary:
//!
//! - [`registry_standin`]: a DEVELOPMENT STAND-IN for the Confluent Schema Registry REST subset
//!   the worker and the replayer use (local runs and tests only);
//! - [`replay`]: the German Credit CSV as `LoanApplication` events on a topic (load generator,
//!   test driver), with scenarios and injected faults;
//! - [`dataset`]: the CSV as typed applications with their labels;
//! - [`train`]: the deterministic LightGBM training that writes a versioned model directory;
//! - [`summary`]: the end-of-run report `make demo` prints;
//! - [`scrape`]: the worker's `/metrics` read with a Prometheus parser;
//! - [`alerting`]: a local Prometheus and Alertmanager for one worker (demo, alerting test).
//!
//! The `credit-dev` binary runs them.

pub mod alerting;
pub mod dataset;
pub mod registry_standin;
pub mod replay;
pub mod scrape;
pub mod summary;
pub mod train;
