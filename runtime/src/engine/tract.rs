//! The tract backend: pure Rust, CPU. A model is optimized once, for one image (tract
//! optimizes far better for concrete shapes, and a batch-of-one plan lets it fold every batch
//! norm; a batch runs image by image through it), with the project's own depthwise operator
//! in place of tract's, and runs on a pool of the requested number of threads.

use std::sync::{Arc, Mutex};

use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;

use super::*;
use crate::TractCache;

mod depthwise;
mod downsample;

/// A node's replacement: the project's operator and the outlet it reads.
type Replacement = (Box<dyn TypedOp>, OutletId);

/// Replaces, in a decluttered model, every node for which `replacement` gives one, and
/// returns how many it replaced.
fn replace_ops(
    model: &mut TypedModel,
    replacement: impl Fn(&TypedModel, &TypedNode) -> TractResult<Option<Replacement>>,
) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = &model.nodes[id];
        let Some((op, input)) = replacement(model, node)? else {
            continue;
        };
        TypedModelPatch::replace_single_op(model, node, &[input], op)?.apply(model)?;
        replaced += 1;
    }
    model.compact()?;
    Ok(replaced)
}

/// A model optimized by tract for one image.
pub struct TractEngine {
    plan: Arc<TypedRunnableModel>,
    /// States of finished runs, kept for the next run: a fresh state costs a fifth of a Mobile
    /// run. One per run in flight at once.
    idle: Mutex<Vec<TypedSimpleState>>,
    size: usize,
    pool: Pool,
}

/// The executor for `threads` threads (`None`: every core the process may use).
fn executor(threads: Option<usize>) -> Executor {
    let n = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    if n <= 1 {
        Executor::SingleThread
    } else {
        // tract threads a matrix product from 64 panels on; NASNet's 1x1 convolutions on
        // the 14x14 and 7x7 planes have fewer, and on two threads they gained from 8 on
        // (Mobile, batch 1: 15.3 against 16.3 ms). A process-wide setting of tract's.
        tract_linalg::multithread::set_threading_panel_threshold(8);
        Executor::multithread_with_name(n, "nasnet-tract")
    }
}

/// tract's executor for one model, and whose turn it is to run on it.
struct Pool {
    executor: Executor,
    /// Held while a run is on the pool: see [`Pool::run`].
    turn: Mutex<()>,
}

impl Pool {
    fn new(threads: Option<usize>) -> Self {
        Self {
            executor: executor(threads),
            turn: Mutex::new(()),
        }
    }

    /// Runs `f` with the pool as tract's executor, on one of the pool's own threads: the
    /// calling thread waits while the pool's threads run the whole plan, so a serial operator
    /// and a parallel one never compete with idle workers for the same cores (with the caller
    /// running the plan itself, two threads on two cores ran a third slower than one).
    ///
    /// One run at a time: a pool thread waiting inside one run's parallel operator would
    /// otherwise pick up a whole other run, nested on its stack, and tract's per-thread
    /// scratch space is not made for that. Concurrent runs on one model take turns, each on
    /// every core; with one thread there is no pool, and they run side by side.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.executor {
            Executor::MultiThread(pool) => {
                let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
                pool.install(|| multithread_tract_scope(self.executor.clone(), f))
            }
            _ => multithread_tract_scope(self.executor.clone(), f),
        }
    }
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

/// tract's typed and decluttered model of an ONNX file, for one image of `size` pixels.
fn decluttered(onnx: &Path, size: usize) -> Result<TypedModel> {
    guarded(onnx, || {
        tract_onnx::onnx()
            .model_for_path(onnx)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, size, size]).into()))
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .map_err(|e| backend_err("tract", Some(&onnx.display().to_string()), e))
    })
}

/// The optimized model: the project's own operators in, then tract's code generation (the
/// model is decluttered already).
fn optimized(onnx: &Path, mut model: TypedModel) -> Result<TypedModel> {
    guarded(onnx, || {
        replace_ops(&mut model, |model, node| {
            Ok(match depthwise::replacement(model, node)? {
                Some(r) => Some(r),
                None => downsample::replacement(model, node)?,
            })
        })
        .and_then(|_| model.optimize())
        .map(|()| model)
        .map_err(|e| backend_err("tract", Some(&onnx.display().to_string()), e))
    })
}

