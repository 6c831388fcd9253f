//! The ONNX Runtime backend: the shared library loaded at run time, CPU or CUDA.

use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;

use super::*;

/// The process's ONNX Runtime once loaded: the library it came from, and its environment. A
/// failed load is not kept, so that another path may be tried.
static ENV: Mutex<Option<&'static (PathBuf, ort::environment::Environment)>> = Mutex::new(None);

fn environment(lib: &Path) -> Result<&'static ort::environment::Environment> {
    let mut env = ENV
        .lock()
        .map_err(|_| Error::OrtUnavailable("a previous load of ONNX Runtime panicked".into()))?;
    let (loaded, e) = match *env {
        Some(l) => l,
        None => {
            let e = load(lib).map_err(Error::OrtUnavailable)?;
            // Loaded once per process and kept for its life, as ONNX Runtime itself is.
            *env.insert(Box::leak(Box::new((lib.to_path_buf(), e))))
        }
    };
    if loaded != lib {
        return Err(Error::OrtUnavailable(format!(
            "ONNX Runtime is already loaded from {} in this process; {} cannot be loaded too",
            loaded.display(),
            lib.display()
        )));
    }
    Ok(e)
}

fn load(lib: &Path) -> std::result::Result<ort::environment::Environment, String> {
    {
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
    }
}

/// An ONNX Runtime session (CPU or CUDA execution provider).
pub struct OrtEngine {
    session: Mutex<Session>,
    size: usize,
}

impl OrtEngine {
    pub(crate) fn open(
        onnx: &Path,
        size: usize,
        device: Device,
        threads: Option<usize>,
        library: Option<&Path>,
    ) -> Result<Self> {
        let lib = library.map_or_else(|| ort_library(device), Path::to_path_buf);
        let env = environment(&lib)?;
        let err = |e: ort::Error| backend_err("ort", Some(&onnx.display().to_string()), e);
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

    pub(crate) fn run(&self, input: &[f32], batch: usize) -> Result<RawOutputs> {
        let s = self.size;
        let err = |e: ort::Error| backend_err("ort", None, e);
        let x = Tensor::from_array(([batch, 3, s, s], input.to_vec())).map_err(err)?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| backend_msg("ort", "a previous run panicked"))?;
        let out = session
            .run(ort::inputs![nasnet_core::meta::ONNX_INPUT => x])
            .map_err(err)?;
        let get = |name: &str| -> Result<Vec<f32>> {
            let (_, v) = out[name].try_extract_tensor::<f32>().map_err(err)?;
            Ok(v.to_vec())
        };
        Ok(RawOutputs {
            logits: get(nasnet_core::meta::ONNX_LOGITS)?,
            features: get(nasnet_core::meta::ONNX_FEATURES)?,
        })
    }
}
