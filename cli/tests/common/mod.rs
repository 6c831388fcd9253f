//! Helpers shared by the binary's test files (each file uses some of them).
#![allow(dead_code)]

use std::process::Output;

/// Asserts that the command succeeded (showing its stderr if not); returns its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "nasnet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The backends to test: all three, or candle and tract when ONNX Runtime is not installed
/// (said on stderr; CI sets NASNET_REQUIRE_ORT so that it is never skipped there).
pub fn backends() -> Vec<&'static str> {
    let lib = nasnet_runtime::ort_library(nasnet_runtime::Device::Cpu);
    if lib.exists() {
        return vec!["candle", "tract", "ort"];
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
    vec!["candle", "tract"]
}
