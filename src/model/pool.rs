//! Scoring off the async runtime: a pool of dedicated threads, each owning its own [`Scorer`]
//! (boosters are not `Send`); batches are sent to it as jobs. A job that panics fails alone.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::scorer::Scorer;
use super::ModelError;

type Job = Box<dyn FnOnce(&mut Scorer) + Send>;

/// Threads that run CPU-bound batch work against their own [`Scorer`].
pub struct ScoringPool {
    sender: Option<mpsc::Sender<Job>>,
}

impl ScoringPool {
    /// Starts `threads` scoring threads, each loading `model_text`. Fails if any cannot load it.
    pub fn start(model_text: &str, threads: usize) -> Result<Self, ModelError> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let model_text = model_text.to_owned();
            let (loaded, load_result) = mpsc::channel();
            std::thread::Builder::new()
                .name(format!("scorer-{index}"))
                .spawn(move || {
                    let mut scorer = match Scorer::new(&model_text) {
                        Ok(scorer) => {
                            let _ = loaded.send(Ok(()));
                            scorer
                        }
                        Err(error) => {
                            let _ = loaded.send(Err(error));
                            return;
                        }
                    };
                    loop {
                        let job = match receiver.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panicking job fails alone (its caller sees the reply dropped): the
                        // thread goes on, with a scorer built afresh in case the panic left it
                        // half-updated.
                        if catch_unwind(AssertUnwindSafe(|| job(&mut scorer))).is_err() {
                            tracing::error!("a scoring job panicked; rebuilding this thread's scorer");
                            match Scorer::new(&model_text) {
                                Ok(fresh) => scorer = fresh,
                                Err(_) => return,
                            }
                        }
                    }
                })
                .expect("spawning a scoring thread");
            load_result.recv().unwrap_or(Err(ModelError::ScorerThread))?;
        }
        Ok(Self { sender: Some(sender) })
    }

    /// Runs `work` on a scoring thread and returns its result.
    pub async fn run<R, F>(&self, work: F) -> Result<R, ModelError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Scorer) -> R + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |scorer| {
            let _ = reply.send(work(scorer));
        });
        self.sender.as_ref().ok_or(ModelError::PoolClosed)?.send(job).map_err(|_| ModelError::PoolClosed)?;
        result.await.map_err(|_| ModelError::ScorerPanicked)
    }
}

impl Drop for ScoringPool {
    /// Closes the queue: each thread ends after its current job. Nothing is joined: a pool is
    /// dropped where its model is swapped out, under the lifecycle lock, and must not wait there.
    fn drop(&mut self) {
        self.sender.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job that panics fails alone: its caller gets [`ModelError::ScorerPanicked`], and the
    /// pool (one thread here) goes on running the next jobs.
    #[tokio::test]
    async fn a_panicking_job_leaves_the_pool_working() {
        let model =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/credit-v1/model.txt")).unwrap();
        let pool = ScoringPool::start(&model, 1).unwrap();
        let poison = pool.run(|_| -> usize { panic!("poison record") }).await;
        assert!(matches!(poison, Err(ModelError::ScorerPanicked)), "{poison:?}");
        for round in 0..3 {
            assert_eq!(pool.run(move |_| round).await.unwrap(), round, "job {round} after the panic");
        }
    }

    /// Dropping a pool (a model swapped out, under the lifecycle lock) returns at once, while its
    /// thread is still busy with a job: the thread finishes the job and ends on its own.
    #[tokio::test]
    async fn dropping_a_busy_pool_does_not_wait_for_its_jobs() {
        let model =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/credit-v1/model.txt")).unwrap();
        let pool = ScoringPool::start(&model, 1).unwrap();
        let (started, running) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let mut job = Box::pin(pool.run(move |_| {
            let _ = started.send(());
            let _ = released.recv();
        }));
        assert!(futures::poll!(&mut job).is_pending(), "the job is sent");
        drop(job);
        running.recv_timeout(std::time::Duration::from_secs(10)).expect("the job runs");
        let dropping = std::thread::spawn(move || drop(pool));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !dropping.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let returned = dropping.is_finished();
        release.send(()).unwrap();
        assert!(returned, "dropping the pool waited for its busy thread");
    }
}
