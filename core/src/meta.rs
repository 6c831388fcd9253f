//! `model.json`: the contract between whoever makes a model (importer, trainer) and whoever
//! serves it (runtime, bindings).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::NetworkConfig;

/// Current version of the `model.json` layout.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the metadata file ([`ModelMeta`]) inside a model directory.
pub const META_FILE: &str = "model.json";
/// Name of the weights file: safetensors under the PyTorch state-dict names.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the NNEF export: tract's own format, a tar archive of the decluttered graph for one
/// image, which tract reads without an ONNX front end (the form apps ship).
pub const NNEF_FILE: &str = "model.nnef.tar";
/// Name of the ONNX export (inputs and outputs named by the `ONNX_*` constants).
pub const ONNX_FILE: &str = "model.onnx";
/// The ONNX model's input: `[N, 3, S, S]` float32, preprocessed as [`Preprocessing`] says.
pub const ONNX_INPUT: &str = "image";
/// The ONNX model's first output: `[N, classes]` logits.
pub const ONNX_LOGITS: &str = "logits";
/// The ONNX model's second output: `[N, features]`, the pooled penultimate features.
pub const ONNX_FEATURES: &str = "features";

/// Resampling filter for the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Bilinear (triangle) filter, as Cadene's `TransformImage`.
    Bilinear,
    /// Bicubic (Catmull-Rom) filter, as timm's eval transform.
    Bicubic,
}

/// The evaluation transform the weights were trained and published with: resize the shorter
/// side to `resize`, center-crop `crop x crop`, scale to [0, 1], then `(x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Length the shorter side is resized to, in pixels.
    pub resize: usize,
    /// Side of the square center crop, in pixels (the network's input size).
    pub crop: usize,
    /// Resampling filter of the resize.
    pub interpolation: Interpolation,
    /// Per-channel (RGB) mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel (RGB) standard deviation divided by after subtracting `mean`.
    pub std: [f32; 3],
}

impl Preprocessing {
    /// timm's eval transform for `nasnetalarge.tf_in1k`: crop_pct 0.911, bicubic.
    pub fn timm(input_size: usize) -> Self {
        Self::with_crop_pct(input_size, 0.911, Interpolation::Bicubic)
    }

    /// Cadene's `TransformImage`: scale 0.875, bilinear.
    pub fn cadene(input_size: usize) -> Self {
        Self::with_crop_pct(input_size, 0.875, Interpolation::Bilinear)
    }

    fn with_crop_pct(input_size: usize, crop_pct: f64, interpolation: Interpolation) -> Self {
        Self {
            resize: (input_size as f64 / crop_pct).floor() as usize,
            crop: input_size,
            interpolation,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }
}

/// A file and its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// The file's name (no directory), or a description for a source that is no file.
    pub file: String,
    /// Lowercase hex sha256 of its content; empty when not (yet) computed.
    pub sha256: String,
}

/// Where the weights came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The upstream layout the importer read (`timm`, `cadene`, `keras`, `nasnet`).
    pub format: String,
    /// The upstream weights file the model was imported from.
    pub source: FileDigest,
}

/// How a trained model was made and how well it did: what `nasnet train` records and
/// `nasnet publish` carries into the zoo.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Training {
    /// The command line that trained it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The dataset (`fashion-mnist:DIR`, `cifar10:DIR`, `folder:DIR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// The training settings (optimizer, schedule, regularization, replicas, seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Top-1 accuracy on the dataset's test split, as a fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_top1: Option<f64>,
    /// Images in the test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_count: Option<usize>,
}

/// The numbers a model's graph computes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// 32-bit floats throughout: what import and training write.
    #[default]
    Fp32,
    /// Static int8 quantization: int8 weights (symmetric, per output channel) and uint8
    /// activations with calibrated ranges, as an ONNX QDQ graph.
    Int8,
    /// int8 weights (symmetric, per output channel), dequantized once when the model opens;
    /// fp32 compute.
    Int8Weights,
    /// float16 weights, widened once when the model opens; fp32 compute.
    F16Weights,
}

impl Precision {
    /// Every precision, in the order `nasnet quantize` documents them.
    pub const ALL: [Precision; 4] = [
        Precision::Fp32,
        Precision::Int8,
        Precision::Int8Weights,
        Precision::F16Weights,
    ];

    /// `fp32`, `int8`, `int8-weights` or `f16-weights`: the name `model.json`, the registry
    /// and the command line use.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
            Precision::Int8Weights => "int8-weights",
            Precision::F16Weights => "f16-weights",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown precision {s:?} (expected fp32, int8, int8-weights or f16-weights)"
                )
            })
    }
}

/// How a quantized model was made from its fp32 original (`nasnet quantize`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantization {
    /// The precision of the graph in `model.onnx`.
    pub precision: Precision,
    /// The fp32 model it was made from (its `model.json` name).
    pub source: String,
    /// How activation ranges were chosen (`minmax`, `percentile`); static int8 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrator: Option<String>,
    /// How many images the ranges were measured on; static int8 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration_images: Option<usize>,
    /// The images (a folder or a dataset spec); static int8 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration_source: Option<String>,
}

