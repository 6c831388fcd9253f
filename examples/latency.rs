//! Times one backend on a model directory and prints a JSON line; used by
//! `benches/compare/compare.py` to put nasnet beside ONNX Runtime's Python package and PyTorch.
//!
//! `cargo run --release --example latency -- DIR tract|ort|candle BATCH RUNS [THREADS|-] [DEVICE]`

use std::time::Instant;

use anyhow::Context;
use nasnet::runtime::{Backend, Device, Model, Options};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, backend, batch, runs, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: latency DIR tract|ort|candle BATCH RUNS [THREADS] [DEVICE]");
    };
    let dir = std::path::Path::new(dir);
    let batch: usize = batch.parse().context("BATCH")?;
    let runs: usize = runs.parse().context("RUNS")?;
    let threads: Option<usize> = rest
        .first()
        .filter(|t| *t != "-")
        .map(|t| t.parse())
        .transpose()
        .context("THREADS")?;
    let device = match rest.get(1) {
        Some(d) => d.parse().map_err(anyhow::Error::msg)?,
        None => Device::Cpu,
    };
    let backend: Backend = backend.parse().map_err(anyhow::Error::msg)?;
    let model = Model::open(
        dir,
        Options {
            backend,
            device,
            threads,
            ..Default::default()
        },
    )?;
    let s = model.input_size();
    let input = nasnet_model::init::synthetic_input(batch, s)?;
    let data: Vec<f32> = input.flatten_all()?.to_vec1()?;
    for _ in 0..3 {
        model.run(&data, batch)?;
    }
    let mut times = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        model.run(&data, batch)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let ms = median(times);
    println!(
        "{{\"stack\": \"nasnet {backend}\", \"batch\": {batch}, \"median_ms\": {ms:.3}, \"images_per_s\": {:.3}}}",
        batch as f64 * 1e3 / ms
    );
    Ok(())
}
