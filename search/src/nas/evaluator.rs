//! Child evaluators: what a sampled architecture is worth. [`TrainEvaluator`] trains the child
//! network on a proxy dataset and returns its held-out accuracy, as the paper does;
//! [`SyntheticEvaluator`] is a known function of the genotype, for testing strategies and the
//! search machinery without training. A scale-out evaluator implements the same trait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nasnet_core::space::{Combine, Genotype, Op};
use serde::{Deserialize, Serialize};

use crate::NetworkConfig;
use crate::data::{Batcher, Dataset};
use crate::train::{TrainConfig, Trainer, initial_weights};

/// A child's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildResult {
    /// Held-out accuracy (or the synthetic score), higher is better.
    pub reward: f64,
    pub seconds: f64,
    pub params: usize,
}

/// Evaluates children; called from several threads at once.
pub trait Evaluator: Send + Sync {
    fn evaluate(&self, genotype: &Genotype) -> Result<ChildResult, String>;
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
}

impl Evaluator for TrainEvaluator {
    fn evaluate(&self, genotype: &Genotype) -> Result<ChildResult, String> {
        let t0 = Instant::now();
        let mut config = self.base.clone();
        config.genotype = genotype.clone();
        config.validate().map_err(|e| e.to_string())?;
        let params = crate::init::count_parameters(&config).map_err(|e| e.to_string())?;
        let weights = initial_weights(&config, self.cfg.seed).map_err(|e| e.to_string())?;
        let mut t = Trainer::new(
            &config,
            weights,
            self.cfg.clone(),
            &candle_core::Device::Cpu,
        )
        .map_err(|e| e.to_string())?;
        t.fit(&self.train, None, &self.batcher, None, 0, None, |_| {})
            .map_err(|e| e.to_string())?;
        let (_, acc) = t
            .evaluate(&self.val, &self.batcher)
            .map_err(|e| e.to_string())?;
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
    fn evaluate(&self, genotype: &Genotype) -> Result<ChildResult, String> {
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
