//! Candle forward pass of the published configurations at batch 1 (synthetic weights).
//! Run: `cargo bench --bench forward`.

use criterion::{Criterion, criterion_group, criterion_main};
use nasnet::Preset;
use nasnet_model::init::{synthetic_input, synthetic_network};

fn forward(c: &mut Criterion) {
    let mut group = c.benchmark_group("candle_forward_b1");
    group.sample_size(10);
    for preset in [Preset::Mobile, Preset::Large] {
        let config = preset.config();
        let net = synthetic_network(&config).expect("network");
        let x = synthetic_input(1, config.image_size).expect("input");
        group.bench_function(preset.name(), |b| {
            b.iter(|| net.forward(&x).expect("forward").logits)
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
