//! Every backend on Mobile and Large: batch-1 latency, batch-8 throughput, and the full
//! classify path of a JPEG (decode, resize, crop, inference). Synthetic weights.
//! Run: `cargo bench --bench backends` (the ort rows need scripts/setup.sh; filter with e.g.
//! `cargo bench --bench backends -- mobile`).

use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nasnet::Preset;
use nasnet::runtime::{Backend, Model, Options};
use nasnet_model::NasNet;
use nasnet_model::init::{synthetic_input, synthetic_network};

fn model_dir(dir: &Path, preset: Preset) -> NasNet {
    nasnet_zoo::import::write_synthetic(dir, preset, true).expect("model directory");
    synthetic_network(&preset.config()).expect("network")
}

fn backends(c: &mut Criterion) {
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images/chelsea.jpg");
    for preset in [Preset::Mobile, Preset::Large] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("model");
        let net = model_dir(&dir, preset);
        let s = preset.config().image_size;
        let mut runtimes = vec![];
        for backend in [Backend::Tract, Backend::Ort] {
            match Model::open(
                &dir,
                Options {
                    backend,
                    ..Default::default()
                },
            ) {
                Ok(m) => runtimes.push((format!("{backend:?}").to_lowercase(), m)),
                Err(e) => eprintln!("{backend:?} skipped: {e}"),
            }
        }
        for batch in [1usize, 8] {
            let mut group = c.benchmark_group(format!("{}/batch{batch}", preset.name()));
            group.sample_size(10);
            group.throughput(Throughput::Elements(batch as u64));
            let x = synthetic_input(batch, s).expect("input");
            let data: Vec<f32> = x.flatten_all().and_then(|t| t.to_vec1()).expect("data");
            group.bench_function(BenchmarkId::from_parameter("candle"), |b| {
                b.iter(|| net.forward(&x).expect("forward"))
            });
            for (name, m) in &runtimes {
                group.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter(|| m.run(&data, batch).expect("run"))
                });
            }
            group.finish();
        }
        let mut group = c.benchmark_group(format!("{}/classify-jpeg", preset.name()));
        group.sample_size(10);
        for (name, m) in &runtimes {
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    let x = m.load_image(&photo).expect("image");
                    let out = m.run(&x, 1).expect("run");
                    out.top_k(0, 5)
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, backends);
criterion_main!(benches);
