//! The CPU kernels against the generic compositions: values and gradients.

use super::*;
use candle_core::{DType, Device, Tensor};

use super::generic::{depthwise_generic, pool_generic};
use nasnet_testsupport::{max_abs_diff, ramp};

#[test]
fn depthwise_matches_grouped_conv() {
    for (h, k, s, d, pads) in [
        (9, 3, 1, 1, [1, 1, 1, 1]),
        (10, 5, 2, 1, [1, 1, 2, 2]),
        (11, 7, 2, 1, [3, 3, 3, 3]),
        (8, 3, 1, 2, [2, 2, 2, 2]),
        (7, 3, 2, 1, [0, 0, 0, 0]),
        (2, 5, 1, 2, [4, 4, 4, 4]),
        (1, 7, 2, 1, [3, 3, 3, 3]),
    ] {
        let x = ramp((2, 3, h, h + 1), 1);
        let w = ramp((3, 1, k, k), 2);
        let op = Depthwise {
            stride: s,
            dilation: d,
            pads,
        };
        let fast = x.apply_op2_no_bwd(&w, &op).unwrap();
        let grouped = pad2d(&x, pads, 0.0)
            .unwrap()
            .conv2d(&w, 0, s, d, 3)
            .unwrap();
        assert!(
            max_abs_diff(&fast, &grouped) < 1e-5,
            "h={h} k={k} s={s} d={d}"
        );
        let generic = depthwise_generic(&x, &w, op).unwrap();
        assert!(
            max_abs_diff(&fast, &generic) < 1e-5,
            "h={h} k={k} s={s} d={d}"
        );
    }
}

#[test]
fn pools_match_the_fallback() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for count_include_pad in [false, true] {
            for (h, k, s, pads) in [
                (9, 3, 1, [1, 1, 1, 1]),
                (10, 3, 2, [0, 0, 1, 1]),
                (11, 5, 2, [2, 2, 2, 2]),
            ] {
                let x = ramp((2, 3, h, h), 3);
                let op = Pool {
                    kind,
                    kernel: k,
                    stride: s,
                    pads,
                    count_include_pad,
                };
                let fast = x.apply_op1_no_bwd(&op).unwrap();
                let slow = pool_generic(&x, op).unwrap();
                assert!(
                    max_abs_diff(&fast, &slow) < 1e-6,
                    "{kind:?} {count_include_pad} h={h}"
                );
            }
        }
    }
}

#[test]
fn corner_average_excludes_padding() {
    let x = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let op = |count_include_pad| Pool {
        kind: PoolKind::Avg,
        kernel: 3,
        stride: 2,
        pads: [0, 0, 1, 1],
        count_include_pad,
    };
    let tf = x.apply_op1_no_bwd(&op(false)).unwrap();
    let timm = x.apply_op1_no_bwd(&op(true)).unwrap();
    assert_eq!(
        tf.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![1.0; 4]
    );
    let t = timm.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(t[0], 1.0);
    assert!((t[3] - 4.0 / 9.0).abs() < 1e-6);
}

/// `d/dx sum(f(x) * r)` by autograd and by central differences, element by element.
fn check_grad(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor, what: &str) {
    let var = candle_core::Var::from_tensor(x).unwrap();
    let y = f(var.as_tensor());
    let r = ramp(
        (
            y.dim(0).unwrap(),
            y.dim(1).unwrap(),
            y.dim(2).unwrap(),
            y.dim(3).unwrap(),
        ),
        7,
    );
    let loss = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap();
    let grads = loss(&y).backward().unwrap();
    let analytic = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap();
    let analytic = analytic.to_vec1::<f32>().unwrap();
    let base = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let eps = 1e-2f32;
    for i in 0..base.len() {
        let probe = |d: f32| {
            let mut v = base.clone();
            v[i] += d;
            let t = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
            loss(&f(&t)).to_scalar::<f32>().unwrap()
        };
        let numeric = (probe(eps) - probe(-eps)) / (2.0 * eps);
        assert!(
            (numeric - analytic[i]).abs() < 2e-2 * (1.0 + numeric.abs()),
            "{what}: element {i}: numeric {numeric}, analytic {}",
            analytic[i]
        );
    }
}

#[test]
fn depthwise_gradients_match_finite_differences() {
    for (h, k, s, d, pads) in [
        (6, 3, 1, 1, [1, 1, 1, 1]),
        (7, 5, 2, 1, [1, 2, 2, 2]),
        (5, 3, 1, 2, [2, 2, 2, 2]),
        (2, 5, 2, 1, [2, 2, 2, 2]),
    ] {
        let op = Depthwise {
            stride: s,
            dilation: d,
            pads,
        };
        let x = ramp((2, 3, h, h + 1), 1);
        let w = ramp((3, 1, k, k), 2);
        let wc = w.clone();
        check_grad(&|x| depthwise_conv2d(x, &wc, op).unwrap(), &x, "input");
        let xc = x.clone();
        check_grad(&|w| depthwise_conv2d(&xc, w, op).unwrap(), &w, "weight");
    }
}

#[test]
fn pool_gradients_match_finite_differences() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for count_include_pad in [false, true] {
            for (h, k, s, pads) in [
                (6, 3, 1, [1, 1, 1, 1]),
                (7, 3, 2, [0, 0, 1, 1]),
                (6, 1, 2, [0; 4]),
            ] {
                let op = Pool {
                    kind,
                    kernel: k,
                    stride: s,
                    pads,
                    count_include_pad,
                };
                // Distinct values, so that a small step never changes a window's maximum.
                let x = ramp((2, 2, h, h), 3);
                let x = (x + Tensor::arange(0f32, (4 * h * h) as f32, &Device::Cpu)
                    .unwrap()
                    .reshape((2, 2, h, h))
                    .unwrap()
                    * 0.1)
                    .unwrap();
                check_grad(
                    &|x| pool2d(x, op).unwrap(),
                    &x,
                    &format!("{kind:?} k={k} s={s}"),
                );
            }
        }
    }
}

