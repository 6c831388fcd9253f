//! Running NASNet models: the one way the CLI, the C library and Rust users run a model.
//!
//! A model directory (`model.json` plus `model.onnx` and/or `model.safetensors`) opens on one
//! of three backends — tract (pure Rust, the default; CPU and mobile targets), ONNX Runtime
//! (`ort`, CPU or CUDA, its library loaded at run time) and Candle (the network itself, behind
//! the `candle` feature) — and every backend takes the same preprocessed batch and returns the
//! same [`Outputs`], whose predictions carry their labels (and WordNet ids for ImageNet
//! labels). The evaluation transform each model was trained with comes from its `model.json`
//! ([`preprocess`](mod@preprocess)).
//!
//! ```no_run
//! use nasnet_runtime::{Model, Options};
//! # fn main() -> nasnet_runtime::Result<()> {
//! let model = Model::open("runs/fmnist".as_ref(), Options::default())?;
//! let input = model.load_image("photo.jpg".as_ref())?;
//! let out = model.run(&input, 1)?;
//! for p in out.top_k(0, 5) {
//!     println!("{:.3} {}", p.probability, p.label);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Without the `candle` feature the runtime has no Candle in its dependencies, so apps and the
//! C library can use it alone; without `tract` and `ort` it keeps only the preprocessing and
//! opening a model on those backends says which feature is missing.
#![warn(missing_docs)]
#![cfg_attr(
    not(any(feature = "nnef", feature = "ort", feature = "candle")),
    allow(unused, unreachable_code)
)]

mod engine;
mod error;
mod output;

use std::path::{Path, PathBuf};

use nasnet_core::meta::{ModelMeta, NNEF_FILE, ONNX_FILE, WEIGHTS_FILE};

#[cfg(feature = "candle")]
pub use engine::candle::candle_device;
pub use engine::ort_library;
#[cfg(feature = "tract")]
pub use engine::tract::{optimized_ops, profile_ops, tract_cache_file, write_nnef};
pub use error::{Cause, Error, ErrorCode, Result};
pub use nasnet_core::cache::nasnet_home;
pub use nasnet_core::preprocess::{self, ImageError};
#[cfg(feature = "decode")]
pub use nasnet_core::preprocess::{decode, load_image, preprocess};
pub use output::{Labels, Outputs, Prediction, softmax, top_k, top_k_indices};

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Backend {
    /// tract: pure Rust, no native library.
    #[default]
    Tract,
    /// ONNX Runtime, loaded from its shared library (see [`ort_library`]).
    Ort,
    /// Candle: the network from `model.safetensors` (needs the `candle` feature).
    Candle,
}

impl Backend {
    /// `tract`, `ort` or `candle`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Tract => "tract",
            Backend::Ort => "ort",
            Backend::Candle => "candle",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tract" => Ok(Backend::Tract),
            "ort" | "onnxruntime" => Ok(Backend::Ort),
            "candle" => Ok(Backend::Candle),
            _ => Err(format!(
                "unknown backend {s:?} (expected tract, ort or candle)"
            )),
        }
    }
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Device {
    /// The CPU.
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
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The engine.
    pub backend: Backend,
    /// The device.
    pub device: Device,
    /// Threads one run may use: tract's pool, ONNX Runtime's intra-op threads. `None`: tract
    /// uses every core the process may use, ONNX Runtime decides for itself; Candle always
    /// uses its own pool.
    pub threads: Option<usize>,
    /// The ONNX Runtime shared library (`None`: [`ort_library`]'s lookup). A process loads one:
    /// the first model opened on ONNX Runtime chooses it, and asking for another later is an
    /// error.
    pub ort_library: Option<PathBuf>,
    /// Where tract keeps the models it has prepared, if anywhere (by default nowhere).
    pub tract_cache: TractCache,
}

/// Where tract keeps a prepared model: tract's analysed and simplified graph of `model.onnx`,
/// cut in two parts that are optimized side by side, each in NNEF, tract's own format. Opening
/// a model on tract parses the ONNX file, then analyses and simplifies the graph; with a cache,
/// from the second open on, the prepared model is read instead. Off by default: the graph is
/// simplified in parts side by side, so a prepared model saves little of an open, and it
/// would hold the weights a second time (a model directory holds them once, in
/// `model.safetensors`, which `model.onnx` reads). A prepared model is named by the sha256 of
/// `model.onnx` and of the `model.safetensors` beside it, the input size, the tract version
/// and the format of this cache ([`tract_cache_file`]), so changed weights, a changed tract
/// or a changed preparation never read a stale one; one that fails to load is made again.
/// Writing is atomic (a temporary file renamed into place), and a directory that cannot be
/// written to leaves the model uncached, not failing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TractCache {
    /// A hidden file beside `model.onnx` (`.model.onnx.tract-KEY.nnef.tar`), which replaces the
    /// one an earlier `model.onnx` left there.
    BesideModel,
    /// A file in this directory (made if missing), for model directories that cannot be
    /// written to; prepared models of other files there are left alone.
    In(PathBuf),
    /// No cache: every open prepares the model (the default).
    #[default]
    Off,
}

