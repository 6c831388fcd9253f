//! Training: the paper's recipe (SGD with momentum or TF-style RMSProp, weight decay, one
//! cosine period, label smoothing, the auxiliary head's loss, ScheduledDropPath, gradient
//! clipping by global norm, batch norm with running statistics) over a [`Dataset`], with
//! checkpoints that resume to the same result as an uninterrupted run.
//!
//! A run directory holds `checkpoints/step-NNNNNNNN/` (each written whole or not at all) and
//! `metrics.csv`, one row per epoch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Augment, Batcher, Dataset};
use crate::graph::CandleGraph;
use crate::init::{is_buffer, parameter_shapes};
use crate::rng::Rng;
use crate::{NasNet, NetworkConfig};

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] crate::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {problem}")]
    Checkpoint { path: String, problem: String },
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// One forward and backward pass over (part of) a batch.
struct Pass {
    loss: f64,
    correct: usize,
    grads: Vec<Vec<f32>>,
    rng: Rng,
    len: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |error| TrainError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// The optimizer and its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    /// PyTorch's SGD: `buf = momentum * buf + g`, step `g + momentum * buf` when Nesterov.
    Sgd { momentum: f64, nesterov: bool },
    /// TF's RMSProp (mean square initialized to one), as in the paper's ImageNet recipe.
    RmsProp {
        decay: f64,
        momentum: f64,
        epsilon: f64,
    },
}

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trainable {
    /// Every parameter.
    All,
    /// The classifier only; the body runs in inference mode (fine-tuning a pretrained model).
    Head,
}

/// A training run's settings. Defaults follow the paper's CIFAR-10 recipe, scaled to a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    /// Peak learning rate, decayed over one cosine period to `lr_min`.
    pub lr: f64,
    pub lr_min: f64,
    /// L2 weight decay on convolution and linear weights.
    pub weight_decay: f64,
    pub label_smoothing: f64,
    /// Weight of the auxiliary head's loss (when the network has one).
    pub aux_weight: f64,
    /// Gradients are scaled down to this global L2 norm (`None`: no clipping).
    pub clip_norm: Option<f64>,
    /// PyTorch's batch-norm `momentum` (weight of each batch in the running statistics).
    pub bn_momentum: f64,
    pub augment: Augment,
    pub trainable: Trainable,
    pub seed: u64,
    /// Each batch is split into this many parts whose forward and backward passes run in
    /// parallel, with batch-norm statistics per part ("ghost" batch norm); the gradients are
    /// averaged. The result depends on this number but not on the number of cores.
    #[serde(default = "one")]
    pub replicas: usize,
}

fn one() -> usize {
    1
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 32,
            optimizer: Optimizer::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            lr: 0.025,
            lr_min: 0.0,
            weight_decay: 5e-4,
            label_smoothing: 0.0,
            aux_weight: 0.4,
            clip_norm: Some(5.0),
            bn_momentum: 0.1,
            augment: Augment {
                pad: 4,
                flip: true,
                cutout: 0,
            },
            trainable: Trainable::All,
            seed: 0,
            replicas: 1,
        }
    }
}

/// Where a run is: saved in every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    /// Generator for augmentation, dropout and drop-path masks.
    pub rng: Rng,
    /// Sums over the current epoch so far: loss, correct, images.
    pub epoch_loss: f64,
    pub epoch_correct: usize,
    pub epoch_seen: usize,
    /// Seconds spent training, over all sessions of the run.
    #[serde(default)]
    pub elapsed_s: f64,
    /// Seconds spent on the current epoch so far.
    #[serde(default)]
    pub epoch_s: f64,
}

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    pub images_per_s: f64,
    pub elapsed_s: f64,
}

const METRICS_HEADER: &str =
    "epoch,step,lr,train_loss,train_acc,val_loss,val_acc,images_per_s,elapsed_s";

impl EpochMetrics {
    fn csv(&self) -> String {
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        format!(
            "{},{},{:.6e},{:.6},{:.6},{},{},{:.2},{:.1}",
            self.epoch,
            self.step,
            self.lr,
            self.train_loss,
            self.train_acc,
            opt(self.val_loss),
            opt(self.val_acc),
            self.images_per_s,
            self.elapsed_s
        )
    }

