//! `nasnet`: NASNet-A for Rust. One facade over the workspace crates:
//!
//! - [`core`]: the search space, network configurations and `model.json`;
//! - [`search`]: the Candle network builder, synthetic weights;
//! - [`zoo`]: importers from upstream weight files, model directories;
//! - [`runtime`]: preprocessing and inference on exported models.

pub use nasnet_core as core;
pub use nasnet_runtime as runtime;
pub use nasnet_search as search;
pub use nasnet_zoo as zoo;

pub use nasnet_core::{Genotype, ModelMeta, NetworkConfig, PoolingRule, Preset, Stem};
pub use nasnet_search::{NasNet, Output};
