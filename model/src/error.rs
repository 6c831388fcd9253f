//! The crate's error type and result alias.

use std::path::PathBuf;

use nasnet_core::ConfigError;
use nasnet_core::meta::MetaError;

/// Errors of the network: building it, loading its weights, exporting it. Each keeps its
/// cause ([`std::error::Error::source`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The network configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration describes a network that cannot be built (says why).
    #[error("cannot build the network: {0}")]
    Build(String),
    /// `model.json` is missing or invalid.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// A weights file cannot be read, or does not fit the network.
    #[error("{}: {problem}: {source}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What went wrong, in a few words.
        problem: &'static str,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing a model directory or file atomically failed.
    #[error(transparent)]
    Fs(#[from] nasnet_core::fsutil::FsError),
}

/// The result of the network's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;
