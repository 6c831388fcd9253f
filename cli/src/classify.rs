//! `nasnet classify`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use candle_core::{DType, Tensor};
use nasnet_core::meta::ModelMeta;
use nasnet_search::NasNet;
use serde::Serialize;

use crate::Backend;

#[derive(Serialize)]
struct Prediction<'a> {
    index: usize,
    label: &'a str,
    probability: f32,
    logit: f32,
}

#[derive(Serialize)]
struct Record<'a> {
    input: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    row: Option<usize>,
    model: &'a str,
    backend: &'static str,
    predictions: Vec<Prediction<'a>>,
}

/// Loads a model directory into a Candle network.
fn load_candle(dir: &Path) -> anyhow::Result<(ModelMeta, NasNet)> {
    Ok(nasnet_search::load_model_dir(
        dir,
        &nasnet_search::default_device(),
    )?)
}

/// One input as a batch: `.npy` tensors as stored, images preprocessed.
fn load_input(path: &Path, meta: &ModelMeta) -> anyhow::Result<(Tensor, bool)> {
    let device = nasnet_search::default_device();
    let c = meta.preprocessing.crop;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        let t = Tensor::read_npy(path)
            .with_context(|| format!("{}: not a readable .npy file", path.display()))?;
        if t.dtype() != DType::F32 {
            bail!(
                "{}: expected float32 data, found {:?}",
                path.display(),
                t.dtype()
            );
        }
        match t.dims() {
            [_, 3, h, w] if *h >= 32 && *w >= 32 => {}
            d => bail!(
                "{}: expected a float32 tensor [N, 3, H, W] (H, W >= 32; the model takes {c}x{c}), found {d:?}",
                path.display()
            ),
        }
        return Ok((t.to_device(&device)?, true));
    }
    let v = nasnet_runtime::load_image(path, &meta.preprocessing)?;
    Ok((Tensor::from_vec(v, (1, 3, c, c), &device)?, false))
}

pub fn run(
    model: &Path,
    backend: Backend,
    top_k: usize,
    json: bool,
    inputs: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let (meta, net) = match backend {
        Backend::Candle => load_candle(model)?,
    };
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    for path in inputs {
        let result = load_input(path, &meta).and_then(|(x, is_npy)| {
            let logits = net.forward(&x)?.logits;
            Ok((logits.to_dtype(DType::F32)?.to_vec2::<f32>()?, is_npy))
        });
        let (rows, is_npy) = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!("nasnet: {}", crate::one_line(&format!("{e:#}")));
                failed = true;
                continue;
            }
        };
        for (i, logits) in rows.iter().enumerate() {
            let record = Record {
                input: path.display().to_string(),
                row: is_npy.then_some(i),
                model: &meta.name,
                backend: "candle",
                predictions: top(logits, top_k, &meta.labels),
            };
            if json {
                serde_json::to_writer(&mut out, &record)?;
                writeln!(out)?;
            } else {
                match record.row {
                    Some(r) => writeln!(out, "{} [{r}]", record.input)?,
                    None => writeln!(out, "{}", record.input)?,
                }
                for p in &record.predictions {
                    writeln!(out, "  {:>7.4}  {} ({})", p.probability, p.label, p.index)?;
                }
            }
        }
    }
    out.flush()?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The `k` most probable classes (softmax over the logits).
fn top<'a>(logits: &[f32], k: usize, labels: &'a [String]) -> Vec<Prediction<'a>> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exp.iter().sum();
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx.into_iter()
        .take(k)
        .map(|i| Prediction {
            index: i,
            label: labels.get(i).map(String::as_str).unwrap_or(""),
            probability: (exp[i] / sum) as f32,
            logit: logits[i],
        })
        .collect()
}
