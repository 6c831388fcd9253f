//! The fuzz targets' smoke run with the tests: every committed seed (`fuzz/corpus/TARGET`) and
//! every past finding (`fuzz/regressions/TARGET`, each fixed) goes through the same harness
//! the targets run (`fuzz/harness.rs`). Long runs: `scripts/fuzz.sh`.

mod harness {
    include!("../fuzz/harness.rs");
}
mod harness_zoo {
    include!("../fuzz/harness_zoo.rs");
}

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The seeds and findings of a target, with their bytes.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
            continue;
        };
        for e in dir {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            out.push((p, bytes));
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

fn replay(target: &str, f: impl Fn(&[u8])) {
    for (p, bytes) in inputs(target) {
        eprintln!("{target}: {}", p.display());
        f(&bytes);
    }
}

#[test]
fn parser_targets() {
    replay("pth", harness_zoo::pth);
    replay("safetensors", harness_zoo::safetensors);
    replay("keras", harness_zoo::keras);
    replay("model_json", harness::model_json);
    replay("registry", harness_zoo::registry);
}

#[test]
fn preprocess_target() {
    replay("preprocess", harness::preprocess);
}

#[test]
fn model_open_target() {
    let scratch = tempfile::tempdir().unwrap();
    let model = fuzz_dir().join("model");
    replay("model_open", |d| {
        harness::model_open(d, &model, scratch.path())
    });
}

#[test]
fn c_classify_image_target() {
    let dir = std::ffi::CString::new(fuzz_dir().join("model").to_str().unwrap()).unwrap();
    let mut m = std::ptr::null_mut();
    // SAFETY: a NUL-terminated path, default options, a place for the handle.
    let status =
        unsafe { nasnet_bindings::nasnet_model_open(dir.as_ptr(), std::ptr::null(), &mut m) };
    assert_eq!(status, nasnet_bindings::NasnetStatus::Ok);
    replay("c_classify_image", |d| harness::c_classify_image(d, m));
    // SAFETY: `m` is the handle opened above, closed once.
    assert_eq!(
        unsafe { nasnet_bindings::nasnet_model_close(&mut m) },
        nasnet_bindings::NasnetStatus::Ok
    );
}

/// Finding: an HDF5 file whose groups link into a cycle hung the Keras importer.
#[test]
fn keras_groups_in_a_cycle_are_an_error() {
    let bytes = std::fs::read(fuzz_dir().join("regressions/keras/cyclic-groups")).unwrap();
    let e = nasnet_zoo::keras::read_keras(bytes, 4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("a cycle of links?"), "{e}");
}

/// Finding: a graph output that no node produces made tract panic while reading the model;
/// `Model::open` reports it as an error naming the file.
#[test]
fn a_model_whose_output_has_no_producer_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(
        fuzz_dir().join("model/model.json"),
        d.path().join("model.json"),
    )
    .unwrap();
    std::fs::copy(
        fuzz_dir().join("regressions/model_open/output-without-producer.onnx"),
        d.path().join("model.onnx"),
    )
    .unwrap();
    let e = nasnet_runtime::Model::open(d.path(), Default::default())
        .err()
        .expect("an error")
        .to_string();
    assert!(
        e.contains("model.onnx") && e.contains("tract failed"),
        "{e}"
    );
}
