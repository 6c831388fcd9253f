//! Training: resumed runs equal uninterrupted ones, checkpoints are all-or-nothing, the
//! trainer learns, and batch norm keeps running statistics. Small networks, seconds each.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use nasnet_core::rng::Rng;
use nasnet_core::{NetworkConfig, Preset};
use nasnet_search::data::{Augment, Batcher, Dataset};
use nasnet_search::train::{
    self, EpochMetrics, FitOptions, Optimizer, TrainConfig, Trainer, initial_weights,
};
use nasnet_testsupport::max_abs_diff_dicts;

/// A tiny NASNet-A with every training-time feature on: aux head, drop-path, dropout.
fn tiny_config() -> NetworkConfig {
    let mut c = Preset::Cifar.config();
    c.cells = 1;
    c.filters = 4;
    c.stem_multiplier = 2.0;
    c.image_size = 12;
    c.num_classes = 3;
    c.aux_head = true;
    c.dropout = 0.2;
    c.drop_path_keep_prob = 0.7;
    c
}

/// Three classes a network can tell apart: a bright square in one of three places, on noise.
fn toy_data(n: usize, seed: u64) -> Dataset {
    let (h, w) = (12, 12);
    let mut rng = Rng::new(seed);
    let mut images = vec![0u8; n * h * w];
    let mut labels = vec![];
    for i in 0..n {
        let label = rng.below(3);
        let img = &mut images[i * h * w..(i + 1) * h * w];
        for v in img.iter_mut() {
            *v = (rng.below(80)) as u8;
        }
        let (y0, x0) = [(1, 1), (1, 7), (7, 4)][label];
        for y in y0..y0 + 4 {
            for x in x0..x0 + 4 {
                img[y * w + x] = 200 + rng.below(55) as u8;
            }
        }
        labels.push(label as u32);
    }
    Dataset {
        images,
        labels,
        channels: 1,
        height: h,
        width: w,
        classes: vec!["top-left".into(), "top-right".into(), "bottom".into()],
    }
}

fn batcher() -> Batcher {
    Batcher {
        mean: [0.3; 3],
        std: [0.3; 3],
        augment: Augment {
            pad: 1,
            flip: true,
            cutout: 3,
        },
    }
}

fn cfg(optimizer: Optimizer) -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 8,
        optimizer,
        lr: 0.05,
        label_smoothing: 0.1,
        seed: 11,
        ..TrainConfig::default()
    }
}

fn trainer(c: &TrainConfig) -> Trainer {
    let config = tiny_config();
    let w = initial_weights(&config, 5).unwrap();
    Trainer::new(&config, w, c.clone(), &Device::Cpu).unwrap()
}

fn metric_columns(dir: &Path) -> Vec<(usize, usize, String, String, String)> {
    EpochMetrics::read_csv(&dir.join("metrics.csv"))
        .unwrap()
        .iter()
        .map(|m| {
            (
                m.epoch,
                m.step,
                format!("{:.6}", m.train_loss),
                format!("{:.6}", m.train_acc),
                format!("{:?}", m.val_acc),
            )
        })
        .collect()
}

