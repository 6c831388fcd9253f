//! The tract backend: its prepared-model cache is written on the first open, read on the
//! next, never stale (a changed model.onnx or a damaged file is prepared again), and never in
//! the way (a directory that cannot be written to only leaves the model uncached); runs on
//! one model from many threads at once agree.

use std::path::{Path, PathBuf};

use nasnet_core::Preset;
use nasnet_core::meta;
use nasnet_model::init::synthetic_network;
use nasnet_runtime::{Backend, Model, Options, TractCache, tract_cache_file};

mod common;

/// A small CIFAR-sized model directory with `classes` classes and `filters` filters.
fn model_dir(dir: &Path, classes: usize, filters: usize) {
    let mut c = Preset::Cifar.config();
    c.cells = 1;
    c.filters = filters;
    c.num_classes = classes;
    common::model_dir(dir, &synthetic_network(&c).unwrap());
}

/// The logits of the model in `dir` opened on tract with `cache`, on a fixed input.
fn logits(dir: &Path, cache: &TractCache) -> Vec<f32> {
    let opts = Options {
        backend: Backend::Tract,
        tract_cache: cache.clone(),
        ..Default::default()
    };
    let model = Model::open(dir, opts).unwrap();
    model.run(&input(1), 1).unwrap().logits.to_vec()
}

/// A fixed input of `batch` images.
fn input(batch: usize) -> Vec<f32> {
    (0..batch * 3 * 32 * 32)
        .map(|i| (i % 17) as f32 / 17.0 - 0.5)
        .collect()
}

fn cache_file(dir: &Path, cache: &TractCache) -> PathBuf {
    tract_cache_file(&dir.join(meta::ONNX_FILE), 32, cache)
        .unwrap()
        .unwrap()
}

/// The hidden prepared-model files beside a model.
fn prepared_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".nnef.tar"))
        .collect();
    v.sort();
    v
}

#[test]
fn the_second_open_reads_what_the_first_prepared() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    model_dir(&a, 10, 8);
    model_dir(&b, 10, 12);
    let beside = TractCache::BesideModel;
    let uncached = logits(&a, &TractCache::Off);
    assert!(prepared_files(&a).is_empty(), "Off writes nothing");

    let first = logits(&a, &beside);
    let file = cache_file(&a, &beside);
    assert_eq!(prepared_files(&a), vec![file.clone()]);
    assert_eq!(first, uncached, "the first open, prepared afresh");
    let second = logits(&a, &beside);
    assert_eq!(second, uncached, "the second open, from the cache");

    // The open reads the cache: another model's prepared file put in its place is what runs.
    let other = logits(&b, &beside);
    assert_ne!(other, uncached);
    std::fs::copy(cache_file(&b, &beside), &file).unwrap();
    let swapped = logits(&a, &beside);
    assert_eq!(swapped, other, "the prepared file was read, not model.onnx");
}

#[test]
fn a_changed_model_or_a_damaged_file_is_prepared_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let beside = TractCache::BesideModel;
    model_dir(&dir, 10, 8);
    logits(&dir, &beside);
    let old = cache_file(&dir, &beside);

    // A new model.onnx: a new name, the old file gone, the new model's answer.
    model_dir(&dir, 10, 12);
    let new = cache_file(&dir, &beside);
    assert_ne!(old, new, "the name follows the content of model.onnx");
    assert_eq!(logits(&dir, &beside), logits(&dir, &TractCache::Off));
    assert_eq!(
        prepared_files(&dir),
        vec![new.clone()],
        "the stale file is removed"
    );

    // Damaged: truncated, then garbage. Each open prepares the model again and repairs it.
    let whole = std::fs::read(&new).unwrap();
    let expected = logits(&dir, &TractCache::Off);
    for damaged in [
        whole[..whole.len() / 2].to_vec(),
        b"not a tar file".to_vec(),
    ] {
        std::fs::write(&new, damaged).unwrap();
        assert_eq!(logits(&dir, &beside), expected);
        assert_eq!(
            std::fs::read(&new).unwrap().len(),
            whole.len(),
            "the file is written again"
        );
    }
}

#[test]
fn a_cache_directory_of_ones_own_or_none_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    model_dir(&dir, 10, 8);
    let expected = logits(&dir, &TractCache::Off);

    let elsewhere = TractCache::In(tmp.path().join("cache/tract"));
    assert_eq!(logits(&dir, &elsewhere), expected);
    assert!(
        cache_file(&dir, &elsewhere).is_file(),
        "made in the directory given"
    );
    assert!(prepared_files(&dir).is_empty(), "nothing beside the model");
    assert_eq!(logits(&dir, &elsewhere), expected);

    // A cache directory that cannot be made (under a file): the model opens all the same.
    let blocked = tmp.path().join("a-file");
    std::fs::write(&blocked, "").unwrap();
    assert_eq!(
        logits(&dir, &TractCache::In(blocked.join("tract"))),
        expected
    );
}

#[test]
fn runs_from_many_threads_on_one_model_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    model_dir(&dir, 10, 8);
    for threads in [Some(1), Some(2), Some(3)] {
        let opts = Options {
            backend: Backend::Tract,
            threads,
            tract_cache: TractCache::Off,
            ..Default::default()
        };
        let model = Model::open(&dir, opts).unwrap();
        let x = input(3);
        let expected = model.run(&x, 3).unwrap().logits;
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..5 {
                        assert_eq!(model.run(&x, 3).unwrap().logits, expected, "{threads:?}");
                    }
                });
            }
        });
    }
}

#[test]
fn the_cache_names_an_unreadable_model_and_off_reads_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("gone").join(meta::ONNX_FILE);
    let e = tract_cache_file(&missing, 32, &TractCache::BesideModel).unwrap_err();
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "the error names the file: {e}"
    );
    assert_eq!(
        tract_cache_file(&missing, 32, &TractCache::Off).unwrap(),
        None,
        "with the cache off, model.onnx is not read"
    );
}
