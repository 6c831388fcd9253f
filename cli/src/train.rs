//! `nasnet train`: training and fine-tuning runs, their charts and their `model.json`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use nasnet_core::meta::ModelMeta;
use nasnet_core::{Genotype, Preset};
use nasnet_search::data::{Augment, Batcher, Dataset, DatasetSpec, Split};
use nasnet_search::finetune::{self, Start};
use nasnet_search::train::{
    self, Event, FitOptions, Optimizer, TrainConfig, Trainable, Trainer, initial_weights,
};

use crate::plot;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OptimizerArg {
    Sgd,
    Rmsprop,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum TrainableArg {
    All,
    Head,
}

/// `nasnet train` options.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// The starting architecture (its genotype, stem and widths); `--cells` and `--filters`
    /// override N and F.
    #[arg(long, value_enum, default_value = "nasnet-a-cifar")]
    preset: crate::Arch,
    /// `nasnet-a`, or a genotype JSON file (e.g. from `nasnet search`).
    #[arg(long, value_name = "nasnet-a|FILE")]
    genotype: Option<String>,
    /// N: normal cells per stage.
    #[arg(long)]
    cells: Option<usize>,
    /// F: filters of the first stage.
    #[arg(long)]
    filters: Option<usize>,
    /// Fine-tune a model (directory or zoo id) instead: its classifier is replaced for the
    /// dataset's classes.
    #[arg(long, value_name = "DIR|ID")]
    from: Option<String>,
    /// What to train: everything, or the classifier only (with --from).
    #[arg(long, value_enum, default_value = "all")]
    train: TrainableArg,
    /// cifar10:DIR, fashion-mnist:DIR, mnist:DIR or folder:DIR.
    #[arg(long)]
    dataset: String,
    /// Square size folder images are resized to (default: the model's input size).
    #[arg(long)]
    image_size: Option<usize>,
    /// Passes over the training split.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Images per training step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Train on a seeded random subset of this many images.
    #[arg(long, value_name = "COUNT")]
    train_subset: Option<usize>,
    /// Images held out of the training split for validation (seeded).
    #[arg(long, default_value_t = 5000)]
    val_count: usize,
    /// SGD with Nesterov momentum, or TF-style RMSProp (the ImageNet recipe).
    #[arg(long, value_enum, default_value = "sgd")]
    optimizer: OptimizerArg,
    /// Peak learning rate (one cosine period down to --lr-min).
    #[arg(long, default_value_t = 0.025)]
    lr: f64,
    /// The learning rate the cosine schedule ends at.
    #[arg(long, default_value_t = 0.0)]
    lr_min: f64,
    /// Momentum of the optimizer.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// L2 weight decay on convolution and linear weights.
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    /// Label smoothing of the cross-entropy (0: off).
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    /// Weight of the auxiliary head's loss (0 drops the head).
    #[arg(long, default_value_t = 0.4)]
    aux_weight: f64,
    /// ScheduledDropPath: the last cell's keep probability at the end of training (1: off).
    #[arg(long)]
    drop_path_keep: Option<f64>,
    /// Dropout before the classifier.
    #[arg(long)]
    dropout: Option<f64>,
    /// Clip gradients to this global norm (0: off).
    #[arg(long, default_value_t = 5.0)]
    clip_norm: f64,
    /// Random-crop padding in pixels.
    #[arg(long, default_value_t = 4)]
    pad: usize,
    /// No random horizontal flips.
    #[arg(long)]
    no_flip: bool,
    /// Cutout square side (0: off).
    #[arg(long, default_value_t = 0)]
    cutout: usize,
    /// Seed of every random choice (initial weights, order, augmentation, splits); a run is repeatable for its seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Split each batch into this many parts trained in parallel (batch-norm statistics per
    /// part); use the number of cores. The result depends on this, not on the machine.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Also checkpoint every this many steps (besides each epoch's end).
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
    /// Stop (with a checkpoint) after this many steps in all; `--resume` continues.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Continue the run in RUN_DIR from its newest checkpoint.
    #[arg(long)]
    resume: bool,
    /// cpu, cuda or cuda:N (CUDA needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Also draw the curves as curves.png (the SVG is always written).
    #[arg(long)]
    png: bool,
    #[command(flatten)]
    zoo: crate::ZooArgs,
    /// The run directory: checkpoints, metrics.csv, steps.csv, curves.svg and, at the end, the model
    /// (model.json, model.safetensors, model.onnx).
    #[arg(short, long, value_name = "RUN_DIR")]
    output: PathBuf,
}

/// The Candle device for `cpu`, `cuda` or `cuda:N`.
pub fn device(spec: &str) -> anyhow::Result<candle_core::Device> {
    let device = spec.parse().map_err(anyhow::Error::msg)?;
    Ok(nasnet_runtime::candle_device(device)?)
}

