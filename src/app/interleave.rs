//! Batches and partition events interleaved on one task, without losing a batch that is half
//! filled when an event arrives: the batch being filled is kept across events. (A `select!`
//! that builds the batch future anew on every turn drops it, with the records it already took
//! from the consumer: once a later batch's offsets are stored, those records are skipped.)

use std::future::Future;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

/// Runs `on_batch` on every batch `next` fills and `on_event` on every event, until `shutdown`,
/// the events' sender goes away while no batch is pending, or `on_batch` answers `false`.
pub(super) async fn interleave<B, E, N, FB, FE>(
    mut next: impl FnMut() -> N,
    events: &mut UnboundedReceiver<E>,
    shutdown: &CancellationToken,
    on_batch: impl Fn(B) -> FB,
    on_event: impl Fn(E) -> FE,
) where
    N: Future<Output = B>,
    FB: Future<Output = bool>,
    FE: Future<Output = ()>,
{
    let mut pending = std::pin::pin!(next());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(event) = events.recv() => on_event(event).await,
            batch = &mut pending => {
                if !on_batch(batch).await {
                    return;
                }
                pending.set(next());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// 20 records taken one every 10 ms into batches of 5, while an event arrives every 15 ms
    /// (so every batch is interrupted mid-fill): every record is handled, once, in order.
    #[tokio::test(start_paused = true)]
    async fn an_event_mid_batch_loses_no_record() {
        let queue = Mutex::new((0..20).collect::<VecDeque<i32>>());
        let next = || async {
            let mut batch = Vec::new();
            while batch.len() < 5 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if let Some(record) = queue.lock().unwrap().pop_front() {
                    batch.push(record);
                }
            }
            batch
        };
        let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            for event in 0..30 {
                tokio::time::sleep(Duration::from_millis(15)).await;
                let _ = sender.send(event);
            }
        });
        let (handled, seen) = (Mutex::new(Vec::new()), Mutex::new(0));
        let shutdown = CancellationToken::new();
        let (handled_ref, seen_ref) = (&handled, &seen);
        let on_batch = move |batch: Vec<i32>| async move {
            let mut handled = handled_ref.lock().unwrap();
            handled.extend(batch);
            handled.len() < 20
        };
        let on_event = move |_event: i32| async move { *seen_ref.lock().unwrap() += 1 };
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::select! {
            _ = interleave(next, &mut events, &shutdown, on_batch, on_event) => {}
            _ = deadline => {}
        }
        assert_eq!(*handled.lock().unwrap(), (0..20).collect::<Vec<_>>());
        assert!(*seen.lock().unwrap() >= 10, "events were handled meanwhile");
    }
}