#[test]
fn a_resumed_run_ends_with_the_same_weights() {
    let data = toy_data(40, 1);
    let (train_set, val) = data.split(8, 2);
    let sgd = cfg(Optimizer::Sgd {
        momentum: 0.9,
        nesterov: true,
    });
    let rmsprop = cfg(Optimizer::RmsProp {
        decay: 0.9,
        momentum: 0.9,
        epsilon: 1.0,
    });
    let parallel = TrainConfig {
        replicas: 2,
        ..sgd.clone()
    };
    for c in [sgd, rmsprop, parallel] {
        let what = format!("{:?}, {} replicas", c.optimizer, c.replicas);
        let whole = tempfile::tempdir().unwrap();
        let mut a = trainer(&c);
        a.fit(
            &train_set,
            &batcher(),
            &FitOptions {
                val: Some(&val),
                run_dir: Some(whole.path()),
                checkpoint_every: 3,
                stop_at: None,
            },
            |_| {},
        )
        .unwrap();
        // 2 epochs of 4 steps; stop mid-epoch, then continue in a new trainer (a new process).
        let split = tempfile::tempdir().unwrap();
        let mut b = trainer(&c);
        b.fit(
            &train_set,
            &batcher(),
            &FitOptions {
                val: Some(&val),
                run_dir: Some(split.path()),
                checkpoint_every: 3,
                stop_at: Some(5),
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(b.state.step, 5);
        let mut b2 = trainer(&c);
        let ckpt = train::latest_checkpoint(split.path()).unwrap().unwrap();
        assert!(ckpt.ends_with("step-00000005"), "{}", ckpt.display());
        b2.load_checkpoint(&ckpt).unwrap();
        b2.fit(
            &train_set,
            &batcher(),
            &FitOptions {
                val: Some(&val),
                run_dir: Some(split.path()),
                checkpoint_every: 3,
                stop_at: None,
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(a.state.step, 8);
        assert_eq!(b2.state.step, 8);
        let (wa, wb) = (a.state_dict().unwrap(), b2.state_dict().unwrap());
        assert_eq!(max_abs_diff_dicts(&wa, &wb), 0.0, "{what}");
        assert_eq!(a.state.rng, b2.state.rng);
        assert_eq!(metric_columns(whole.path()), metric_columns(split.path()));
        // Training moved the weights and the batch-norm statistics.
        let w0 = initial_weights(&tiny_config(), 5).unwrap();
        assert!(max_abs_diff_dicts(&wa, &w0) > 1e-3);
        let rm = &wa["conv0.bn.running_mean"];
        assert!(
            rm.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
        // Only the two newest checkpoints are kept.
        let kept: Vec<usize> = train::list_checkpoints(split.path())
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(kept, vec![6, 8]);
    }
}

/// With replicas, a step is the average of the halves' gradients (each half with its own
/// batch-norm statistics), and the running statistics follow the first half.
#[test]
fn replicas_average_the_gradients_of_the_batch_parts() {
    let mut config = tiny_config();
    config.dropout = 0.0;
    config.drop_path_keep_prob = 1.0;
    let c = TrainConfig {
        weight_decay: 0.0,
        clip_norm: None,
        ..cfg(Optimizer::Sgd {
            momentum: 0.9,
            nesterov: true,
        })
    };
    let make = |replicas: usize| {
        let w = initial_weights(&config, 5).unwrap();
        Trainer::new(
            &config,
            w,
            TrainConfig {
                replicas,
                ..c.clone()
            },
            &Device::Cpu,
        )
        .unwrap()
    };
    let data = toy_data(8, 3);
    let idx: Vec<usize> = (0..8).collect();
    let plain = Batcher {
        augment: Augment::NONE,
        ..batcher()
    };
    let (x, y) = plain
        .batch(&data, &idx, &mut Rng::new(0), &Device::Cpu)
        .unwrap();
    let w0 = initial_weights(&config, 5).unwrap();

    let mut whole = make(2);
    let (loss, correct) = whole.step(&x, &y, 100).unwrap();
    let mut halves = vec![];
    for part in 0..2 {
        let mut t = make(1);
        let (xp, yp) = (
            x.narrow(0, part * 4, 4).unwrap(),
            y.narrow(0, part * 4, 4).unwrap(),
        );
        halves.push((t.step(&xp, &yp, 100).unwrap(), t.state_dict().unwrap()));
    }
    let mean_loss = (halves[0].0.0 + halves[1].0.0) / 2.0;
    assert!((loss - mean_loss).abs() < 1e-5, "{loss} vs {mean_loss}");
    assert_eq!(correct, halves[0].0.1 + halves[1].0.1);
    let w = whole.state_dict().unwrap();
    let (a, b) = (&halves[0].1, &halves[1].1);
    let expected: HashMap<String, Tensor> = w
        .keys()
        .map(|name| {
            let t = if name.contains("running_") {
                a[name].clone()
            } else {
                // Plain SGD from zero momentum is linear in the gradient.
                ((&a[name] + &b[name]).unwrap() * 0.5).unwrap()
            };
            (name.clone(), t)
        })
        .collect();
    let worst = max_abs_diff_dicts(&w, &expected);
    assert!(worst < 1e-5, "largest difference {worst}");
    assert!(max_abs_diff_dicts(&w, &w0) > 1e-3, "the step moved nothing");
}

#[test]
fn resuming_with_other_settings_is_refused() {
    let data = toy_data(16, 1);
    let c = cfg(Optimizer::Sgd {
        momentum: 0.9,
        nesterov: false,
    });
    let dir = tempfile::tempdir().unwrap();
    let mut a = trainer(&c);
    a.fit(
        &data,
        &batcher(),
        &FitOptions {
            val: None,
            run_dir: Some(dir.path()),
            checkpoint_every: 0,
            stop_at: Some(1),
        },
        |_| {},
    )
    .unwrap();
    let ckpt = train::latest_checkpoint(dir.path()).unwrap().unwrap();
    let mut other = trainer(&TrainConfig { lr: 0.1, ..c });
    let e = other.load_checkpoint(&ckpt).unwrap_err().to_string();
    assert!(
        e.contains("step-00000001") && e.contains("other training settings"),
        "{e}"
    );
}

#[test]
fn checkpoints_are_all_or_nothing() {
    let data = toy_data(16, 1);
    let c = cfg(Optimizer::Sgd {
        momentum: 0.9,
        nesterov: true,
    });
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(&c);
    t.fit(
        &data,
        &batcher(),
        &FitOptions {
            val: None,
            run_dir: Some(dir.path()),
            checkpoint_every: 0,
            stop_at: Some(2),
        },
        |_| {},
    )
    .unwrap();
    let ckpts = dir.path().join("checkpoints");
    // A checkpoint being written when the process died is a hidden `.partial` directory:
    // never taken for a checkpoint.
    std::fs::create_dir(ckpts.join(".step-00000009.partial")).unwrap();
    std::fs::write(ckpts.join(".step-00000009.partial/state.json"), "{").unwrap();
    let latest = train::latest_checkpoint(dir.path()).unwrap().unwrap();
    assert!(latest.ends_with("step-00000002"));
    // A write that fails leaves no checkpoint behind and says where it failed.
    t.state.step = 3;
    std::fs::write(ckpts.join(".step-00000003.partial"), "in the way").unwrap();
    let e = t.save_checkpoint(dir.path()).unwrap_err().to_string();
    assert!(e.contains(".step-00000003.partial"), "{e}");
    assert!(!ckpts.join("step-00000003").exists());
    assert_eq!(
        train::latest_checkpoint(dir.path()).unwrap().unwrap(),
        latest
    );
    // A truncated checkpoint is named in the error, not a panic.
    std::fs::write(latest.join("model.safetensors"), b"short").unwrap();
    let mut fresh = trainer(&c);
    let e = fresh.load_checkpoint(&latest).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn training_learns_a_separable_problem() {
    let data = toy_data(96, 3);
    let (train_set, val) = data.split(24, 4);
    let mut config = tiny_config();
    config.aux_head = false;
    config.dropout = 0.0;
    let c = TrainConfig {
        epochs: 4,
        batch_size: 8,
        lr: 0.05,
        augment: Augment::NONE,
        seed: 1,
        ..TrainConfig::default()
    };
    let w = initial_weights(&config, 1).unwrap();
    let mut t = Trainer::new(&config, w, c, &Device::Cpu).unwrap();
    let b = Batcher {
        augment: Augment::NONE,
        ..batcher()
    };
    let (loss0, acc0) = t.evaluate(&val, &b).unwrap();
    let dir = tempfile::tempdir().unwrap();
    t.fit(
        &train_set,
        &b,
        &FitOptions {
            val: Some(&val),
            run_dir: Some(dir.path()),
            checkpoint_every: 0,
            stop_at: None,
        },
        |_| {},
    )
    .unwrap();
    let (loss1, acc1) = t.evaluate(&val, &b).unwrap();
    println!("held-out loss {loss0:.3} -> {loss1:.3}, accuracy {acc0:.3} -> {acc1:.3}");
    assert!(loss1 < loss0 * 0.5, "{loss0} -> {loss1}");
    assert!(acc1 >= 0.9, "{acc1}");
    let rows = EpochMetrics::read_csv(&dir.path().join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows[3].train_loss < rows[0].train_loss);
}

#[test]
fn the_learning_rate_follows_one_cosine_period() {
    let c = TrainConfig {
        lr: 0.1,
        lr_min: 0.001,
        ..TrainConfig::default()
    };
    assert!((train::cosine_lr(&c, 0, 100) - 0.1).abs() < 1e-12);
    assert!((train::cosine_lr(&c, 50, 100) - 0.0505).abs() < 1e-12);
    assert!((train::cosine_lr(&c, 100, 100) - 0.001).abs() < 1e-12);
}

#[test]
fn label_smoothing_matches_its_definition() {
    let logits = Tensor::new(&[[2.0f32, 0.5, -1.0], [0.0, 0.0, 3.0]], &Device::Cpu).unwrap();
    let labels = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    let got = train::smoothed_cross_entropy(&logits, &labels, 0.1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let rows = [[2.0f64, 0.5, -1.0], [0.0, 0.0, 3.0]];
    let mut want = 0.0;
    for (r, &l) in rows.iter().zip(&[0usize, 1]) {
        let lse = r.iter().map(|v| v.exp()).sum::<f64>().ln();
        let logp: Vec<f64> = r.iter().map(|v| v - lse).collect();
        want += 0.9 * -logp[l] + 0.1 * -logp.iter().sum::<f64>() / 3.0;
    }
    want /= 2.0;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

/// The real Fashion-MNIST files of Debian's `dataset-fashion-mnist` (installed by CI): every
/// image read, balanced classes, and a few training steps on them lower the loss.
#[test]
fn real_fashion_mnist_loads_and_trains() {
    use nasnet_search::data::{DatasetSpec, Split};
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        eprintln!(
            "SKIPPED (real data): {} is missing; install the Debian package dataset-fashion-mnist",
            dir.display()
        );
        return;
    }
    let spec: DatasetSpec = format!("fashion-mnist:{}", dir.display()).parse().unwrap();
    let train_set = spec.load(Split::Train, 28).unwrap();
    let test = spec.load(Split::Test, 28).unwrap();
    assert_eq!((train_set.len(), test.len()), (60_000, 10_000));
    assert_eq!(
        (train_set.height, train_set.width, train_set.channels),
        (28, 28, 1)
    );
    let mut counts = [0usize; 10];
    for &l in &test.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [1000; 10]);
    let (mean, std) = spec.normalization();
    let m = train_set.images.iter().map(|&v| v as f64).sum::<f64>() / train_set.images.len() as f64;
    assert!(
        (m / 255.0 - mean[0] as f64).abs() < 1e-3,
        "pixel mean {}",
        m / 255.0
    );
    let mut config = tiny_config();
    config.image_size = 28;
    config.num_classes = 10;
    let small = train_set.take(256, 1);
    let c = TrainConfig {
        epochs: 1,
        batch_size: 32,
        lr: 0.05,
        ..TrainConfig::default()
    };
    let w = initial_weights(&config, 0).unwrap();
    let mut t = Trainer::new(&config, w, c, &Device::Cpu).unwrap();
    let b = Batcher {
        mean,
        std,
        augment: Augment::NONE,
    };
    let probe = test.take(200, 2);
    let (before, _) = t.evaluate(&probe, &b).unwrap();
    let dir = tempfile::tempdir().unwrap();
    t.fit(
        &small,
        &b,
        &FitOptions {
            val: None,
            run_dir: Some(dir.path()),
            checkpoint_every: 0,
            stop_at: None,
        },
        |_| {},
    )
    .unwrap();
    let (after, acc) = t.evaluate(&probe, &b).unwrap();
    println!("Fashion-MNIST, 8 steps: held-out loss {before:.3} -> {after:.3}, accuracy {acc:.3}");
    assert!(after < before, "{before} -> {after}");
}