    /// Reads `metrics.csv`.
    pub fn read_csv(path: &Path) -> Result<Vec<Self>> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let bad = |line: usize| TrainError::Checkpoint {
            path: path.display().to_string(),
            problem: format!("line {line} is not a metrics row"),
        };
        let mut rows = vec![];
        for (i, line) in text.lines().enumerate().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 9 {
                return Err(bad(i + 1));
            }
            let num = |k: usize| f[k].parse::<f64>().map_err(|_| bad(i + 1));
            let opt = |k: usize| -> Result<Option<f64>> {
                if f[k].is_empty() {
                    Ok(None)
                } else {
                    num(k).map(Some)
                }
            };
            rows.push(Self {
                epoch: f[0].parse().map_err(|_| bad(i + 1))?,
                step: f[1].parse().map_err(|_| bad(i + 1))?,
                lr: num(2)?,
                train_loss: num(3)?,
                train_acc: num(4)?,
                val_loss: opt(5)?,
                val_acc: opt(6)?,
                images_per_s: num(7)?,
                elapsed_s: num(8)?,
            });
        }
        Ok(rows)
    }
}

/// Progress reported after every step.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub images_per_s: f64,
}

/// Something to tell about the run as it goes.
pub enum Event<'a> {
    Step(&'a StepReport),
    Epoch(&'a EpochMetrics),
    Checkpoint(&'a Path),
}

/// Makes glibc's allocator keep freed memory for reuse instead of returning every large block
/// to the system. A training step allocates and frees hundreds of activation-sized tensors;
/// by default each is a fresh `mmap` whose pages are faulted in and zeroed again, which costs
/// about a fifth of a CPU step. Call once at the start of a training process. Elsewhere it
/// does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Makes Candle's element-wise CPU operations run on the calling thread. Candle runs large
/// element-wise operations on a pool that serves one caller at a time, so the replicas of a
/// step ([`TrainConfig::replicas`]) would queue for it; with this they run side by side on
/// their own cores (convolutions still use every core). It takes effect only before Candle's
/// first element-wise operation in the process, and does nothing if `CANDLE_NUM_THREADS` is
/// set.
///
/// # Safety
/// It sets an environment variable: call it before the process has other threads.
pub unsafe fn candle_ops_on_caller_thread() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: the caller guarantees that no other thread reads the environment.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}

/// Initial weights for training: He-uniform convolutions (fan-in), PyTorch's default linear
/// layers, batch norm at identity. Deterministic in `seed`.
pub fn initial_weights(config: &NetworkConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let mut rng = Rng::new(seed);
    let mut out = HashMap::new();
    for (name, shape) in parameter_shapes(config)? {
        let n: usize = shape.iter().product();
        let last = name.rsplit('.').next().unwrap_or("");
        let values: Vec<f32> = match (last, shape.len()) {
            ("running_var", _) => vec![1.0; n],
            ("running_mean", _) | ("bias", _) => vec![0.0; n],
            ("weight", 1) => vec![1.0; n],
            (_, rank) => {
                let fan_in: usize = shape[1..].iter().product();
                let bound = if rank == 2 {
                    1.0 / (fan_in as f32).sqrt()
                } else {
                    (6.0 / fan_in as f32).sqrt()
                };
                (0..n)
                    .map(|_| (2.0 * rng.uniform() - 1.0) * bound)
                    .collect()
            }
        };
        out.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    Ok(out)
}

/// The learning rate after `step` of `total` steps: one cosine period from `lr` to `lr_min`.
pub fn cosine_lr(cfg: &TrainConfig, step: usize, total: usize) -> f64 {
    let t = step as f64 / total.max(1) as f64;
    cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Cross-entropy with label smoothing `eps`, averaged over the batch.
pub fn smoothed_cross_entropy(logits: &Tensor, labels: &Tensor, eps: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    if eps == 0.0 {
        return Ok(nll.mean_all()?);
    }
    let uniform = logp.mean(D::Minus1)?.neg()?;
    Ok(((nll * (1.0 - eps))? + (uniform * eps)?)?.mean_all()?)
}

/// A network being trained: its variables, optimizer state and position.
pub struct Trainer {
    pub net: NasNet,
    pub config: NetworkConfig,
    pub cfg: TrainConfig,
    pub state: TrainState,
    device: Device,
    varmap: VarMap,
    /// Trained variables, sorted by name.
    params: Vec<(String, Var)>,
    /// Optimizer buffers, by `slot/name`, on the host.
    slots: HashMap<String, Vec<f32>>,
}

impl Trainer {
    /// A trainer for `config` starting from `weights` (e.g. [`initial_weights`] or a pretrained
    /// state dict with the classifier replaced).
    pub fn new(
        config: &NetworkConfig,
        weights: HashMap<String, Tensor>,
        cfg: TrainConfig,
        device: &Device,
    ) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.epochs == 0 {
            return Err(TrainError::Config(
                "epochs and batch size must be positive".into(),
            ));
        }
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| TrainError::Config("variable map poisoned".into()))?;
            for (name, t) in weights {
                data.insert(name, Var::from_tensor(&t.to_device(device)?)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let net = NasNet::new(config, vb)?;
        let mut params: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Config("variable map poisoned".into()))?
            .iter()
            .filter(|(n, _)| !is_buffer(n))
            .filter(|(n, _)| cfg.trainable == Trainable::All || n.starts_with("last_linear."))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let mut slots = HashMap::new();
        for (name, v) in &params {
            let n = v.as_tensor().elem_count();
            let slot_names: &[(&str, f32)] = match cfg.optimizer {
                Optimizer::Sgd { .. } => &[("momentum", 0.0)],
                Optimizer::RmsProp { .. } => &[("ms", 1.0), ("momentum", 0.0)],
            };
            for (slot, init) in slot_names {
                slots.insert(format!("{slot}/{name}"), vec![*init; n]);
            }
        }
        Ok(Self {
            net,
            config: config.clone(),
            state: TrainState {
                step: 0,
                rng: Rng::new(cfg.seed).fork(1),
                epoch_loss: 0.0,
                epoch_correct: 0,
                epoch_seen: 0,
                elapsed_s: 0.0,
                epoch_s: 0.0,
            },
            cfg,
            device: device.clone(),
            varmap,
            params,
            slots,
        })
    }

    pub fn steps_per_epoch(&self, train: &Dataset) -> usize {
        train.len().div_ceil(self.cfg.batch_size)
    }

    /// The order images are seen in during `epoch`: a fresh seeded shuffle per epoch.
    fn epoch_order(&self, epoch: usize, len: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..len).collect();
        Rng::new(self.cfg.seed)
            .fork(1000 + epoch as u64)
            .shuffle(&mut order);
        order
    }

    /// Every tensor of the network (parameters and running statistics), on the CPU.
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| TrainError::Config("variable map poisoned".into()))?;
        let mut out = HashMap::new();
        for (n, v) in data.iter() {
            out.insert(n.clone(), v.as_tensor().to_device(&Device::Cpu)?);
        }
        Ok(out)
    }

    /// One optimizer step on a batch; returns the batch's loss and correct count.
    pub fn step(&mut self, x: &Tensor, y: &Tensor, total_steps: usize) -> Result<(f64, usize)> {
        let progress = self.state.step as f64 / total_steps.max(1) as f64;
        let n = x.dim(0)?;
        let parts = self.cfg.replicas.clamp(1, n.max(1));
        let momentum = self.cfg.bn_momentum;
        let passes = if parts == 1 {
            vec![self.pass(x, y, progress, Some(momentum), self.state.rng)?]
        } else {
            let len = n.div_ceil(parts);
            let base = self.state.rng;
            let this = &*self;
            (0..n.div_ceil(len))
                .into_par_iter()
                .map(|i| {
                    let (start, len) = (i * len, len.min(n - i * len));
                    // One part updates the running statistics, so they stay a moving average
                    // of batch statistics.
                    this.pass(
                        &x.narrow(0, start, len)?,
                        &y.narrow(0, start, len)?,
                        progress,
                        (i == 0).then_some(momentum),
                        base.fork(i as u64 + 1),
                    )
                })
                .collect::<Result<Vec<_>>>()?
        };
        self.state.rng = match passes.as_slice() {
            [only] => only.rng,
            _ => self.state.rng.fork(0),
        };
        let (mut loss, mut correct) = (0.0, 0);
        let mut grads: Vec<Vec<f32>> = Vec::new();
        for pass in passes {
            let w = pass.len as f64 / n as f64;
            loss += pass.loss * w;
            correct += pass.correct;
            if grads.is_empty() {
                grads = pass.grads;
                if w != 1.0 {
                    grads.iter_mut().flatten().for_each(|g| *g *= w as f32);
                }
            } else {
                for (acc, g) in grads.iter_mut().zip(pass.grads) {
                    acc.iter_mut().zip(g).for_each(|(a, g)| *a += g * w as f32);
                }
            }
        }
        let lr = cosine_lr(&self.cfg, self.state.step, total_steps);
        self.apply(grads, lr)?;
        self.state.step += 1;
        Ok((loss, correct))
    }

    /// Forward and backward over (part of) a batch; the gradients come back on the host, in
    /// the order of `params`.
    fn pass(
        &self,
        x: &Tensor,
        y: &Tensor,
        progress: f64,
        bn_momentum: Option<f64>,
        rng: Rng,
    ) -> Result<Pass> {
        let mut g = CandleGraph::train(progress, bn_momentum, rng);
        let (logits, aux) = match self.cfg.trainable {
            Trainable::All => {
                let out = self.net.forward_graph(&mut g, x)?;
                (out.logits, out.aux_logits)
            }
            Trainable::Head => {
                let out = self.net.forward(x)?;
                let f = crate::graph::Graph::dropout(
                    &mut g,
                    &out.features.detach(),
                    self.config.dropout,
                )?;
                (self.net.last_linear.forward(&mut g, &f)?, None)
            }
        };
        let eps = self.cfg.label_smoothing;
        let mut loss = smoothed_cross_entropy(&logits, y, eps)?;
        if let Some(aux) = aux.filter(|_| self.cfg.aux_weight > 0.0) {
            loss = (loss + (smoothed_cross_entropy(&aux, y, eps)? * self.cfg.aux_weight)?)?;
        }
        let store = loss.backward()?;
        let grads = self
            .params
            .iter()
            .map(|(_, v)| match store.get(v.as_tensor()) {
                Some(g) => Ok(g.flatten_all()?.to_vec1::<f32>()?),
                None => Ok(vec![0.0; v.as_tensor().elem_count()]),
            })
            .collect::<Result<Vec<_>>>()?;
        let correct = logits
            .argmax(D::Minus1)?
            .eq(y)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()? as usize;
        Ok(Pass {
            loss: loss.to_scalar::<f32>()? as f64,
            correct,
            grads,
            rng: g.rng,
            len: x.dim(0)?,
        })
    }

    /// The optimizer update from `gs`, the gradients of `params` in order.
    fn apply(&mut self, gs: Vec<Vec<f32>>, lr: f64) -> Result<()> {
        // The update runs on host vectors: a few hundred small tensors would otherwise cost a
        // dozen device operations each.
        let sq: f64 = gs.iter().flatten().map(|x| (*x as f64) * (*x as f64)).sum();
        let norm = sq.sqrt();
        let scale = match self.cfg.clip_norm {
            Some(c) if norm > c => (c / norm) as f32,
            _ => 1.0,
        };
        let wd = self.cfg.weight_decay as f32;
        let lr = lr as f32;
        for ((name, v), g) in self.params.iter().zip(gs) {
            let t = v.as_tensor();
            let mut w = t.flatten_all()?.to_vec1::<f32>()?;
            let decay = if t.rank() > 1 { wd } else { 0.0 };
            let mut slot = |s: &str| -> Result<Vec<f32>> {
                self.slots
                    .remove(&format!("{s}/{name}"))
                    .ok_or_else(|| TrainError::Config(format!("no optimizer state for {name}")))
            };
            match self.cfg.optimizer {
                Optimizer::Sgd { momentum, nesterov } => {
                    let m = momentum as f32;
                    let mut buf = slot("momentum")?;
                    for ((w, b), g) in w.iter_mut().zip(&mut buf).zip(&g) {
                        let g = g * scale + decay * *w;
                        *b = m * *b + g;
                        *w -= lr * if nesterov { g + m * *b } else { *b };
                    }
                    self.slots.insert(format!("momentum/{name}"), buf);
                }
                Optimizer::RmsProp {
                    decay: rho,
                    momentum,
                    epsilon,
                } => {
                    let (rho, m, eps) = (rho as f32, momentum as f32, epsilon as f32);
                    let mut ms = slot("ms")?;
                    let mut mom = slot("momentum")?;
                    for (((w, s), p), g) in w.iter_mut().zip(&mut ms).zip(&mut mom).zip(&g) {
                        let g = g * scale + decay * *w;
                        *s = rho * *s + (1.0 - rho) * g * g;
                        *p = m * *p + lr * g / (*s + eps).sqrt();
                        *w -= *p;
                    }
                    self.slots.insert(format!("ms/{name}"), ms);
                    self.slots.insert(format!("momentum/{name}"), mom);
                }
            }
            v.set(&Tensor::from_vec(w, t.shape(), t.device())?)?;
        }
        Ok(())
    }

    /// Loss and accuracy (top-1) on `data` in inference mode.
    pub fn evaluate(&self, data: &Dataset, batcher: &Batcher) -> Result<(f64, f64)> {
        let plain = Batcher {
            augment: Augment::NONE,
            ..batcher.clone()
        };
        let idx: Vec<usize> = (0..data.len()).collect();
        let chunks: Vec<&[usize]> = idx.chunks(self.cfg.batch_size.max(64)).collect();
        let one = |chunk: &[usize]| -> Result<(f64, usize)> {
            let (x, y) = plain.batch(data, chunk, &mut Rng::new(0), &self.device)?;
            let logits = self.net.forward(&x)?.logits.detach();
            let loss = smoothed_cross_entropy(&logits, &y, 0.0)?.to_scalar::<f32>()? as f64;
            let correct = logits
                .argmax(D::Minus1)?
                .eq(&y)?
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()? as usize;
            Ok((loss * chunk.len() as f64, correct))
        };
        // With replicas, batches are evaluated side by side like a step's parts.
        let parts: Vec<(f64, usize)> = if self.cfg.replicas > 1 {
            chunks.into_par_iter().map(one).collect::<Result<_>>()?
        } else {
            chunks.into_iter().map(one).collect::<Result<_>>()?
        };
        let loss: f64 = parts.iter().map(|p| p.0).sum();
        let correct: usize = parts.iter().map(|p| p.1).sum();
        let n = data.len().max(1) as f64;
        Ok((loss / n, correct as f64 / n))
    }

    /// Trains until `epochs` are done (or `stop_at` steps, for a run to be resumed later). With
    /// a `run_dir`, checkpoints there every `checkpoint_every` steps, at each epoch's end and at
    /// the end, and appends a row per epoch to `metrics.csv`; without, writes nothing (a search
    /// child).
    #[allow(clippy::too_many_arguments)]
    pub fn fit(
        &mut self,
        train: &Dataset,
        val: Option<&Dataset>,
        batcher: &Batcher,
        run_dir: Option<&Path>,
        checkpoint_every: usize,
        stop_at: Option<usize>,
        mut on_event: impl FnMut(Event),
    ) -> Result<()> {
        if train.is_empty() {
            return Err(TrainError::Config("the training set is empty".into()));
        }
        let per_epoch = self.steps_per_epoch(train);
        let total = per_epoch * self.cfg.epochs;
        let end = stop_at.unwrap_or(total).min(total);
        let mut window = (Instant::now(), 0usize);
        let mut last = Instant::now();
        let mut rate = 0.0;
        // The epoch's shuffled order, computed once per epoch.
        let mut order: Option<(usize, Vec<usize>)> = None;
        while self.state.step < end {
            let epoch = self.state.step / per_epoch;
            let within = self.state.step % per_epoch;
            if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                order = Some((epoch, self.epoch_order(epoch, train.len())));
            }
            let order = order
                .as_ref()
                .map(|(_, o)| o.as_slice())
                .unwrap_or_default();
            let bs = self.cfg.batch_size;
            let idx = &order[within * bs..((within + 1) * bs).min(order.len())];
            let mut rng = self.state.rng;
            let (x, y) = batcher.batch(train, idx, &mut rng, &self.device)?;
            self.state.rng = rng;
            let lr = cosine_lr(&self.cfg, self.state.step, total);
            let (loss, correct) = self.step(&x, &y, total)?;
            if !loss.is_finite() {
                return Err(TrainError::Config(format!(
                    "the loss became {loss} at step {}: lower the learning rate",
                    self.state.step
                )));
            }
            self.state.epoch_loss += loss * idx.len() as f64;
            self.state.epoch_correct += correct;
            self.state.epoch_seen += idx.len();
            let dt = last.elapsed().as_secs_f64();
            last = Instant::now();
            self.state.elapsed_s += dt;
            self.state.epoch_s += dt;
            window.1 += idx.len();
            let dt = window.0.elapsed().as_secs_f64();
            if dt > 2.0 || rate == 0.0 {
                rate = window.1 as f64 / dt.max(1e-9);
                window = (Instant::now(), 0);
            }
            on_event(Event::Step(&StepReport {
                step: self.state.step,
                total_steps: total,
                epoch,
                loss,
                lr,
                images_per_s: rate,
            }));
            let epoch_done = self.state.step.is_multiple_of(per_epoch);
            if epoch_done {
                let (val_loss, val_acc) = match val.filter(|v| !v.is_empty()) {
                    Some(v) => {
                        let (l, a) = self.evaluate(v, batcher)?;
                        (Some(l), Some(a))
                    }
                    None => (None, None),
                };
                let seen = self.state.epoch_seen.max(1) as f64;
                let m = EpochMetrics {
                    epoch: epoch + 1,
                    step: self.state.step,
                    lr,
                    train_loss: self.state.epoch_loss / seen,
                    train_acc: self.state.epoch_correct as f64 / seen,
                    val_loss,
                    val_acc,
                    images_per_s: seen / self.state.epoch_s.max(1e-9),
                    elapsed_s: self.state.elapsed_s,
                };
                if let Some(dir) = run_dir {
                    append_metrics(&dir.join("metrics.csv"), &m)?;
                }
                on_event(Event::Epoch(&m));
                self.state.epoch_loss = 0.0;
                self.state.epoch_correct = 0;
                self.state.epoch_seen = 0;
                self.state.epoch_s = 0.0;
                last = Instant::now();
            }
            let periodic = checkpoint_every > 0 && self.state.step.is_multiple_of(checkpoint_every);
            if let Some(dir) = run_dir.filter(|_| periodic || epoch_done || self.state.step == end)
            {
                let path = self.save_checkpoint(dir)?;
                on_event(Event::Checkpoint(&path));
            }
        }
        Ok(())
    }

    /// Writes `checkpoints/step-NNNNNNNN/` (weights, optimizer state, `state.json`) through a
    /// temporary directory and a rename, then keeps only the two newest checkpoints.
    pub fn save_checkpoint(&self, run_dir: &Path) -> Result<PathBuf> {
        let dir = run_dir.join("checkpoints");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let name = format!("step-{:08}", self.state.step);
        let out = dir.join(&name);
        let tmp = dir.join(format!(".{name}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        let result = (|| -> Result<()> {
            candle_core::safetensors::save(&self.state_dict()?, tmp.join("model.safetensors"))?;
            let mut slots = HashMap::new();
            for (n, v) in &self.slots {
                slots.insert(n.clone(), Tensor::from_slice(v, v.len(), &Device::Cpu)?);
            }
            candle_core::safetensors::save(&slots, tmp.join("optimizer.safetensors"))?;
            let meta = CheckpointMeta {
                state: self.state.clone(),
                train: self.cfg.clone(),
                network: self.config.clone(),
            };
            let json = serde_json::to_string_pretty(&meta)
                .map_err(|e| TrainError::Config(e.to_string()))?;
            let p = tmp.join("state.json");
            std::fs::write(&p, json).map_err(io(&p))?;
            if out.exists() {
                std::fs::remove_dir_all(&out).map_err(io(&out))?;
            }
            std::fs::rename(&tmp, &out).map_err(io(&out))?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result?;
        let mut all = list_checkpoints(run_dir)?;
        while all.len() > 2 {
            let (_, old) = all.remove(0);
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(out)
    }

    /// Restores weights, optimizer state and position from `checkpoint`, which must come from a
    /// run with the same network and training settings.
    pub fn load_checkpoint(&mut self, checkpoint: &Path) -> Result<()> {
        let bad = |problem: String| TrainError::Checkpoint {
            path: checkpoint.display().to_string(),
            problem,
        };
        let p = checkpoint.join("state.json");
        let text = std::fs::read_to_string(&p).map_err(io(&p))?;
        let meta: CheckpointMeta =
            serde_json::from_str(&text).map_err(|e| bad(format!("state.json: {e}")))?;
        if meta.network != self.config {
            return Err(bad("was made for another network configuration".into()));
        }
        if meta.train != self.cfg {
            return Err(bad(format!(
                "was made with other training settings: {}",
                serde_json::to_string(&meta.train).unwrap_or_default()
            )));
        }
        let load = |file: &str| {
            candle_core::safetensors::load(checkpoint.join(file), &self.device)
                .map_err(|e| bad(format!("{file}: {e}")))
        };
        let restore = |file: &str, vars: &mut dyn Iterator<Item = (&String, &Var)>| -> Result<()> {
            let saved = load(file)?;
            for (name, var) in vars {
                let t = saved
                    .get(name)
                    .ok_or_else(|| bad(format!("{file}: no tensor {name}")))?;
                if t.dims() != var.as_tensor().dims() {
                    return Err(bad(format!(
                        "{file}: {name} has shape {:?}, expected {:?}",
                        t.dims(),
                        var.as_tensor().dims()
                    )));
                }
                var.set(t)?;
            }
            Ok(())
        };
        {
            let data = self
                .varmap
                .data()
                .lock()
                .map_err(|_| TrainError::Config("variable map poisoned".into()))?;
            restore("model.safetensors", &mut data.iter())?;
        }
        let saved = load("optimizer.safetensors")?;
        for (name, slot) in self.slots.iter_mut() {
            let t = saved
                .get(name)
                .ok_or_else(|| bad(format!("optimizer.safetensors: no tensor {name}")))?;
            if t.elem_count() != slot.len() {
                return Err(bad(format!(
                    "optimizer.safetensors: {name} has the wrong size"
                )));
            }
            *slot = t.flatten_all()?.to_vec1::<f32>()?;
        }
        self.state = meta.state;
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    state: TrainState,
    train: TrainConfig,
    network: NetworkConfig,
}

/// Complete checkpoints of a run, oldest first, with their step.
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let dir = run_dir.join("checkpoints");
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in entries {
        let e = e.map_err(io(&dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) {
            out.push((step, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint of a run.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(run_dir)?.pop().map(|(_, p)| p))
}

/// Drops rows of `metrics.csv` past `step` (written after the checkpoint a run resumes from).
pub fn truncate_metrics(run_dir: &Path, step: usize) -> Result<()> {
    let path = run_dir.join("metrics.csv");
    if !path.exists() {
        return Ok(());
    }
    let rows = EpochMetrics::read_csv(&path)?;
    let kept: Vec<String> = rows
        .iter()
        .filter(|r| r.step <= step)
        .map(EpochMetrics::csv)
        .collect();
    let mut text = format!("{METRICS_HEADER}\n");
    for r in kept {
        text.push_str(&r);
        text.push('\n');
    }
    let tmp = path.with_extension("csv.partial");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

fn append_metrics(path: &Path, m: &EpochMetrics) -> Result<()> {
    use std::io::Write;
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    if new {
        writeln!(f, "{METRICS_HEADER}").map_err(io(path))?;
    }
    writeln!(f, "{}", m.csv()).map_err(io(path))?;
    f.sync_data().map_err(io(path))
}
