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

/// The conformance bound: `max |Δ| <= 1e-4 * max |reference|`.
pub fn assert_conforms(what: &str, ours: &Tensor, reference: &Tensor) {
    let (d, m) = deviation(ours, reference);
    eprintln!(
        "{what}: max |Δ| = {d:.3e}, max |ref| = {m:.3}, relative {:.3e}",
        d / m
    );
    assert!(d <= 1e-4 * m, "{what}: max |Δ| = {d:e} exceeds 1e-4 * {m}");
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
