//! Telemetry shared by every stage: the Prometheus metrics (fixed, low-cardinality labels) and
//! the readiness flags. Stages write to them; `http` serves them. Depends on nothing else here.

mod metrics;
mod readiness;

pub use metrics::Metrics;
pub use readiness::{Readiness, ReadinessReport};
