//! The NASNet-A model zoo: importers that read upstream weight files (timm and Cadene
//! `safetensors`, PyTorch `.pth` in the zip and legacy formats) into the canonical layout, and
//! model directories (`model.safetensors` + `model.json`) written atomically.

pub mod fsutil;
pub mod import;
pub mod keras;
pub mod pth;

/// Errors of the zoo; every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
    #[error("{path}: already exists (pass --force to replace it)")]
    Exists { path: String },
    #[error(transparent)]
    Network(#[from] nasnet_search::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
