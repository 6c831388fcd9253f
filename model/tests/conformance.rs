//! The Candle network against the reference implementations (pretrainedmodels, timm) on the
//! synthetic weights of `scripts/reference/make_fixtures.py`, and proof that the fixtures are
//! sensitive: flipping one rule (pooling divisor, padding side, wiring, key mapping) breaks
//! the match.

use std::collections::HashMap;

use candle_core::Tensor;
use nasnet_core::{NetworkConfig, PoolingRule, Preset};
use nasnet_model::init::{synthetic_input, synthetic_network_with};
use nasnet_model::ops::{BatchNorm, ConvSpec, Pool};
use nasnet_model::{CandleGraph, Graph};
use nasnet_testsupport::{assert_conforms, assert_differs, assert_features_conform, reference};

fn logits(config: &NetworkConfig, stats: &HashMap<String, Tensor>) -> Tensor {
    let net = synthetic_network_with(config, stats.clone()).unwrap();
    let x = synthetic_input(2, config.image_size).unwrap();
    net.forward(&x).unwrap().logits
}

#[test]
fn mobile_matches_pretrainedmodels() {
    let r = reference("mobile.safetensors");
    let net = synthetic_network_with(&Preset::Mobile.config(), r.stats.clone()).unwrap();
    let out = net.forward(&synthetic_input(2, 224).unwrap()).unwrap();
    assert_conforms(
        "mobile logits",
        &out.logits,
        &r.expected["expected.tf.logits"],
    );
    assert_features_conform(
        "mobile features",
        &out.features,
        &r.expected["expected.tf.features"],
    );
}

#[test]
fn large_matches_pretrainedmodels_and_timm() {
    let r = reference("large.safetensors");
    for (rule, name) in [(PoolingRule::Tf, "tf"), (PoolingRule::Timm, "timm")] {
        let mut c = Preset::Large.config();
        c.pooling = rule;
        let net = synthetic_network_with(&c, r.stats.clone()).unwrap();
        let out = net.forward(&synthetic_input(2, 331).unwrap()).unwrap();
        let key = format!("expected.{name}.logits");
        assert_conforms(
            &format!("large {name} logits"),
            &out.logits,
            &r.expected[&key],
        );
        let key = format!("expected.{name}.features");
        assert_features_conform(
            &format!("large {name} features"),
            &out.features,
            &r.expected[&key],
        );
        // The other rule's reference is clearly different.
        let other = if name == "tf" { "timm" } else { "tf" };
        let key = format!("expected.{other}.logits");
        assert_differs(
            &format!("large {name} vs {other}"),
            &out.logits,
            &r.expected[&key],
        );
    }
}

#[test]
fn wrong_wiring_is_detected() {
    let r = reference("mobile.safetensors");
    let mut c = Preset::Mobile.config();
    c.skip_reduction_layer_input = true;
    // Same parameters, different wiring after each reduction.
    assert_differs(
        "mobile with Large's skip wiring",
        &logits(&c, &r.stats),
        &r.expected["expected.tf.logits"],
    );
}

#[test]
fn wrong_key_mapping_is_detected() {
    let r = reference("mobile.safetensors");
    let c = Preset::Mobile.config();
    // Swap the two separable branches of one block (same shapes, different keys).
    let mut stats = r.stats.clone();
    for bn in ["bn_sep_1", "bn_sep_2"] {
        for s in ["running_mean", "running_var"] {
            let a = format!("cell_5.comb_iter_1_left.{bn}.{s}");
            let b = format!("cell_5.comb_iter_1_right.{bn}.{s}");
            let (ta, tb) = (stats[&a].clone(), stats[&b].clone());
            stats.insert(a, tb);
            stats.insert(b, ta);
        }
    }
    assert_differs(
        "mobile with swapped statistics",
        &logits(&c, &stats),
        &r.expected["expected.tf.logits"],
    );
}

/// PyTorch-style padding: the odd pixel of an even-size stride-2 window at the start instead
/// of the end (TF "SAME" puts it at the end).
struct PadAtStart(CandleGraph);

fn flip(p: [usize; 4]) -> [usize; 4] {
    let [t, l, b, r] = p;
    if t < b { [b, r, t, l] } else { p }
}

impl Graph for PadAtStart {
    type Value = Tensor;
    fn chw(&self, x: &Tensor) -> nasnet_model::Result<[usize; 3]> {
        self.0.chw(x)
    }
    fn conv2d(
        &mut self,
        x: &Tensor,
        w: &Tensor,
        mut spec: ConvSpec,
    ) -> nasnet_model::Result<Tensor> {
        let (_, _, kh, _) = w.dims4()?;
        if kh > 1 {
            spec.pads = flip(spec.pads);
        }
        self.0.conv2d(x, w, spec)
    }
    fn batch_norm(&mut self, x: &Tensor, bn: &BatchNorm) -> nasnet_model::Result<Tensor> {
        self.0.batch_norm(x, bn)
    }
    fn relu(&mut self, x: &Tensor) -> nasnet_model::Result<Tensor> {
        self.0.relu(x)
    }
    fn add(&mut self, a: &Tensor, b: &Tensor) -> nasnet_model::Result<Tensor> {
        self.0.add(a, b)
    }
    fn concat(&mut self, xs: &[Tensor]) -> nasnet_model::Result<Tensor> {
        self.0.concat(xs)
    }
    fn pool(&mut self, x: &Tensor, mut op: Pool) -> nasnet_model::Result<Tensor> {
        op.pads = flip(op.pads);
        self.0.pool(x, op)
    }
    fn crop_top_left(&mut self, x: &Tensor) -> nasnet_model::Result<Tensor> {
        self.0.crop_top_left(x)
    }
    fn global_avg_pool(&mut self, x: &Tensor) -> nasnet_model::Result<Tensor> {
        self.0.global_avg_pool(x)
    }
    fn linear(&mut self, x: &Tensor, w: &Tensor, b: &Tensor) -> nasnet_model::Result<Tensor> {
        self.0.linear(x, w, b)
    }
    fn dropout(&mut self, x: &Tensor, p: f64) -> nasnet_model::Result<Tensor> {
        self.0.dropout(x, p)
    }
    fn drop_path(&mut self, x: &Tensor, keep: f64) -> nasnet_model::Result<Tensor> {
        self.0.drop_path(x, keep)
    }
}

#[test]
fn wrong_padding_side_is_detected() {
    let r = reference("mobile.safetensors");
    let c = Preset::Mobile.config();
    let net = synthetic_network_with(&c, r.stats.clone()).unwrap();
    let x = synthetic_input(2, 224).unwrap();
    let out = net
        .forward_graph(&mut PadAtStart(CandleGraph::eval()), &x)
        .unwrap();
    assert_differs(
        "mobile with padding at the start",
        &out.logits,
        &r.expected["expected.tf.logits"],
    );
}
