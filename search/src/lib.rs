//! NASNet-A in Candle: the search space (re-exported from `nasnet-core`), the network builder
//! for any genotype and configuration, training ([`data`], [`train`]), export ([`onnx`]), and
//! the deterministic synthetic weights used to prove conformance with the reference
//! implementations.
//!
//! The network is described once, in [`model`], [`cell`] and [`layers`], generically over the
//! [`graph::Graph`] trait; [`graph::CandleGraph`] evaluates it (inference or training), the
//! ONNX exporter records it.

pub mod cell;
pub mod data;
mod error;
pub mod graph;
pub mod init;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod nas;
pub mod onnx;
pub mod rng;
pub mod train;

pub use error::{Error, Result};
pub use model::{NasNet, Output, load_model_dir};
pub use nasnet_core::{Genotype, NetworkConfig, PoolingRule, Preset, Stem};
pub use nasnet_core::{config, space};

/// The device networks run on: the first CUDA device when built with the `cuda` feature and
/// one is present, else the CPU.
pub fn default_device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = candle_core::Device::new_cuda(0) {
        return d;
    }
    candle_core::Device::Cpu
}