/// The tract version the cache's files are written by: part of their names, and checked
/// against the version a loaded file records (a test keeps it equal to the tract in use).
const TRACT_VERSION: &str = "0.23.9";

/// The format of the prepared-model cache: raised whenever what is stored changes.
const CACHE_FORMAT: u32 = 1;

/// Where the prepared model of `onnx` for images of `size` pixels lives in `cache` (`None`
/// when the cache is off). Reads the file to hash it, unless the cache is off.
pub fn tract_cache_file(onnx: &Path, size: usize, cache: &TractCache) -> Result<Option<PathBuf>> {
    if *cache == TractCache::Off {
        return Ok(None);
    }
    let sha = nasnet_core::fsutil::sha256_file(onnx)
        .map_err(|e| Error::backend("tract", e.to_string(), e))?;
    let key = format!(
        "tract-{}-{size}px-tract{TRACT_VERSION}-v{CACHE_FORMAT}.nnef.tar",
        &sha[..32]
    );
    Ok(Some(match cache {
        TractCache::In(dir) => dir.join(key),
        _ => nasnet_core::fsutil::hidden_sibling(onnx, &key),
    }))
}

/// A model from NNEF bytes, as tract writes them.
fn nnef_model(bytes: Vec<u8>) -> TractResult<TypedModel> {
    let nnef = tract_nnef::nnef();
    let proto = nnef.proto_model_for_read(&mut std::io::Cursor::new(bytes))?;
    nnef.model_for_proto_model(&proto)
}

/// The tract version that wrote an NNEF model.
fn nnef_written_by(model: &TypedModel) -> Option<String> {
    let v = model.properties.get("tract_nnef_ser_version")?;
    v.try_as_plain_ram()
        .ok()?
        .to_scalar::<String>()
        .ok()
        .cloned()
}

/// The decluttered model from a cache file, if it holds one for an image of `size` pixels
/// written by this tract.
fn load_prepared(path: &Path, size: usize) -> Option<TypedModel> {
    // The whole file at once: tract reads a file through small reads.
    let bytes = std::fs::read(path).ok()?;
    let model = guarded(path, || {
        nnef_model(bytes).map_err(|e| backend_err("tract", None, e))
    })
    .ok()?;
    let input = model.input_outlets().ok()?.first().copied()?;
    let fits = nnef_written_by(&model).as_deref() == Some(TRACT_VERSION)
        && model.output_outlets().ok()?.len() == 2
        && model.outlet_fact(input).ok()?.shape.as_concrete() == Some(&[1, 3, size, size][..]);
    fits.then_some(model)
}

