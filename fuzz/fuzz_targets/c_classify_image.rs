#![no_main]

// Each target uses one function of the shared harness.
#[allow(dead_code)]
mod harness {
    include!("../harness.rs");
}

use std::sync::OnceLock;

/// The C handle of the model in `NASNET_FUZZ_MODEL` (made by `scripts/fuzz.sh`), opened once
/// with tract.
struct Handle(*mut nasnet_bindings::NasnetModel);
// SAFETY: a model handle may be used from any thread (bindings/README, "Threads").
unsafe impl Send for Handle {}
// SAFETY: as above; classification takes `*const` and may run concurrently.
unsafe impl Sync for Handle {}

fn model() -> *const nasnet_bindings::NasnetModel {
    static MODEL: OnceLock<Handle> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = std::env::var("NASNET_FUZZ_MODEL")
                .expect("NASNET_FUZZ_MODEL: a model directory (scripts/fuzz.sh makes one)");
            let dir = std::ffi::CString::new(dir).expect("a path without NUL");
            let mut m = std::ptr::null_mut();
            // SAFETY: `dir` is a NUL-terminated string, null options mean the defaults, and
            // `m` is a valid place for the handle.
            let status = unsafe {
                nasnet_bindings::nasnet_model_open(dir.as_ptr(), std::ptr::null(), &mut m)
            };
            assert_eq!(
                status,
                nasnet_bindings::NasnetStatus::Ok,
                "cannot open the fuzz model"
            );
            Handle(m)
        })
        .0
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::c_classify_image(data, model()));
