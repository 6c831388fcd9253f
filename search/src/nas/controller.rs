//! The paper's RL controller (Zoph et al. 2018, App. A.2–A.3): a one-layer LSTM with 100
//! units that emits the `2 × 5B` decisions one at a time, each from its own softmax, feeding
//! back an embedding of the previous decision; weights U(-0.1, 0.1). Trained with PPO
//! (learning rate 0.00035, entropy weight 0.00001, an exponential-moving-average baseline with
//! weight 0.95, an update every 20 architectures). The paper leaves the PPO clip and epochs and
//! the optimizer open: clip ε = 0.2, 4 epochs over each batch of 20, Adam (β 0.9, 0.999).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::space::{Decision, Space};
use crate::rng::Rng;

/// PPO and controller settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PpoConfig {
    pub hidden: usize,
    pub lr: f64,
    pub entropy_weight: f64,
    pub baseline_decay: f64,
    pub batch: usize,
    pub clip: f64,
    pub epochs: usize,
    pub init_range: f64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            hidden: 100,
            lr: 0.00035,
            entropy_weight: 0.00001,
            baseline_decay: 0.95,
            batch: 20,
            clip: 0.2,
            epochs: 4,
            init_range: 0.1,
        }
    }
}

/// Position-independent token of a decision's outcome, fed to the LSTM at the next step.
fn token(space: &Space, d: Decision, choice: usize) -> usize {
    let inputs = space.blocks + 1;
    1 + match d {
        Decision::Input { .. } => choice,
        Decision::Op => inputs + choice,
        Decision::Combine => inputs + nasnet_core::space::Op::ALL.len() + choice,
    }
}

fn vocabulary(space: &Space) -> usize {
    1 + space.blocks + 1 + nasnet_core::space::Op::ALL.len() + 2
}

/// The LSTM controller and its optimizer state.
pub struct Controller {
    pub space: Space,
    pub cfg: PpoConfig,
    decisions: Vec<Decision>,
    /// Parameters by name, sorted.
    params: Vec<(String, Var)>,
    adam_m: HashMap<String, Vec<f32>>,
    adam_v: HashMap<String, Vec<f32>>,
    adam_t: u64,
}

/// Adam's step on host vectors.
fn adam(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], t: u64, lr: f64) {
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let c1 = 1.0 - b1.powi(t as i32);
    let c2 = 1.0 - b2.powi(t as i32);
    for i in 0..w.len() {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        w[i] -= lr as f32 * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
    }
}

