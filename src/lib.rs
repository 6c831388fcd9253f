//! `nasnet`: NASNet-A for Rust — pretrained models from a versioned zoo, classified and
//! embedded on a pure-Rust runtime, and, with features, trained and searched.
//!
//! ```no_run
//! # fn main() -> Result<(), nasnet::Error> {
//! let classifier = nasnet::Classifier::from_pretrained("nasnet-a-mobile")?;
//! for p in classifier.classify("photo.jpg", 5)? {
//!     println!("{:.3} {} {}", p.probability, p.label, p.synset.unwrap_or_default());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The crates behind the facade, from the bottom up:
//!
//! | crate | owns |
//! |---|---|
//! | [`core`] | the search space, NASNet-A, network configurations, `model.json`, the cache layout, image preprocessing |
//! | `nasnet-model` (feature `candle` or `train`) | the network written once over a `Graph` trait; Candle kernels; the ONNX exporter |
//! | [`runtime`] | running a model on tract, ONNX Runtime or Candle; labelled predictions |
//! | `nasnet-zoo` (feature `zoo`) | the registry, downloads with checksums, importers of upstream weights |
//! | `nasnet-search` (feature `train`) | datasets, the trainer, fine-tuning, architecture search |
//!
//! Features: `tract` and `zoo` by default; `ort` (ONNX Runtime), `candle` (the network in
//! Candle as a backend), `train` and `search` (training and architecture search).
#![warn(missing_docs)]

mod classifier;

pub use nasnet_core as core;
#[cfg(any(feature = "candle", feature = "train"))]
pub use nasnet_model as model;
pub use nasnet_runtime as runtime;
#[cfg(feature = "train")]
pub use nasnet_search as search;
#[cfg(feature = "zoo")]
pub use nasnet_zoo as zoo;

pub use classifier::{Classification, Classifier, Error};
pub use nasnet_core::{Genotype, ModelMeta, NetworkConfig, PoolingRule, Preset, Stem};
pub use nasnet_runtime::{Backend, Device, Options, Prediction};

/// The README's Rust snippets, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
