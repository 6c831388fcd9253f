// What the fuzz targets of the zoo's parsers do with their input, shared by those targets
// (`fuzz_targets/*.rs`, `include!`d) and by the test that replays the committed seeds and past
// findings (`tests/fuzz_seeds.rs`); kept apart from `harness.rs` so that the C and runtime
// targets build without the zoo. Every function must return, whatever the bytes: an error is
// fine, a panic, a hang or a crash is a finding.

use std::path::Path;

/// PyTorch checkpoints: the zip container and the legacy (pre-1.6) pickle stream.
pub fn pth(data: &[u8]) {
    let _ = nasnet_zoo::pth::read_zip(data);
    let _ = nasnet_zoo::pth::read_legacy(data);
}

/// A weight file as `nasnet import` reads it (safetensors seeds; the other containers are
/// found by their magic bytes).
pub fn safetensors(data: &[u8]) {
    let _ = nasnet_zoo::import::read_weight_bytes(data.to_vec(), Path::new("fuzz.safetensors"), 4);
}

/// Keras HDF5 weights (NASNet-A Mobile's 4 cells per stage, and Large's 6).
pub fn keras(data: &[u8]) {
    let cells = if data.len().is_multiple_of(2) { 4 } else { 6 };
    let _ = nasnet_zoo::keras::read_keras(data.to_vec(), cells);
}

/// A registry file.
pub fn registry(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nasnet_zoo::registry::Registry::parse(text, "registry.json");
    }
}
