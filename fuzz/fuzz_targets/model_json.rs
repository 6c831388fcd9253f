#![no_main]

// Each target uses one function of the shared harness.
#[allow(dead_code)]
mod harness {
    include!("../harness.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::model_json(data));
