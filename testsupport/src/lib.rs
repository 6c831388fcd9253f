//! Helpers shared by the workspace's tests, in one place: the reference fixtures and the
//! conformance bounds, small network configurations, a loopback HTTP server, and a runner for
//! the `nasnet` binary whose failure checks say which exit rule they assert.

pub mod cli;
pub mod http;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use nasnet_core::{NetworkConfig, Preset};

/// The repository's `tests/fixtures` directory.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// A reference fixture (`tests/fixtures/reference/NAME`).
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join("reference").join(name)
}

/// A test image (`tests/fixtures/images/NAME`).
pub fn image(name: &str) -> PathBuf {
    fixtures().join("images").join(name)
}

/// The calibrated batch-norm statistics (`*.running_*`) and the expected outputs
/// (`expected.*`) of a reference fixture.
pub struct Reference {
    /// Batch-norm statistics by canonical key.
    pub stats: HashMap<String, Tensor>,
    /// Expected outputs by `expected.*` key.
    pub expected: HashMap<String, Tensor>,
}

/// Loads a reference fixture.
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

/// The largest absolute difference of two tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    deviation(a, b).0
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

/// `max |Δ| <= rel * max |reference|`, printing both.
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

/// Parses a key list (`KEY\t[d0, d1, ...]` per line, as `tests/fixtures/keys_*.txt`) into
/// shapes by key, without PyTorch's `num_batches_tracked`.
pub fn upstream_keys(text: &str) -> BTreeMap<String, Vec<usize>> {
    text.lines()
        .filter(|l| !l.contains("num_batches_tracked"))
        .map(|l| {
            let (k, s) = l.split_once('\t').unwrap();
            let dims = s
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .filter(|d| !d.trim().is_empty())
                .map(|d| d.trim().parse().unwrap())
                .collect();
            (k.to_owned(), dims)
        })
        .collect()
}

/// A deterministic `[N, C, H, W]` tensor of values in `[-1, 1)` that differ from pixel to
/// pixel (`seed` shifts the pattern).
pub fn ramp(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let v: Vec<f32> = (0..n as u64)
        .map(|i| (((i * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The largest absolute difference between two state dicts with the same keys.
pub fn max_abs_diff_dicts(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .map(|(k, t)| max_abs_diff(t, &b[k]))
        .fold(0f32, f32::max)
}

/// A preset narrowed for fast tests: `filters`, `stem_multiplier` and `classes` replaced.
pub fn small(
    preset: Preset,
    filters: usize,
    stem_multiplier: f64,
    classes: usize,
) -> NetworkConfig {
    let mut c = preset.config();
    c.filters = filters;
    c.stem_multiplier = stem_multiplier;
    c.num_classes = classes;
    c
}

/// The lowercase hex sha256 of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The backends to test: all three, or candle and tract when ONNX Runtime is not installed
/// (said on stderr; CI sets NASNET_REQUIRE_ORT so that it is never skipped there).
pub fn backends() -> Vec<&'static str> {
    if ort_installed() {
        vec!["candle", "tract", "ort"]
    } else {
        vec!["candle", "tract"]
    }
}

/// Whether the ONNX Runtime library is installed; when not, says SKIPPED on stderr, and
/// panics if `NASNET_REQUIRE_ORT` is set.
pub fn ort_installed() -> bool {
    let lib = nasnet_runtime::ort_library(nasnet_runtime::Device::Cpu);
    if lib.exists() {
        return true;
    }
    assert!(
        std::env::var_os("NASNET_REQUIRE_ORT").is_none(),
        "NASNET_REQUIRE_ORT is set but {} does not exist",
        lib.display()
    );
    eprintln!(
        "SKIPPED (ort backend): ONNX Runtime not installed at {}; run scripts/setup.sh",
        lib.display()
    );
    false
}