enum Engine {
    #[cfg(feature = "nnef")]
    Tract(Box<engine::tract::TractEngine>),
    #[cfg(feature = "ort")]
    Ort(engine::onnxruntime::OrtEngine),
    #[cfg(feature = "candle")]
    Candle(Box<engine::candle::CandleEngine>),
}

/// A model directory opened on a backend. Safe to share between threads.
pub struct Model {
    meta: ModelMeta,
    labels: Labels,
    backend: Backend,
    engine: Engine,
}

fn required(dir: &Path, file: &str, how: &str) -> Result<std::path::PathBuf> {
    let path = dir.join(file);
    if path.exists() {
        return Ok(path);
    }
    Err(Error::Model {
        message: format!("{}: missing ({how})", path.display()),
        source: None,
    })
}

/// What tract reads in a model directory: `model.nnef.tar` where there is one (tract's own
/// format, the prepared graph), else `model.onnx` (with the `tract` feature's ONNX front end).
#[cfg(feature = "nnef")]
fn tract_source(dir: &Path, meta: &ModelMeta) -> Result<engine::tract::Source> {
    let nnef = dir.join(NNEF_FILE);
    if nnef.exists() {
        return Ok(engine::tract::Source::Nnef {
            file: nnef,
            classes: meta.architecture.num_classes,
        });
    }
    #[cfg(feature = "tract")]
    if dir.join(ONNX_FILE).exists() {
        return Ok(engine::tract::Source::Onnx(dir.join(ONNX_FILE)));
    }
    let how = format!(
        "export it with `nasnet export --model {} --format nnef -o {}`",
        dir.display(),
        nnef.display()
    );
    if cfg!(feature = "tract") {
        return Err(Error::Model {
            message: format!("{}: missing, and so is {ONNX_FILE} ({how})", nnef.display()),
            source: None,
        });
    }
    Err(Error::Model {
        message: format!(
            "{}: missing (this build reads NNEF models only, not {ONNX_FILE}; {how})",
            nnef.display()
        ),
        source: None,
    })
}

impl Model {
    /// Opens a model directory on the backend and device of `opts`.
    pub fn open(dir: &Path, opts: Options) -> Result<Self> {
        let meta = ModelMeta::load(dir)?;
        let size = meta.preprocessing.crop;
        let onnx = || {
            required(
                dir,
                ONNX_FILE,
                &format!(
                    "export it with `nasnet export --model {} --format onnx -o {}`",
                    dir.display(),
                    dir.join(ONNX_FILE).display()
                ),
            )
        };
        let engine = match (opts.backend, opts.device) {
            #[cfg(feature = "nnef")]
            (Backend::Tract, Device::Cpu) => {
                Engine::Tract(Box::new(engine::tract::TractEngine::open(
                    &tract_source(dir, &meta)?,
                    size,
                    opts.threads,
                    &opts.tract_cache,
                )?))
            }
            #[cfg(not(feature = "nnef"))]
            (Backend::Tract, Device::Cpu) => return Err(Error::NotCompiled("tract")),
            (Backend::Tract, Device::Cuda(_)) => {
                return Err(Error::Device(
                    "the tract backend runs on the CPU only; use --backend ort for CUDA".into(),
                ));
            }
            #[cfg(feature = "ort")]
            (Backend::Ort, device) => Engine::Ort(engine::onnxruntime::OrtEngine::open(
                &onnx()?,
                size,
                device,
                opts.threads,
                opts.ort_library.as_deref(),
            )?),
            #[cfg(not(feature = "ort"))]
            (Backend::Ort, _) => return Err(Error::NotCompiled("ort")),
            #[cfg(feature = "candle")]
            (Backend::Candle, device) => {
                required(dir, WEIGHTS_FILE, "the candle backend runs the weights")?;
                Engine::Candle(Box::new(engine::candle::CandleEngine::open(dir, device)?))
            }
            #[cfg(not(feature = "candle"))]
            (Backend::Candle, _) => {
                let _ = WEIGHTS_FILE;
                return Err(Error::NotCompiled("candle"));
            }
        };
        let _ = &onnx;
        Ok(Self {
            labels: Labels::new(&meta.labels),
            meta,
            backend: opts.backend,
            engine,
        })
    }

