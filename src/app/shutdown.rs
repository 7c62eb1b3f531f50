//! Shutdown: one [`CancellationToken`], cancelled on SIGTERM or SIGINT and passed into every
//! stage; a stage that ends on its own cancels it too ([`Supervisor`]), so the others stop,
//! `/ready` answers 503 and the process exits non-zero.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::telemetry::Readiness;

/// A token cancelled on SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    token
}

/// Watches the stages: the first to end before shutdown was requested is the worker's failure.
#[derive(Clone)]
pub struct Supervisor {
    shutdown: CancellationToken,
    readiness: Arc<Readiness>,
    failed: Arc<Mutex<Option<&'static str>>>,
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken, readiness: Arc<Readiness>) -> Self {
        Self { shutdown, readiness, failed: Arc::default() }
    }

    /// Runs `stage`; if it ends while shutdown was not requested, records the failure, marks the
    /// worker not ready and cancels the shutdown token, so every other stage stops.
    pub async fn watch<T>(&self, name: &'static str, stage: impl Future<Output = T>) -> T {
        let output = stage.await;
        self.ended(name);
        output
    }

    /// Spawns `stage` as a task, watched as [`Supervisor::watch`] does.
    pub fn spawn<T: Send + 'static>(
        &self,
        name: &'static str,
        stage: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        let supervisor = self.clone();
        tokio::spawn(async move { supervisor.watch(name, stage).await })
    }

    /// `name` has ended (see [`Supervisor::watch`]).
    pub fn ended(&self, name: &'static str) {
        if self.shutdown.is_cancelled() {
            return;
        }
        tracing::error!(stage = name, "a stage of the worker ended on its own; stopping the worker");
        self.readiness.stage_failed.store(true, Ordering::Release);
        self.failed.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get_or_insert(name);
        self.shutdown.cancel();
    }

    /// The stage whose end stopped the worker, if one did.
    pub fn failure(&self) -> Option<&'static str> {
        *self.failed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage ending on its own stops the worker and makes it unready; one ending after shutdown
    /// was requested is no failure.
    #[tokio::test]
    async fn a_stage_that_ends_on_its_own_stops_the_worker() {
        let (shutdown, readiness) = (CancellationToken::new(), Arc::new(Readiness::default()));
        let supervisor = Supervisor::new(shutdown.clone(), Arc::clone(&readiness));
        supervisor.watch("intake", async {}).await;
        assert!(shutdown.is_cancelled());
        assert_eq!(supervisor.failure(), Some("intake"));
        assert!(readiness.stage_failed.load(Ordering::Acquire));
        supervisor.watch("sink", async {}).await;
        assert_eq!(supervisor.failure(), Some("intake"), "the first failure is kept");

        let (shutdown, readiness) = (CancellationToken::new(), Arc::new(Readiness::default()));
        let supervisor = Supervisor::new(shutdown.clone(), Arc::clone(&readiness));
        shutdown.cancel();
        supervisor.watch("intake", async {}).await;
        assert_eq!(supervisor.failure(), None);
        assert!(!readiness.stage_failed.load(Ordering::Acquire));
    }
}
