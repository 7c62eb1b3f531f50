//! How a caller treats an error. Every folder's error enum answers [`Retry`] for each of its
//! variants, so the pipeline decides from the error itself whether to wait, retry or give up.

/// What retrying can achieve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A dependency is unavailable: retry with backoff and report not ready meanwhile.
    Unavailable,
    /// A lost race with another writer: retry; the dependency itself is healthy.
    Conflict,
    /// Retrying cannot help: the input, the configuration or the code is wrong.
    Never,
}

impl Retry {
    /// Whether retrying can help.
    pub fn can_help(self) -> bool {
        self != Self::Never
    }
}

/// An error that says whether retrying can help. Each folder's error enum implements it.
pub trait Retriable {
    /// The retry class of this error.
    fn retry(&self) -> Retry;
}
