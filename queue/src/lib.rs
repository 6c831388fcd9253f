//! Architecture search over many machines. The search ([`nasnet_search::nas::run::search`])
//! stays as it is; [`RedisEvaluator`] takes the place of the in-process pool and publishes each
//! child as a [`Job`] on a Redis Stream, and [`run_worker`] processes (`nasnet worker`) on any
//! number of machines train the children and answer on a result stream.
//!
//! The protocol, on a queue named `Q`:
//! - `Q:jobs` is a stream of jobs, read by the consumer group `workers`. A worker acknowledges
//!   a job only after its result is written, in the same transaction. A job whose worker died
//!   stays pending and is taken over (`XAUTOCLAIM`) by another worker once it has been idle
//!   for the visibility timeout; a live worker keeps its job's idle time low by re-claiming it.
//! - `Q:results` is a stream of results. A job's id is the search's id and the cell's hash, so
//!   a job is published once per search (`Q:published`), and the controller records the first
//!   result of each job and ignores repeats. The controller deletes each result it has taken.
//! - `Q:done` maps each finished job to its result, so a worker that takes over a job whose
//!   result was written just before its first worker died does not run it again, and a
//!   resumed search finds the results it had not journaled.
//! - A job neither answered nor in `Q:jobs` (Redis restarted without persistence) is
//!   published again by the controller once it has waited the visibility timeout.
//! - `Q:worker:NAME` holds a live worker's name, renewed while it runs: a second worker with
//!   the same name is refused; the name is free again a visibility timeout after its worker
//!   died.
//!
//! Datasets are referenced, not shipped: a job names its dataset by path or URL with the
//! sha256 of its files ([`DatasetRef`]), and each worker resolves and checks it.

mod dataset;
mod evaluator;
mod job;
mod worker;

pub use dataset::{DatasetRef, dataset_digest};
pub use evaluator::{RedisEvaluator, search_id};
pub use job::{Job, JobResult, Outcome, Queue};
pub use worker::{WorkerEvent, WorkerOptions, run_worker};

/// Errors of the queue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Redis at {url}: {problem}")]
    Redis { url: String, problem: String },
    #[error("{path}: {problem}")]
    Dataset { path: String, problem: String },
    /// Another live worker has this worker's name.
    #[error(
        "queue {queue}: a live worker is already named {name:?} (its name is free again \
         {timeout:.0?} after it stops); choose another --name"
    )]
    NameTaken {
        queue: String,
        name: String,
        timeout: std::time::Duration,
    },
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    /// A download.
    #[error(transparent)]
    Fetch(#[from] nasnet_fetch::Error),
    /// Hashing a file.
    #[error(transparent)]
    Fs(#[from] nasnet_core::fsutil::FsError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
