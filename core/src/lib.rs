//! The NASNet-A vocabulary shared by every crate, with no numerical dependency: the search
//! space as data (operations, cells, genotypes, the published NASNet-A cells), network
//! configurations and presets, and `model.json`, the metadata that travels with a model from
//! the importer or trainer to the runtimes.

pub mod config;
pub mod meta;
pub mod space;

pub use config::{ConfigError, NetworkConfig, PoolingRule, Preset, Stem};
pub use meta::{ModelMeta, Preprocessing};
pub use space::{Block, CellGenotype, Combine, Concat, Genotype, Op};
