#![no_main]

// Each target uses one function of the shared harness.
#[allow(dead_code)]
mod harness {
    include!("../harness.rs");
}

use std::path::PathBuf;
use std::sync::OnceLock;

/// The model whose `model.json` goes beside each mutated `model.onnx` (`NASNET_FUZZ_MODEL`,
/// made by `scripts/fuzz.sh`), and a scratch directory for the pair.
fn dirs() -> &'static (PathBuf, tempfile::TempDir) {
    static DIRS: OnceLock<(PathBuf, tempfile::TempDir)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let model = std::env::var_os("NASNET_FUZZ_MODEL")
            .map(PathBuf::from)
            .expect("NASNET_FUZZ_MODEL: a model directory (scripts/fuzz.sh makes one)");
        (model, tempfile::tempdir().expect("a scratch directory"))
    })
}

libfuzzer_sys::fuzz_target!(
    init: {
        // libfuzzer-sys's hook aborts at any panic, even one the runtime catches: tract
        // panics on some damaged files, and `Model::open` turns that into an error. A panic
        // that escapes still ends the run (libfuzzer-sys aborts when its call unwinds).
        std::panic::set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
        let (model, scratch) = dirs();
        harness::model_open(data, model, scratch.path());
    }
);
