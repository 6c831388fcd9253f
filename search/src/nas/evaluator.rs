//! Child evaluators: what a sampled architecture is worth. [`TrainEvaluator`] trains the child
//! network on a proxy dataset and returns its held-out accuracy, as the paper does;
//! [`SyntheticEvaluator`] is a known function of the genotype, for testing strategies and the
//! search machinery without training. A scale-out evaluator implements the same trait.
//! [`ChildBudget`] is everything that defines a child's evaluation except its cell, so that
//! an evaluator can be rebuilt from it on another machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nasnet_core::Preset;
use nasnet_core::space::{Combine, Genotype, Op};
use serde::{Deserialize, Serialize};

use crate::NetworkConfig;
use crate::data::{Augment, Batcher, Dataset, DatasetSpec, Split};
use crate::train::{TrainConfig, Trainer, initial_weights};

/// A child's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildResult {
    /// Held-out accuracy (or the synthetic score), higher is better.
    pub reward: f64,
    pub seconds: f64,
    pub params: usize,
}

/// Why a child has no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The child itself failed (e.g. its training diverged): it is recorded as failed.
    #[error("{0}")]
    Child(String),
    /// The evaluator cannot work (e.g. its queue is unreachable): the search stops, and the
    /// child runs again when the search is resumed.
    #[error("{0}")]
    Unavailable(String),
}

fn child(e: impl std::fmt::Display) -> EvalError {
    EvalError::Child(e.to_string())
}

/// Evaluates children; called from several threads at once.
pub trait Evaluator: Send + Sync {
    fn evaluate(&self, genotype: &Genotype) -> Result<ChildResult, EvalError>;
    /// What it evaluates with, for the journal (a resumed search must use the same).
    fn describe(&self) -> serde_json::Value;
}

/// Trains each child (the given N, F and budget, the genotype replaced) and returns its
/// accuracy on a fixed held-out split.
pub struct TrainEvaluator {
    pub base: NetworkConfig,
    pub train: Arc<Dataset>,
    pub val: Arc<Dataset>,
    pub batcher: Batcher,
    pub cfg: TrainConfig,
    /// Describes the dataset (path, split sizes) for the journal.
    pub dataset: String,
    pub device: candle_core::Device,
}

impl Evaluator for TrainEvaluator {
    fn evaluate(&self, genotype: &Genotype) -> Result<ChildResult, EvalError> {
        let t0 = Instant::now();
        let mut config = self.base.clone();
        config.genotype = genotype.clone();
        config.validate().map_err(child)?;
        let params = nasnet_model::init::count_parameters(&config).map_err(child)?;
        let weights = initial_weights(&config, self.cfg.seed).map_err(child)?;
        let mut t =
            Trainer::new(&config, weights, self.cfg.clone(), &self.device).map_err(child)?;
        t.fit(&self.train, &self.batcher, &Default::default(), |_| {})
            .map_err(child)?;
        let (_, acc) = t.evaluate(&self.val, &self.batcher).map_err(child)?;
        Ok(ChildResult {
            reward: acc,
            seconds: t0.elapsed().as_secs_f64(),
            params,
        })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "train",
            "dataset": self.dataset,
            "train_images": self.train.len(),
            "val_images": self.val.len(),
            "cells": self.base.cells,
            "filters": self.base.filters,
            "epochs": self.cfg.epochs,
            "batch_size": self.cfg.batch_size,
            "lr": self.cfg.lr,
        })
    }
}

/// A known score in [0, 1] with its optimum at "every branch of the normal cell a separable
/// convolution reading a block output, every reduction branch a max pool, all combiners add",
/// plus a little deterministic noise; optionally sleeps like a training child.
pub struct SyntheticEvaluator {
    pub delay: Duration,
}