fn genotype(spec: &str) -> anyhow::Result<Genotype> {
    if spec == "nasnet-a" {
        return Ok(Genotype::nasnet_a());
    }
    let text = std::fs::read_to_string(spec).with_context(|| format!("cannot read {spec}"))?;
    Genotype::from_json(&text).map_err(|e| anyhow::anyhow!("{spec}: not a genotype: {e}"))
}

fn start(
    args: &TrainArgs,
    from: Option<(PathBuf, ModelMeta)>,
    spec: &DatasetSpec,
    train: &Dataset,
) -> anyhow::Result<Start> {
    let classes = train.classes.len();
    if let Some((dir, meta)) = from {
        return Ok(finetune::from_model(
            &dir,
            &meta,
            classes,
            args.aux_weight > 0.0,
            args.seed,
            &spec.to_string(),
        )?);
    }
    let preset = Preset::from(args.preset);
    let mut config = preset.config();
    if let Some(g) = &args.genotype {
        config.genotype = genotype(g)?;
    }
    config.cells = args.cells.unwrap_or(config.cells);
    config.filters = args.filters.unwrap_or(config.filters);
    config.num_classes = classes;
    config.image_size = train.height;
    config.aux_head = config.aux_head && args.aux_weight > 0.0;
    if let Some(k) = args.drop_path_keep {
        config.drop_path_keep_prob = k;
    }
    if let Some(d) = args.dropout {
        config.dropout = d;
    }
    config.validate()?;
    Ok(Start {
        weights: initial_weights(&config, args.seed)?,
        preprocessing: spec.preprocessing(train.height),
        name: format!(
            "{} N={} F={} trained on {spec}",
            preset.name(),
            config.cells,
            config.filters
        ),
        config,
    })
}