    /// The model's `model.json`.
    pub fn meta(&self) -> &ModelMeta {
        &self.meta
    }

    /// The class names (and WordNet ids for ImageNet labels).
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The square input resolution.
    pub fn input_size(&self) -> usize {
        self.meta.preprocessing.crop
    }

    /// Runs a batch of preprocessed images (`batch x 3 x S x S` floats, NCHW, `S` the
    /// [`Model::input_size`]).
    pub fn run(&self, input: &[f32], batch: usize) -> Result<Outputs> {
        let s = self.input_size();
        self.run_sized(input, batch, s, s)
    }

    /// Runs a batch of `batch x 3 x h x w` floats. The ONNX backends take the model's input
    /// size only; Candle takes any size the network can reduce.
    pub fn run_sized(&self, input: &[f32], batch: usize, h: usize, w: usize) -> Result<Outputs> {
        if batch == 0 || input.len() != batch * 3 * h * w {
            return Err(Error::Input(format!(
                "expected {batch} x 3 x {h} x {w} = {} floats, got {}",
                batch * 3 * h * w,
                input.len()
            )));
        }
        let s = self.input_size();
        let fixed = !matches!(self.backend, Backend::Candle);
        if fixed && (h, w) != (s, s) {
            return Err(Error::Input(format!(
                "the {} backend runs this model at {s}x{s} only, got {h}x{w}",
                self.backend
            )));
        }
        let raw: engine::RawOutputs = match &self.engine {
            #[cfg(feature = "nnef")]
            Engine::Tract(e) => e.run(input, batch)?,
            #[cfg(feature = "ort")]
            Engine::Ort(e) => e.run(input, batch)?,
            #[cfg(feature = "candle")]
            Engine::Candle(e) => e.run(input, batch, h, w)?,
            #[cfg(not(any(feature = "nnef", feature = "ort", feature = "candle")))]
            _ => unreachable!("no engine can be built without a backend feature"),
        };
        Ok(Outputs {
            batch,
            num_classes: raw.logits.len() / batch,
            num_features: raw.features.len() / batch,
            logits: raw.logits,
            features: raw.features,
            labels: self.labels.clone(),
        })
    }

    /// Decodes and preprocesses an image file as the model expects (without the `decode`
    /// feature: an [`Error::NoDecoder`]).
    pub fn load_image(&self, path: &Path) -> Result<Vec<f32>> {
        #[cfg(feature = "decode")]
        return Ok(preprocess::load_image(path, &self.meta.preprocessing)?);
        #[cfg(not(feature = "decode"))]
        Err(Error::NoDecoder(path.display().to_string()))
    }

    /// Decodes and preprocesses image files as the model expects, on up to as many threads as
    /// the machine has cores; the results are in the order of `paths`.
    pub fn load_images(&self, paths: &[&Path]) -> Vec<Result<Vec<f32>>> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(paths.len());
        if threads <= 1 {
            return paths.iter().map(|p| self.load_image(p)).collect();
        }
        // Thread t decodes paths t, t + threads, ...; the rows are put back in order.
        let mut per_thread = each((0..threads).collect(), true, |t| {
            paths
                .iter()
                .skip(t)
                .step_by(threads)
                .map(|p| self.load_image(p))
                .collect::<Vec<_>>()
        });
        let mut iters: Vec<_> = per_thread.iter_mut().map(|v| v.drain(..)).collect();
        (0..paths.len())
            .filter_map(|i| iters[i % threads].next())
            .collect()
    }

    /// Preprocesses pixels (`width x height`, `channels` 3 for RGB or 4 for RGBA, rows
    /// `stride` bytes apart) as the model expects.
    pub fn load_pixels(
        &self,
        pixels: &[u8],
        width: u32,
        height: u32,
        stride: usize,
        channels: usize,
    ) -> Result<Vec<f32>> {
        preprocess::preprocess_pixels(
            pixels,
            width,
            height,
            stride,
            channels,
            &self.meta.preprocessing,
        )
        .map_err(Error::Input)
    }

    /// The `k` most probable classes of one row of logits, with this model's labels.
    pub fn top_k(&self, logits: &[f32], k: usize) -> Vec<Prediction> {
        top_k(logits, k, &self.labels)
    }
}

/// `f` on every item, on a scoped thread each when `parallel` (and there are two or more), the
/// results in the order of the items; a thread's panic goes on in the caller.
pub(crate) fn each<T: Send, U: Send>(
    items: Vec<T>,
    parallel: bool,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    if !parallel || items.len() < 2 {
        return items.into_iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items.into_iter().map(|x| s.spawn(move || f(x))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}
