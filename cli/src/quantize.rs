//! `nasnet quantize`: an fp32 model directory into an int8 one (calibrated on images) or a
//! weights-only int8 or float16 one.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::{Device, Tensor};
use nasnet_core::meta::{ModelMeta, Precision, Preprocessing, Quantization};
use nasnet_model::quant::{self, Calibrator};
use nasnet_search::data::{DatasetSpec, Split};

use crate::infer::{self, Input};

/// `nasnet quantize` options.
#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The fp32 model: a model directory or zoo id.
    #[arg(long, value_name = "DIR|ID", default_value = "nasnet-a-mobile")]
    model: String,
    #[command(flatten)]
    zoo: crate::ZooArgs,
    /// int8 (weights and activations, calibrated), int8-weights or f16-weights (the weights
    /// only: no calibration, fp32 compute).
    #[arg(long, default_value = "int8")]
    precision: Precision,
    /// The calibration images (int8): a folder of images, or a dataset whose training split
    /// is read (fashion-mnist:DIR, cifar10:DIR, mnist:DIR, folder:DIR).
    #[arg(long, value_name = "SOURCE")]
    calibrate: Option<String>,
    /// How many calibration images to read (the first ones of the source).
    #[arg(long, default_value_t = 1000)]
    calibration_count: usize,
    /// How activation ranges are chosen: percentile (all but 0.01 % of the values on each
    /// side) or minmax (the extremes).
    #[arg(long, default_value = "percentile")]
    calibrator: Calibrator,
    /// Images per calibration batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Replace DIR if it exists.
    #[arg(long)]
    force: bool,
    /// Output model directory.
    #[arg(short, long, value_name = "DIR")]
    out: PathBuf,
}

/// `nasnet quantize`.
pub fn run_quantize(args: QuantizeArgs) -> anyhow::Result<()> {
    let dir = args.zoo.model_dir(&args.model)?;
    let meta = ModelMeta::load(&dir)?;
    if let Some(q) = &meta.quantization {
        bail!(
            "{}: already quantized ({}); quantize its fp32 original ({})",
            dir.display(),
            q.precision,
            q.source
        );
    }
    let (_, net) = nasnet_model::load_model_dir(&dir, &Device::Cpu)?;
    let mut record = Quantization {
        precision: args.precision,
        source: meta.name.clone(),
        calibrator: None,
        calibration_images: None,
        calibration_source: None,
    };
    let graph = match args.precision {
        Precision::Fp32 => bail!("--precision fp32: the model is fp32 already"),
        Precision::Int8 => {
            let Some(source) = &args.calibrate else {
                bail!("--precision int8 needs calibration images: --calibrate DIR|DATASET");
            };
            let batches = calibration_batches(source, &meta.preprocessing, &args)?;
            let images: usize = batches.iter().map(|b| b.dim(0).unwrap_or(0)).sum();
            if !crate::quiet() {
                eprintln!("calibrating on {images} images of {source}");
            }
            let ranges = quant::calibrate(&net, args.calibrator, batches.len(), |i| {
                Ok(batches[i].clone())
            })?;
            record.calibrator = Some(args.calibrator.name().to_owned());
            record.calibration_images = Some(images);
            record.calibration_source = Some(source.clone());
            quant::qdq_model(&net, &ranges)?
        }
        p @ (Precision::Int8Weights | Precision::F16Weights) => {
            if args.calibrate.is_some() {
                bail!("--precision {p} quantizes the weights only: it takes no --calibrate");
            }
            quant::weights_only_model(&net, p)?
        }
    };
    let mut out_meta = meta.clone();
    out_meta.name = format!("{} ({})", meta.name, args.precision);
    out_meta.quantization = Some(record);
    let out = nasnet_model::dir::write_quantized_dir(&args.out, &graph, &mut out_meta, args.force)?;
    if !crate::quiet() {
        // The files that hold the weights (an fp32 directory's `model.onnx` is the graph only).
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "wrote {} ({}: {} bytes of weights, fp32 {})",
            out.display(),
            args.precision,
            size(&out.join(&out_meta.weights.file)),
            size(&dir.join(&meta.weights.file))
        );
    }
    Ok(())
}

/// The first `--calibration-count` images of `source`, preprocessed for the model, in
/// batches `[N, 3, S, S]`.
fn calibration_batches(
    source: &str,
    p: &Preprocessing,
    args: &QuantizeArgs,
) -> anyhow::Result<Vec<Tensor>> {
    let count = args.calibration_count.max(1);
    let mut inputs: Vec<Vec<f32>> = vec![];
    let folder = Path::new(source);
    if folder.is_dir() {
        let files = infer::collect(&[folder.to_path_buf()], true)?;
        for file in files {
            if inputs.len() == count {
                break;
            }
            let Input::Image(path) = file else { continue };
            match nasnet_runtime::load_image(&path, p) {
                Ok(x) => inputs.push(x),
                Err(e) => eprintln!("nasnet: {}: skipped: {e}", path.display()),
            }
        }
    } else {
        let spec: DatasetSpec = source.parse().with_context(|| {
            format!("--calibrate {source}: neither a folder nor a dataset spec")
        })?;
        let train = spec.load(Split::Train, p.crop)?;
        for i in 0..train.len().min(count) {
            inputs.push(crate::eval::pixels_to_input(&train, i, p)?);
        }
    }
    if inputs.is_empty() {
        bail!("--calibrate {source}: no readable image");
    }
    let s = p.crop;
    inputs
        .chunks(args.batch_size.max(1))
        .map(|chunk| {
            let n = chunk.len();
            Ok(Tensor::from_vec(
                chunk.concat(),
                (n, 3, s, s),
                &Device::Cpu,
            )?)
        })
        .collect()
}
