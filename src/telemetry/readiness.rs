//! Readiness: one flag per dependency, set by the stage that owns it, read by `/ready`.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// Readiness inputs, set by the stages that own them.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Model verified and scoring threads started.
    pub model_loaded: AtomicBool,
    /// Consumer group joined (a replica with no partitions is still ready).
    pub consumer_joined: AtomicBool,
    /// Last database operation succeeded.
    pub database_ok: AtomicBool,
    /// Last schema registry call succeeded.
    pub schema_registry_ok: AtomicBool,
    /// A batch is waiting on a schema lookup the registry keeps failing (the idle probe, which
    /// only lists subjects, cannot clear this).
    pub schema_lookup_failing: AtomicBool,
    /// A stage of the worker ended on its own: the worker is stopping.
    pub stage_failed: AtomicBool,
}

/// Readiness report.
#[derive(Debug, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    pub model_loaded: bool,
    pub consumer_joined: bool,
    pub database_ok: bool,
    pub schema_registry_ok: bool,
    pub schema_lookup_failing: bool,
    pub stage_failed: bool,
}

impl Readiness {
    /// Snapshot of every check.
    pub fn report(&self) -> ReadinessReport {
        let model_loaded = self.model_loaded.load(Ordering::Acquire);
        let consumer_joined = self.consumer_joined.load(Ordering::Acquire);
        let database_ok = self.database_ok.load(Ordering::Acquire);
        let schema_registry_ok = self.schema_registry_ok.load(Ordering::Acquire);
        let schema_lookup_failing = self.schema_lookup_failing.load(Ordering::Acquire);
        let stage_failed = self.stage_failed.load(Ordering::Acquire);
        ReadinessReport {
            ready: model_loaded
                && consumer_joined
                && database_ok
                && schema_registry_ok
                && !schema_lookup_failing
                && !stage_failed,
            model_loaded,
            consumer_joined,
            database_ok,
            schema_registry_ok,
            schema_lookup_failing,
            stage_failed,
        }
    }
}