/// `nasnet train`.
pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    train::keep_freed_memory();
    if args.replicas > 1 {
        // SAFETY: the command has started no thread yet.
        unsafe { train::candle_ops_on_caller_thread() };
    }
    let spec: DatasetSpec = args.dataset.parse()?;
    if let Some(g) = &args.genotype {
        genotype(g)?
            .validate()
            .map_err(|e| anyhow::anyhow!("{g}: {e}"))?;
    }
    let out = &args.output;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // One writer per run directory, until the command ends.
    let _lock = nasnet_core::fsutil::Lock::try_dir(out)?;
    nasnet_core::fsutil::existing_run(out, "checkpoints", "a run", args.resume)
        .map_err(anyhow::Error::msg)?;
    // The model fine-tuned from, found (and pulled) once.
    let from = match &args.from {
        Some(id) => {
            let dir = args.zoo.model_dir(id)?;
            let meta = ModelMeta::load(&dir)?;
            Some((dir, meta))
        }
        None => None,
    };
    let size = match (&from, args.image_size) {
        (_, Some(s)) => s,
        (Some((_, meta)), None) => meta.preprocessing.crop,
        (None, None) => 224,
    };
    let t0 = Instant::now();
    let full = spec.load(Split::Train, size)?;
    let (mut train_set, val_set) = full.split(args.val_count.min(full.len() / 5), args.seed);
    if let Some(n) = args.train_subset {
        train_set = train_set.take(n, args.seed ^ 0x5eed);
    }
    eprintln!(
        "{spec}: {} training and {} validation images of {}x{} in {} classes ({:.1} s)",
        train_set.len(),
        val_set.len(),
        full.height,
        full.width,
        full.classes.len(),
        t0.elapsed().as_secs_f64()
    );
    let mut start = start(&args, from, &spec, &train_set)?;
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        optimizer: match args.optimizer {
            OptimizerArg::Sgd => Optimizer::Sgd {
                momentum: args.momentum,
                nesterov: true,
            },
            OptimizerArg::Rmsprop => Optimizer::RmsProp {
                decay: 0.9,
                momentum: args.momentum,
                epsilon: 1.0,
            },
        },
        lr: args.lr,
        lr_min: args.lr_min,
        weight_decay: args.weight_decay,
        label_smoothing: args.label_smoothing,
        aux_weight: args.aux_weight,
        clip_norm: (args.clip_norm > 0.0).then_some(args.clip_norm),
        bn_momentum: 0.1,
        replicas: args.replicas,
        augment: Augment {
            pad: args.pad,
            flip: !args.no_flip,
            cutout: args.cutout,
        },
        trainable: match args.train {
            TrainableArg::All => Trainable::All,
            TrainableArg::Head => Trainable::Head,
        },
        seed: args.seed,
    };
    let dev = device(&args.device)?;
    let weights = std::mem::take(&mut start.weights);
    let mut trainer = Trainer::new(&start.config, weights, cfg, &dev)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    if args.resume {
        let ckpt = train::latest_checkpoint(out)?
            .with_context(|| format!("{}: no checkpoint to resume from", out.display()))?;
        trainer.load_checkpoint(&ckpt)?;
        train::truncate_metrics(out, trainer.state.step)?;
        eprintln!(
            "resuming from {} (step {})",
            ckpt.display(),
            trainer.state.step
        );
    }
    let params = nasnet_model::init::count_parameters(&start.config)?;
    eprintln!(
        "{}: {params} parameters, {} steps of {} images",
        start.name,
        trainer.steps_per_epoch(&train_set) * args.epochs,
        args.batch_size
    );
    let batcher = Batcher {
        mean: start.preprocessing.mean,
        std: start.preprocessing.std,
        augment: trainer.cfg.augment,
    };
    let pb = if crate::quiet() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  epoch {prefix}  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_position(trainer.state.step as u64);
    let t_train = Instant::now();
    let fit = FitOptions {
        val: Some(&val_set),
        run_dir: Some(out),
        checkpoint_every: args.checkpoint_every,
        stop_at: args.max_steps,
    };
    trainer.fit(
        &train_set,
        &batcher,
        &fit,
        |e| match e {
            Event::Step(r) => {
                if pb.is_hidden() && !crate::quiet() && r.step % 100 == 0 {
                    eprintln!(
                        "step {}/{}  epoch {}  loss {:.3}  lr {:.4}  {:.1} img/s",
                        r.step,
                        r.total_steps,
                        r.epoch + 1,
                        r.loss,
                        r.lr,
                        r.images_per_s
                    );
                }
                pb.set_length(r.total_steps as u64);
                pb.set_position(r.step as u64);
                pb.set_prefix(format!("{}", r.epoch + 1));
                pb.set_message(format!(
                    "loss {:.3}  lr {:.4}  {:.1} img/s",
                    r.loss, r.lr, r.images_per_s
                ));
            }
            Event::Epoch(m) => {
                let line = format!(
                    "epoch {:>3}  train loss {:.4} acc {:.4}  val loss {} acc {}  {:.1} img/s  ({:.0} s)",
                    m.epoch,
                    m.train_loss,
                    m.train_acc,
                    m.val_loss.map(|v| format!("{v:.4}")).unwrap_or("-".into()),
                    m.val_acc.map(|v| format!("{v:.4}")).unwrap_or("-".into()),
                    m.images_per_s,
                    m.elapsed_s
                );
                if pb.is_hidden() {
                    if !crate::quiet() {
                        eprintln!("{line}");
                    }
                } else {
                    pb.println(line);
                }
            }
            Event::Checkpoint(_) => {}
        },
    )?;
    pb.finish_and_clear();
    let metrics = train::EpochMetrics::read_csv(&out.join("metrics.csv")).unwrap_or_default();
    let steps = train::StepMetrics::read_csv(&out.join("steps.csv")).unwrap_or_default();
    if !metrics.is_empty() {
        plot::write_curves(&out.join("curves.svg"), &metrics, &steps)?;
        if args.png {
            plot::write_curves(&out.join("curves.png"), &metrics, &steps)?;
        }
    }
    let total = trainer.steps_per_epoch(&train_set) * args.epochs;
    if trainer.state.step < total {
        eprintln!(
            "stopped at step {} of {total}; continue with --resume",
            trainer.state.step
        );
        return Ok(());
    }
    let mut meta = finetune::trained_meta(&start, &train_set.classes, &spec.to_string());
    finetune::write_run_model(out, &trainer.state_dict()?, &mut meta)?;
    let test = spec.load(Split::Test, size)?;
    let (loss, acc) = trainer.evaluate(&test, &batcher)?;
    let summary = serde_json::json!({
        "test_top1": acc,
        "test_loss": loss,
        "test_count": test.len(),
        "train_seconds": t_train.elapsed().as_secs_f64(),
        "steps": trainer.state.step,
        "params": params,
    });
    let path = out.join("result.json");
    std::fs::write(&path, format!("{summary:#}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    // model.json records how the model was made, which `nasnet publish` carries into the zoo.
    meta.training = Some(nasnet_core::meta::Training {
        command: Some(command_line()),
        dataset: Some(spec.to_string()),
        config: serde_json::to_value(&trainer.cfg).ok(),
        test_top1: Some(acc),
        test_count: Some(test.len()),
    });
    meta.save(out)?;
    eprintln!(
        "test top-1 {:.4} on {} images; model written to {} ({:.0} s training)",
        acc,
        test.len(),
        out.display(),
        t_train.elapsed().as_secs_f64()
    );
    Ok(())
}

/// This process's command line, quoted for a POSIX shell where needed, with the program as
/// `nasnet`.
fn command_line() -> String {
    let quote = |a: String| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
        {
            a
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    std::iter::once("nasnet".to_owned())
        .chain(std::env::args().skip(1).map(quote))
        .collect::<Vec<_>>()
        .join(" ")
}