/// The synthetic score of a genotype, noise-free.
pub fn synthetic_score(g: &Genotype) -> f64 {
    let sep = |o: Op| matches!(o, Op::SepConv3x3 | Op::SepConv5x5 | Op::SepConv7x7);
    let (mut score, mut total) = (0.0, 0.0);
    for (b, block) in g.normal.blocks.iter().enumerate() {
        for k in 0..2 {
            score += f64::from(u8::from(sep(block.ops[k])));
            score += 0.5 * f64::from(u8::from(b == 0 || block.inputs[k] >= 2));
            total += 1.5;
        }
        score += 0.5 * f64::from(u8::from(block.combine == Combine::Add));
        total += 0.5;
    }
    for block in &g.reduction.blocks {
        for k in 0..2 {
            score += f64::from(u8::from(block.ops[k] == Op::MaxPool3x3));
            total += 1.0;
        }
    }
    score / total
}

impl Evaluator for SyntheticEvaluator {
    fn evaluate(&self, genotype: &Genotype) -> Result<ChildResult, EvalError> {
        let t0 = Instant::now();
        std::thread::sleep(self.delay);
        let h = super::space::genotype_hash(genotype);
        let noise = u64::from_str_radix(&h[..8], 16).unwrap_or(0) as f64 / u32::MAX as f64;
        Ok(ChildResult {
            reward: 0.98 * synthetic_score(genotype) + 0.02 * noise,
            seconds: t0.elapsed().as_secs_f64(),
            params: 0,
        })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"kind": "synthetic", "delay_ms": self.delay.as_millis() as u64})
    }
}

/// Everything that defines a child's evaluation except its cell: the proxy dataset and the
/// training budget. Serializable, so that a worker elsewhere evaluates exactly as the search
/// would in process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildBudget {
    /// A dataset spec (`fashion-mnist:DIR`, ...) or `synthetic[:MS]`.
    pub dataset: String,
    /// N and F of the child networks.
    pub cells: usize,
    pub filters: usize,
    pub epochs: usize,
    /// Train on a fixed seeded subset of this many images.
    pub train_subset: Option<usize>,
    /// Held-out images the reward is measured on (fixed, seeded).
    pub val_count: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
}

impl ChildBudget {
    /// `Some(delay)` when the dataset is `synthetic[:MS]`.
    pub fn synthetic_delay(&self) -> Result<Option<Duration>, EvalError> {
        let Some(rest) = self.dataset.strip_prefix("synthetic") else {
            return Ok(None);
        };
        let bad =
            |expected: &str| EvalError::Child(format!("{}: expected {expected}", self.dataset));
        match rest.strip_prefix(':') {
            Some(ms) => Ok(Some(Duration::from_millis(
                ms.parse().map_err(|_| bad("synthetic:MILLISECONDS"))?,
            ))),
            None if rest.is_empty() => Ok(Some(Duration::ZERO)),
            None => Err(bad("synthetic or synthetic:MILLISECONDS")),
        }
    }

    /// The evaluator for this budget: the synthetic score, or training on the dataset (loaded
    /// now, and split into the fixed training and held-out parts) on `device`.
    pub fn evaluator(&self, device: &candle_core::Device) -> Result<Arc<dyn Evaluator>, EvalError> {
        if let Some(delay) = self.synthetic_delay()? {
            return Ok(Arc::new(SyntheticEvaluator { delay }));
        }
        let ds: DatasetSpec = self.dataset.parse().map_err(child)?;
        let full = ds.load(Split::Train, 32).map_err(child)?;
        let (mut train, val) = full.split(self.val_count.min(full.len() / 5), self.seed);
        if let Some(n) = self.train_subset {
            train = train.take(n, self.seed ^ 0x5eed);
        }
        let mut base = Preset::Cifar.config();
        base.cells = self.cells;
        base.filters = self.filters;
        base.image_size = full.height;
        base.num_classes = full.classes.len();
        base.aux_head = false;
        base.drop_path_keep_prob = 1.0;
        base.dropout = 0.0;
        let (mean, std) = ds.normalization();
        let cfg = TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            aux_weight: 0.0,
            augment: Augment {
                pad: 0,
                flip: true,
                cutout: 0,
            },
            seed: self.seed,
            ..TrainConfig::default()
        };
        Ok(Arc::new(TrainEvaluator {
            base,
            batcher: Batcher {
                mean,
                std,
                augment: cfg.augment,
            },
            dataset: ds.to_string(),
            train: Arc::new(train),
            val: Arc::new(val),
            cfg,
            device: device.clone(),
        }))
    }
}
