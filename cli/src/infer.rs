//! Running a model over many inputs: `nasnet classify` and `nasnet embed`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::{DType, Tensor};
use nasnet_core::meta::ModelMeta;
use nasnet_runtime::{Device, Model, Options};
use nasnet_search::NasNet;

/// The engine a command runs on.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq, Debug)]
pub enum Backend {
    /// tract: pure Rust (default).
    Tract,
    /// ONNX Runtime (CPU or CUDA), loaded from its shared library.
    Ort,
    /// The Candle network, from model.safetensors.
    Candle,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Tract => "tract",
            Backend::Ort => "ort",
            Backend::Candle => "candle",
        }
    }
}

pub enum Engine {
    Candle(Box<NasNet>, candle_core::Device),
    Runtime(Box<Model>),
}

/// A loaded model and how to run it.
pub struct Loaded {
    pub meta: ModelMeta,
    pub engine: Engine,
    pub backend: Backend,
}

pub fn load(
    dir: &Path,
    backend: Backend,
    device: &str,
    threads: Option<usize>,
) -> anyhow::Result<Loaded> {
    let device: Device = device.parse().map_err(anyhow::Error::msg)?;
    match backend {
        Backend::Candle => {
            let dev = match device {
                Device::Cpu => candle_core::Device::Cpu,
                Device::Cuda(n) => candle_cuda(n)?,
            };
            let (meta, net) = nasnet_search::load_model_dir(dir, &dev)?;
            Ok(Loaded {
                meta,
                engine: Engine::Candle(Box::new(net), dev),
                backend,
            })
        }
        Backend::Tract | Backend::Ort => {
            let opts = Options {
                backend: if backend == Backend::Tract {
                    nasnet_runtime::Backend::Tract
                } else {
                    nasnet_runtime::Backend::Ort
                },
                device,
                threads,
            };
            let model = Model::open(dir, opts)?;
            Ok(Loaded {
                meta: model.meta().clone(),
                engine: Engine::Runtime(Box::new(model)),
                backend,
            })
        }
    }
}

#[cfg(feature = "cuda")]
pub fn candle_cuda(n: usize) -> anyhow::Result<candle_core::Device> {
    candle_core::Device::new_cuda(n)
        .with_context(|| format!("CUDA device {n} is not available to Candle"))
}

#[cfg(not(feature = "cuda"))]
pub fn candle_cuda(_: usize) -> anyhow::Result<candle_core::Device> {
    bail!(
        "this nasnet was built without CUDA support for the candle backend (rebuild with --features cuda, or use --backend ort --device cuda)"
    )
}

/// Logits and features of a batch, row-major.
pub struct Batch {
    pub rows: usize,
    pub logits: Vec<f32>,
    pub features: Vec<f32>,
}

impl Loaded {
    /// Runs `n` preprocessed images of `size x size`.
    pub fn run(&self, data: Vec<f32>, n: usize, h: usize, w: usize) -> anyhow::Result<Batch> {
        match &self.engine {
            Engine::Candle(net, dev) => {
                let x = Tensor::from_vec(data, (n, 3, h, w), dev)?;
                let out = net.forward(&x)?;
                let flat = |t: Tensor| -> anyhow::Result<Vec<f32>> {
                    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
                };
                Ok(Batch {
                    rows: n,
                    logits: flat(out.logits)?,
                    features: flat(out.features)?,
                })
            }
            Engine::Runtime(m) => {
                let s = m.input_size();
                if (h, w) != (s, s) {
                    bail!(
                        "the {} backend runs this model at {s}x{s} only, got {h}x{w}",
                        self.backend.name()
                    );
                }
                let out = m.run(&data, n)?;
                Ok(Batch {
                    rows: n,
                    logits: out.logits,
                    features: out.features,
                })
            }
        }
    }
}

/// One unit of work: an image, or a `.npy` batch.
#[derive(Debug, Clone)]
pub enum Input {
    Image(PathBuf),
    Npy(PathBuf),
}

const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "npy"];

fn input_of(p: PathBuf) -> Input {
    if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        Input::Npy(p)
    } else {
        Input::Image(p)
    }
}

