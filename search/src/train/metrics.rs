//! `metrics.csv` (one row per epoch), `steps.csv` (the training loss every [`LOG_EVERY`]
//! steps, or about 20 times per shorter epoch) and the progress events a run reports.

use std::path::Path;

use super::{Result, TrainError, io};

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

/// Steps between two rows of `steps.csv` (fewer in epochs shorter than 20 times this).
pub const LOG_EVERY: usize = 100;

const STEPS_HEADER: &str = "step,epoch,loss,lr";

/// One row of `steps.csv`: the training loss averaged over the steps since the previous row.
#[derive(Debug, Clone, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    /// Epochs done, with the fraction of the current one.
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
}

impl StepMetrics {
    fn csv(&self) -> String {
        format!(
            "{},{:.4},{:.6},{:.6e}",
            self.step, self.epoch, self.loss, self.lr
        )
    }

    /// Reads `steps.csv`.
    pub fn read_csv(path: &Path) -> Result<Vec<Self>> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let bad = |line: usize| TrainError::Checkpoint {
            path: path.display().to_string(),
            problem: format!("line {line} is not a steps row"),
        };
        text.lines()
            .enumerate()
            .skip(1)
            .map(|(i, line)| {
                let f: Vec<&str> = line.split(',').collect();
                let num = |k: usize| f[k].parse::<f64>().map_err(|_| bad(i + 1));
                if f.len() != 4 {
                    return Err(bad(i + 1));
                }
                Ok(Self {
                    step: f[0].parse().map_err(|_| bad(i + 1))?,
                    epoch: num(1)?,
                    loss: num(2)?,
                    lr: num(3)?,
                })
            })
            .collect()
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

/// Drops rows of `metrics.csv` and `steps.csv` past `step` (written after the checkpoint a run
/// resumes from).
pub fn truncate_metrics(run_dir: &Path, step: usize) -> Result<()> {
    let path = run_dir.join("metrics.csv");
    if path.exists() {
        let rows = EpochMetrics::read_csv(&path)?;
        let kept = rows
            .iter()
            .filter(|r| r.step <= step)
            .map(EpochMetrics::csv);
        rewrite(&path, METRICS_HEADER, kept)?;
    }
    let path = run_dir.join("steps.csv");
    if path.exists() {
        let rows = StepMetrics::read_csv(&path)?;
        let kept = rows.iter().filter(|r| r.step <= step).map(StepMetrics::csv);
        rewrite(&path, STEPS_HEADER, kept)?;
    }
    Ok(())
}

fn rewrite(path: &Path, header: &str, rows: impl Iterator<Item = String>) -> Result<()> {
    let mut text = format!("{header}\n");
    for r in rows {
        text.push_str(&r);
        text.push('\n');
    }
    let tmp = path.with_extension("csv.partial");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

pub(super) fn append_steps(path: &Path, m: &StepMetrics) -> Result<()> {
    append_row(path, STEPS_HEADER, &m.csv())
}

pub(super) fn append_metrics(path: &Path, m: &EpochMetrics) -> Result<()> {
    append_row(path, METRICS_HEADER, &m.csv())
}

fn append_row(path: &Path, header: &str, row: &str) -> Result<()> {
    use std::io::Write;
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(path))?;
    if new {
        writeln!(f, "{header}").map_err(io(path))?;
    }
    writeln!(f, "{row}").map_err(io(path))?;
    f.sync_data().map_err(io(path))
}