#[test]
fn training_batch_norm_matches_finite_differences_and_the_fallback() {
    let x = ramp((3, 2, 4, 5), 4);
    let w = Tensor::new(&[1.5f32, -0.7], &Device::Cpu).unwrap();
    let b = Tensor::new(&[0.2f32, 0.1], &Device::Cpu).unwrap();
    let eps = 1e-3;
    // The kernel against candle primitives.
    let (y, stats) = batch_norm_train(&x, &w, &b, eps).unwrap();
    let mean = x.mean_keepdim((0, 2, 3)).unwrap();
    let centered = x.broadcast_sub(&mean).unwrap();
    let var = centered.sqr().unwrap().mean_keepdim((0, 2, 3)).unwrap();
    let want = centered
        .broadcast_div(&(var.clone() + eps).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&w.reshape((1, 2, 1, 1)).unwrap())
        .unwrap()
        .broadcast_add(&b.reshape((1, 2, 1, 1)).unwrap())
        .unwrap();
    assert!(max_abs_diff(&y, &want) < 1e-5);
    let s = stats.to_vec2::<f32>().unwrap();
    let m = mean.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let v = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for c in 0..2 {
        assert!((s[0][c] - m[c]).abs() < 1e-6 && (s[1][c] - v[c]).abs() < 1e-5);
    }
    // Gradients with respect to the input, the scale and the shift.
    let (wc, bc) = (w.clone(), b.clone());
    let as4 = |t: &Tensor| t.reshape((1, 2, 1, 1)).unwrap();
    check_grad(
        &|x| batch_norm_train(x, &wc, &bc, eps).unwrap().0,
        &x,
        "bn input",
    );
    let xc = x.clone();
    check_grad(
        &|w4| {
            batch_norm_train(&xc, &w4.flatten_all().unwrap(), &bc, eps)
                .unwrap()
                .0
        },
        &as4(&w),
        "bn weight",
    );
    check_grad(
        &|b4| {
            batch_norm_train(&xc, &wc, &b4.flatten_all().unwrap(), eps)
                .unwrap()
                .0
        },
        &as4(&b),
        "bn bias",
    );
}

/// Gradients of `sum(f(x) * r)` for x (and the weight) through a kernel and its fallback.
fn grads(
    f: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    x: &Tensor,
    w: &Tensor,
) -> (Tensor, Tensor, Tensor) {
    let (vx, vw) = (
        candle_core::Var::from_tensor(x).unwrap(),
        candle_core::Var::from_tensor(w).unwrap(),
    );
    let y = f(vx.as_tensor(), vw.as_tensor());
    let r = ramp(y.dims4().unwrap(), 9);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gw = g
        .get(vw.as_tensor())
        .cloned()
        .unwrap_or_else(|| w.zeros_like().unwrap());
    (y, g.get(vx.as_tensor()).unwrap().clone(), gw)
}

#[test]
fn the_fallbacks_train_like_the_kernels() {
    for (h, k, s, d, pads) in [
        (9, 3, 1, 1, [1, 1, 1, 1]),
        (10, 5, 2, 1, [1, 1, 2, 2]),
        (8, 3, 1, 2, [2, 2, 2, 2]),
        (7, 7, 2, 1, [3, 3, 3, 3]),
    ] {
        let x = ramp((2, 3, h, h + 1), 1);
        let w = ramp((3, 1, k, k), 2);
        let op = Depthwise {
            stride: s,
            dilation: d,
            pads,
        };
        let a = grads(&|x, w| depthwise_conv2d(x, w, op).unwrap(), &x, &w);
        let b = grads(&|x, w| depthwise_generic(x, w, op).unwrap(), &x, &w);
        for (p, q) in [(&a.0, &b.0), (&a.1, &b.1), (&a.2, &b.2)] {
            assert!(
                max_abs_diff(p, q) < 1e-4,
                "depthwise h={h} k={k} s={s} d={d}"
            );
        }
    }
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for count_include_pad in [false, true] {
            for (h, k, s, pads) in [
                (9, 3, 1, [1, 1, 1, 1]),
                (10, 3, 2, [0, 0, 1, 1]),
                (6, 1, 2, [0; 4]),
            ] {
                let op = Pool {
                    kind,
                    kernel: k,
                    stride: s,
                    pads,
                    count_include_pad,
                };
                let x = (ramp((2, 2, h, h), 3)
                    + Tensor::arange(0f32, (4 * h * h) as f32, &Device::Cpu)
                        .unwrap()
                        .reshape((2, 2, h, h))
                        .unwrap()
                        * 0.01)
                    .unwrap();
                let none = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
                let a = grads(&|x, _| pool2d(x, op).unwrap(), &x, &none);
                let b = grads(&|x, _| pool_generic(x, op).unwrap(), &x, &none);
                assert!(
                    max_abs_diff(&a.0, &b.0) < 1e-5,
                    "{kind:?} h={h} k={k} s={s}"
                );
                assert!(
                    max_abs_diff(&a.1, &b.1) < 1e-5,
                    "{kind:?} grad h={h} k={k} s={s}"
                );
            }
        }
    }
}