/// Expands directories (their image and `.npy` files, sorted) and glob patterns.
pub fn collect(args: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    let mut out = vec![];
    for a in args {
        if a.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(a)
                .with_context(|| format!("{}: cannot list directory", a.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                            IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                        })
                })
                .collect();
            files.sort();
            out.extend(files.into_iter().map(input_of));
            continue;
        }
        let s = a.to_string_lossy();
        if !a.exists() && s.contains(['*', '?', '[']) {
            let mut matches: Vec<PathBuf> = glob::glob(&s)
                .with_context(|| format!("{s}: invalid pattern"))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            if matches.is_empty() {
                bail!("{s}: no file matches");
            }
            matches.sort();
            out.extend(matches.into_iter().map(input_of));
            continue;
        }
        out.push(input_of(a.clone()));
    }
    Ok(out)
}

/// Reads a `.npy` batch `[N, 3, H, W]` of float32.
pub fn read_npy(path: &Path) -> anyhow::Result<(Vec<f32>, usize, usize, usize)> {
    let t = Tensor::read_npy(path)
        .with_context(|| format!("{}: not a readable .npy file", path.display()))?;
    if t.dtype() != DType::F32 {
        bail!(
            "{}: expected float32 data, found {:?}",
            path.display(),
            t.dtype()
        );
    }
    match *t.dims() {
        [n, 3, h, w] if n > 0 && h >= 32 && w >= 32 => Ok((t.flatten_all()?.to_vec1()?, n, h, w)),
        ref d => bail!(
            "{}: expected a float32 tensor [N, 3, H, W] with H, W >= 32, found {d:?}",
            path.display()
        ),
    }
}

/// One result row: which input, which row of a `.npy`, logits and features.
pub struct Row<'a> {
    pub input: &'a Path,
    pub row: Option<usize>,
    pub logits: &'a [f32],
    pub features: &'a [f32],
}

/// Runs every input through the model in batches of `batch_size` images, calling `emit` for
/// each row in input order. Inputs that fail are reported on stderr and skipped; returns
/// whether all succeeded.
pub fn run_all(
    model: &Loaded,
    inputs: &[Input],
    batch_size: usize,
    mut emit: impl FnMut(Row) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let batch_size = batch_size.max(1);
    let s = model.meta.preprocessing.crop;
    let progress = (inputs.len() > batch_size).then(|| {
        let pb = indicatif::ProgressBar::new(inputs.len() as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} images  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    let mut ok = true;
    let report = |e: anyhow::Error| {
        let msg = crate::one_line(&format!("{e:#}"));
        match &progress {
            Some(pb) => pb.suspend(|| eprintln!("nasnet: {msg}")),
            None => eprintln!("nasnet: {msg}"),
        }
    };
    let mut pending: Vec<(&Path, Vec<f32>)> = vec![];
    let flush = |pending: &mut Vec<(&Path, Vec<f32>)>,
                 emit: &mut dyn FnMut(Row) -> anyhow::Result<()>|
     -> anyhow::Result<bool> {
        if pending.is_empty() {
            return Ok(true);
        }
        let n = pending.len();
        let data: Vec<f32> = pending
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let result = model.run(data, n, s, s);
        let paths: Vec<&Path> = pending.drain(..).map(|(p, _)| p).collect();
        match result {
            Ok(b) => {
                let (c, f) = (b.logits.len() / b.rows, b.features.len() / b.rows);
                for (i, p) in paths.into_iter().enumerate() {
                    emit(Row {
                        input: p,
                        row: None,
                        logits: &b.logits[i * c..(i + 1) * c],
                        features: &b.features[i * f..(i + 1) * f],
                    })?;
                }
                Ok(true)
            }
            Err(e) => {
                report(e);
                Ok(false)
            }
        }
    };
    for input in inputs {
        match input {
            Input::Image(p) => match model_image(model, p) {
                Ok(v) => {
                    pending.push((p, v));
                    if pending.len() == batch_size {
                        ok &= flush(&mut pending, &mut emit)?;
                    }
                }
                Err(e) => {
                    report(e);
                    ok = false;
                }
            },
            Input::Npy(p) => {
                ok &= flush(&mut pending, &mut emit)?;
                match read_npy(p).and_then(|(d, n, h, w)| model.run(d, n, h, w)) {
                    Ok(b) => {
                        let (c, f) = (b.logits.len() / b.rows, b.features.len() / b.rows);
                        for i in 0..b.rows {
                            emit(Row {
                                input: p,
                                row: Some(i),
                                logits: &b.logits[i * c..(i + 1) * c],
                                features: &b.features[i * f..(i + 1) * f],
                            })?;
                        }
                    }
                    Err(e) => {
                        report(e);
                        ok = false;
                    }
                }
            }
        }
        if let Some(pb) = &progress {
            pb.inc(1);
        }
    }
    ok &= flush(&mut pending, &mut emit)?;
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    Ok(ok)
}

fn model_image(model: &Loaded, p: &Path) -> anyhow::Result<Vec<f32>> {
    Ok(nasnet_runtime::load_image(p, &model.meta.preprocessing)?)
}

#[derive(serde::Serialize)]
struct Prediction<'a> {
    index: usize,
    label: &'a str,
    probability: f32,
    logit: f32,
}

#[derive(serde::Serialize)]
struct Record<'a> {
    input: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    row: Option<usize>,
    model: &'a str,
    backend: &'static str,
    predictions: Vec<Prediction<'a>>,
}

