//! The CUDA paths against the CPU kernels: the differentiable depthwise convolution and pooling
//! that run on GPUs (compositions of candle primitives, no per-channel launch), their
//! gradients, and the whole network. They need a build with `--features cuda` and a GPU, and
//! say SKIPPED otherwise.

use candle_core::{Device, Tensor, Var};
use nasnet_core::Preset;
use nasnet_model::init::{synthetic_input, synthetic_state_dict};
use nasnet_model::kernels::{Depthwise, Pool, PoolKind, depthwise_conv2d, pool2d};
use nasnet_model::{CandleGraph, NasNet};
use nasnet_testsupport::{assert_conforms, max_abs_diff, ramp, small};

/// The first CUDA device, or `None` with the reason on stderr.
fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIPPED (cuda): no CUDA device for Candle: {e}");
            None
        }
    }
}

/// `f(x)` and the gradient of `sum(f(x) * r)` with respect to `x`, on `device`.
fn value_and_grad(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor, device: &Device) -> (Tensor, Tensor) {
    let v = Var::from_tensor(&x.to_device(device).unwrap()).unwrap();
    let y = f(v.as_tensor());
    let r = ramp(y.dims4().unwrap(), 7).to_device(device).unwrap();
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g = grads
        .get(v.as_tensor())
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    (y.to_device(&Device::Cpu).unwrap(), g)
}

#[test]
fn depthwise_and_pools_on_cuda_match_the_cpu_kernels() {
    let Some(gpu) = gpu() else { return };
    for (h, k, s, d, pads) in [
        (9, 3, 1, 1, [1, 1, 1, 1]),
        (10, 5, 2, 1, [1, 1, 2, 2]),
        (11, 7, 2, 1, [3, 3, 3, 3]),
        (8, 3, 1, 2, [2, 2, 2, 2]),
    ] {
        let x = ramp((2, 3, h, h + 1), 1);
        let w = ramp((3, 1, k, k), 2);
        let op = Depthwise {
            stride: s,
            dilation: d,
            pads,
        };
        let wg = w.to_device(&gpu).unwrap();
        let (y_gpu, g_gpu) = value_and_grad(&|x| depthwise_conv2d(x, &wg, op).unwrap(), &x, &gpu);
        let (y_cpu, g_cpu) =
            value_and_grad(&|x| depthwise_conv2d(x, &w, op).unwrap(), &x, &Device::Cpu);
        assert!(max_abs_diff(&y_gpu, &y_cpu) < 1e-5, "depthwise h={h} k={k}");
        assert!(
            max_abs_diff(&g_gpu, &g_cpu) < 1e-4,
            "depthwise grad h={h} k={k}"
        );
    }
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for count_include_pad in [false, true] {
            let op = Pool {
                kind,
                kernel: 3,
                stride: 2,
                pads: [1, 1, 1, 1],
                count_include_pad,
            };
            let x = ramp((2, 4, 9, 8), 3);
            let (y_gpu, g_gpu) = value_and_grad(&|x| pool2d(x, op).unwrap(), &x, &gpu);
            let (y_cpu, g_cpu) = value_and_grad(&|x| pool2d(x, op).unwrap(), &x, &Device::Cpu);
            assert!(max_abs_diff(&y_gpu, &y_cpu) < 1e-5, "{kind:?} pool");
            assert!(max_abs_diff(&g_gpu, &g_cpu) < 1e-4, "{kind:?} pool grad");
        }
    }
}

#[test]
fn the_network_on_cuda_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let config = small(Preset::Mobile, 8, 0.25, 10);
    let weights = synthetic_state_dict(&config, &Default::default()).unwrap();
    let net = |device: &Device| {
        let w = weights
            .iter()
            .map(|(k, v)| (k.clone(), v.to_device(device).unwrap()))
            .collect();
        let vb = candle_nn::VarBuilder::from_tensors(w, candle_core::DType::F32, device);
        NasNet::new(&config, vb).unwrap()
    };
    let x = synthetic_input(2, config.image_size).unwrap();
    let cpu = net(&Device::Cpu).forward(&x).unwrap().logits;
    let out = net(&gpu)
        .forward_graph(&mut CandleGraph::eval(), &x.to_device(&gpu).unwrap())
        .unwrap();
    assert_conforms(
        "mobile logits on cuda",
        &out.logits.to_device(&Device::Cpu).unwrap(),
        &cpu,
    );
}