/// The content of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Version of the `model.json` layout ([`FORMAT_VERSION`] when written).
    pub format_version: u32,
    /// A human-readable model name, e.g. `nasnet-a-mobile`.
    pub name: String,
    /// The network the weights belong to.
    pub architecture: NetworkConfig,
    /// The evaluation transform inputs must go through.
    pub preprocessing: Preprocessing,
    /// One label per class, in class-index order.
    pub labels: Vec<String>,
    /// Where the weights came from; `None` for synthetic weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// How the model was trained, for models trained by this project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<Training>,
    /// The weights file in the same directory.
    pub weights: FileDigest,
    /// The NNEF export in the same directory ([`NNEF_FILE`]), where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nnef: Option<FileDigest>,
    /// How the model was quantized; `None` for an fp32 model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
}

/// A `model.json` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The file cannot be read.
    #[error("{path}: {error}")]
    Io {
        /// The `model.json` path.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not JSON of the `model.json` layout.
    #[error("{path}: not a valid model.json: {error}")]
    Parse {
        /// The `model.json` path.
        path: String,
        /// The JSON error.
        error: serde_json::Error,
    },
    /// The content parses but fails [`ModelMeta::check`].
    #[error("{path}: {problem}")]
    Invalid {
        /// The `model.json` path.
        path: String,
        /// What is inconsistent.
        problem: String,
    },
}

impl ModelMeta {
    /// Reads and checks `model.json` (`path` may be the file or its directory).
    pub fn load(path: &Path) -> Result<Self, MetaError> {
        let file = if path.is_dir() {
            path.join(META_FILE)
        } else {
            path.to_path_buf()
        };
        let display = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|error| MetaError::Io {
            path: display.clone(),
            error,
        })?;
        Self::from_json(&text, &display)
    }

    /// Parses and checks the text of a `model.json`; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, MetaError> {
        let meta: ModelMeta = serde_json::from_str(text).map_err(|error| MetaError::Parse {
            path: origin.to_owned(),
            error,
        })?;
        meta.check().map_err(|problem| MetaError::Invalid {
            path: origin.to_owned(),
            problem,
        })?;
        Ok(meta)
    }

    /// The precision of the model's graph (fp32 unless it was quantized).
    pub fn precision(&self) -> Precision {
        self.quantization
            .as_ref()
            .map_or(Precision::Fp32, |q| q.precision)
    }

    /// Internal consistency: version, labels and architecture.
    pub fn check(&self) -> Result<(), String> {
        if self.format_version > FORMAT_VERSION {
            return Err(format!(
                "format_version {} is newer than this program understands ({FORMAT_VERSION})",
                self.format_version
            ));
        }
        self.architecture.validate().map_err(|e| e.to_string())?;
        if self.labels.len() != self.architecture.num_classes {
            return Err(format!(
                "{} labels for {} classes",
                self.labels.len(),
                self.architecture.num_classes
            ));
        }
        if self.preprocessing.crop == 0 || self.preprocessing.resize < self.preprocessing.crop {
            return Err(format!(
                "preprocessing resizes to {} but crops {}",
                self.preprocessing.resize, self.preprocessing.crop
            ));
        }
        if self.preprocessing.std.contains(&0.0) {
            return Err("preprocessing std has a zero".into());
        }
        Ok(())
    }

    /// Writes `model.json` into `dir` atomically (a temporary file renamed into place).
    pub fn save(&self, dir: &Path) -> Result<(), crate::fsutil::FsError> {
        let json = self.to_json();
        crate::fsutil::write_file_atomically(&dir.join(META_FILE), |p| {
            std::fs::write(p, &json).map_err(crate::fsutil::io(p))
        })
    }

    /// The metadata as pretty-printed JSON, the content of `model.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("model metadata always serializes")
    }
}

/// The ImageNet-1k class names, in the standard (sorted synset) order.
pub fn imagenet_labels() -> Vec<String> {
    include_str!("../data/imagenet_classes.txt")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The ImageNet-1k WordNet ids (`n01440764`, ...), in the same order as [`imagenet_labels`].
pub fn imagenet_synsets() -> Vec<String> {
    include_str!("../data/imagenet_synsets.txt")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The WordNet id of each class when `labels` are ImageNet-1k's, else `None`.
pub fn synsets_for(labels: &[String]) -> Option<Vec<String>> {
    (labels.len() == 1000 && labels == imagenet_labels().as_slice()).then(imagenet_synsets)
}

/// Labels for a classifier with `n` classes: ImageNet names for 1000, else `class_<i>`.
pub fn default_labels(n: usize) -> Vec<String> {
    if n == 1000 {
        imagenet_labels()
    } else {
        (0..n).map(|i| format!("class_{i}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_has_1000_labels() {
        let l = imagenet_labels();
        assert_eq!(l.len(), 1000);
        assert_eq!(l[0], "tench");
        assert!(l.iter().all(|s| !s.is_empty()));
        let s = synsets_for(&l).unwrap();
        assert_eq!((s[0].as_str(), s[999].as_str()), ("n01440764", "n15075141"));
        assert!(synsets_for(&default_labels(10)).is_none());
    }

    #[test]
    fn eval_transforms() {
        let t = Preprocessing::timm(331);
        assert_eq!((t.resize, t.crop), (363, 331));
        let c = Preprocessing::cadene(331);
        assert_eq!((c.resize, c.crop), (378, 331));
        assert_eq!(Preprocessing::cadene(224).resize, 256);
    }
}
