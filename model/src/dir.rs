//! Model directories: `model.safetensors`, `model.onnx` (reading its weights from
//! `model.safetensors`) and `model.json` (with the weights' sha256), written so that a directory
//! with `model.json` is complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use nasnet_core::fsutil::{
    io, readable_by_all, sha256_file, write_dir_atomically, write_file_atomically,
};
use nasnet_core::meta::{self, FileDigest, ModelMeta, Preprocessing};
use nasnet_core::{NetworkConfig, Preset};

use crate::{NasNet, Result};

/// Saves weights as safetensors at `path`, readable by all like a model's other files (the
/// safetensors crate writes through a temporary file private to its owner).
pub fn save_weights(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    candle_core::safetensors::save(tensors, path)?;
    Ok(readable_by_all(path)?)
}

/// Writes `model.safetensors`, `model.onnx` and `model.json` into `out` atomically, filling in
/// the weights' sha256.
pub fn write_model_dir(
    out: &Path,
    tensors: &HashMap<String, Tensor>,
    meta: &mut ModelMeta,
    force: bool,
) -> Result<PathBuf> {
    let vb = candle_nn::VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let net = NasNet::new(&meta.architecture, vb)?;
    write_dir_atomically(out, force, |tmp| {
        let weights = tmp.join(meta::WEIGHTS_FILE);
        save_weights(tensors, &weights)?;
        meta.weights.sha256 = sha256_file(&weights)?;
        crate::onnx::write_onnx_sharing(&net, &tmp.join(meta::ONNX_FILE), &weights)?;
        let json = tmp.join(meta::META_FILE);
        std::fs::write(&json, meta.to_json()).map_err(io(&json))?;
        Ok(())
    })
}

/// Writes `model.safetensors`, `model.onnx` and `model.json` into an existing directory `dir`
/// (a training run's), each through a temporary file and a rename; `model.json` goes last, so a
/// directory with it is complete.
pub fn write_model_files(
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    meta: &mut ModelMeta,
) -> Result<()> {
    let vb = candle_nn::VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let net = NasNet::new(&meta.architecture, vb)?;
    let weights = dir.join(meta::WEIGHTS_FILE);
    let onnx = dir.join(meta::ONNX_FILE);
    // The ONNX file reads its weights from the weights file: the old one goes first, so that
    // no moment pairs it with new weights.
    match std::fs::remove_file(&onnx) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            return Err(crate::Error::Io { path: onnx, source });
        }
        _ => {}
    }
    write_file_atomically(&weights, |p| save_weights(tensors, p))?;
    meta.weights.sha256 = sha256_file(&weights)?;
    // Atomic itself.
    crate::onnx::write_onnx_sharing(&net, &onnx, &weights)?;
    Ok(meta.save(dir)?)
}

/// Writes a model directory for `preset` with [`crate::init::synthetic`] weights and
/// the Cadene evaluation transform.
pub fn write_synthetic(out: &Path, preset: Preset, force: bool) -> Result<ModelMeta> {
    write_synthetic_config(out, preset.name(), preset.config(), force)
}

/// Writes a model directory for any configuration with synthetic weights.
pub fn write_synthetic_config(
    out: &Path,
    name: &str,
    config: NetworkConfig,
    force: bool,
) -> Result<ModelMeta> {
    let tensors = crate::init::synthetic_state_dict(&config, &HashMap::new())?;
    let mut meta = ModelMeta {
        format_version: meta::FORMAT_VERSION,
        name: format!("{name} (synthetic weights)"),
        preprocessing: Preprocessing::cadene(config.image_size),
        labels: meta::default_labels(config.num_classes),
        architecture: config,
        provenance: None,
        training: None,
        weights: FileDigest {
            file: meta::WEIGHTS_FILE.to_owned(),
            sha256: String::new(),
        },
        nnef: None,
        quantization: None,
    };
    write_model_dir(out, &tensors, &mut meta, force)?;
    Ok(meta)
}

/// Writes a quantized model directory into `out` atomically: `model.onnx` (which holds the
/// weights, so `model.json` names it as the weights file) and `model.json`.
pub fn write_quantized_dir(
    out: &Path,
    graph: &tract_onnx::pb::ModelProto,
    meta: &mut ModelMeta,
    force: bool,
) -> Result<PathBuf> {
    use prost::Message;
    meta.nnef = None;
    write_dir_atomically(out, force, |tmp| {
        let onnx = tmp.join(meta::ONNX_FILE);
        std::fs::write(&onnx, graph.encode_to_vec()).map_err(io(&onnx))?;
        readable_by_all(&onnx)?;
        meta.weights = FileDigest {
            file: meta::ONNX_FILE.to_owned(),
            sha256: sha256_file(&onnx)?,
        };
        let json = tmp.join(meta::META_FILE);
        std::fs::write(&json, meta.to_json()).map_err(io(&json))?;
        Ok(())
    })
}
