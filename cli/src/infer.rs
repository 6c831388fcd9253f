//! Running a model over many inputs: `nasnet classify` and `nasnet embed`. The model runs on
//! the runtime ([`nasnet_runtime::Model`]), whatever the backend; this module only walks the
//! inputs, batches them and prints.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::{DType, Tensor};
use nasnet_core::fsutil::write_file_atomically;
use nasnet_runtime::preprocess::has_image_extension;
use nasnet_runtime::{Model, Options, Outputs};

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

impl From<Backend> for nasnet_runtime::Backend {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Tract => nasnet_runtime::Backend::Tract,
            Backend::Ort => nasnet_runtime::Backend::Ort,
            Backend::Candle => nasnet_runtime::Backend::Candle,
        }
    }
}

/// Makes glibc's allocator return large blocks (decoded photos, resize buffers) to the system
/// when they are freed. By default it raises its `mmap` threshold after the first such block
/// and keeps later ones in per-thread arenas, so decoding on every core holds tens of MB that
/// no image needs any more (docs/benchmarks.md, "Settings", has the peak it saves on 12 MP
/// photos). Elsewhere it does nothing.
fn return_freed_images() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Opens a model directory on a backend and device (`cpu`, `cuda`, `cuda:N`), for a command
/// that runs it over inputs.
pub fn load(
    dir: &Path,
    backend: Backend,
    device: &str,
    threads: Option<usize>,
) -> anyhow::Result<Model> {
    return_freed_images();
    let opts = Options {
        backend: backend.into(),
        device: device.parse().map_err(anyhow::Error::msg)?,
        threads,
        ..Default::default()
    };
    Ok(Model::open(dir, opts)?)
}

/// One unit of work: an image, or a `.npy` batch.
#[derive(Debug, Clone)]
pub enum Input {
    Image(PathBuf),
    Npy(PathBuf),
}

fn is_npy(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

fn input_of(p: PathBuf) -> Input {
    if is_npy(&p) {
        Input::Npy(p)
    } else {
        Input::Image(p)
    }
}

/// The paths listed in `list`, one per line (`-`: standard input); blank lines are skipped.
pub fn read_list(list: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let text = if list == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("standard input: cannot read")?
    } else {
        std::fs::read_to_string(list).with_context(|| format!("{}: cannot read", list.display()))?
    };
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(PathBuf::from)
        .collect())
}

