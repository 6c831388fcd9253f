//! The NASNet-A model zoo: the versioned registry of pretrained models and where their weights
//! come from (Hugging Face Hub or pinned URLs), downloads with checksums into a versioned cache,
//! importers that read upstream weight files (timm and Cadene `safetensors`, PyTorch `.pth` in
//! the zip and legacy formats, Keras HDF5) into the canonical layout, and model directories
//! (`model.safetensors`, `model.onnx`, `model.json`) written atomically.

pub mod fetch;
pub mod fsutil;
pub mod import;
pub mod keras;
pub mod pth;
pub mod registry;

/// Errors of the zoo; every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
    #[error("{path}: already exists (pass --force to replace it)")]
    Exists { path: String },
    #[error("{resource}: {problem}")]
    Download { resource: String, problem: String },
    #[error(
        "{path}: checksum mismatch: expected {kind} {expected}, got {actual}; the download was deleted"
    )]
    Checksum {
        path: String,
        kind: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Offline(String),
    #[error(transparent)]
    Network(#[from] nasnet_search::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
