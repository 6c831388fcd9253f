//! The NASNet-A vocabulary shared by every crate, with no numerical dependency: the search
//! space as data (operations, cells, genotypes, the published NASNet-A cells), network
//! configurations and presets, `model.json` (the metadata that travels with a model from the
//! importer or trainer to the runtimes), the cache layout (`models/ID/VERSION`), the seeded
//! generator every random choice uses, and, with the `pixels` feature, the evaluation transform
//! of pixels in memory (the `image` feature adds decoding image files).

#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod fsutil;
pub mod meta;
#[cfg(feature = "pixels")]
pub mod preprocess;
pub mod rng;
pub mod space;

pub use config::{ConfigError, NetworkConfig, PoolingRule, Preset, Stem};
pub use meta::{ModelMeta, Preprocessing};
pub use space::{Block, CellGenotype, Combine, Concat, Genotype, Op};
