//! The network's structure against the official figures: parameter counts, weight keys and
//! shapes of the upstream files, and the endpoint shapes of TF-slim's `nasnet_test.py`.

use std::collections::BTreeMap;

use nasnet_core::{NetworkConfig, Preset};
use nasnet_model::CandleGraph;
use nasnet_model::init::{count_parameters, parameter_shapes, synthetic_input, synthetic_network};
use nasnet_testsupport::{fixtures, upstream_keys};

#[test]
fn parameter_counts_match_the_published_models() {
    // ../reference figures: timm / Keras / ONNX zoo agree on these.
    assert_eq!(
        count_parameters(&Preset::Large.config()).unwrap(),
        88_753_150
    );
    assert_eq!(
        count_parameters(&Preset::Mobile.config()).unwrap(),
        5_289_978
    );
    // Large with TF's 1001-class head.
    let mut c = Preset::Large.config();
    c.num_classes = 1001;
    assert_eq!(count_parameters(&c).unwrap(), 88_757_183);
}

#[test]
fn large_keys_and_shapes_match_the_upstream_state_dict() {
    let expected =
        upstream_keys(&std::fs::read_to_string(fixtures().join("keys_large_1001.txt")).unwrap());
    let mut c = Preset::Large.config();
    c.num_classes = 1001;
    let ours: BTreeMap<_, _> = parameter_shapes(&c).unwrap().into_iter().collect();
    assert_eq!(ours.len(), expected.len());
    assert_eq!(ours, expected);
}

fn endpoints(config: &NetworkConfig) -> BTreeMap<String, Vec<usize>> {
    let net = synthetic_network(config).unwrap();
    let x = synthetic_input(1, config.image_size).unwrap();
    let mut g = CandleGraph::recording();
    let out = net.forward_graph(&mut g, &x).unwrap();
    assert_eq!(out.logits.dims(), &[1, config.num_classes]);
    assert_eq!(out.features.dims(), &[1, net.num_features()]);
    if config.genotype == nasnet_core::Genotype::nasnet_a() {
        assert_eq!(net.num_features(), config.filters * 24);
    }
    g.endpoints.unwrap().into_iter().collect()
}

fn chw(e: &BTreeMap<String, Vec<usize>>, name: &str) -> [usize; 3] {
    let d = &e[name];
    [d[2], d[3], d[1]]
}

#[test]
fn cifar_endpoint_shapes() {
    let e = endpoints(&Preset::Cifar.config());
    assert_eq!(chw(&e, "Stem"), [32, 32, 96]);
    for i in 0..6 {
        assert_eq!(chw(&e, &format!("Cell_{i}")), [32, 32, 192]);
    }
    assert_eq!(chw(&e, "Reduction_Cell_0"), [16, 16, 256]);
    for i in 6..12 {
        assert_eq!(chw(&e, &format!("Cell_{i}")), [16, 16, 384]);
    }
    assert_eq!(chw(&e, "Reduction_Cell_1"), [8, 8, 512]);
    for i in 12..18 {
        assert_eq!(chw(&e, &format!("Cell_{i}")), [8, 8, 768]);
    }
}

#[test]
fn mobile_endpoint_shapes() {
    let e = endpoints(&Preset::Mobile.config());
    assert_eq!(chw(&e, "Stem"), [28, 28, 88]);
    assert_eq!(chw(&e, "Cell_3"), [28, 28, 264]);
    assert_eq!(chw(&e, "Reduction_Cell_0"), [14, 14, 352]);
    assert_eq!(chw(&e, "Cell_7"), [14, 14, 528]);
    assert_eq!(chw(&e, "Reduction_Cell_1"), [7, 7, 704]);
    assert_eq!(chw(&e, "Cell_11"), [7, 7, 1056]);
}

#[test]
fn large_endpoint_shapes() {
    let e = endpoints(&Preset::Large.config());
    assert_eq!(chw(&e, "Stem"), [42, 42, 336]);
    assert_eq!(chw(&e, "Cell_5"), [42, 42, 1008]);
    assert_eq!(chw(&e, "Reduction_Cell_0"), [21, 21, 1344]);
    assert_eq!(chw(&e, "Cell_11"), [21, 21, 2016]);
    assert_eq!(chw(&e, "Reduction_Cell_1"), [11, 11, 2688]);
    assert_eq!(chw(&e, "Cell_17"), [11, 11, 4032]);
}

