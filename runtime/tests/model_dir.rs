//! A model directory as `nasnet` writes it (import, synthetic weights, training): its
//! `model.onnx` keeps the batch norms and reads its weights from `model.safetensors`, so the
//! directory holds them once. Both runtimes read it and give what the self-contained export
//! gives, and tract makes of it the same optimized graph (it folds the batch norms itself).

use std::path::Path;

use nasnet_core::Preset;
use nasnet_core::meta;
use nasnet_model::init::synthetic_network;
use nasnet_runtime::{Backend, Model, Options};

mod common;

/// The largest difference of `a` and `b` relative to the largest magnitude of `b`.
fn relative(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn run(dir: &Path, backend: Backend, x: &[f32]) -> Vec<f32> {
    let options = Options {
        backend,
        threads: Some(1),
        ..Default::default()
    };
    let out = Model::open(dir, options).unwrap().run(x, 1).unwrap();
    [out.logits, out.features].concat()
}

#[test]
fn a_directory_holds_its_weights_once_and_runs_as_the_exported_graph() {
    let mut c = Preset::Mobile.config();
    c.cells = 1;
    c.filters = 8;
    c.num_classes = 10;
    c.stem_multiplier = 0.25;
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    nasnet_model::dir::write_synthetic_config(&shared, "test", c.clone(), false).unwrap();
    let alone = tmp.path().join("alone");
    common::model_dir(&alone, &synthetic_network(&c).unwrap());
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let weights = size(&shared.join(meta::WEIGHTS_FILE));
    assert!(
        size(&shared.join(meta::ONNX_FILE)) + weights / 2 < size(&alone.join(meta::ONNX_FILE)),
        "model.onnx holds no weights of its own"
    );

    let x: Vec<f32> = (0..3 * c.image_size * c.image_size)
        .map(|i| ((i * 7) % 23) as f32 / 23.0 - 0.5)
        .collect();
    let mut backends = vec![Backend::Tract];
    if nasnet_runtime::ort_library(nasnet_runtime::Device::Cpu).exists() {
        backends.push(Backend::Ort);
    } else if std::env::var_os("NASNET_REQUIRE_ORT").is_some() {
        panic!("NASNET_REQUIRE_ORT is set but ONNX Runtime is not installed");
    } else {
        eprintln!("SKIPPED (ort part): ONNX Runtime not installed; run scripts/setup.sh");
    }
    for backend in backends {
        let (got, want) = (run(&shared, backend, &x), run(&alone, backend, &x));
        let d = relative(&got, &want);
        eprintln!("{backend:?}: shared weights vs self-contained export, relative {d:e}");
        assert!(d <= 1e-5, "{backend:?}: {d}");
    }
    // tract folds the batch norms the exporter would have folded: the same operators.
    let ops = |dir: &Path| {
        nasnet_runtime::optimized_ops(&dir.join(meta::ONNX_FILE), c.image_size).unwrap()
    };
    assert_eq!(ops(&shared), ops(&alone));
}
