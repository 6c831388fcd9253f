//! Training and architecture search: the part of NASNet that learns.
//!
//! - [`data`]: datasets (CIFAR-10, MNIST / Fashion-MNIST, image folders), splits, augmentation;
//! - [`train`]: the paper's training recipe with checkpoints and exact resume;
//! - [`finetune`]: starting from a zoo model (classifier surgery) and the `model.json` a run
//!   leaves, so a run directory is a model directory;
//! - [`nas`]: the architecture search (decision encoding, LSTM controller with PPO, random
//!   search, regularized evolution, the journal).
//!
//! The network itself is `nasnet-model`'s; this crate never serves models.

pub mod data;
pub mod finetune;
pub mod nas;
pub mod train;

pub use nasnet_core::{Genotype, NetworkConfig, PoolingRule, Preset, Stem};
pub use nasnet_core::{config, rng, space};
pub use nasnet_model::{NasNet, Output, default_device};
