//! Network configurations: the macro skeleton around the cells, and the published presets.
//!
//! Field names follow the official TF-slim hparams (`nasnet.py`): `cells` is N (normal cells
//! per stage, so the official `num_cells` is `3 * cells`), `filters` is F (`num_conv_filters`).

use serde::{Deserialize, Serialize};

use crate::space::{Genotype, GenotypeError};

/// The layers in front of the first cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stem {
    /// 3x3 stride-2 VALID convolution with `32 * stem_multiplier` filters and batch norm, then
    /// two reduction cells with filter scaling 1/4 and 1/2.
    Imagenet,
    /// 3x3 SAME convolution with `filters * stem_multiplier` filters and batch norm.
    Cifar,
}

/// Which border rule stride-2 average pools follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PoolingRule {
    /// TF "SAME" pooling: padding is excluded from the divisor (TF-slim, Keras-free ports,
    /// Cadene's pretrainedmodels).
    #[default]
    Tf,
    /// timm's `AvgPool2dSame`: stride-2 average pools pad with zeros and count them.
    Timm,
}

impl std::fmt::Display for PoolingRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoolingRule::Tf => "tf",
            PoolingRule::Timm => "timm",
        })
    }
}

/// The published configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Preset {
    /// NASNet-A 6@4032, 331 px.
    #[serde(rename = "nasnet-a-large")]
    Large,
    /// NASNet-A 4@1056, 224 px.
    #[serde(rename = "nasnet-a-mobile")]
    Mobile,
    /// NASNet-A 6@768, 32 px, 10 classes.
    #[serde(rename = "nasnet-a-cifar")]
    Cifar,
}

impl Preset {
    /// Every preset, largest first.
    pub const ALL: [Preset; 3] = [Preset::Large, Preset::Mobile, Preset::Cifar];

    /// The preset's identifier (`nasnet-a-large`, `nasnet-a-mobile`, `nasnet-a-cifar`), also
    /// its serde name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Large => "nasnet-a-large",
            Preset::Mobile => "nasnet-a-mobile",
            Preset::Cifar => "nasnet-a-cifar",
        }
    }

    /// The preset whose [`name`](Self::name) is `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The preset's network configuration.
    pub fn config(self) -> NetworkConfig {
        match self {
            Preset::Large => NetworkConfig::nasnet_a_large(),
            Preset::Mobile => NetworkConfig::nasnet_a_mobile(),
            Preset::Cifar => NetworkConfig::nasnet_a_cifar(),
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything needed to build a network (its weights aside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// The normal and reduction cells.
    pub genotype: Genotype,
    /// The layers in front of the first cell.
    pub stem: Stem,
    /// N: normal cells per stage (three stages).
    pub cells: usize,
    /// F: filters of the first stage's cells.
    pub filters: usize,
    /// Scales the stem convolution's filters (see [`Stem`] and
    /// [`stem_filters`](Self::stem_filters)).
    pub stem_multiplier: f64,
    /// Factor the filter count grows by at each reduction cell (2 in every preset).
    pub filter_scaling_rate: f64,
    /// The first normal cell after a reduction takes, as its previous input, the state from
    /// before the reduction cell's input (TF `skip_reduction_layer_input`).
    pub skip_reduction_layer_input: bool,
    /// Output classes of the classifier (and of the auxiliary head).
    pub num_classes: usize,
    /// Square input resolution the network is configured for.
    pub image_size: usize,
    /// Border rule of the stride-2 average pools.
    pub pooling: PoolingRule,
    /// Auxiliary classifier at two thirds of the depth (training only).
    pub aux_head: bool,
    /// Dropout probability in front of the classifier (training only).
    pub dropout: f64,
    /// ScheduledDropPath final keep probability (1.0 = off; training only).
    pub drop_path_keep_prob: f64,
    /// Epsilon of every batch norm (TF-slim: 1e-3 for ImageNet, 1e-5 for CIFAR).
    pub bn_eps: f64,
}

/// A configuration that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The genotype is invalid.
    #[error(transparent)]
    Genotype(#[from] GenotypeError),
    /// The named size (cells, filters, classes, image size, stem filters) is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// A cell whose factorized reduction would split an odd number of filters.
    #[error("{cell} has {filters} filters: a factorized reduction needs an even count")]
    OddReduction {
        /// The cell's name, its state-dict prefix (`cell_stem_0`, `reduction_cell_1`, ...).
        cell: String,
        /// Its filter count.
        filters: usize,
    },
    /// The input resolution is below what the stem and reductions need.
    #[error(
        "image size {size} is too small for this network (the stem and two reductions need at least {min} px)"
    )]
    ImageTooSmall {
        /// The configured image size, in pixels.
        size: usize,
        /// The smallest size the stem allows, in pixels.
        min: usize,
    },
    /// A probability outside its allowed range.
    #[error("{name} = {value} is out of range {range}")]
    OutOfRange {
        /// The field, e.g. `dropout`.
        name: &'static str,
        /// The offending value (for `drop_path_keep_prob`, the drop probability
        /// `1 - drop_path_keep_prob`).
        value: f64,
        /// The allowed range, written out, e.g. `[0, 1)`.
        range: &'static str,
    },
}

