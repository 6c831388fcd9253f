//! The importers on real PyTorch checkpoints written by `torch.save` (legacy and zip formats),
//! in the upstream class layouts (Cadene's pretrainedmodels), at reduced width.

use candle_core::{DType, Device};
use nasnet_core::{NetworkConfig, PoolingRule, Preset};
use nasnet_model::init::synthetic_input;
use nasnet_testsupport::{assert_conforms, fixture, fixtures, reference, small, upstream_keys};
use nasnet_zoo::import::{Container, ImportOptions, SourceFormat, import, read_weights};
use std::collections::BTreeMap;

fn values(t: &candle_core::Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn both_pth_formats_read_the_same_tensors() {
    for (file, container) in [
        ("tiny_legacy.pth", Container::PthLegacy),
        ("tiny_zip.pth", Container::PthZip),
    ] {
        let (tensors, c) = read_weights(&fixture(file), 4).unwrap();
        assert_eq!(c, container);
        let get = |k: &str| tensors.iter().find(|(n, _)| n == k).unwrap().1.clone();
        let w = get("a.weight");
        assert_eq!(w.dims(), &[3, 4]);
        assert_eq!(values(&w), (0..12).map(f64::from).collect::<Vec<_>>());
        let t = get("a.transposed");
        assert_eq!(t.dims(), &[4, 3]);
        assert_eq!(
            values(&t)[..4],
            [0.0, 4.0, 8.0, 1.0],
            "{file}: a strided view"
        );
        let d = get("a.double");
        assert_eq!(d.dtype(), DType::F64);
        assert_eq!(values(&d), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_eq!(values(&get("a.half")), vec![0.5, -2.0]);
        let n = get("a.num_batches_tracked");
        assert_eq!((n.dtype(), n.dims().len()), (DType::I64, 0));
        assert_eq!(n.to_scalar::<i64>().unwrap(), 7);
    }
}

fn import_and_run(file: &str, name: &str, config: NetworkConfig, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(name);
    let opts = ImportOptions {
        name: name.into(),
        config: config.clone(),
        from: Some(SourceFormat::Cadene),
        pooling: None,
        force: false,
        preprocessing: None,
        labels: None,
    };
    let imported = import(&fixture(file), &out, &opts).unwrap();
    assert_eq!(imported.meta.architecture.pooling, PoolingRule::Tf);
    let (meta, net) = nasnet_model::load_model_dir(&out, &Device::Cpu).unwrap();
    assert_eq!(meta.labels.len(), config.num_classes);
    let src = meta.provenance.unwrap().source;
    assert_eq!(src.file, file);
    assert_eq!(
        src.sha256,
        nasnet_core::fsutil::sha256_file(&fixture(file)).unwrap()
    );
    assert_eq!(
        meta.weights.sha256,
        nasnet_core::fsutil::sha256_file(&out.join("model.safetensors")).unwrap()
    );
    let x = synthetic_input(2, config.image_size).unwrap();
    let logits = net.forward(&x).unwrap().logits;
    let r = reference("small.safetensors");
    assert_conforms(name, &logits, &r.stats[expected]);
}

#[test]
fn cadene_mobile_legacy_checkpoint() {
    // Gapped cell numbering (cell_6.., cell_12..) and the legacy pickle format.
    let c = small(Preset::Mobile, 8, 0.25, 10);
    import_and_run(
        "mobile_small_legacy.pth",
        "mobile-small",
        c,
        "mobile_small.tf.logits",
    );
}

#[test]
fn cadene_large_zip_checkpoint_with_background_class() {
    // 11 rows in the file: the background row is dropped.
    let c = small(Preset::Large, 8, 0.75, 10);
    import_and_run(
        "large_small_zip.pth",
        "large-small",
        c,
        "large_small.tf.logits",
    );
}

#[test]
fn truncated_checkpoints_are_rejected_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["mobile_small_legacy.pth", "large_small_zip.pth"] {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let cut = dir.path().join(file);
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let e = read_weights(&cut, 4).unwrap_err().to_string();
        assert!(e.starts_with(&cut.display().to_string()), "{e}");
        assert!(e.contains("checkpoint"), "{e}");
    }
}

fn keras_maps_exactly(file: &str, c: &NetworkConfig) {
    let path = fixture(file);
    let (tensors, container) = read_weights(&path, c.cells).unwrap();
    assert_eq!(container, Container::KerasH5);
    let canonical = nasnet_zoo::import::canonicalize(&path, tensors, c).unwrap();
    let expected = nasnet_model::init::synthetic_state_dict(c, &Default::default()).unwrap();
    assert_eq!(canonical.len(), expected.len());
    for (k, v) in &expected {
        assert_eq!(values(&canonical[k]), values(v), "{file}: {k}");
    }
}

#[test]
fn keras_h5_with_large_wiring() {
    let mut c = small(Preset::Large, 8, 0.75, 10);
    c.cells = 2;
    keras_maps_exactly("keras_large_small.h5", &c);
}

#[test]
fn keras_h5_maps_every_weight_to_its_canonical_key() {
    // Written by Keras's own NASNet builder (legacy HDF5 layout), each weight holding the
    // synthetic value of the key it should map to, in Keras's layout.
    let c = small(Preset::Mobile, 8, 0.25, 10);
    keras_maps_exactly("keras_mobile_small.h5", &c);
    let (tensors, _) = read_weights(&fixture("keras_mobile_small.h5"), c.cells).unwrap();
    let path = fixture("keras_mobile_small.h5");
    let canonical = nasnet_zoo::import::canonicalize(&path, tensors, &c).unwrap();
    let expected = nasnet_model::init::synthetic_state_dict(&c, &Default::default()).unwrap();
    assert_eq!(canonical.len(), expected.len());
    for (k, v) in &expected {
        let got = &canonical[k];
        assert_eq!(got.dims(), v.dims(), "{k}");
        assert_eq!(values(got), values(v), "{k}");
    }
    // And through the importer, with the TF pooling rule.
    let dir = tempfile::tempdir().unwrap();
    let opts = ImportOptions {
        name: "keras-small".into(),
        config: c,
        from: None,
        pooling: None,
        force: false,
        preprocessing: None,
        labels: None,
    };
    let imported = import(&path, &dir.path().join("m"), &opts).unwrap();
    assert_eq!(imported.format, SourceFormat::Keras);
    assert_eq!(imported.meta.architecture.pooling, PoolingRule::Tf);
}

#[test]
fn mobile_keys_match_cadene_after_renumbering() {
    // Cadene's Mobile numbers its normal cells like Large (cell_6.. after reduction 0, cell_12..
    // after reduction 1); the canonical layout numbers them 0..11 as TF-slim does.
    let expected: BTreeMap<_, _> =
        upstream_keys(&std::fs::read_to_string(fixtures().join("keys_mobile_1000.txt")).unwrap())
            .into_iter()
            .map(|(k, v)| (nasnet_zoo::import::renumber_cadene_mobile(&k, 4), v))
            .collect();
    let ours: BTreeMap<_, _> = nasnet_model::init::parameter_shapes(&Preset::Mobile.config())
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ours, expected);
}
