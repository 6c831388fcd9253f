//! The trainer: the optimizer step (with replicas), evaluation, and the training loop.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rayon::prelude::*;

use super::config::{Optimizer, TrainConfig, TrainState, Trainable, cosine_lr};
use super::metrics::{
    EpochMetrics, Event, LOG_EVERY, StepMetrics, StepReport, append_metrics, append_steps,
};
use super::{Result, TrainError};
use crate::data::{Augment, Batcher, Dataset};
use nasnet_core::NetworkConfig;
use nasnet_core::rng::Rng;
use nasnet_model::init::{is_buffer, parameter_shapes};
use nasnet_model::{CandleGraph, NasNet};

/// One forward and backward pass over (part of) a batch.
struct Pass {
    loss: f64,
    correct: usize,
    grads: Vec<Vec<f32>>,
    rng: Rng,
    len: usize,
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

/// Where and how long [`Trainer::fit`] runs. The default trains to the end and writes nothing
/// (a search child).
#[derive(Debug, Clone, Copy, Default)]
pub struct FitOptions<'a> {
    /// Held-out data, evaluated at each epoch's end.
    pub val: Option<&'a Dataset>,
    /// The run directory: checkpoints there every `checkpoint_every` steps, at each epoch's
    /// end and at the end, and a row per epoch in `metrics.csv`.
    pub run_dir: Option<&'a Path>,
    /// Steps between periodic checkpoints (0: only at epoch ends and the end).
    pub checkpoint_every: usize,
    /// Stop after this many steps (for a run to be resumed later).
    pub stop_at: Option<usize>,
}

/// A network being trained: its variables, optimizer state and position.
pub struct Trainer {
    /// The network.
    pub net: NasNet,
    pub config: NetworkConfig,
    pub cfg: TrainConfig,
    pub state: TrainState,
    pub(super) device: Device,
    pub(super) varmap: VarMap,
    /// Trained variables, sorted by name.
    pub(super) params: Vec<(String, Var)>,
    /// Optimizer buffers, by `slot/name`, on the host.
    pub(super) slots: HashMap<String, Vec<f32>>,
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
                let f = nasnet_model::graph::Graph::dropout(
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

    /// Trains on `train` until the configured epochs are done, or as [`FitOptions`] says.
    pub fn fit(
        &mut self,
        train: &Dataset,
        batcher: &Batcher,
        opts: &FitOptions,
        mut on_event: impl FnMut(Event),
    ) -> Result<()> {
        let FitOptions {
            val,
            run_dir,
            checkpoint_every,
            stop_at,
        } = *opts;
        if train.is_empty() {
            return Err(TrainError::Config("the training set is empty".into()));
        }
        let per_epoch = self.steps_per_epoch(train);
        let total = per_epoch * self.cfg.epochs;
        let end = stop_at.unwrap_or(total).min(total);
        let mut window = (Instant::now(), 0usize);
        let mut last = Instant::now();
        let mut rate = 0.0;
        // The loss summed over the images since the last row of steps.csv, and their count.
        let mut logged = (0.0f64, 0usize);
        // Short epochs are logged about 20 times each, so that their curve is a curve.
        let log_every = LOG_EVERY.min((per_epoch / 20).max(1));
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
            logged.0 += loss * idx.len() as f64;
            logged.1 += idx.len();
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
            if let Some(dir) = run_dir.filter(|_| {
                logged.1 > 0 && (epoch_done || self.state.step.is_multiple_of(log_every))
            }) {
                let row = StepMetrics {
                    step: self.state.step,
                    epoch: self.state.step as f64 / per_epoch as f64,
                    loss: logged.0 / logged.1 as f64,
                    lr,
                };
                append_steps(&dir.join("steps.csv"), &row)?;
                logged = (0.0, 0);
            }
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
}
