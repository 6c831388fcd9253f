//! The tract backend: pure Rust, CPU; one optimized plan per batch size, run on a pool of
//! the requested number of threads (tract-linalg's multithreaded matrix products).

use std::sync::Arc;

use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;

use super::*;

/// A model optimized by tract, one plan per batch size (tract optimizes far better for
/// concrete shapes than for a symbolic batch).
pub struct TractEngine {
    model: InferenceModel,
    plans: std::sync::Mutex<std::collections::HashMap<usize, Arc<TypedRunnableModel>>>,
    size: usize,
    path: std::path::PathBuf,
    executor: Executor,
}

/// The executor for `threads` threads (`None`: every core the process may use).
fn executor(threads: Option<usize>) -> Executor {
    let n = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    if n <= 1 {
        Executor::SingleThread
    } else {
        Executor::multithread_with_name(n, "nasnet-tract")
    }
}

/// What tract makes of an ONNX file for a batch of one: operator names and counts of the
/// optimized model (a diagnostic: e.g. no batch norm should survive next to a convolution).
pub fn optimized_ops(
    onnx: &Path,
    size: usize,
) -> Result<std::collections::BTreeMap<String, usize>> {
    let model = tract_onnx::onnx()
        .model_for_path(onnx)
        .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, size, size]).into()))
        .and_then(|m| m.into_optimized())
        .map_err(|e| backend_err("tract", Some(&onnx.display().to_string()), e))?;
    let mut h = std::collections::BTreeMap::new();
    for n in model.nodes() {
        *h.entry(n.op().name().to_string()).or_default() += 1;
    }
    Ok(h)
}

/// Runs one of tract's steps on a model file, turning a panic inside tract (it indexes maps
/// with names a damaged file may lack) into an error naming the file.
fn guarded<T>(onnx: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(backend_msg(
            "tract",
            &format!(
                "{}: tract failed on this model ({why}); is model.onnx damaged?",
                onnx.display()
            ),
        ))
    })
}

impl TractEngine {
    pub(crate) fn open(onnx: &Path, size: usize, threads: Option<usize>) -> Result<Self> {
        let model = guarded(onnx, || {
            tract_onnx::onnx()
                .model_for_path(onnx)
                .map_err(|e| backend_err("tract", Some(&onnx.display().to_string()), e))
        })?;
        let engine = Self {
            model,
            plans: Default::default(),
            size,
            path: onnx.to_path_buf(),
            executor: executor(threads),
        };
        engine.plan(1)?;
        Ok(engine)
    }

    fn plan(&self, batch: usize) -> Result<Arc<TypedRunnableModel>> {
        let mut plans = self
            .plans
            .lock()
            .map_err(|_| backend_msg("tract", "a previous run panicked"))?;
        if let Some(p) = plans.get(&batch) {
            return Ok(p.clone());
        }
        let s = self.size;
        let plan = guarded(&self.path, || {
            self.model
                .clone()
                .with_input_fact(0, f32::fact([batch, 3, s, s]).into())
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable())
                .map_err(|e| backend_err("tract", Some(&self.path.display().to_string()), e))
        })?;
        plans.insert(batch, plan.clone());
        Ok(plan)
    }

    pub(crate) fn run(&self, input: &[f32], batch: usize) -> Result<RawOutputs> {
        let s = self.size;
        let x = Tensor::from_shape(&[batch, 3, s, s], input)
            .map_err(|e| backend_err("tract", None, e))?;
        let plan = self.plan(batch)?;
        let out = multithread_tract_scope(self.executor.clone(), || plan.run(tvec!(x.into())))
            .map_err(|e| backend_err("tract", None, e))?;
        let vec = |t: &TValue| -> Result<Vec<f32>> {
            Ok(t.to_plain_array_view::<f32>()
                .map_err(|e| backend_err("tract", None, e))?
                .iter()
                .copied()
                .collect())
        };
        Ok(RawOutputs {
            logits: vec(&out[0])?,
            features: vec(&out[1])?,
        })
    }
}

/// Where a tract run spends its time: for each operator of the optimized plan for `batch`
/// images, its name, the number of nodes and the total milliseconds over `runs` runs on
/// `threads` threads, slowest first. A diagnostic for performance work.
pub fn profile_ops(
    onnx: &Path,
    size: usize,
    batch: usize,
    threads: Option<usize>,
    runs: usize,
) -> Result<Vec<(String, usize, f64)>> {
    let engine = TractEngine::open(onnx, size, threads)?;
    let plan = engine.plan(batch)?;
    let input: Tensor =
        Tensor::zero::<f32>(&[batch, 3, size, size]).map_err(|e| backend_err("tract", None, e))?;
    let mut totals: std::collections::HashMap<String, (std::collections::HashSet<usize>, f64)> =
        Default::default();
    let mut state = tract_onnx::tract_core::plan::SimpleState::new(&plan)
        .map_err(|e| backend_err("tract", None, e))?;
    for run in 0..=runs {
        multithread_tract_scope(engine.executor.clone(), || {
            state.run_plan_with_eval(tvec!(input.clone().into()), |ctx, st, node, inputs| {
                let t = std::time::Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
                if run > 0 {
                    let e = totals.entry(node.op().name().to_string()).or_default();
                    e.0.insert(node.id);
                    e.1 += t.elapsed().as_secs_f64() * 1e3;
                }
                out
            })
        })
        .map_err(|e| backend_err("tract", None, e))?;
    }
    let mut v: Vec<(String, usize, f64)> = totals
        .into_iter()
        .map(|(name, (nodes, ms))| (name, nodes.len(), ms / runs.max(1) as f64))
        .collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(v)
}
