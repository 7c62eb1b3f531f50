//! Scoring off the async runtime: a pool of dedicated threads, each owning its own LightGBM
//! booster (boosters are not `Send`) prepared for the single-row fast path, OpenMP off.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use lightgbm3::Booster;
use tokio::sync::oneshot;

use super::ModelError;

/// A LightGBM booster ready for single-row predictions.
pub struct Scorer {
    booster: Booster,
    feature_count: usize,
}

impl Scorer {
    /// Builds a scorer from LightGBM model text.
    pub fn new(model_text: &str) -> Result<Self, ModelError> {
        let mut booster = Booster::from_string(model_text)?;
        booster.single_row_fast_init::<f64>(Some(&serde_json::json!({ "num_threads": 1 })))?;
        let feature_count = booster.num_features() as usize;
        Ok(Self { booster, feature_count })
    }

    /// Number of features per row.
    pub fn feature_count(&self) -> usize {
        self.feature_count
    }

    /// Probability of default for one row.
    pub fn score_row(&self, row: &[f64]) -> Result<f64, ModelError> {
        debug_assert_eq!(row.len(), self.feature_count);
        Ok(self.booster.predict_single_row_fast(row)?[0])
    }

    /// LightGBM's TreeSHAP contributions for row-major `rows`: per row, one value per feature then
    /// the bias, in log-odds; each row's values sum to its raw score.
    pub fn contributions(&self, rows: &[f64]) -> Result<Vec<f64>, ModelError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.booster.predict_contrib(rows, self.feature_count as i32, true)?)
    }

    /// Probabilities of default for row-major `rows`, appended to `out`.
    pub fn score_rows(&self, rows: &[f64], out: &mut Vec<f64>) -> Result<(), ModelError> {
        for row in rows.chunks_exact(self.feature_count) {
            out.push(self.score_row(row)?);
        }
        Ok(())
    }
}

type Job = Box<dyn FnOnce(&mut Scorer) + Send>;

/// Why the pool could not run a job.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("scoring pool has shut down")]
    Closed,
    #[error("scoring thread panicked")]
    Panicked,
}

/// Threads that run CPU-bound batch work against their own [`Scorer`].
pub struct ScoringPool {
    sender: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl ScoringPool {
    /// Starts `threads` scoring threads, each loading `model_text`. Fails if any cannot load it.
    pub fn start(model_text: &str, threads: usize) -> Result<Self, ModelError> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let model_text = model_text.to_owned();
            let (loaded, load_result) = mpsc::channel();
            let handle = std::thread::Builder::new()
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
                        match job {
                            Ok(job) => job(&mut scorer),
                            Err(_) => return,
                        }
                    }
                })
                .expect("spawning a scoring thread");
            handles.push(handle);
            load_result.recv().unwrap_or(Err(ModelError::ScorerThread))?;
        }
        Ok(Self { sender: Some(sender), threads: handles })
    }

    /// Runs `work` on a scoring thread and returns its result.
    pub async fn run<R, F>(&self, work: F) -> Result<R, PoolError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Scorer) -> R + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |scorer| {
            let _ = reply.send(work(scorer));
        });
        self.sender.as_ref().ok_or(PoolError::Closed)?.send(job).map_err(|_| PoolError::Closed)?;
        result.await.map_err(|_| PoolError::Panicked)
    }
}

impl Drop for ScoringPool {
    fn drop(&mut self) {
        self.sender.take();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}