/// Expands directories (their image and `.npy` files, sorted; with `recursive`, those of
/// their subdirectories too) and glob patterns.
pub fn collect(args: &[PathBuf], recursive: bool) -> anyhow::Result<Vec<Input>> {
    let mut out = vec![];
    for a in args {
        if a.is_dir() {
            let depth = if recursive { usize::MAX } else { 1 };
            let mut files = vec![];
            for e in walkdir::WalkDir::new(a).max_depth(depth) {
                let e = e.with_context(|| format!("{}: cannot list directory", a.display()))?;
                let p = e.into_path();
                if p.is_file() && (has_image_extension(&p) || is_npy(&p)) {
                    files.push(p);
                }
            }
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

/// Runs every input through the model in batches of `batch_size` images, calling
/// `emit(input, npy_row, outputs, row)` for each row in input order. Inputs that fail are
/// reported on stderr and skipped; returns whether all succeeded.
pub fn run_all(
    model: &Model,
    inputs: &[Input],
    batch_size: usize,
    mut emit: impl FnMut(&Path, Option<usize>, &Outputs, usize) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let batch_size = batch_size.max(1);
    let progress = (inputs.len() > batch_size && !crate::quiet()).then(|| {
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
    type Emit<'e> = dyn FnMut(&Path, Option<usize>, &Outputs, usize) -> anyhow::Result<()> + 'e;
    let mut pending: Vec<(&Path, Vec<f32>)> = vec![];
    let flush = |pending: &mut Vec<(&Path, Vec<f32>)>, emit: &mut Emit| -> anyhow::Result<bool> {
        if pending.is_empty() {
            return Ok(true);
        }
        let n = pending.len();
        let data: Vec<f32> = pending
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let paths: Vec<&Path> = pending.drain(..).map(|(p, _)| p).collect();
        match model.run(&data, n) {
            Ok(out) => {
                for (i, p) in paths.into_iter().enumerate() {
                    emit(p, None, &out, i)?;
                }
                Ok(true)
            }
            Err(e) => {
                report(e.into());
                Ok(false)
            }
        }
    };
    // Images are decoded one chunk ahead, on every core, while the model runs the chunk
    // before; a chunk is a whole number of batches, so batching is as if decoded in turn.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk_len = batch_size * cores.div_ceil(batch_size);
    let decode_chunk = |chunk: &[Input]| {
        let paths: Vec<&Path> = chunk
            .iter()
            .filter_map(|i| match i {
                Input::Image(p) => Some(p.as_path()),
                Input::Npy(_) => None,
            })
            .collect();
        model.load_images(&paths)
    };
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut chunks = inputs.chunks(chunk_len);
        let mut ahead = chunks.next().map(|c| (c, s.spawn(move || decode_chunk(c))));
        while let Some((chunk, decoding)) = ahead.take() {
            let decoded = decoding
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            ahead = chunks.next().map(|c| (c, s.spawn(move || decode_chunk(c))));
            let mut decoded = decoded.into_iter();
            for input in chunk {
                match input {
                    Input::Image(p) => match decoded.next() {
                        Some(Ok(v)) => {
                            pending.push((p, v));
                            if pending.len() == batch_size {
                                ok &= flush(&mut pending, &mut emit)?;
                            }
                        }
                        Some(Err(e)) => {
                            report(e.into());
                            ok = false;
                        }
                        None => unreachable!("one decoded result per image of the chunk"),
                    },
                    Input::Npy(p) => {
                        ok &= flush(&mut pending, &mut emit)?;
                        let out =
                            read_npy(p).and_then(|(d, n, h, w)| Ok(model.run_sized(&d, n, h, w)?));
                        match out {
                            Ok(out) => {
                                for i in 0..out.batch {
                                    emit(p, Some(i), &out, i)?;
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
        }
        Ok(())
    })?;
    ok &= flush(&mut pending, &mut emit)?;
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    Ok(ok)
}

#[derive(serde::Serialize)]
struct Record<'a> {
    input: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    row: Option<usize>,
    model: &'a str,
    backend: &'static str,
    predictions: Vec<nasnet_runtime::Prediction>,
}

/// Output format of `nasnet classify`.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq, Debug)]
pub enum ClassifyFormat {
    /// Each input, then its predictions indented.
    Text,
    /// One JSON object per input (per row for .npy): input, row, model, backend, predictions
    /// with index, label, synset (ImageNet labels), probability and logit.
    Json,
    /// One line per prediction: input,row,rank,index,label,synset,probability,logit, with a
    /// header.
    Csv,
}

/// `nasnet classify`: top-k per input on stdout.
pub fn classify(
    model: &Model,
    inputs: &[Input],
    batch: usize,
    top_k: usize,
    format: ClassifyFormat,
) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    let mut csv =
        (format == ClassifyFormat::Csv).then(|| csv::Writer::from_writer(std::io::stdout()));
    if let Some(w) = &mut csv {
        w.write_record([
            "input",
            "row",
            "rank",
            "index",
            "label",
            "synset",
            "probability",
            "logit",
        ])?;
    }
    let backend = model.backend().name();
    let ok = run_all(model, inputs, batch, |input, row, outputs, i| {
        let rec = Record {
            input: input.display().to_string(),
            row,
            model: &model.meta().name,
            backend,
            predictions: outputs.top_k(i, top_k),
        };
        if let Some(w) = &mut csv {
            let row = rec.row.map(|r| r.to_string()).unwrap_or_default();
            for (rank, p) in rec.predictions.iter().enumerate() {
                w.write_record([
                    rec.input.as_str(),
                    &row,
                    &(rank + 1).to_string(),
                    &p.index.to_string(),
                    &p.label,
                    p.synset.as_deref().unwrap_or(""),
                    &p.probability.to_string(),
                    &p.logit.to_string(),
                ])?;
            }
        } else if format == ClassifyFormat::Json {
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
    if let Some(mut w) = csv {
        w.flush()?;
    }
    out.flush()?;
    Ok(ok)
}

/// Output format of `nasnet embed`.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq, Debug)]
pub enum EmbedFormat {
    /// One float32 `[N, F]` array, rows in input order, their inputs listed in FILE.paths.txt.
    Npy,
    /// One JSON object per input: `{"input", "row", "features"}`.
    Jsonl,
}

/// `FILE.paths.txt` beside `FILE.npy`: the input of each row, one per line (`FILE.npy#ROW` for
/// the rows of a `.npy` input).
pub fn rows_listing(npy: &Path) -> PathBuf {
    npy.with_extension("paths.txt")
}

/// `nasnet embed`: the pooled penultimate features. With `.npy` output, a failed input
/// writes nothing unless `allow_missing` (rows are listed beside the array either way).
pub fn embed(
    model: &Model,
    inputs: &[Input],
    batch: usize,
    format: EmbedFormat,
    output: Option<&Path>,
    allow_missing: bool,
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
            let ok = run_all(model, inputs, batch, |input, row, out, i| {
                let v = serde_json::json!({"input": input.display().to_string(), "row": row, "features": out.features(i)});
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
            let mut names = vec![];
            let mut data = vec![];
            let ok = run_all(model, inputs, batch, |input, row, out, i| {
                names.push(match row {
                    Some(r) => format!("{}#{r}", input.display()),
                    None => input.display().to_string(),
                });
                data.extend_from_slice(out.features(i));
                Ok(())
            })?;
            let listing = rows_listing(path);
            if !ok && !allow_missing {
                bail!(
                    "some inputs failed, so row i of {} would not be input i; nothing written (--allow-missing writes the others' rows, listed in {})",
                    path.display(),
                    listing.display()
                );
            }
            let rows = names.len();
            if let Some(f) = data.len().checked_div(rows) {
                let t = Tensor::from_vec(data, (rows, f), &candle_core::Device::Cpu)?;
                write_file_atomically(path, |tmp| -> anyhow::Result<()> { Ok(t.write_npy(tmp)?) })
                    .with_context(|| format!("{}: cannot write", path.display()))?;
                let text: String = names.iter().map(|n| format!("{n}\n")).collect();
                write_file_atomically(&listing, |tmp| -> anyhow::Result<()> {
                    Ok(std::fs::write(tmp, &text)?)
                })
                .with_context(|| format!("{}: cannot write", listing.display()))?;
                eprintln!(
                    "wrote {rows} x {f} features to {} (their inputs, in row order, in {})",
                    path.display(),
                    listing.display()
                );
            }
            Ok(ok)
        }
    }
}
