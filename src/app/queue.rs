//! The queues between the pipeline's stages, bounded by the records they hold, not by batches.
//! Under load batches are full and a queue holds `pipeline.batches_in_flight` of them, as a
//! queue of batches would. At a light rate batches are small: many fit, so a stage never waits
//! for room while the next is busy (with one Kafka transaction taking several audit
//! transactions' time, it did, and every batch behind it waited), and the waiting batches are
//! finished as one when the next stage frees.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// The sending side; clones share the bound.
pub(super) struct Sender<T> {
    sender: mpsc::UnboundedSender<(T, OwnedSemaphorePermit)>,
    room: Arc<Semaphore>,
    bound: u32,
}

/// The receiving side. Closing or dropping it fails every send, waiting ones included.
pub(super) struct Receiver<T> {
    receiver: mpsc::UnboundedReceiver<(T, OwnedSemaphorePermit)>,
    room: Arc<Semaphore>,
}

/// A queue that holds at most `records` records (a batch larger than that waits for an empty
/// queue).
pub(super) fn bounded<T>(records: usize) -> (Sender<T>, Receiver<T>) {
    let bound = records.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
    let room = Arc::new(Semaphore::new(bound as usize));
    let (sender, receiver) = mpsc::unbounded_channel();
    (Sender { sender, room: Arc::clone(&room), bound }, Receiver { receiver, room })
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self { sender: self.sender.clone(), room: Arc::clone(&self.room), bound: self.bound }
    }
}

impl<T> Sender<T> {
    /// Queues `batch` of `records` records once there is room; gives it back if the receiver
    /// is gone.
    pub(super) async fn send(&self, batch: T, records: usize) -> Result<(), T> {
        let wanted = records.clamp(1, self.bound as usize) as u32;
        let Ok(permit) = Arc::clone(&self.room).acquire_many_owned(wanted).await else { return Err(batch) };
        self.sender.send((batch, permit)).map_err(|returned| returned.0 .0)
    }
}

impl<T> Receiver<T> {
    /// The next batch, or `None` once every sender is gone and the queue is empty.
    pub(super) async fn recv(&mut self) -> Option<T> {
        self.receiver.recv().await.map(|(batch, _room)| batch)
    }

    /// The next batch if one is queued now.
    pub(super) fn try_recv(&mut self) -> Option<T> {
        self.receiver.try_recv().ok().map(|(batch, _room)| batch)
    }

    /// Refuses every later send; queued batches can still be received.
    pub(super) fn close(&mut self) {
        self.room.close();
        self.receiver.close();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.room.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The bound counts records: many small batches fit where two full ones do, and a full
    /// queue makes the sender wait until a batch is taken.
    #[tokio::test]
    async fn the_bound_counts_records_not_batches() {
        let (sender, mut receiver) = bounded::<usize>(100);
        for batch in 0..50 {
            tokio::time::timeout(Duration::from_secs(5), sender.send(batch, 2)).await.unwrap().unwrap();
        }
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(50, 60).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room for 60 more records");
        for expected in 0..30 {
            assert_eq!(receiver.try_recv(), Some(expected));
        }
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
        assert_eq!(receiver.recv().await, Some(30));
    }

    /// A batch larger than the bound waits for an empty queue, then goes; a closed receiver
    /// fails the send that waits for room and gives its batch back.
    #[tokio::test]
    async fn an_oversized_batch_and_a_closed_queue() {
        let (sender, mut receiver) = bounded::<&str>(10);
        sender.send("big", 500).await.unwrap();
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send("next", 1).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        receiver.close();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap(), Err("next"));
        assert_eq!(receiver.recv().await, Some("big"));
        assert_eq!(sender.send("late", 1).await, Err("late"));
    }
}
