//! The runtime's errors, each with a stable [`ErrorCode`] that the C library maps to its
//! statuses, and its cause kept ([`std::error::Error::source`]).

use nasnet_core::meta::MetaError;
use nasnet_core::preprocess::ImageError;

/// A cause from a backend library (tract, ONNX Runtime, Candle).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the runtime; each names the file or the backend concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `model.json` is missing or invalid.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// An image cannot be read or decoded.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The model file is missing, or its weights do not load.
    #[error("{message}")]
    Model {
        /// What is wrong, with the file concerned.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Cause>,
    },
    /// A backend failed to load or run the model.
    #[error("{backend}: {message}")]
    Backend {
        /// `tract`, `ort` or `candle`.
        backend: &'static str,
        /// What failed, with the file concerned.
        message: String,
        /// The backend's own error.
        #[source]
        source: Option<Cause>,
    },
    /// The ONNX Runtime library cannot be found or loaded (says where it was looked for).
    #[error("{0}")]
    OrtUnavailable(String),
    /// The device asked for is not usable by this backend or on this machine.
    #[error("{0}")]
    Device(String),
    /// The input does not fit the model (size, batch, layout).
    #[error("{0}")]
    Input(String),
    /// The backend was not compiled into this build.
    #[error("the {0} backend is not compiled into this build")]
    NotCompiled(&'static str),
    /// Decoding image files was not compiled into this build (the runtime's `decode`
    /// feature); pixels and tensors still run.
    #[error(
        "{0}: this build does not decode image files (it takes pixels); build with the `decode` feature"
    )]
    NoDecoder(String),
}

/// A stable classification of [`Error`], for callers that map errors to their own codes
/// (the C library's statuses, exit codes). Values are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// The model directory is missing or inconsistent.
    Model = 1,
    /// An image file cannot be read or decoded.
    Image = 2,
    /// The backend failed while loading or running.
    Backend = 3,
    /// The backend, its library or the device is not available.
    Unavailable = 4,
    /// The caller's input does not fit the model.
    Input = 5,
}

impl Error {
    /// This error's stable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Meta(_) | Error::Model { .. } => ErrorCode::Model,
            Error::Image(_) => ErrorCode::Image,
            Error::Backend { .. } => ErrorCode::Backend,
            Error::OrtUnavailable(_)
            | Error::Device(_)
            | Error::NotCompiled(_)
            | Error::NoDecoder(_) => ErrorCode::Unavailable,
            Error::Input(_) => ErrorCode::Input,
        }
    }

    /// A backend error with its message and the backend's own error as the cause.
    pub(crate) fn backend<E>(backend: &'static str, message: String, source: E) -> Self
    where
        E: Into<Cause>,
    {
        Error::Backend {
            backend,
            message,
            source: Some(source.into()),
        }
    }
}

/// The result of the runtime's functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;
