//! The one retry policy of the worker: exponential backoff between `pipeline.retry_initial_
//! backoff_ms` and `pipeline.retry_max_backoff_ms`, for as long as the error says a retry can
//! help ([`Retriable`]), until shutdown.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

use crate::error::Retriable;

/// Backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    initial: Duration,
    max: Duration,
}

/// Why [`RetryPolicy::run`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum GaveUp<E> {
    /// Shutdown came first.
    #[error("shutdown before it succeeded")]
    Shutdown,
    /// The error says retrying cannot help.
    #[error(transparent)]
    Fatal(E),
}

impl RetryPolicy {
    /// Delays from `initial`, doubling, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// Runs `operation` until it succeeds, it fails with an error that retrying cannot help, or
    /// `shutdown`; `on_retry` sees every error that is retried and the delay before the next try.
    pub async fn run<T, E, F, Fut>(
        &self,
        shutdown: &CancellationToken,
        operation: F,
        on_retry: impl FnMut(&E, Duration),
    ) -> Result<T, GaveUp<E>>
    where
        E: Retriable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .without_max_times();
        let attempts = operation.retry(backoff).when(|error: &E| error.retry().can_help()).notify(on_retry);
        tokio::select! {
            result = attempts => result.map_err(GaveUp::Fatal),
            _ = shutdown.cancelled() => Err(GaveUp::Shutdown),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::error::Retry;

    #[derive(Debug, PartialEq)]
    struct Failure(Retry);

    impl Retriable for Failure {
        fn retry(&self) -> Retry {
            self.0
        }
    }

    /// Retriable failures are retried with doubling, capped delays until success; a fatal one
    /// ends the retries at once; shutdown ends them too.
    #[tokio::test(start_paused = true)]
    async fn retries_what_can_help_with_doubling_capped_delays() {
        let policy = RetryPolicy::new(Duration::from_millis(100), Duration::from_millis(400));
        let shutdown = CancellationToken::new();
        let calls = Cell::new(0);
        let mut delays = Vec::new();
        let result = policy
            .run(
                &shutdown,
                || async {
                    calls.set(calls.get() + 1);
                    if calls.get() < 5 {
                        Err(Failure(Retry::Unavailable))
                    } else {
                        Ok(calls.get())
                    }
                },
                |_, delay| delays.push(delay.as_millis()),
            )
            .await;
        assert_eq!(result.unwrap(), 5);
        assert_eq!(delays, vec![100, 200, 400, 400]);

        let fatal = policy.run(&shutdown, || async { Err::<(), _>(Failure(Retry::Never)) }, |_, _| {}).await;
        assert!(matches!(fatal, Err(GaveUp::Fatal(Failure(Retry::Never)))));

        shutdown.cancel();
        let stopped = policy.run(&shutdown, || async { Err::<(), _>(Failure(Retry::Conflict)) }, |_, _| {}).await;
        assert!(matches!(stopped, Err(GaveUp::Shutdown)));
    }
}
