//! One training step (forward, loss with the auxiliary head, backward, SGD with momentum) of a
//! small NASNet-A with the CIFAR stem: N=2, F=16, batch 32, 32x32 pixels.
//! Run: `cargo bench --bench train_step`; the PyTorch side of the comparison is
//! `python benches/compare/train_step.py --cells 2 --filters 16 --image-size 32 --batch 32`.

use candle_core::{Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use nasnet::Preset;
use nasnet_search::train::{
    TrainConfig, Trainer, candle_ops_on_caller_thread, initial_weights, keep_freed_memory,
};

/// `NASNET_BENCH_DEVICE`: `cpu` (default) or `cuda[:N]` in a build with `--features cuda`.
fn device() -> Device {
    let spec = std::env::var("NASNET_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let d: nasnet::Device = spec.parse().expect("NASNET_BENCH_DEVICE");
    match d {
        nasnet::Device::Cpu => Device::Cpu,
        nasnet::Device::Cuda(n) => Device::new_cuda(n).expect("a CUDA device"),
    }
}

fn train_step(c: &mut Criterion) {
    keep_freed_memory();
    let dev = device();
    // SAFETY: the benchmark has started no thread yet.
    unsafe { candle_ops_on_caller_thread() };
    let mut config = Preset::Cifar.config();
    config.cells = 2;
    config.filters = 16;
    config.image_size = 32;
    config.num_classes = 10;
    let weights = initial_weights(&config, 0).expect("weights");
    let x = Tensor::randn(0f32, 1f32, (32, 3, 32, 32), &dev).expect("input");
    let y = Tensor::from_vec((0..32u32).map(|i| i % 10).collect(), 32, &dev).expect("labels");
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(32));
    for replicas in [1, 2] {
        let cfg = TrainConfig {
            batch_size: 32,
            replicas,
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::new(&config, weights.clone(), cfg, &dev).expect("trainer");
        let name = format!("nasnet-a-cifar_n2_f16_b32_32px_replicas{replicas}");
        group.bench_function(name, |b| {
            b.iter(|| trainer.step(&x, &y, 1_000_000).expect("step"))
        });
    }
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
