//! Shared test helpers: the reference fixtures and the conformance tolerance.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference")
        .join(name)
}

/// The calibrated batch-norm statistics (`*.running_*`) and the expected outputs
/// (`expected.*`) of a reference fixture.
pub struct Reference {
    pub stats: HashMap<String, Tensor>,
    pub expected: HashMap<String, Tensor>,
}

pub fn reference(name: &str) -> Reference {
    let all = candle_core::safetensors::load(fixture(name), &Device::Cpu).unwrap();
    let (expected, stats) = all
        .into_iter()
        .partition(|(k, _)| k.starts_with("expected."));
    Reference { stats, expected }
}

/// `max |a - b|` and `max |b|`.
pub fn deviation(a: &Tensor, b: &Tensor) -> (f32, f32) {
    assert_eq!(a.dims(), b.dims());
    let max = |t: Tensor| {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    (max((a - b).unwrap()), max(b.clone()))
}

/// The conformance bound on logits: `max |Δ| <= 1e-4 * max |reference|`.
pub fn assert_conforms(what: &str, ours: &Tensor, reference: &Tensor) {
    assert_within(what, ours, reference, 1e-4);
}

/// The bound on pooled features: 3e-4 relative. Each feature averages a whole map, and on
/// Large (4032 channels after 18 cells) fp32 accumulation order alone moves them by up to
/// 1e-4 relative between PyTorch, Candle, tract and ONNX Runtime.
pub fn assert_features_conform(what: &str, ours: &Tensor, reference: &Tensor) {
    assert_within(what, ours, reference, 3e-4);
}

pub fn assert_within(what: &str, ours: &Tensor, reference: &Tensor, rel: f32) {
    let (d, m) = deviation(ours, reference);
    eprintln!(
        "{what}: max |Δ| = {d:.3e}, max |ref| = {m:.3}, relative {:.3e}",
        d / m
    );
    assert!(
        d <= rel * m,
        "{what}: max |Δ| = {d:e} exceeds {rel:e} * {m}"
    );
}

/// The opposite: the outputs differ well beyond the bound.
pub fn assert_differs(what: &str, ours: &Tensor, reference: &Tensor) {
    let (d, m) = deviation(ours, reference);
    eprintln!("{what}: max |Δ| = {d:.3e} (bound {:.3e})", 1e-4 * m);
    assert!(
        d > 1e-2 * m,
        "{what}: expected a clear mismatch, max |Δ| = {d:e}"
    );
}
