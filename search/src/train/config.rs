//! A training run's settings ([`TrainConfig`]) and position ([`TrainState`]).

use serde::{Deserialize, Serialize};

use crate::data::Augment;
use nasnet_core::rng::Rng;

/// The optimizer and its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    /// PyTorch's SGD: `buf = momentum * buf + g`, step `g + momentum * buf` when Nesterov.
    Sgd { momentum: f64, nesterov: bool },
    /// TF's RMSProp (mean square initialized to one), as in the paper's ImageNet recipe.
    RmsProp {
        decay: f64,
        momentum: f64,
        epsilon: f64,
    },
}

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trainable {
    /// Every parameter.
    All,
    /// The classifier only; the body runs in inference mode (fine-tuning a pretrained model).
    Head,
}

/// A training run's settings. Defaults follow the paper's CIFAR-10 recipe, scaled to a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    /// Peak learning rate, decayed over one cosine period to `lr_min`.
    pub lr: f64,
    pub lr_min: f64,
    /// L2 weight decay on convolution and linear weights.
    pub weight_decay: f64,
    pub label_smoothing: f64,
    /// Weight of the auxiliary head's loss (when the network has one).
    pub aux_weight: f64,
    /// Gradients are scaled down to this global L2 norm (`None`: no clipping).
    pub clip_norm: Option<f64>,
    /// PyTorch's batch-norm `momentum` (weight of each batch in the running statistics).
    pub bn_momentum: f64,
    pub augment: Augment,
    pub trainable: Trainable,
    pub seed: u64,
    /// Each batch is split into this many parts whose forward and backward passes run in
    /// parallel, with batch-norm statistics per part ("ghost" batch norm); the gradients are
    /// averaged. The result depends on this number but not on the number of cores.
    #[serde(default = "one")]
    pub replicas: usize,
}

fn one() -> usize {
    1
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 32,
            optimizer: Optimizer::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            lr: 0.025,
            lr_min: 0.0,
            weight_decay: 5e-4,
            label_smoothing: 0.0,
            aux_weight: 0.4,
            clip_norm: Some(5.0),
            bn_momentum: 0.1,
            augment: Augment {
                pad: 4,
                flip: true,
                cutout: 0,
            },
            trainable: Trainable::All,
            seed: 0,
            replicas: 1,
        }
    }
}

/// Where a run is: saved in every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    /// Generator for augmentation, dropout and drop-path masks.
    pub rng: Rng,
    /// Sums over the current epoch so far: loss, correct, images.
    pub epoch_loss: f64,
    pub epoch_correct: usize,
    pub epoch_seen: usize,
    /// Seconds spent training, over all sessions of the run.
    #[serde(default)]
    pub elapsed_s: f64,
    /// Seconds spent on the current epoch so far.
    #[serde(default)]
    pub epoch_s: f64,
}

/// The learning rate after `step` of `total` steps: one cosine period from `lr` to `lr_min`.
pub fn cosine_lr(cfg: &TrainConfig, step: usize, total: usize) -> f64 {
    let t = step as f64 / total.max(1) as f64;
    cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + (std::f64::consts::PI * t).cos())
}
