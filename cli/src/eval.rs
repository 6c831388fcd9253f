//! `nasnet eval`: top-1 and top-5 of a model on a dataset's test split, through the runtime.

use std::path::Path;

use anyhow::bail;
use indicatif::ProgressBar;
use nasnet_core::meta::Preprocessing;
use nasnet_search::data::{Dataset, DatasetSpec, Split};

use crate::infer;

/// `nasnet eval` options.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// A model directory or zoo id.
    #[arg(long, value_name = "DIR|ID", default_value = "nasnet-a-mobile")]
    model: String,
    #[command(flatten)]
    zoo: crate::ZooArgs,
    /// cifar10:DIR, fashion-mnist:DIR, mnist:DIR, or folder:DIR (class sub-folders, e.g. the
    /// ImageNet validation layout; DIR/val or DIR/test is used when present).
    #[arg(long)]
    dataset: String,
    /// The engine: tract (pure Rust), ort (ONNX Runtime) or candle (the network itself).
    #[arg(long, value_enum, default_value = "tract")]
    backend: infer::Backend,
    /// cpu, cuda or cuda:N (CUDA: ort, or candle built with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Images per inference batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Threads per run: tract's pool (default: every core) or ONNX Runtime's intra-op threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Print `{"top1": ..., "top5": ..., "count": ...}`.
    #[arg(long)]
    json: bool,
}

/// Running top-1 / top-5 counts.
#[derive(Default)]
struct Score {
    top1: usize,
    top5: usize,
    count: usize,
}

impl Score {
    fn add(&mut self, logits: &[f32], label: usize) {
        let mine = logits.get(label).copied().unwrap_or(f32::NEG_INFINITY);
        let better = logits.iter().filter(|&&v| v > mine).count();
        self.top1 += usize::from(better == 0);
        self.top5 += usize::from(better < 5);
        self.count += 1;
    }
}

/// `nasnet eval`.
pub fn run_eval(args: EvalArgs) -> anyhow::Result<()> {
    let spec: DatasetSpec = args.dataset.parse()?;
    let dir = args.zoo.model_dir(&args.model)?;
    let model = infer::load(&dir, args.backend, &args.device, args.threads)?;
    let p = model.meta().preprocessing.clone();
    let classes = model.meta().labels.len();
    let bs = args.batch_size.max(1);
    let mut score = Score::default();
    let pb = if crate::quiet() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    let run = |data: Vec<f32>, labels: &[usize], score: &mut Score| -> anyhow::Result<()> {
        let n = labels.len();
        let out = model.run(&data, n)?;
        for (i, &l) in labels.iter().enumerate() {
            score.add(out.logits(i), l);
        }
        Ok(())
    };
    if let DatasetSpec::Folder(root) = &spec {
        let dir = nasnet_search::data::folder_split(root, Split::Test);
        let (names, files) = nasnet_search::data::folder_files(&dir)?;
        let map = label_map(&names, &model.meta().labels, &dir)?;
        pb.set_length(files.len() as u64);
        for chunk in files.chunks(bs) {
            let mut data = vec![];
            for (path, _) in chunk {
                data.extend(nasnet_runtime::load_image(path, &p)?);
            }
            let labels: Vec<usize> = chunk.iter().map(|(_, l)| map[*l as usize]).collect();
            run(data, &labels, &mut score)?;
            pb.inc(chunk.len() as u64);
        }
    } else {
        let test = spec.load(Split::Test, p.crop)?;
        if test.classes.len() > classes {
            bail!(
                "{}: the model has {classes} classes, the dataset {}",
                dir.display(),
                test.classes.len()
            );
        }
        pb.set_length(test.len() as u64);
        let idx: Vec<usize> = (0..test.len()).collect();
        for chunk in idx.chunks(bs) {
            let mut data = vec![];
            for &i in chunk {
                data.extend(pixels_to_input(&test, i, &p)?);
            }
            let labels: Vec<usize> = chunk.iter().map(|&i| test.labels[i] as usize).collect();
            run(data, &labels, &mut score)?;
            pb.inc(chunk.len() as u64);
        }
    }
    pb.finish_and_clear();
    if score.count == 0 {
        bail!("{spec}: no test images");
    }
    let n = score.count as f64;
    let (top1, top5) = (score.top1 as f64 / n, score.top5 as f64 / n);
    if args.json {
        outln!(
            "{}",
            serde_json::json!({
                "top1": top1,
                "top5": top5,
                "count": score.count,
                "precision": model.meta().precision().name(),
            })
        )?;
    } else {
        outln!(
            "{}: top-1 {:.4}  top-5 {:.4}  on {} images of {spec}",
            model.meta().name,
            top1,
            top5,
            score.count
        )?;
    }
    Ok(())
}

/// Class sub-folder index -> model class: by label name when every folder is a label, else
/// by sorted position (the ImageNet synset-folder convention).
fn label_map(folders: &[String], labels: &[String], dir: &Path) -> anyhow::Result<Vec<usize>> {
    let by_name: Option<Vec<usize>> = folders
        .iter()
        .map(|f| labels.iter().position(|l| l == f))
        .collect();
    if let Some(m) = by_name {
        return Ok(m);
    }
    if folders.len() > labels.len() {
        bail!(
            "{}: {} class folders, but the model has {} classes",
            dir.display(),
            folders.len(),
            labels.len()
        );
    }
    Ok((0..folders.len()).collect())
}

/// A dataset image as the model's input: normalized directly when it already has the
/// model's size, else through the model's resize and crop.
pub(crate) fn pixels_to_input(
    d: &Dataset,
    i: usize,
    p: &Preprocessing,
) -> anyhow::Result<Vec<f32>> {
    let img = d.image(i);
    let plane = d.height * d.width;
    let mut rgb = vec![0u8; plane * 3];
    for px in 0..plane {
        for ch in 0..3 {
            rgb[px * 3 + ch] = img[(ch % d.channels) * plane + px];
        }
    }
    if d.height == p.crop && d.width == p.crop {
        let mut out = vec![0f32; 3 * plane];
        for ch in 0..3 {
            for px in 0..plane {
                out[ch * plane + px] = (rgb[px * 3 + ch] as f32 / 255.0 - p.mean[ch]) / p.std[ch];
            }
        }
        return Ok(out);
    }
    nasnet_runtime::preprocess::preprocess_pixels(
        &rgb,
        d.width as u32,
        d.height as u32,
        d.width * 3,
        3,
        p,
    )
    .map_err(anyhow::Error::msg)
}
