//! The NASNet-A model zoo: the versioned registry of pretrained models and where their weights
//! come from (Hugging Face Hub or pinned URLs), downloads with checksums into a versioned cache,
//! importers that read upstream weight files (timm and Cadene `safetensors`, PyTorch `.pth` in
//! the zip and legacy formats, Keras HDF5) into the canonical layout, and model directories
//! (`model.safetensors`, `model.onnx`, `model.json`) written atomically; publishing the models
//! this project trains into a zoo directory, and the models bundled into the program.

pub mod bundled;
pub mod fetch;
pub mod import;
pub mod keras;
pub mod pth;
pub mod publish;
pub mod registry;

/// Errors of the zoo; every variant names the file or the resource concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
    /// A file or registry entry is malformed.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// A download failed (hub files).
    #[error("{resource}: {problem}")]
    Download {
        /// The URL or hub file.
        resource: String,
        /// What went wrong.
        problem: String,
    },
    /// A model version is already in the zoo; published versions never change.
    #[error(
        "{spec} is already published in {zoo}: a published version never changes; publish a new version"
    )]
    Published {
        /// `ID@VERSION`.
        spec: String,
        /// The zoo directory.
        zoo: String,
    },
    /// A needed file is not available without the network.
    #[error("{0}")]
    Offline(String),
    /// No source could be connected to: the network, or every server, could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// A URL download or its checksum.
    #[error(transparent)]
    Fetch(#[from] nasnet_fetch::Error),
    /// An atomic file or directory write.
    #[error(transparent)]
    Fs(#[from] nasnet_core::fsutil::FsError),
    /// Building the network for the weights, or exporting it.
    #[error(transparent)]
    Network(#[from] nasnet_model::Error),
    /// A tensor operation on the weights.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Whether no connection could be made (as opposed to a server that answered wrongly).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::Unreachable(_) | Error::Fetch(nasnet_fetch::Error::Unreachable { .. })
        )
    }
}

/// The result of the zoo's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;
