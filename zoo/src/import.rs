//! Importers: read an upstream weight file (timm or Cadene; safetensors or PyTorch `.pth`),
//! bring it to the canonical layout, check it against the architecture, and write a model
//! directory (`model.safetensors` + `model.json`) atomically.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use nasnet_core::meta::{self, FileDigest, ModelMeta, Preprocessing, Provenance};
use nasnet_core::{NetworkConfig, PoolingRule, Preset};
use nasnet_model::init::parameter_shapes;

use crate::pth;
use crate::{Error, Result};
use nasnet_core::fsutil::sha256_file;
pub use nasnet_model::dir::{
    write_model_dir, write_model_files, write_synthetic, write_synthetic_config,
};

/// The upstream layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// timm (`timm/nasnetalarge.tf_in1k`): timm's stride-2 average pools, timm's eval transform.
    Timm,
    /// Cadene's pretrainedmodels: TF pooling rule, Cadene's `TransformImage`.
    Cadene,
    /// Keras applications (`NASNet-mobile.h5`): ported from TF-slim, so the TF pooling rule;
    /// Cadene's transform (Keras ships no resize rule).
    Keras,
}

impl SourceFormat {
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::Timm => "timm",
            SourceFormat::Cadene => "cadene",
            SourceFormat::Keras => "keras",
        }
    }

    /// The average-pool border rule the upstream implementation uses.
    pub fn pooling(self) -> PoolingRule {
        match self {
            SourceFormat::Timm => PoolingRule::Timm,
            SourceFormat::Cadene | SourceFormat::Keras => PoolingRule::Tf,
        }
    }

    /// The upstream eval preprocessing.
    pub fn preprocessing(self, input_size: usize) -> Preprocessing {
        match self {
            SourceFormat::Timm => Preprocessing::timm(input_size),
            SourceFormat::Cadene | SourceFormat::Keras => Preprocessing::cadene(input_size),
        }
    }
}

/// The container a weight file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Safetensors,
    PthZip,
    PthLegacy,
    /// Keras HDF5 weights.
    KerasH5,
}

/// What `nasnet import` does.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The model's name in `model.json` (a preset name for the published models).
    pub name: String,
    /// The architecture; its pooling rule is replaced by the source's (or `pooling`).
    pub config: NetworkConfig,
    /// `None`: decide from the file (see [`detect_format`]).
    pub from: Option<SourceFormat>,
    /// Overrides the pooling rule the source implies.
    pub pooling: Option<PoolingRule>,
    /// Replace an existing output directory.
    pub force: bool,
    /// Overrides the eval transform the source implies.
    pub preprocessing: Option<Preprocessing>,
    /// Overrides the default class names.
    pub labels: Option<Vec<String>>,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    pub meta: ModelMeta,
    pub format: SourceFormat,
    pub container: Container,
}

