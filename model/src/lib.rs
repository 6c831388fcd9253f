//! NASNet-A as a network: written once, generically over the [`graph::Graph`] trait, from the
//! search-space description in `nasnet-core`.
//!
//! - [`ops`]: the op vocabulary a graph is asked to compute (convolution geometry, pooling,
//!   padding, batch-norm parameters);
//! - [`graph`]: the trait; [`candle_graph::CandleGraph`] computes it with Candle (inference or
//!   training), [`onnx::OnnxGraph`] records it as ONNX;
//! - [`layers`], [`cell`], [`model`]: the network, with the PyTorch state-dict names of the
//!   timm / Cadene ports, so upstream weights load by name;
//! - [`kernels`]: the CPU kernels (depthwise convolution, padded pooling, training batch norm,
//!   with their backward passes) and their differentiable fallbacks for other devices;
//! - [`dir`]: model directories (`model.safetensors`, `model.onnx`, `model.json`);
//! - [`quant`]: post-training quantization (calibration, the int8 QDQ graph, weights-only
//!   int8 and float16);
//! - [`init`]: deterministic synthetic weights, used to prove conformance with the reference
//!   implementations.
//!
//! It knows nothing of training loops, search, downloads or serving.

#![warn(missing_docs)]

pub mod candle_graph;
pub mod cell;
pub mod dir;
mod error;
pub mod graph;
pub mod init;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod onnx;
pub mod ops;
pub mod quant;

pub use candle_graph::CandleGraph;
pub use error::{Error, Result};
pub use graph::Graph;
pub use model::{NasNet, Output, load_model_dir};
pub use nasnet_core::{Genotype, NetworkConfig, PoolingRule, Preset, Stem};

/// The device networks run on: the first CUDA device when built with the `cuda` feature and
/// one is present, else the CPU.
pub fn default_device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = candle_core::Device::new_cuda(0) {
        return d;
    }
    candle_core::Device::Cpu
}
