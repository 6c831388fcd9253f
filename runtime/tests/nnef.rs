//! NNEF model files (`model.nnef.tar`): what `write_nnef` makes of a model's ONNX graph runs
//! on tract without the ONNX front end and gives the ONNX model's logits; beside `model.onnx`
//! it is what tract reads (and no prepared-model file is written); a damaged or foreign file
//! is an error that names it, never a panic.

use std::path::Path;

use nasnet_core::Preset;
use nasnet_core::meta;
use nasnet_model::init::synthetic_network;
use nasnet_runtime::{Backend, Model, Options, TractCache, write_nnef};

mod common;

/// A small model directory of `preset`'s wiring (one cell a stack, 8 filters) with `classes`
/// classes; returns its input size.
fn model_dir(dir: &Path, preset: Preset, classes: usize) -> usize {
    let mut c = preset.config();
    c.cells = 1;
    c.filters = 8;
    c.num_classes = classes;
    c.stem_multiplier = 0.25;
    common::model_dir(dir, &synthetic_network(&c).unwrap());
    c.image_size
}

fn open(dir: &Path) -> nasnet_runtime::Result<Model> {
    Model::open(
        dir,
        Options {
            backend: Backend::Tract,
            tract_cache: TractCache::BesideModel,
            ..Default::default()
        },
    )
}

fn input(size: usize) -> Vec<f32> {
    (0..3 * size * size)
        .map(|i| ((i * 7) % 23) as f32 / 23.0 - 0.5)
        .collect()
}

/// The largest difference of `a` and `b` relative to the largest magnitude of `b`.
fn relative(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn nnef_gives_the_onnx_models_logits_and_features() {
    for preset in [Preset::Cifar, Preset::Mobile] {
        let tmp = tempfile::tempdir().unwrap();
        let onnx_dir = tmp.path().join("onnx");
        let size = model_dir(&onnx_dir, preset, 10);
        let x = input(size);
        let want = open(&onnx_dir).unwrap().run(&x, 1).unwrap();

        // NNEF alone: no model.onnx in the directory.
        let nnef_dir = tmp.path().join("nnef");
        std::fs::create_dir(&nnef_dir).unwrap();
        std::fs::copy(
            onnx_dir.join(meta::META_FILE),
            nnef_dir.join(meta::META_FILE),
        )
        .unwrap();
        write_nnef(
            &onnx_dir.join(meta::ONNX_FILE),
            size,
            &nnef_dir.join(meta::NNEF_FILE),
        )
        .unwrap();
        let got = open(&nnef_dir).unwrap().run(&x, 1).unwrap();
        let (l, f) = (
            relative(&got.logits, &want.logits),
            relative(&got.features, &want.features),
        );
        assert!(
            l <= 1e-5 && f <= 1e-5,
            "{preset:?}: logits {l}, features {f}"
        );
        let files: Vec<String> = std::fs::read_dir(&nnef_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(
            files.is_empty(),
            "the NNEF file is the prepared model: {files:?}"
        );
    }
}

#[test]
fn beside_model_onnx_the_nnef_file_is_what_tract_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let size = model_dir(&a, Preset::Cifar, 10);
    model_dir(&b, Preset::Cifar, 10);
    // b's graph as a's NNEF file: a now answers as b does (the ONNX file is not read).
    write_nnef(&b.join(meta::ONNX_FILE), size, &a.join(meta::NNEF_FILE)).unwrap();
    let x = input(size);
    let from_b = open(&b).unwrap().run(&x, 1).unwrap().logits;
    let from_a = open(&a).unwrap().run(&x, 1).unwrap().logits;
    assert_eq!(from_a, from_b);
}

#[test]
fn a_damaged_or_foreign_nnef_file_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let size = model_dir(&dir, Preset::Cifar, 10);
    let nnef = dir.join(meta::NNEF_FILE);
    write_nnef(&dir.join(meta::ONNX_FILE), size, &nnef).unwrap();
    let whole = std::fs::read(&nnef).unwrap();
    // Foreign files for this model.json: another input size, another number of classes.
    let foreign = |preset, classes| {
        let d = tmp.path().join(format!("{preset:?}-{classes}"));
        let s = model_dir(&d, preset, classes);
        let out = d.join(meta::NNEF_FILE);
        write_nnef(&d.join(meta::ONNX_FILE), s, &out).unwrap();
        std::fs::read(out).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("garbage", b"not an archive at all".to_vec()),
        ("empty", vec![]),
        ("another input size", foreign(Preset::Mobile, 10)),
        ("another number of classes", foreign(Preset::Cifar, 7)),
    ];
    for (what, bytes) in cases {
        std::fs::write(&nnef, &bytes).unwrap();
        let e = open(&dir).err().unwrap_or_else(|| panic!("{what}: opened"));
        assert!(
            e.to_string().contains(&nnef.display().to_string()),
            "{what}: the error names the file: {e}"
        );
    }
}

#[test]
fn write_nnef_names_a_missing_or_damaged_onnx_file() {
    let tmp = tempfile::tempdir().unwrap();
    let onnx = tmp.path().join("model.onnx");
    let out = tmp.path().join("model.nnef.tar");
    std::fs::write(&onnx, b"not onnx").unwrap();
    let e = write_nnef(&onnx, 32, &out).unwrap_err().to_string();
    assert!(e.contains(&onnx.display().to_string()), "{e}");
    assert!(!out.exists(), "nothing written");

    // A destination that cannot be written is named too.
    let dir = tmp.path().join("m");
    let size = model_dir(&dir, Preset::Cifar, 10);
    let out = tmp.path().join("no-such-dir").join(meta::NNEF_FILE);
    let e = write_nnef(&dir.join(meta::ONNX_FILE), size, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-dir"), "{e}");
}

#[test]
fn a_directory_with_neither_model_file_says_how_to_make_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    model_dir(&dir, Preset::Cifar, 10);
    std::fs::remove_file(dir.join(meta::ONNX_FILE)).unwrap();
    let e = open(&dir).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains(meta::NNEF_FILE) && e.contains(meta::ONNX_FILE) && e.contains("nasnet export"),
        "{e}"
    );
}
