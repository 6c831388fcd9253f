//! The inference backends behind [`crate::Model`]: tract (pure Rust), ONNX Runtime and Candle.
//! Each takes a preprocessed batch and returns its logits and features.

use std::path::{Path, PathBuf};

use crate::{Device, Error, Result};

#[cfg(feature = "candle")]
pub mod candle;
#[cfg(feature = "ort")]
pub mod onnxruntime;
#[cfg(feature = "nnef")]
pub mod tract;

/// The logits and features of one batch, row-major.
pub(crate) struct RawOutputs {
    pub logits: Vec<f32>,
    pub features: Vec<f32>,
}

/// A backend error whose message is the cause's own text (with `context` before it).
fn backend_err<E>(backend: &'static str, context: Option<&str>, e: E) -> Error
where
    E: std::fmt::Display + Into<crate::error::Cause>,
{
    let message = match context {
        Some(c) => format!("{c}: {e:#}"),
        None => format!("{e:#}"),
    };
    Error::backend(backend, message, e)
}

/// A backend error with no underlying cause.
fn backend_msg(backend: &'static str, message: &str) -> Error {
    Error::Backend {
        backend,
        message: message.to_owned(),
        source: None,
    }
}

/// Where the ONNX Runtime shared library is looked for: `ORT_DYLIB_PATH`, else
/// `$NASNET_HOME/onnxruntime/libonnxruntime.so` (`onnxruntime-gpu/` for CUDA), where
/// `NASNET_HOME` defaults to `$XDG_CACHE_HOME/nasnet` or `~/.cache/nasnet`.
pub fn ort_library(device: Device) -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let dir = match device {
        Device::Cpu => "onnxruntime",
        Device::Cuda(_) => "onnxruntime-gpu",
    };
    nasnet_core::cache::nasnet_home()
        .join(dir)
        .join(if cfg!(target_os = "macos") {
            "libonnxruntime.dylib"
        } else if cfg!(windows) {
            "onnxruntime.dll"
        } else {
            "libonnxruntime.so"
        })
}
