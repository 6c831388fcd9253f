//! ONNX export: the exported graph, run by tract and by ONNX Runtime, gives the Candle
//! network's answer; and its structure is what the runtimes optimize well.

use nasnet_core::{NetworkConfig, PoolingRule, Preset};
use nasnet_model::init::{synthetic_input, synthetic_network_with};
use nasnet_model::onnx;
use nasnet_runtime::{Backend, Model, Options};
use nasnet_testsupport::{assert_conforms, assert_features_conform, reference};

mod common;
use common::model_dir;

/// ONNX Runtime is found where the set-up installs it; tests that need it say so when it is
/// missing instead of failing, unless NASNET_REQUIRE_ORT is set (as in CI).
fn ort_available() -> bool {
    let lib = nasnet_runtime::ort_library(nasnet_runtime::Device::Cpu);
    if lib.exists() {
        return true;
    }
    if std::env::var_os("NASNET_REQUIRE_ORT").is_some() {
        panic!(
            "NASNET_REQUIRE_ORT is set but {} does not exist",
            lib.display()
        );
    }
    eprintln!(
        "SKIPPED (ort part): ONNX Runtime not installed at {}; run scripts/setup.sh",
        lib.display()
    );
    false
}

fn check_backends(name: &str, config: NetworkConfig, fixture: &str) {
    let r = reference(fixture);
    let net = synthetic_network_with(&config, r.stats.clone()).unwrap();
    let x = synthetic_input(2, config.image_size).unwrap();
    let candle = net.forward(&x).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model_dir(dir.path(), &net);
    let input: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    let mut backends = vec![Backend::Tract];
    if ort_available() {
        backends.push(Backend::Ort);
    }
    for backend in backends {
        let model = Model::open(
            dir.path(),
            Options {
                backend,
                ..Default::default()
            },
        )
        .unwrap();
        let out = model.run(&input, 2).unwrap();
        let logits = candle_core::Tensor::from_vec(
            out.logits.clone(),
            (2, config.num_classes),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let features = candle_core::Tensor::from_vec(
            out.features.clone(),
            (2, net.num_features()),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert_conforms(
            &format!("{name} {backend:?} logits vs candle"),
            &logits,
            &candle.logits,
        );
        assert_features_conform(
            &format!("{name} {backend:?} features vs candle"),
            &features,
            &candle.features,
        );
        // Batch 1 gives the same first row.
        let one = model.run(&input[..input.len() / 2], 1).unwrap();
        let first = candle_core::Tensor::from_vec(
            one.logits,
            (1, config.num_classes),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert_conforms(
            &format!("{name} {backend:?} batch 1"),
            &first,
            &candle.logits.narrow(0, 0, 1).unwrap(),
        );
    }
}

#[test]
fn mobile_backends_match_candle() {
    check_backends("mobile", Preset::Mobile.config(), "mobile.safetensors");
}

#[test]
fn large_backends_match_candle_under_both_pooling_rules() {
    for rule in [PoolingRule::Tf, PoolingRule::Timm] {
        let mut c = Preset::Large.config();
        c.pooling = rule;
        check_backends(&format!("large {rule}"), c, "large.safetensors");
    }
}

#[test]
fn exported_graph_structure() {
    let net = nasnet_model::init::synthetic_network(&Preset::Mobile.config()).unwrap();
    let model = onnx::to_onnx(&net).unwrap();
    let ops = onnx::op_histogram(&model);
    let graph = model.graph.as_ref().unwrap();
    // SAME padding lives in the Conv / Pool attributes: no Pad nodes at all.
    assert_eq!(ops.get("Pad"), None, "{ops:?}");
    // Every batch norm is folded into the convolution before it (the factorized reductions'
    // shared one is split per path): none is left, and as many convolutions carry a bias.
    assert_eq!(ops.get("BatchNormalization"), None, "{ops:?}");
    let biased = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Conv" && n.input.len() == 3)
        .count();
    assert_eq!(
        biased,
        192 + 4,
        "Mobile's 192, the 4 factorized reductions' split in two: {ops:?}"
    );
    // Nothing left unread.
    let read: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| &n.input)
        .map(String::as_str)
        .collect();
    for t in &graph.initializer {
        assert!(read.contains(t.name.as_str()), "{} is not read", t.name);
    }
    let dir = tempfile::tempdir().unwrap();
    model_dir(dir.path(), &net);
    let tract_ops = nasnet_runtime::optimized_ops(&dir.path().join("model.onnx"), 224).unwrap();
    eprintln!("tract's optimized Mobile: {tract_ops:?}");
    assert!(
        tract_ops
            .keys()
            .all(|k| !k.contains("BatchNorm") && !k.contains("Mul+Add")),
        "a batch norm survived: {tract_ops:?}"
    );
    // Every depthwise convolution, pool, subsampling and slice is the project's own.
    for theirs in [
        "DepthWiseConv",
        "OptSumPool",
        "OptMaxPool",
        "Downsample",
        "Slice",
    ] {
        assert!(
            !tract_ops.contains_key(theirs),
            "tract's {theirs} is left: {tract_ops:?}"
        );
    }
    // (tract merges identical pools on one input, so the pools are not counted one by one.)
    let depthwise = graph.node.iter().filter(|n| {
        n.op_type == "Conv" && n.attribute.iter().any(|a| a.name == "group" && a.i > 1)
    });
    let ours = tract_ops.get("NasnetDepthwise").copied().unwrap_or(0);
    assert!(
        ours > depthwise.count(),
        "one of the project's operators per depthwise convolution, and the pools: {tract_ops:?}"
    );
    // Average pools encode the border rule; stride-2 ones follow the configured rule.
    let mut saw_stride2 = false;
    for n in graph.node.iter().filter(|n| n.op_type == "AveragePool") {
        let get = |k: &str| n.attribute.iter().find(|a| a.name == k).unwrap();
        let strides = &get("strides").ints;
        let cip = get("count_include_pad").i;
        assert_eq!(cip, 0, "TF rule: padding is never counted");
        saw_stride2 |= strides[0] == 2;
    }
    assert!(saw_stride2);
    let mut c = Preset::Mobile.config();
    c.pooling = PoolingRule::Timm;
    let net = nasnet_model::init::synthetic_network(&c).unwrap();
    let model = onnx::to_onnx(&net).unwrap();
    let counted: Vec<_> = model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type == "AveragePool")
        .map(|n| {
            let get = |k: &str| n.attribute.iter().find(|a| a.name == k).unwrap().clone();
            (get("strides").ints[0], get("count_include_pad").i)
        })
        .collect();
    assert!(
        counted.iter().all(|&(s, c)| (s == 2) == (c == 1)),
        "{counted:?}"
    );
    // No negative pads anywhere.
    for n in model.graph.iter().flat_map(|g| &g.node) {
        for a in n.attribute.iter().filter(|a| a.name == "pads") {
            assert!(a.ints.iter().all(|&p| p >= 0));
        }
    }
}

#[test]
fn one_onnx_runtime_per_process() {
    if !ort_available() {
        return;
    }
    let net = nasnet_model::init::synthetic_network(&nasnet_testsupport::small(
        Preset::Mobile,
        8,
        0.25,
        10,
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    model_dir(dir.path(), &net);
    let ort = |lib: Option<&str>| {
        Model::open(
            dir.path(),
            Options {
                backend: Backend::Ort,
                ort_library: lib.map(Into::into),
                ..Default::default()
            },
        )
    };
    ort(None).unwrap();
    let e = ort(Some("/elsewhere/libonnxruntime.so"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("already loaded from") && e.contains("/elsewhere/libonnxruntime.so"),
        "{e}"
    );
}
