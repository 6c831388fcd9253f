//! Serving NASNet models exported to ONNX: one API over the backends — tract (pure Rust, the
//! default; CPU and mobile targets) and ONNX Runtime (`ort`, CPU or CUDA, loaded at run time) —
//! and the evaluation preprocessing each model was trained with (from its `model.json`).
//! Builds without Candle, so apps and the C library can use it alone.
//!
//! Built without the `tract` and `ort` features it keeps only the preprocessing (for code that
//! needs the exact evaluation transform and no backend); opening a model then says which
//! feature is missing.
#![cfg_attr(
    not(any(feature = "tract", feature = "ort")),
    allow(unused, unreachable_code)
)]

mod engine;
pub mod preprocess;

use std::path::{Path, PathBuf};

use nasnet_core::meta::{MetaError, ModelMeta, ONNX_FILE};

pub use engine::ort_library;
#[cfg(feature = "tract")]
pub use engine::tract::optimized_ops;
pub use preprocess::{ImageError, decode, load_image, preprocess};

/// Errors of the runtime; each names the file or the backend concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{backend}: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },
    #[error("{0}")]
    OrtUnavailable(String),
    #[error("{0}")]
    Device(String),
    #[error("{0}")]
    Input(String),
    #[error("{0} backend is not compiled into this build")]
    NotCompiled(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// tract: pure Rust, no native library.
    #[default]
    Tract,
    /// ONNX Runtime, loaded from its shared library (see [`ort_library`]).
    Ort,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tract" => Ok(Backend::Tract),
            "ort" | "onnxruntime" => Ok(Backend::Ort),
            _ => Err(format!("unknown backend {s:?} (expected tract or ort)")),
        }
    }
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA device by index.
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device {s:?} (expected cpu, cuda or cuda:N)")),
        }
    }
}

/// How to open a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub backend: Backend,
    pub device: Device,
    /// Intra-op threads (ONNX Runtime); `None` lets the backend decide.
    pub threads: Option<usize>,
}

/// `$NASNET_HOME`, else `$XDG_CACHE_HOME/nasnet`, else `~/.cache/nasnet`.
pub fn nasnet_home() -> PathBuf {
    if let Some(h) = std::env::var_os("NASNET_HOME") {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("nasnet");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache"))
        .unwrap_or_else(std::env::temp_dir)
        .join("nasnet")
}

enum Engine {
    #[cfg(feature = "tract")]
    Tract(engine::tract::TractEngine),
    #[cfg(feature = "ort")]
    Ort(engine::onnxruntime::OrtEngine),
}

/// A model directory opened on a backend. Safe to share between threads.
pub struct Model {
    meta: ModelMeta,
    engine: Engine,
}

/// The outputs of a batch.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub batch: usize,
    pub num_classes: usize,
    pub num_features: usize,
    /// `batch x num_classes`, row-major.
    pub logits: Vec<f32>,
    /// `batch x num_features`, row-major.
    pub features: Vec<f32>,
}

/// One class of a top-k answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub index: usize,
    pub probability: f32,
    pub logit: f32,
}

/// Softmax of one row of logits (in f64, then rounded).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| (e / sum) as f32).collect()
}

/// The `k` most probable classes of one row of logits, most probable first (ties by index).
pub fn top_k(logits: &[f32], k: usize) -> Vec<Prediction> {
    let p = softmax(logits);
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx.into_iter()
        .take(k)
        .map(|i| Prediction {
            index: i,
            probability: p[i],
            logit: logits[i],
        })
        .collect()
}

impl Outputs {
    pub fn logits(&self, row: usize) -> &[f32] {
        &self.logits[row * self.num_classes..(row + 1) * self.num_classes]
    }
    pub fn features(&self, row: usize) -> &[f32] {
        &self.features[row * self.num_features..(row + 1) * self.num_features]
    }
    pub fn probabilities(&self, row: usize) -> Vec<f32> {
        softmax(self.logits(row))
    }
    pub fn top_k(&self, row: usize, k: usize) -> Vec<Prediction> {
        top_k(self.logits(row), k)
    }
}

impl Model {
    /// Opens a model directory (`model.json` + `model.onnx`).
    pub fn open(dir: &Path, opts: Options) -> Result<Self> {
        let meta = ModelMeta::load(dir)?;
        let onnx = dir.join(ONNX_FILE);
        if !onnx.exists() {
            return Err(Error::Input(format!(
                "{}: missing (export it with `nasnet export --model {} --format onnx -o {}`)",
                onnx.display(),
                dir.display(),
                onnx.display()
            )));
        }
        let size = meta.preprocessing.crop;
        let engine = match (opts.backend, opts.device) {
            #[cfg(feature = "tract")]
            (Backend::Tract, Device::Cpu) => {
                Engine::Tract(engine::tract::TractEngine::open(&onnx, size)?)
            }
            #[cfg(not(feature = "tract"))]
            (Backend::Tract, Device::Cpu) => return Err(Error::NotCompiled("tract")),
            (Backend::Tract, Device::Cuda(_)) => {
                return Err(Error::Device(
                    "the tract backend runs on the CPU only; use --backend ort for CUDA".into(),
                ));
            }
            #[cfg(feature = "ort")]
            (Backend::Ort, device) => Engine::Ort(engine::onnxruntime::OrtEngine::open(
                &onnx,
                size,
                device,
                opts.threads,
            )?),
            #[cfg(not(feature = "ort"))]
            (Backend::Ort, _) => return Err(Error::NotCompiled("ort")),
        };
        Ok(Self { meta, engine })
    }

    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The square input resolution.
    pub fn input_size(&self) -> usize {
        self.meta.preprocessing.crop
    }

    /// Runs a batch of preprocessed images (`batch x 3 x S x S` floats, NCHW).
    pub fn run(&self, input: &[f32], batch: usize) -> Result<Outputs> {
        let s = self.input_size();
        if batch == 0 || input.len() != batch * 3 * s * s {
            return Err(Error::Input(format!(
                "expected {batch} x 3 x {s} x {s} = {} floats, got {}",
                batch * 3 * s * s,
                input.len()
            )));
        }
        let raw: engine::RawOutputs = match &self.engine {
            #[cfg(feature = "tract")]
            Engine::Tract(e) => e.run(input, batch)?,
            #[cfg(feature = "ort")]
            Engine::Ort(e) => e.run(input, batch)?,
            #[cfg(not(any(feature = "tract", feature = "ort")))]
            _ => unreachable!("no engine can be built without a backend feature"),
        };
        let num_classes = raw.logits.len() / batch;
        let num_features = raw.features.len() / batch;
        Ok(Outputs {
            batch,
            num_classes,
            num_features,
            logits: raw.logits,
            features: raw.features,
        })
    }

    /// Decodes and preprocesses an image file as the model expects.
    pub fn load_image(&self, path: &Path) -> Result<Vec<f32>> {
        Ok(preprocess::load_image(path, &self.meta.preprocessing)?)
    }
}
