//! A run's starting point when it fine-tunes a model (the classifier replaced for the new
//! classes, every other weight kept), and the `model.json` a finished run leaves, so that a
//! run directory is a model directory every backend serves.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use nasnet_core::NetworkConfig;
use nasnet_core::meta::{self, FileDigest, ModelMeta, Preprocessing, Provenance};

use crate::train::{Result, TrainError, initial_weights};

/// Where a run starts: its network, weights, evaluation transform and name.
pub struct Start {
    /// The network to train.
    pub config: NetworkConfig,
    /// Its initial weights, by canonical key.
    pub weights: HashMap<String, Tensor>,
    /// The evaluation transform the run's model will record.
    pub preprocessing: Preprocessing,
    /// The run's model name.
    pub name: String,
}

/// Fine-tuning the model in `dir` (its `meta`) for `classes` classes: fresh classifier(s)
/// drawn from `seed`, every other weight from the model. `aux_head` keeps the auxiliary head
/// when the model has one; `dataset` names the run.
pub fn from_model(
    dir: &Path,
    meta: &ModelMeta,
    classes: usize,
    aux_head: bool,
    seed: u64,
    dataset: &str,
) -> Result<Start> {
    let path = dir.join(meta::WEIGHTS_FILE);
    let mut weights =
        candle_core::safetensors::load(&path, &candle_core::Device::Cpu).map_err(|source| {
            TrainError::Weights {
                path: path.display().to_string(),
                source,
            }
        })?;
    let mut config = meta.architecture.clone();
    config.num_classes = classes;
    config.aux_head = config.aux_head && aux_head;
    let fresh = initial_weights(&config, seed)?;
    for (name, t) in &fresh {
        let keep = weights.get(name).is_some_and(|w| w.dims() == t.dims());
        if !keep || name.starts_with("last_linear.") {
            weights.insert(name.clone(), t.clone());
        }
    }
    weights.retain(|n, _| fresh.contains_key(n));
    Ok(Start {
        config,
        weights,
        preprocessing: meta.preprocessing.clone(),
        name: format!("{} fine-tuned on {dataset}", meta.name),
    })
}

/// The `model.json` of a finished run trained from `start` on `dataset` with `labels`.
pub fn trained_meta(start: &Start, labels: &[String], dataset: &str) -> ModelMeta {
    ModelMeta {
        format_version: meta::FORMAT_VERSION,
        name: start.name.clone(),
        architecture: start.config.clone(),
        preprocessing: start.preprocessing.clone(),
        labels: labels.to_vec(),
        provenance: Some(Provenance {
            format: "nasnet".into(),
            source: FileDigest {
                file: format!("trained: {dataset}"),
                sha256: String::new(),
            },
        }),
        training: Some(meta::Training {
            dataset: Some(dataset.to_owned()),
            ..Default::default()
        }),
        weights: FileDigest {
            file: meta::WEIGHTS_FILE.to_owned(),
            sha256: String::new(),
        },
        nnef: None,
        quantization: None,
    }
}

/// Writes the run's model into its directory (`model.safetensors`, `model.onnx`, then
/// `model.json`), filling in the weights' sha256.
pub fn write_run_model(
    dir: &Path,
    weights: &HashMap<String, Tensor>,
    meta: &mut ModelMeta,
) -> Result<()> {
    Ok(nasnet_model::dir::write_model_files(dir, weights, meta)?)
}
