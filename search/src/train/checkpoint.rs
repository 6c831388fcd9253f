//! Checkpoints: `RUN/checkpoints/step-NNNNNNNN/`, each written whole or not at all, and resume.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::config::{TrainConfig, TrainState};
use super::trainer::Trainer;
use super::{Result, TrainError, io};
use nasnet_core::NetworkConfig;

impl Trainer {
    /// Writes `checkpoints/step-NNNNNNNN/` (weights, optimizer state, `state.json`) through a
    /// temporary directory and a rename, then keeps only the two newest checkpoints.
    pub fn save_checkpoint(&self, run_dir: &Path) -> Result<PathBuf> {
        let dir = run_dir.join("checkpoints");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let name = format!("step-{:08}", self.state.step);
        let out = dir.join(&name);
        // A checkpoint of the same step (written again after a resume) is replaced only once
        // the new one is complete. The run's lock keeps other writers out of `.NAME.partial`.
        let tmp = dir.join(format!(".{name}.partial"));
        nasnet_core::fsutil::replace_dir(&out, &tmp, |tmp| -> Result<()> {
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
            Ok(())
        })?;
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