/// `nasnet classify`: top-k per input on stdout (JSON Lines with `json`).
pub fn classify(
    model: &Loaded,
    inputs: &[Input],
    batch: usize,
    top_k: usize,
    json: bool,
) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    let ok = run_all(model, inputs, batch, |r| {
        let predictions = nasnet_runtime::top_k(r.logits, top_k)
            .into_iter()
            .map(|p| Prediction {
                index: p.index,
                label: model
                    .meta
                    .labels
                    .get(p.index)
                    .map(String::as_str)
                    .unwrap_or(""),
                probability: p.probability,
                logit: p.logit,
            })
            .collect();
        let rec = Record {
            input: r.input.display().to_string(),
            row: r.row,
            model: &model.meta.name,
            backend: model.backend.name(),
            predictions,
        };
        if json {
            serde_json::to_writer(&mut out, &rec)?;
            writeln!(out)?;
        } else {
            match rec.row {
                Some(i) => writeln!(out, "{} [{i}]", rec.input)?,
                None => writeln!(out, "{}", rec.input)?,
            }
            for p in &rec.predictions {
                writeln!(out, "  {:>7.4}  {} ({})", p.probability, p.label, p.index)?;
            }
        }
        Ok(())
    })?;
    out.flush()?;
    Ok(ok)
}

/// Output format of `nasnet embed`.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq, Debug)]
pub enum EmbedFormat {
    /// One float32 `[N, F]` array, rows in input order.
    Npy,
    /// One JSON object per input: `{"input", "row", "features"}`.
    Jsonl,
}

/// `nasnet embed`: the pooled penultimate features.
pub fn embed(
    model: &Loaded,
    inputs: &[Input],
    batch: usize,
    format: EmbedFormat,
    output: Option<&Path>,
) -> anyhow::Result<bool> {
    match format {
        EmbedFormat::Jsonl => {
            let mut w: Box<dyn Write> = match output {
                Some(p) if p != Path::new("-") => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("{}: cannot create", p.display()))?,
                )),
                _ => Box::new(std::io::stdout().lock()),
            };
            let ok = run_all(model, inputs, batch, |r| {
                let v = serde_json::json!({"input": r.input.display().to_string(), "row": r.row, "features": r.features});
                serde_json::to_writer(&mut w, &v)?;
                writeln!(w)?;
                Ok(())
            })?;
            w.flush()?;
            Ok(ok)
        }
        EmbedFormat::Npy => {
            let Some(path) = output.filter(|p| *p != Path::new("-")) else {
                bail!("--format npy needs an output file (-o FILE.npy)");
            };
            let mut rows = 0;
            let mut data = vec![];
            let ok = run_all(model, inputs, batch, |r| {
                rows += 1;
                data.extend_from_slice(r.features);
                Ok(())
            })?;
            if let Some(f) = data.len().checked_div(rows) {
                let t = Tensor::from_vec(data, (rows, f), &candle_core::Device::Cpu)?;
                let tmp = path.with_extension(format!("npy.partial-{}", std::process::id()));
                t.write_npy(&tmp)
                    .with_context(|| format!("{}: cannot write", path.display()))?;
                std::fs::rename(&tmp, path)
                    .with_context(|| format!("{}: cannot write", path.display()))?;
                eprintln!("wrote {rows} x {f} features to {}", path.display());
            }
            Ok(ok)
        }
    }
}
