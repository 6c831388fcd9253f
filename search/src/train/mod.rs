//! Training: the paper's recipe (SGD with momentum or TF-style RMSProp, weight decay, one
//! cosine period, label smoothing, the auxiliary head's loss, ScheduledDropPath, gradient
//! clipping by global norm, batch norm with running statistics) over a [`Dataset`], with
//! checkpoints that resume to the same result as an uninterrupted run.
//!
//! A run directory holds `checkpoints/step-NNNNNNNN/` (each written whole or not at all) and
//! `metrics.csv`, one row per epoch.
//!
//! Layout: [`config`] (the run's settings and position), [`trainer`] (the optimizer step,
//! replicas, evaluation, the loop), [`checkpoint`] (writing and resuming), [`metrics`]
//! (`metrics.csv` and progress events), [`process`] (process-wide tuning for a training run).

mod checkpoint;
mod config;
mod metrics;
mod process;
mod trainer;

use std::path::Path;

pub use checkpoint::{latest_checkpoint, list_checkpoints};
pub use config::{Optimizer, TrainConfig, TrainState, Trainable, cosine_lr};
pub use metrics::{EpochMetrics, Event, LOG_EVERY, StepMetrics, StepReport, truncate_metrics};
pub use process::{candle_ops_on_caller_thread, keep_freed_memory};
pub use trainer::{FitOptions, Trainer, initial_weights, smoothed_cross_entropy};

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] nasnet_model::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {problem}")]
    Checkpoint { path: String, problem: String },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Fs(#[from] nasnet_core::fsutil::FsError),
    #[error("{path}: cannot read weights: {source}")]
    Weights {
        path: String,
        #[source]
        source: candle_core::Error,
    },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |error| TrainError::Io {
        path: path.display().to_string(),
        error,
    }
}