#[test]
fn strict_concat_changes_the_widths() {
    let mut c = Preset::Cifar.config();
    c.genotype = c.genotype.with_strict_concat();
    let e = endpoints(&c);
    assert_eq!(chw(&e, "Cell_0"), [32, 32, 160]);
    assert_eq!(chw(&e, "Reduction_Cell_0"), [16, 16, 192]);
}

fn small_cifar() -> NetworkConfig {
    let mut c = Preset::Cifar.config();
    c.cells = 1;
    c.filters = 8;
    c
}

#[test]
fn any_genotype_builds_and_runs() {
    use nasnet_core::space::{Block, CellGenotype, Combine, Concat, ConcatRule, Op};
    // Every operation, both combiners, on inputs and on block outputs.
    let ops = Op::ALL;
    let cell = |offset: usize| CellGenotype {
        blocks: (0..5)
            .map(|b| Block {
                inputs: [b % 2, (b + 1).min(b + 1)],
                ops: [ops[(2 * b + offset) % 13], ops[(2 * b + 1 + offset) % 13]],
                combine: if b == 2 {
                    Combine::Concat
                } else {
                    Combine::Add
                },
            })
            .collect(),
        concat: Concat::Rule(ConcatRule::Unused),
    };
    let mut c = small_cifar();
    c.genotype = nasnet_core::Genotype {
        normal: cell(0),
        reduction: cell(3),
    };
    c.genotype.validate().unwrap();
    let json = c.genotype.to_json();
    assert_eq!(nasnet_core::Genotype::from_json(&json).unwrap(), c.genotype);
    let net = synthetic_network(&c).unwrap();
    let x = synthetic_input(2, 32).unwrap();
    let out = net.forward(&x).unwrap();
    assert_eq!(out.logits.dims(), &[2, 10]);
    let v: Vec<f32> = out.logits.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    // The same ImageNet-style, with the stem cells.
    let mut m = c.clone();
    m.stem = nasnet_core::Stem::Imagenet;
    m.image_size = 64;
    m.stem_multiplier = 0.5;
    m.aux_head = false;
    let out = synthetic_network(&m)
        .unwrap()
        .forward(&synthetic_input(1, 64).unwrap())
        .unwrap();
    assert_eq!(out.logits.dims(), &[1, 10]);
}

#[test]
fn training_hooks_act_only_in_training() {
    let mut c = small_cifar();
    c.drop_path_keep_prob = 0.5;
    c.dropout = 0.5;
    let net = synthetic_network(&c).unwrap();
    let x = synthetic_input(4, 32).unwrap();
    let run = |train: bool, progress: f64, seed: u64| {
        let mut g = CandleGraph {
            train,
            progress,
            rng: nasnet_core::rng::Rng::new(seed),
            ..CandleGraph::default()
        };
        let out = net.forward_graph(&mut g, &x).unwrap();
        assert_eq!(out.aux_logits.as_ref().unwrap().dims(), &[4, 10]);
        out.logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    // Inference is deterministic.
    assert_eq!(run(false, 1.0, 1), run(false, 1.0, 2));
    // Training mode (batch statistics, drop-path, dropout) changes the output; its masks come
    // from the graph's generator: the same seed repeats them, another seed does not.
    let a = run(true, 1.0, 1);
    let b = run(true, 1.0, 2);
    assert_ne!(a, run(false, 1.0, 1));
    assert_ne!(a, b);
    assert_eq!(a, run(true, 1.0, 1));
    // No aux head unless configured.
    let mut c2 = small_cifar();
    c2.aux_head = false;
    let out = synthetic_network(&c2).unwrap().forward(&x).unwrap();
    assert!(out.aux_logits.is_none());
}

#[test]
fn odd_reduction_widths_are_reported() {
    // Mobile's second stem cell has F / 2 filters and a factorized reduction.
    let mut c = Preset::Mobile.config();
    c.filters = 22;
    let Err(e) = synthetic_network(&c) else {
        panic!("an odd factorized reduction must be rejected")
    };
    let e = e.to_string();
    assert!(e.contains("cell_stem_1") && e.contains("even"), "{e}");
}
