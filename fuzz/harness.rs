// What each fuzz target of the runtime, preprocessing and C ABI does with its input, shared by
// those targets (`fuzz_targets/*.rs`, `include!`d; the zoo's parsers are in `harness_zoo.rs`)
// and by the test that replays the committed seeds and past findings
// (`tests/fuzz_seeds.rs`). Every function must return, whatever the bytes: an error is fine, a
// panic, a hang or a crash is a finding.

use std::path::Path;

/// `model.json`.
pub fn model_json(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nasnet_core::meta::ModelMeta::from_json(text, "model.json");
    }
}

/// Decoding (every format, within the limits) and the evaluation transform, both of
/// NASNet-A's pipelines.
pub fn preprocess(data: &[u8]) {
    use nasnet_core::meta::Preprocessing;
    let p = if data.first().is_some_and(|b| b & 1 == 1) {
        Preprocessing::timm(331)
    } else {
        Preprocessing::cadene(224)
    };
    let _ = nasnet_core::preprocess::load_image_from_memory(data, Path::new("fuzz"), &p);
}

/// `runtime::Model::open` with tract on a mutated `model.onnx` or `model.nnef.tar` beside
/// `model`'s `model.json`, and a run when it opens.
pub fn model_open(data: &[u8], model: &Path, scratch: &Path) {
    use nasnet_runtime::{Backend, Model, Options, TractCache};
    let json = model.join("model.json");
    // A tar archive (`ustar` at byte 257) is read as the NNEF model, anything else as ONNX.
    let nnef = data.get(257..262) == Some(b"ustar".as_slice());
    let (file, other) = if nnef {
        ("model.nnef.tar", "model.onnx")
    } else {
        ("model.onnx", "model.nnef.tar")
    };
    let _ = std::fs::remove_file(scratch.join(other));
    if std::fs::copy(&json, scratch.join("model.json")).is_err()
        || std::fs::write(scratch.join(file), data).is_err()
    {
        return;
    }
    // The model file is what is under test: no prepared-model file written for each input.
    let opts = Options {
        backend: Backend::Tract,
        threads: Some(1),
        tract_cache: TractCache::Off,
        ..Default::default()
    };
    if let Ok(m) = Model::open(scratch, opts) {
        let s = m.input_size();
        let _ = m.run(&vec![0.0; 3 * s * s], 1);
    }
}

/// `nasnet_classify_image` through the C ABI with sizes, strides, formats, `k` and output
/// lengths from the input, on a pixel buffer as large as the arguments say (the one thing a
/// C caller must get right: the API cannot see the buffer's length).
pub fn c_classify_image(data: &[u8], model: *const nasnet_bindings::NasnetModel) {
    use nasnet_bindings::{NasnetPrediction, NasnetStatus, nasnet_classify_image};
    let Some((head, rest)) = data.split_first_chunk::<12>() else {
        return;
    };
    let width = u16::from_le_bytes([head[0], head[1]]) as u32 % 1024;
    let height = u16::from_le_bytes([head[2], head[3]]) as u32 % 1024;
    let format = match head[4] {
        0..=127 => 0,
        128..=250 => 1,
        b => u32::from(b) << (b % 24), // out of range
    };
    let channels = if format == 1 { 4 } else { 3 };
    let stride = width as usize * channels + head[5] as usize % 16;
    let k = head[6] as usize % 16;
    let out_len = head[7] as usize % 16;
    let null_out = head[8] & 1 == 1;
    let null_written = head[8] & 2 == 2;
    let len = (stride * height as usize).max(1);
    if len > 16 << 20 {
        return;
    }
    let mut pixels = vec![0u8; len];
    for (p, b) in pixels.iter_mut().zip(rest.iter().cycle()) {
        *p = *b;
    }
    let mut out = vec![
        NasnetPrediction {
            index: 0,
            probability: 0.0,
            logit: 0.0,
            label: std::ptr::null(),
        };
        out_len
    ];
    let mut written = 0usize;
    // SAFETY: `model` is an open handle; `pixels` holds `stride * height` bytes, at least what
    // the call reads for these arguments; `out` holds `out_len` predictions; the nulls are
    // for arguments the API checks.
    let status = unsafe {
        nasnet_classify_image(
            model,
            pixels.as_ptr(),
            width,
            height,
            stride,
            format,
            k,
            if null_out {
                std::ptr::null_mut()
            } else {
                out.as_mut_ptr()
            },
            out_len,
            if null_written {
                std::ptr::null_mut()
            } else {
                &mut written
            },
        )
    };
    match status {
        NasnetStatus::Ok => assert!(written <= out_len.min(k), "wrote {written} of {out_len}"),
        // Says how many it needs.
        NasnetStatus::BufferTooSmall => assert!(written > out_len, "{written} <= {out_len}"),
        _ => assert_eq!(written, 0, "an error wrote {written}"),
    }
}