/// Writes the decluttered model to a cache file atomically (a unique temporary file in the
/// same directory, renamed into place). Beside a model, the files an earlier `model.onnx`
/// left go.
fn store_prepared(
    onnx: &Path,
    path: &Path,
    model: &TypedModel,
    cache: &TractCache,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tract-partial-");
    // Readable by whoever may read the model (tempfile's own default is the owner only).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder.tempfile_in(dir)?;
    tract_nnef::nnef()
        .write_to_tar(model, std::io::BufWriter::new(tmp.as_file_mut()))
        .map_err(std::io::Error::other)?;
    tmp.persist(path).map_err(|e| e.error)?;
    if *cache == TractCache::BesideModel {
        let ours = nasnet_core::fsutil::hidden_sibling(onnx, "tract-");
        let ours = ours.file_name().unwrap_or_default().to_string_lossy();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&*ours) && name.ends_with(".nnef.tar") && entry.path() != path {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// The decluttered model: read from the cache when it holds this model's, else made from
/// the ONNX file and, best effort, stored there.
fn prepared(onnx: &Path, size: usize, cache: &TractCache) -> Result<TypedModel> {
    let Some(path) = tract_cache_file(onnx, size, cache)? else {
        return decluttered(onnx, size);
    };
    if let Some(model) = load_prepared(&path, size) {
        return Ok(model);
    }
    let model = decluttered(onnx, size)?;
    // A cache that cannot be written (a read-only model directory) only costs time.
    let _ = store_prepared(onnx, &path, &model, cache);
    Ok(model)
}

/// What tract makes of an ONNX file for one image: operator names and counts of the
/// optimized model (a diagnostic: e.g. no batch norm should survive next to a convolution).
pub fn optimized_ops(
    onnx: &Path,
    size: usize,
) -> Result<std::collections::BTreeMap<String, usize>> {
    let model = optimized(onnx, decluttered(onnx, size)?)?;
    let mut h = std::collections::BTreeMap::new();
    for n in model.nodes() {
        *h.entry(n.op().name().to_string()).or_default() += 1;
    }
    Ok(h)
}

impl TractEngine {
    pub(crate) fn open(
        onnx: &Path,
        size: usize,
        threads: Option<usize>,
        cache: &TractCache,
    ) -> Result<Self> {
        let model = optimized(onnx, prepared(onnx, size, cache)?)?;
        let plan = model
            .into_runnable()
            .map_err(|e| backend_err("tract", Some(&onnx.display().to_string()), e))?;
        Ok(Self {
            plan,
            idle: Mutex::default(),
            size,
            pool: Pool::new(threads),
        })
    }

    /// Runs the plan on one image, with a kept state if one is free.
    fn run_one(&self, x: Tensor) -> Result<TVec<TValue>> {
        let kept = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut state = match kept {
            Some(state) => state,
            None => self
                .plan
                .spawn()
                .map_err(|e| backend_err("tract", None, e))?,
        };
        let out = self
            .pool
            .run(|| state.run(tvec!(x.into())))
            .map_err(|e| backend_err("tract", None, e))?;
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(state);
        }
        Ok(out)
    }

    pub(crate) fn run(&self, input: &[f32], batch: usize) -> Result<RawOutputs> {
        let s = self.size;
        let image = 3 * s * s;
        // `Model::run_sized` checked the length.
        debug_assert_eq!(input.len(), batch * image);
        let mut raw = RawOutputs {
            logits: Vec::new(),
            features: Vec::new(),
        };
        for x in input.chunks_exact(image) {
            let x =
                Tensor::from_shape(&[1, 3, s, s], x).map_err(|e| backend_err("tract", None, e))?;
            let out = self.run_one(x)?;
            for (t, into) in out.iter().zip([&mut raw.logits, &mut raw.features]) {
                let view = t
                    .to_plain_array_view::<f32>()
                    .map_err(|e| backend_err("tract", None, e))?;
                into.extend(view.iter().copied());
            }
        }
        Ok(raw)
    }
}

/// Where a tract run spends its time: for each operator of the optimized plan, its name, the
/// number of nodes and the total milliseconds per image over `runs` runs on `threads`
/// threads, slowest first. A diagnostic for performance work.
pub fn profile_ops(
    onnx: &Path,
    size: usize,
    threads: Option<usize>,
    runs: usize,
) -> Result<Vec<(String, usize, f64)>> {
    let engine = TractEngine::open(onnx, size, threads, &TractCache::Off)?;
    let plan = &engine.plan;
    let input: Tensor =
        Tensor::zero::<f32>(&[1, 3, size, size]).map_err(|e| backend_err("tract", None, e))?;
    let mut totals: std::collections::HashMap<String, (std::collections::HashSet<usize>, f64)> =
        Default::default();
    let mut state = tract_onnx::tract_core::plan::SimpleState::new(plan)
        .map_err(|e| backend_err("tract", None, e))?;
    for run in 0..=runs {
        engine
            .pool
            .run(|| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_names_the_tract_in_use() -> TractResult<()> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 3, 4, 4]))?;
        model.select_output_outlets(&[x])?;
        let tar = tract_nnef::nnef().write_to_tar(&model, Vec::new())?;
        assert_eq!(
            nnef_written_by(&nnef_model(tar)?).as_deref(),
            Some(TRACT_VERSION),
            "TRACT_VERSION must follow the tract in Cargo.lock"
        );
        Ok(())
    }
}
