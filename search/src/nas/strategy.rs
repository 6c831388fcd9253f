//! Search strategies: uniform random search (the paper's Figure 6 baseline), regularized
//! evolution (Real et al., AmoebaNet: population 100, tournament of 25, the oldest dies, op and
//! hidden-state mutations) and the paper's PPO-trained controller. Each proposes decision
//! sequences, learns from rewards, and saves its whole state so a search resumes exactly.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::controller::{Controller, PpoConfig};
use super::space::{Space, mutate};
use crate::rng::Rng;

/// A strategy's error.
#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {problem}")]
    State { path: String, problem: String },
}

type Result<T> = std::result::Result<T, StrategyError>;

/// The strategies, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Random,
    Evolution,
    Rl,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Random => "random",
            Kind::Evolution => "evolution",
            Kind::Rl => "rl",
        }
    }
}

/// A proposal: decisions, with the log-probability the controller gave them (RL) and the
/// parent they were mutated from (evolution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposed {
    pub choices: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
}

/// Evolution settings (AmoebaNet's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvolutionConfig {
    pub population: usize,
    pub sample: usize,
    pub identity_prob: f64,
}

impl Default for EvolutionConfig {
    fn default() -> Self {
        Self {
            population: 100,
            sample: 25,
            identity_prob: 0.05,
        }
    }
}

/// Everything a strategy is, apart from the controller's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    kind: Kind,
    rng: Rng,
    /// Evolution: `(id, choices, reward)`, oldest first.
    #[serde(default)]
    population: VecDeque<(u64, Vec<usize>, f64)>,
    /// RL: the moving-average baseline.
    #[serde(default)]
    baseline: Option<f64>,
    /// RL: `(choices, log-probability, advantage)` waiting for the next update.
    #[serde(default)]
    pending: Vec<(Vec<usize>, f64, f64)>,
    /// RL: updates done; names the controller file.
    #[serde(default)]
    updates: usize,
    proposals: u64,
    observations: u64,
}

/// A search strategy.
pub struct Strategy {
    pub space: Space,
    pub evolution: EvolutionConfig,
    pub ppo: PpoConfig,
    state: State,
    controller: Option<Controller>,
}

impl Strategy {
    pub fn new(kind: Kind, space: Space, seed: u64) -> Result<Self> {
        let ppo = PpoConfig::default();
        let controller = match kind {
            Kind::Rl => Some(Controller::new(space, ppo, seed ^ 0xc0_11_7e)?),
            _ => None,
        };
        Ok(Self {
            space,
            evolution: EvolutionConfig::default(),
            ppo,
            state: State {
                kind,
                rng: Rng::new(seed),
                population: VecDeque::new(),
                baseline: None,
                pending: vec![],
                updates: 0,
                proposals: 0,
                observations: 0,
            },
            controller,
        })
    }

    pub fn kind(&self) -> Kind {
        self.state.kind
    }

    /// Proposals made and rewards observed so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.state.proposals, self.state.observations)
    }

    /// The next architecture to evaluate.
    pub fn propose(&mut self) -> Result<Proposed> {
        self.state.proposals += 1;
        let rng = &mut self.state.rng;
        Ok(match self.state.kind {
            Kind::Random => Proposed {
                choices: self.space.random(rng),
                logp: None,
                parent: None,
            },
            Kind::Evolution => {
                let pop = &self.state.population;
                if pop.len() < self.evolution.population {
                    Proposed {
                        choices: self.space.random(rng),
                        logp: None,
                        parent: None,
                    }
                } else {
                    let mut best: Option<&(u64, Vec<usize>, f64)> = None;
                    for _ in 0..self.evolution.sample {
                        let cand = &pop[rng.below(pop.len())];
                        if best.is_none_or(|b| cand.2 > b.2) {
                            best = Some(cand);
                        }
                    }
                    let (id, choices, _) = best.expect("a non-empty population");
                    Proposed {
                        choices: mutate(&self.space, choices, self.evolution.identity_prob, rng),
                        logp: None,
                        parent: Some(*id),
                    }
                }
            }
            Kind::Rl => {
                let c = self.controller.as_ref().expect("RL has a controller");
                let (choices, logp) = c.sample(rng)?;
                Proposed {
                    choices,
                    logp: Some(logp),
                    parent: None,
                }
            }
        })
    }

    /// Learns from the reward of proposal `id`.
    pub fn observe(&mut self, id: u64, p: &Proposed, reward: f64) -> Result<()> {
        self.state.observations += 1;
        match self.state.kind {
            Kind::Random => {}
            Kind::Evolution => {
                self.state
                    .population
                    .push_back((id, p.choices.clone(), reward));
                while self.state.population.len() > self.evolution.population {
                    self.state.population.pop_front();
                }
            }
            Kind::Rl => {
                let b = self.state.baseline.unwrap_or(reward);
                let advantage = reward - b;
                let d = self.ppo.baseline_decay;
                self.state.baseline = Some(d * b + (1.0 - d) * reward);
                self.state
                    .pending
                    .push((p.choices.clone(), p.logp.unwrap_or(0.0), advantage));
                if self.state.pending.len() >= self.ppo.batch {
                    let batch = std::mem::take(&mut self.state.pending);
                    if let Some(c) = self.controller.as_mut() {
                        c.update(&batch)?;
                    }
                    self.state.updates += 1;
                }
            }
        }
        Ok(())
    }

    fn controller_file(dir: &Path, updates: usize) -> PathBuf {
        dir.join(format!("controller-{updates:06}.safetensors"))
    }

    /// Writes the strategy's state into `dir`: `strategy.json` (through a temporary file and a
    /// rename) and, for RL, the controller it names, written first.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let err = |path: &Path, e: &dyn std::fmt::Display| StrategyError::State {
            path: path.display().to_string(),
            problem: e.to_string(),
        };
        if let Some(c) = &self.controller {
            let path = Self::controller_file(dir, self.state.updates);
            if !path.exists() {
                c.save(&path)?;
            }
        }
        let path = dir.join("strategy.json");
        let tmp = dir.join("strategy.json.partial");
        let json = serde_json::to_string(&self.state).map_err(|e| err(&path, &e))?;
        std::fs::write(&tmp, json).map_err(|e| err(&tmp, &e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, &e))?;
        if self.controller.is_some() && self.state.updates > 0 {
            let _ = std::fs::remove_file(Self::controller_file(dir, self.state.updates - 1));
        }
        Ok(())
    }

    /// Restores what [`Strategy::save`] wrote (`Ok(false)` when `dir` holds none).
    pub fn load(&mut self, dir: &Path) -> Result<bool> {
        let path = dir.join("strategy.json");
        if !path.exists() {
            return Ok(false);
        }
        let bad = |problem: String| StrategyError::State {
            path: path.display().to_string(),
            problem,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let state: State = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if state.kind != self.state.kind {
            return Err(bad(format!(
                "was written by the {} strategy, not {}",
                state.kind.name(),
                self.state.kind.name()
            )));
        }
        if let Some(c) = self.controller.as_mut() {
            let file = Self::controller_file(dir, state.updates);
            if file.exists() {
                c.load(&file)?;
            } else if state.updates > 0 {
                return Err(bad(format!("{} is missing", file.display())));
            }
        }
        self.state = state;
        Ok(true)
    }
}