impl NetworkConfig {
    /// NASNet-A Large (6@4032), as released: 331 px, 1000 classes, no auxiliary head.
    pub fn nasnet_a_large() -> Self {
        Self {
            genotype: Genotype::nasnet_a(),
            stem: Stem::Imagenet,
            cells: 6,
            filters: 168,
            stem_multiplier: 3.0,
            filter_scaling_rate: 2.0,
            skip_reduction_layer_input: true,
            num_classes: 1000,
            image_size: 331,
            pooling: PoolingRule::Tf,
            aux_head: false,
            dropout: 0.5,
            drop_path_keep_prob: 0.7,
            bn_eps: 1e-3,
        }
    }

    /// NASNet-A Mobile (4@1056), as released: 224 px, 1000 classes, no auxiliary head.
    pub fn nasnet_a_mobile() -> Self {
        Self {
            cells: 4,
            filters: 44,
            stem_multiplier: 1.0,
            skip_reduction_layer_input: false,
            image_size: 224,
            drop_path_keep_prob: 1.0,
            ..Self::nasnet_a_large()
        }
    }

    /// NASNet-A CIFAR-10 (6@768): 32 px, 10 classes, with the auxiliary head.
    pub fn nasnet_a_cifar() -> Self {
        Self {
            genotype: Genotype::nasnet_a(),
            stem: Stem::Cifar,
            cells: 6,
            filters: 32,
            stem_multiplier: 3.0,
            filter_scaling_rate: 2.0,
            skip_reduction_layer_input: false,
            num_classes: 10,
            image_size: 32,
            pooling: PoolingRule::Tf,
            aux_head: true,
            dropout: 0.0,
            drop_path_keep_prob: 0.6,
            bn_eps: 1e-5,
        }
    }

    /// Filters of a cell built with `filter_scaling` (TF: `int(num_conv_filters * scaling)`).
    pub fn scaled_filters(&self, filter_scaling: f64) -> usize {
        (self.filters as f64 * filter_scaling) as usize
    }

    /// Output channels of the stem convolution.
    pub fn stem_filters(&self) -> usize {
        match self.stem {
            Stem::Imagenet => (32.0 * self.stem_multiplier) as usize,
            Stem::Cifar => (self.filters as f64 * self.stem_multiplier) as usize,
        }
    }

    /// Width of the pooled features: the last normal cell's output channels (24 F for
    /// NASNet-A).
    pub fn num_features(&self) -> usize {
        let f = self.scaled_filters(self.filter_scaling_rate * self.filter_scaling_rate);
        let g = &self.genotype.normal;
        g.output_states()
            .iter()
            .map(|&s| match s.checked_sub(2).and_then(|b| g.blocks.get(b)) {
                Some(b) if b.combine == crate::space::Combine::Concat => 2 * f,
                _ => f,
            })
            .sum()
    }

    /// Total number of cells that count for drop-path scheduling (TF `total_num_cells`).
    pub fn total_num_cells(&self) -> usize {
        3 * self.cells + 2 + if self.stem == Stem::Imagenet { 2 } else { 0 }
    }

    /// Checks the configuration can be built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.genotype.validate()?;
        for (name, v) in [
            ("cells", self.cells),
            ("filters", self.filters),
            ("num_classes", self.num_classes),
            ("image_size", self.image_size),
            ("stem filters", self.stem_filters()),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, value) in [
            ("dropout", self.dropout),
            ("drop_path_keep_prob", 1.0 - self.drop_path_keep_prob),
        ] {
            if !(0.0..1.0).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    name,
                    value,
                    range: "[0, 1)",
                });
            }
        }
        let min = match self.stem {
            Stem::Imagenet => 32,
            Stem::Cifar => 4,
        };
        if self.image_size < min {
            return Err(ConfigError::ImageTooSmall {
                size: self.image_size,
                min,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_json() {
        for p in Preset::ALL {
            let c = p.config();
            c.validate().unwrap();
            let json = serde_json::to_string(&c).unwrap();
            let back: NetworkConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, c);
            assert_eq!(Preset::from_name(p.name()), Some(p));
        }
    }

    #[test]
    fn penultimate_width_is_24_f() {
        // "N@P" notation: P = 24 F.
        assert_eq!(NetworkConfig::nasnet_a_large().filters * 24, 4032);
        assert_eq!(NetworkConfig::nasnet_a_mobile().filters * 24, 1056);
        assert_eq!(NetworkConfig::nasnet_a_cifar().filters * 24, 768);
        assert_eq!(NetworkConfig::nasnet_a_large().num_features(), 4032);
        assert_eq!(NetworkConfig::nasnet_a_mobile().num_features(), 1056);
        assert_eq!(NetworkConfig::nasnet_a_large().stem_filters(), 96);
        assert_eq!(NetworkConfig::nasnet_a_mobile().stem_filters(), 32);
        assert_eq!(NetworkConfig::nasnet_a_cifar().stem_filters(), 96);
    }

    #[test]
    fn bad_configs_are_rejected() {
        let mut c = NetworkConfig::nasnet_a_mobile();
        c.filters = 0;
        assert_eq!(c.validate(), Err(ConfigError::Zero("filters")));
        let mut c = NetworkConfig::nasnet_a_mobile();
        c.image_size = 16;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ImageTooSmall { .. })
        ));
        let mut c = NetworkConfig::nasnet_a_mobile();
        c.dropout = 1.0;
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { .. })));
    }
}