impl Controller {
    pub fn new(space: Space, cfg: PpoConfig, seed: u64) -> candle_core::Result<Self> {
        let decisions = space.decisions();
        let h = cfg.hidden;
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("embedding".into(), vec![vocabulary(&space), h]),
            ("lstm.w_ih".into(), vec![4 * h, h]),
            ("lstm.w_hh".into(), vec![4 * h, h]),
            ("lstm.bias".into(), vec![4 * h]),
        ];
        for (k, d) in decisions.iter().enumerate() {
            shapes.push((format!("head_{k:02}.weight"), vec![d.arity(), h]));
            shapes.push((format!("head_{k:02}.bias"), vec![d.arity()]));
        }
        let mut rng = Rng::new(seed);
        let r = cfg.init_range as f32;
        let mut params = vec![];
        let (mut adam_m, mut adam_v) = (HashMap::new(), HashMap::new());
        for (name, shape) in shapes {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| (2.0 * rng.uniform() - 1.0) * r).collect();
            let t = Tensor::from_vec(v, shape, &Device::Cpu)?;
            adam_m.insert(name.clone(), vec![0.0; n]);
            adam_v.insert(name.clone(), vec![0.0; n]);
            params.push((name, Var::from_tensor(&t)?));
        }
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self {
            space,
            cfg,
            decisions,
            params,
            adam_m,
            adam_v,
            adam_t: 0,
        })
    }

    fn p(&self, name: &str) -> candle_core::Result<&Tensor> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg(format!("no controller parameter {name}")))
    }

    fn lstm_step(
        &self,
        x: &Tensor,
        (h, c): (&Tensor, &Tensor),
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let hd = self.cfg.hidden;
        let gates = x
            .matmul(&self.p("lstm.w_ih")?.t()?)?
            .add(&h.matmul(&self.p("lstm.w_hh")?.t()?)?)?
            .broadcast_add(self.p("lstm.bias")?)?;
        let i = candle_nn::ops::sigmoid(&gates.narrow(1, 0, hd)?)?;
        let f = candle_nn::ops::sigmoid(&gates.narrow(1, hd, hd)?)?;
        let g = gates.narrow(1, 2 * hd, hd)?.tanh()?;
        let o = candle_nn::ops::sigmoid(&gates.narrow(1, 3 * hd, hd)?)?;
        let c = ((f * c)? + (i * g)?)?;
        let h = (o * c.tanh()?)?;
        Ok((h, c))
    }

    /// Runs the controller over `batch` sequences. With `given`, those decisions are fed back
    /// (teacher forcing); otherwise each decision is sampled with `rng`. Returns the choices
    /// and, per sequence, the summed log-probability and entropy (as `[batch]` tensors).
    fn run(
        &self,
        batch: usize,
        given: Option<&[Vec<usize>]>,
        rng: &mut Rng,
    ) -> candle_core::Result<(Vec<Vec<usize>>, Tensor, Tensor)> {
        let hd = self.cfg.hidden;
        let emb = self.p("embedding")?;
        let mut h = Tensor::zeros((batch, hd), DType::F32, &Device::Cpu)?;
        let mut c = h.clone();
        let mut tokens = vec![0u32; batch];
        let mut choices = vec![vec![]; batch];
        let mut logp = Tensor::zeros(batch, DType::F32, &Device::Cpu)?;
        let mut entropy = logp.clone();
        for (k, d) in self.decisions.iter().enumerate() {
            let idx = Tensor::from_vec(tokens.clone(), batch, &Device::Cpu)?;
            let x = emb.index_select(&idx, 0)?;
            (h, c) = self.lstm_step(&x, (&h, &c))?;
            let logits = h
                .matmul(&self.p(&format!("head_{k:02}.weight"))?.t()?)?
                .broadcast_add(self.p(&format!("head_{k:02}.bias"))?)?;
            let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let picks: Vec<usize> = match given {
                Some(g) => g.iter().map(|s| s[k] % d.arity()).collect(),
                None => {
                    let probs = lp.exp()?.to_vec2::<f32>()?;
                    probs
                        .iter()
                        .map(|p| {
                            let u = rng.uniform();
                            let mut acc = 0.0;
                            for (j, q) in p.iter().enumerate() {
                                acc += q;
                                if u < acc {
                                    return j;
                                }
                            }
                            p.len() - 1
                        })
                        .collect()
                }
            };
            let pick_t = Tensor::from_vec(
                picks.iter().map(|&p| p as u32).collect::<Vec<_>>(),
                (batch, 1),
                &Device::Cpu,
            )?;
            logp = (logp + lp.gather(&pick_t, 1)?.squeeze(1)?)?;
            entropy = (entropy - (lp.exp()? * &lp)?.sum(1)?)?;
            for (b, &p) in picks.iter().enumerate() {
                choices[b].push(p);
                tokens[b] = token(&self.space, *d, p) as u32;
            }
        }
        Ok((choices, logp, entropy))
    }

    /// Samples one decision sequence and its log-probability.
    pub fn sample(&self, rng: &mut Rng) -> candle_core::Result<(Vec<usize>, f64)> {
        let (mut c, logp, _) = self.run(1, None, rng)?;
        let lp = logp.to_vec1::<f32>()?[0] as f64;
        Ok((c.remove(0), lp))
    }

    /// Log-probabilities of given sequences under the current policy.
    pub fn log_prob(&self, seqs: &[Vec<usize>]) -> candle_core::Result<Vec<f64>> {
        let (_, logp, _) = self.run(seqs.len(), Some(seqs), &mut Rng::new(0))?;
        Ok(logp.to_vec1::<f32>()?.iter().map(|&v| v as f64).collect())
    }

    /// PPO on one batch: `(choices, log-probability when sampled, advantage)`.
    pub fn update(&mut self, batch: &[(Vec<usize>, f64, f64)]) -> candle_core::Result<f64> {
        if batch.is_empty() {
            return Ok(0.0);
        }
        let seqs: Vec<Vec<usize>> = batch.iter().map(|b| b.0.clone()).collect();
        let old = Tensor::from_vec(
            batch.iter().map(|b| b.1 as f32).collect::<Vec<_>>(),
            batch.len(),
            &Device::Cpu,
        )?;
        let adv = Tensor::from_vec(
            batch.iter().map(|b| b.2 as f32).collect::<Vec<_>>(),
            batch.len(),
            &Device::Cpu,
        )?;
        let mut last = 0.0;
        for _ in 0..self.cfg.epochs {
            let (_, logp, entropy) = self.run(batch.len(), Some(&seqs), &mut Rng::new(0))?;
            let ratio = (logp - &old)?.exp()?;
            let clipped = ratio.clamp(1.0 - self.cfg.clip, 1.0 + self.cfg.clip)?;
            let surrogate = (&ratio * &adv)?.minimum(&(clipped * &adv)?)?;
            let loss = ((surrogate.mean_all()? * -1.0)?
                - (entropy.mean_all()? * self.cfg.entropy_weight)?)?;
            last = loss.to_scalar::<f32>()? as f64;
            let grads = loss.backward()?;
            self.adam_t += 1;
            for (name, v) in &self.params {
                let Some(g) = grads.get(v.as_tensor()) else {
                    continue;
                };
                let g = g.flatten_all()?.to_vec1::<f32>()?;
                let mut w = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                let (Some(m), Some(s)) = (self.adam_m.get_mut(name), self.adam_v.get_mut(name))
                else {
                    continue;
                };
                adam(&mut w, &g, m, s, self.adam_t, self.cfg.lr);
                v.set(&Tensor::from_vec(w, v.as_tensor().shape(), &Device::Cpu)?)?;
            }
        }
        Ok(last)
    }

    /// Saves weights and optimizer state (`adam_m.*`, `adam_v.*`; the step count in
    /// `adam_t`) to one safetensors file, through a temporary file and a rename.
    pub fn save(&self, path: &Path) -> candle_core::Result<()> {
        let mut out = HashMap::new();
        for (n, v) in &self.params {
            out.insert(n.clone(), v.as_tensor().clone());
            for (prefix, map) in [("adam_m", &self.adam_m), ("adam_v", &self.adam_v)] {
                if let Some(s) = map.get(n) {
                    out.insert(
                        format!("{prefix}.{n}"),
                        Tensor::from_slice(s, s.len(), &Device::Cpu)?,
                    );
                }
            }
        }
        out.insert(
            "adam_t".into(),
            Tensor::new(&[self.adam_t as f32], &Device::Cpu)?,
        );
        let tmp = path.with_extension("safetensors.partial");
        candle_core::safetensors::save(&out, &tmp)?;
        std::fs::rename(&tmp, path).map_err(candle_core::Error::wrap)
    }

    /// Restores what [`Controller::save`] wrote.
    pub fn load(&mut self, path: &Path) -> candle_core::Result<()> {
        let saved = candle_core::safetensors::load(path, &Device::Cpu)?;
        let get = |n: &str| {
            saved.get(n).ok_or_else(|| {
                candle_core::Error::Msg(format!("{}: no tensor {n}", path.display()))
            })
        };
        for (n, v) in &self.params {
            v.set(get(n)?)?;
            for (prefix, map) in [("adam_m", &mut self.adam_m), ("adam_v", &mut self.adam_v)] {
                map.insert(n.clone(), get(&format!("{prefix}.{n}"))?.to_vec1::<f32>()?);
            }
        }
        self.adam_t = get("adam_t")?.to_vec1::<f32>()?[0] as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_valid_and_log_probs_agree() {
        let space = Space::default();
        let c = Controller::new(space, PpoConfig::default(), 1).unwrap();
        let mut rng = Rng::new(2);
        let (d, lp) = c.sample(&mut rng).unwrap();
        assert_eq!(d.len(), 50);
        space.decode(&d).validate().unwrap();
        let again = c.log_prob(std::slice::from_ref(&d)).unwrap()[0];
        assert!((again - lp).abs() < 1e-4, "{again} vs {lp}");
        // Near-uniform at initialization: log-probability close to the uniform one.
        let uniform: f64 = space
            .decisions()
            .iter()
            .map(|d| -(d.arity() as f64).ln())
            .sum();
        assert!((lp - uniform).abs() < 5.0, "{lp} vs {uniform}");
    }

    #[test]
    fn ppo_raises_the_probability_of_rewarded_choices() {
        let space = Space::default();
        let mut c = Controller::new(
            space,
            PpoConfig {
                lr: 0.01,
                ..PpoConfig::default()
            },
            1,
        )
        .unwrap();
        let mut rng = Rng::new(5);
        let good = space.random(&mut rng);
        let before = c.log_prob(std::slice::from_ref(&good)).unwrap()[0];
        let old = before;
        c.update(&[(good.clone(), old, 1.0)]).unwrap();
        let after = c.log_prob(std::slice::from_ref(&good)).unwrap()[0];
        assert!(after > before, "{before} -> {after}");
        // Saved and loaded, the policy is the same.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        c.save(&path).unwrap();
        let mut d = Controller::new(space, PpoConfig::default(), 9).unwrap();
        d.load(&path).unwrap();
        assert_eq!(
            d.log_prob(std::slice::from_ref(&good)).unwrap(),
            c.log_prob(&[good]).unwrap()
        );
        assert_eq!(d.adam_t, c.adam_t);
    }
}