fn invalid(path: &Path, problem: impl Into<String>) -> Error {
    Error::Invalid {
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

/// Reads every tensor of a safetensors, PyTorch or Keras file: as stored, except Keras files,
/// whose layer names and layouts are mapped to the canonical ones for `cells` normal cells
/// per stage.
pub fn read_weights(path: &Path, cells: usize) -> Result<(Vec<(String, Tensor)>, Container)> {
    let bytes = std::fs::read(path).map_err(|error| Error::Io {
        path: path.display().to_string(),
        error,
    })?;
    read_weight_bytes(bytes, path, cells)
}

/// [`read_weights`] on a file's content; `path` names it in errors.
pub fn read_weight_bytes(
    bytes: Vec<u8>,
    path: &Path,
    cells: usize,
) -> Result<(Vec<(String, Tensor)>, Container)> {
    if pth::is_zip(&bytes) {
        let t =
            pth::read_zip(&bytes).map_err(|e| invalid(path, format!("PyTorch checkpoint: {e}")))?;
        return Ok((t, Container::PthZip));
    }
    if pth::is_legacy(&bytes) {
        let t = pth::read_legacy(&bytes)
            .map_err(|e| invalid(path, format!("legacy PyTorch checkpoint: {e}")))?;
        return Ok((t, Container::PthLegacy));
    }
    if bytes.starts_with(crate::keras::HDF5_MAGIC) {
        let t = crate::keras::read_keras(bytes, cells)
            .map_err(|e| invalid(path, format!("Keras HDF5 weights: {e}")))?;
        return Ok((t, Container::KerasH5));
    }
    if looks_like_safetensors(&bytes) {
        let t = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| invalid(path, format!("safetensors file: {e}")))?;
        return Ok((t.into_iter().collect(), Container::Safetensors));
    }
    Err(invalid(
        path,
        "not a weight file (expected safetensors, a PyTorch .pth checkpoint or Keras .h5 weights)",
    ))
}

fn looks_like_safetensors(bytes: &[u8]) -> bool {
    if bytes.len() < 10 {
        return false;
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    bytes[8] == b'{' && n < 100_000_000
}

/// Maps Cadene Mobile's cell numbers (`cell_0..3`, `cell_6..9`, `cell_12..15`: stage * 6 + j)
/// to the canonical ones (`stage * cells + j`). Other keys are returned unchanged.
pub fn renumber_cadene_mobile(key: &str, cells: usize) -> String {
    match cell_index(key) {
        Some((i, rest)) => format!("cell_{}{rest}", (i / 6) * cells + i % 6),
        None => key.to_owned(),
    }
}

/// `cell_<i>.rest` -> `(i, ".rest")`.
fn cell_index(key: &str) -> Option<(usize, &str)> {
    let tail = key.strip_prefix("cell_")?;
    let end = tail.find('.')?;
    Some((tail[..end].parse().ok()?, &tail[end..]))
}

/// Decides timm or Cadene from the file: timm publishes only Large, as safetensors; Cadene's
/// files (and every Mobile file) are PyTorch checkpoints with the TF pooling rule.
pub fn detect_format(name: &str, container: Container) -> SourceFormat {
    match container {
        Container::KerasH5 => SourceFormat::Keras,
        Container::Safetensors if name == Preset::Large.name() => SourceFormat::Timm,
        _ => SourceFormat::Cadene,
    }
}

/// Brings upstream tensors to the canonical layout for `config`: drops `num_batches_tracked`
/// and a `module.` prefix, renumbers Cadene Mobile's cells, drops the background class of
/// 1001-class heads, converts to f32. Then checks every key and shape against the
/// architecture, reporting the first problem in build order.
pub fn canonicalize(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
    config: &NetworkConfig,
) -> Result<HashMap<String, Tensor>> {
    let mut map: HashMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .map(|(k, v)| (k.strip_prefix("module.").unwrap_or(&k).to_owned(), v))
        .collect();

    let n = config.cells;
    let present: BTreeSet<usize> = map
        .keys()
        .filter_map(|k| cell_index(k))
        .map(|(i, _)| i)
        .collect();
    let canonical: BTreeSet<usize> = (0..3 * n).collect();
    let gapped: BTreeSet<usize> = (0..3)
        .flat_map(|s| (0..n).map(move |j| s * 6 + j))
        .collect();
    if present != canonical && present == gapped {
        map = map
            .into_iter()
            .map(|(k, v)| (renumber_cadene_mobile(&k, n), v))
            .collect();
    }

    let expected = parameter_shapes(config)?;
    if !map.contains_key("conv0.conv.weight") {
        return Err(invalid(
            path,
            "does not contain NASNet-A weights (no key conv0.conv.weight)",
        ));
    }
    let classes = config.num_classes;
    for key in ["last_linear.weight", "last_linear.bias"] {
        if let Some(t) = map.get(key)
            && t.dim(0)? == classes + 1
        {
            // TF-origin heads have a background class at index 0.
            let trimmed = t.narrow(0, 1, classes)?;
            map.insert(key.to_owned(), trimmed);
        }
    }
    let mut out = HashMap::with_capacity(expected.len());
    for (key, shape) in &expected {
        let t = map.remove(key).ok_or_else(|| {
            invalid(
                path,
                format!("missing key {key} (expected shape {shape:?} for this architecture)"),
            )
        })?;
        if t.dims() != shape.as_slice() {
            return Err(invalid(
                path,
                format!(
                    "key {key} has shape {:?}, the architecture expects {shape:?} (wrong architecture?)",
                    t.dims()
                ),
            ));
        }
        out.insert(key.clone(), t.to_dtype(DType::F32)?);
    }
    if let Some(extra) = map.keys().min() {
        return Err(invalid(
            path,
            format!(
                "unexpected key {extra} ({} keys the architecture does not have; wrong architecture?)",
                map.len()
            ),
        ));
    }
    Ok(out)
}

/// Imports `weights` into the model directory `out`.
pub fn import(weights: &Path, out: &Path, opts: &ImportOptions) -> Result<Imported> {
    let (tensors, container) = read_weights(weights, opts.config.cells)?;
    let format = opts
        .from
        .unwrap_or_else(|| detect_format(&opts.name, container));
    let mut config = opts.config.clone();
    config.pooling = opts.pooling.unwrap_or(format.pooling());
    let tensors = canonicalize(weights, tensors, &config)?;
    let source = FileDigest {
        file: weights
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: sha256_file(weights)?,
    };
    let mut meta = ModelMeta {
        format_version: meta::FORMAT_VERSION,
        name: opts.name.clone(),
        preprocessing: opts
            .preprocessing
            .clone()
            .unwrap_or_else(|| format.preprocessing(config.image_size)),
        labels: opts
            .labels
            .clone()
            .unwrap_or_else(|| meta::default_labels(config.num_classes)),
        architecture: config,
        provenance: Some(Provenance {
            format: format.name().to_owned(),
            source,
        }),
        training: None,
        weights: FileDigest {
            file: meta::WEIGHTS_FILE.to_owned(),
            sha256: String::new(),
        },
        nnef: None,
        quantization: None,
    };
    write_model_dir(out, &tensors, &mut meta, opts.force)?;
    Ok(Imported {
        meta,
        format,
        container,
    })
}

/// Writes a model directory's weights, checked against its architecture, to `out` (through a
/// temporary file and a rename).
pub fn export_safetensors(dir: &Path, out: &Path) -> Result<()> {
    let meta = ModelMeta::load(dir).map_err(|e| invalid(dir, e.to_string()))?;
    let weights = dir.join(meta::WEIGHTS_FILE);
    let (tensors, _) = read_weights(&weights, meta.architecture.cells)?;
    let tensors = canonicalize(&weights, tensors, &meta.architecture)?;
    nasnet_core::fsutil::write_file_atomically(out, |tmp| -> Result<()> {
        Ok(nasnet_model::dir::save_weights(&tensors, tmp)?)
    })
}
