#![no_main]

// Each target uses one function of the shared harness.
#[allow(dead_code)]
mod harness {
    include!("../harness_zoo.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::pth(data));
