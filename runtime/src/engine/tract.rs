//! The tract backend: pure Rust, CPU; one optimized plan per batch size.

use std::sync::Arc;

use tract_onnx::prelude::*;

use super::*;

/// A model optimized by tract, one plan per batch size (tract optimizes far better for
/// concrete shapes than for a symbolic batch).
pub struct TractEngine {
    model: InferenceModel,
    plans: std::sync::Mutex<std::collections::HashMap<usize, Arc<TypedRunnableModel>>>,
    size: usize,
    path: std::path::PathBuf,
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

impl TractEngine {
    pub(crate) fn open(onnx: &Path, size: usize) -> Result<Self> {
        let model = tract_onnx::onnx()
            .model_for_path(onnx)
            .map_err(|e| backend_err("tract", Some(&onnx.display().to_string()), e))?;
        let engine = Self {
            model,
            plans: Default::default(),
            size,
            path: onnx.to_path_buf(),
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
        let plan = self
            .model
            .clone()
            .with_input_fact(0, f32::fact([batch, 3, s, s]).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| backend_err("tract", Some(&self.path.display().to_string()), e))?;
        plans.insert(batch, plan.clone());
        Ok(plan)
    }

    pub(crate) fn run(&self, input: &[f32], batch: usize) -> Result<RawOutputs> {
        let s = self.size;
        let x = Tensor::from_shape(&[batch, 3, s, s], input)
            .map_err(|e| backend_err("tract", None, e))?;
        let out = self
            .plan(batch)?
            .run(tvec!(x.into()))
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
