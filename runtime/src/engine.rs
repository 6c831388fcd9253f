//! The inference backends behind [`crate::Model`]: tract (pure Rust) and ONNX Runtime.

use std::path::{Path, PathBuf};

use crate::{Device, Error, Result};

/// Raw outputs of one batch.
#[derive(Debug, Clone)]
pub struct RawOutputs {
    pub logits: Vec<f32>,
    pub features: Vec<f32>,
}

fn backend_err(backend: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend,
        message: e.to_string(),
    }
}

#[cfg(feature = "tract")]
pub mod tract {
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
            .map_err(|e| backend_err("tract", format!("{}: {e:#}", onnx.display())))?;
        let mut h = std::collections::BTreeMap::new();
        for n in model.nodes() {
            *h.entry(n.op().name().to_string()).or_default() += 1;
        }
        Ok(h)
    }

    impl TractEngine {
        pub fn open(onnx: &Path, size: usize) -> Result<Self> {
            let model = tract_onnx::onnx()
                .model_for_path(onnx)
                .map_err(|e| backend_err("tract", format!("{}: {e:#}", onnx.display())))?;
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
                .map_err(|_| backend_err("tract", "a previous run panicked"))?;
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
                .map_err(|e| backend_err("tract", format!("{}: {e:#}", self.path.display())))?;
            plans.insert(batch, plan.clone());
            Ok(plan)
        }

        pub fn run(&self, input: &[f32], batch: usize) -> Result<RawOutputs> {
            let s = self.size;
            let x = Tensor::from_shape(&[batch, 3, s, s], input)
                .map_err(|e| backend_err("tract", e))?;
            let out = self
                .plan(batch)?
                .run(tvec!(x.into()))
                .map_err(|e| backend_err("tract", format!("{e:#}")))?;
            let vec = |t: &TValue| -> Result<Vec<f32>> {
                Ok(t.to_plain_array_view::<f32>()
                    .map_err(|e| backend_err("tract", e))?
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
}

/// Where the ONNX Runtime shared library is looked for: `ORT_DYLIB_PATH`, else
/// `$NASNET_HOME/onnxruntime/libonnxruntime.so` (`onnxruntime-gpu/` for CUDA), where
/// `NASNET_HOME` defaults to `$XDG_CACHE_HOME/nasnet` or `~/.cache/nasnet`.
pub fn ort_library(device: Device) -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let dir = match device {
        Device::Cpu => "onnxruntime",
        Device::Cuda(_) => "onnxruntime-gpu",
    };
    crate::nasnet_home()
        .join(dir)
        .join(if cfg!(target_os = "macos") {
            "libonnxruntime.dylib"
        } else if cfg!(windows) {
            "onnxruntime.dll"
        } else {
            "libonnxruntime.so"
        })
}

#[cfg(feature = "ort")]
pub mod onnxruntime {
    use std::sync::{Mutex, OnceLock};

    use ort::session::Session;
    use ort::value::Tensor;

    use super::*;

    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> =
        OnceLock::new();

    fn environment(lib: &Path) -> Result<&'static ort::environment::Environment> {
        let env = ENV.get_or_init(|| {
            if !lib.exists() {
                return Err(format!(
                    "the ONNX Runtime library was not found at {}; install it with scripts/setup.sh \
                     (pip's onnxruntime wheel, or onnxruntime-gpu with --cuda) or point ORT_DYLIB_PATH \
                     at libonnxruntime.so (1.31 or newer); the tract backend needs nothing",
                    lib.display()
                ));
            }
            ort::init_from(lib)
                .map_err(|e| format!("cannot load {}: {e}", lib.display()))?
                .with_name("nasnet")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
        });
        env.as_ref().map_err(|m| Error::OrtUnavailable(m.clone()))
    }

    /// An ONNX Runtime session (CPU or CUDA execution provider).
    pub struct OrtEngine {
        session: Mutex<Session>,
        size: usize,
    }

    impl OrtEngine {
        pub fn open(
            onnx: &Path,
            size: usize,
            device: Device,
            threads: Option<usize>,
        ) -> Result<Self> {
            let env = environment(&ort_library(device))?;
            let err = |e: ort::Error| backend_err("ort", format!("{}: {e}", onnx.display()));
            let mut builder = Session::builder(env)
                .map_err(err)?
                .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
                .map_err(|e| err(e.into()))?
                .with_inter_threads(1)
                .map_err(|e| err(e.into()))?;
            if let Some(n) = threads {
                builder = builder.with_intra_threads(n).map_err(|e| err(e.into()))?;
            }
            if let Device::Cuda(id) = device {
                // The set-up links the wheel's NVIDIA libraries next to the GPU runtime.
                let lib = ort_library(device);
                let nvidia = lib
                    .parent()
                    .map(|d| d.join("nvidia"))
                    .filter(|d| d.exists());
                if let Some(nv) = nvidia {
                    let (cuda, cudnn) = (nv.join("cu13/lib"), nv.join("cudnn/lib"));
                    ort::ep::cuda::preload_dylibs(Some(&cuda), Some(&cudnn)).map_err(|e| {
                        Error::Device(format!(
                            "cannot load the CUDA libraries under {}: {e}",
                            nv.display()
                        ))
                    })?;
                }
                let cuda = ort::ep::CUDA::default()
                    .with_device_id(id as i32)
                    .build()
                    .error_on_failure();
                builder = builder.with_execution_providers([cuda]).map_err(|e| {
                    Error::Device(format!(
                        "CUDA device {id} is not usable by ONNX Runtime: {e}"
                    ))
                })?;
            }
            let session = builder.commit_from_file(onnx).map_err(err)?;
            Ok(Self {
                session: Mutex::new(session),
                size,
            })
        }

        pub fn run(&self, input: &[f32], batch: usize) -> Result<RawOutputs> {
            let s = self.size;
            let err = |e: ort::Error| backend_err("ort", e);
            let x = Tensor::from_array(([batch, 3, s, s], input.to_vec())).map_err(err)?;
            let mut session = self
                .session
                .lock()
                .map_err(|_| backend_err("ort", "a previous run panicked"))?;
            let out = session.run(ort::inputs!["image" => x]).map_err(err)?;
            let get = |name: &str| -> Result<Vec<f32>> {
                let (_, v) = out[name].try_extract_tensor::<f32>().map_err(err)?;
                Ok(v.to_vec())
            };
            Ok(RawOutputs {
                logits: get("logits")?,
                features: get("features")?,
            })
        }
    }
}
