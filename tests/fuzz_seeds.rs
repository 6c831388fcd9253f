//! The fuzz targets' smoke run with the tests: every committed seed (`fuzz/corpus/TARGET`) and
//! every past finding (`fuzz/regressions/TARGET`, each fixed) goes through the same harness
//! the targets run (`fuzz/harness.rs`), then a fixed number of mutants of the seeds (bytes
//! flipped, overwritten, inserted, removed, the file cut short) made with a fixed seed, so
//! every target sees malformed input in every test run without libFuzzer's build. Long,
//! coverage-guided runs: `scripts/fuzz.sh` (the test command runs the C target's there).

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

/// A mutant of `seed`: one to four edits of the kinds libFuzzer's mutator makes first.
fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let at = rng.usize(..=v.len());
        match rng.u8(..5) {
            0 if at < v.len() => v[at] ^= 1 << rng.u8(..8),
            1 if at < v.len() => v[at] = [0, 0x7f, 0x80, 0xff][rng.usize(..4)],
            2 => {
                let n = rng.usize(1..=16);
                v.splice(at..at, std::iter::repeat_with(|| rng.u8(..)).take(n));
            }
            3 => {
                let end = (at + rng.usize(1..=64)).min(v.len());
                v.drain(at..end);
            }
            _ => v.truncate(at),
        }
    }
    v
}

/// The seeds and findings of `target`, then `mutants` mutants of its seeds. A mutant that
/// panics is written to `target/fuzz-smoke/TARGET/` to replay, and named.
fn replay(target: &str, mutants: usize, f: impl Fn(&[u8])) {
    let inputs = inputs(target);
    for (p, bytes) in &inputs {
        eprintln!("{target}: {}", p.display());
        f(bytes);
    }
    let mut rng = fastrand::Rng::with_seed(0x6e61_736e_6574);
    for i in 0..mutants {
        let (_, seed) = &inputs[rng.usize(..inputs.len())];
        let m = mutate(&mut rng, seed);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&m)));
        if let Err(panic) = run {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/fuzz-smoke")
                .join(target);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("mutant-{i}"));
            std::fs::write(&path, &m).unwrap();
            // The panic's own message is already printed, by the default hook.
            eprintln!(
                "{target}: mutant {i} panicked; its bytes: {}",
                path.display()
            );
            std::panic::resume_unwind(panic);
        }
    }
    eprintln!(
        "{target}: {} seeds and findings, {mutants} mutants",
        inputs.len()
    );
}

#[test]
fn parser_targets() {
    replay("pth", 20_000, harness_zoo::pth);
    replay("safetensors", 20_000, harness_zoo::safetensors);
    replay("keras", 20_000, harness_zoo::keras);
    replay("model_json", 20_000, harness::model_json);
    replay("registry", 20_000, harness_zoo::registry);
}

#[test]
fn preprocess_target() {
    replay("preprocess", 3_000, harness::preprocess);
}

/// Some mutants make tract panic while reading the graph: the runtime catches that and returns
/// an error naming the file, so the panic messages printed here are expected.
#[test]
fn model_open_target() {
    let scratch = tempfile::tempdir().unwrap();
    let model = fuzz_dir().join("model");
    replay("model_open", 1_000, |d| {
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
    replay("c_classify_image", 1_000, |d| {
        harness::c_classify_image(d, m)
    });
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
