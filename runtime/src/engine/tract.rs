//! The tract backend: pure Rust, CPU. A model is optimized once, for one image (tract
//! optimizes far better for concrete shapes; a batch runs image by image through it), with the
//! project's own depthwise operator in place of tract's, in two parts optimized side by side
//! (see [`split`]), and runs on a pool of the requested number of threads.
//!
//! A model comes from `model.nnef.tar` (tract's own format: the decluttered graph, read
//! without any ONNX front end, which is what apps ship) or, with the `tract` feature, from
//! `model.onnx` (parsed, analysed and simplified by tract-onnx, then kept in the
//! prepared-model cache).

use std::sync::{Arc, Mutex};

use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_nnef::prelude::*;

use super::*;
use crate::{TractCache, each};

mod depthwise;
mod downsample;
#[cfg(feature = "tract")]
mod fold;
mod nnef;
#[cfg(feature = "tract")]
mod quant;
mod split;

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

/// The weights and bias of a convolution node (its inputs 1 and 2), when it has both and both
/// are constants.
fn constant_weights(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<(Arc<Tensor>, Arc<Tensor>)>> {
    if node.inputs.len() != 3 {
        return Ok(None);
    }
    let konst =
        |i: usize| -> TractResult<_> { Ok(model.outlet_fact(node.inputs[i])?.konst.clone()) };
    Ok(konst(1)?.zip(konst(2)?))
}

/// A model optimized by tract for one image, in parts run one after the other (see
/// [`split`]).
pub struct TractEngine {
    plans: Vec<Arc<TypedRunnableModel>>,
    /// States of finished runs (one per part), kept for the next run: a fresh state costs a
    /// fifth of a Mobile run. One per run in flight at once.
    idle: Mutex<Vec<Vec<TypedSimpleState>>>,
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
        // the 14x14 and 7x7 planes have fewer, and on two threads they gain from 8 on
        // (docs/benchmarks.md, "Settings"). A process-wide setting of tract's.
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
    /// running the plan itself, two threads on two cores ran slower than one: docs/benchmarks.md,
    /// "Settings").
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
                "{}: tract failed on this model ({why}); is the file damaged?",
                onnx.display()
            ),
        ))
    })
}

/// Where tract reads a model from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// `model.nnef.tar`: the decluttered graph for one image, as [`write_nnef`] writes it, of
    /// a model with `classes` classes (what the file is checked against).
    Nnef { file: PathBuf, classes: usize },
    /// `model.onnx`, prepared by tract-onnx (and kept in the prepared-model cache).
    #[cfg(feature = "tract")]
    Onnx(PathBuf),
}

impl Source {
    fn path(&self) -> &Path {
        match self {
            Source::Nnef { file, .. } => file,
            #[cfg(feature = "tract")]
            Source::Onnx(p) => p,
        }
    }
}

/// The most nodes of the typed graph tract declutters at once. tract checks the whole graph
/// after each of its rewrites, so decluttering grows with the square of the graph's size: the
/// graph is cut into parts of about this size (see [`split`]), decluttered side by side and
/// joined again (the rewrites across a cut happen when the joined model is optimized).
#[cfg(feature = "tract")]
const DECLUTTER_PART_NODES: usize = 96;

/// tract's typed and decluttered model of an ONNX file, for one image of `size` pixels, with
/// its batch norms folded into their convolutions (see [`fold`]); the parts decluttered on a
/// thread each when `parallel`.
#[cfg(feature = "tract")]
fn decluttered(onnx: &Path, size: usize, parallel: bool) -> Result<TypedModel> {
    use tract_onnx::prelude::InferenceModelExt;
    let err = |e| backend_err("tract", Some(&onnx.display().to_string()), e);
    guarded(onnx, || {
        let mut typed = read_onnx(onnx)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, size, size]).into()))
            .and_then(|m| m.into_typed())
            .map_err(err)?;
        fold::fold_batch_norms(&mut typed).map_err(err)?;
        let parts = typed.nodes.len().div_ceil(DECLUTTER_PART_NODES);
        let parts = split::split_into(typed, parts).map_err(err)?;
        let parts = each(parts, parallel, |part| part.into_decluttered())
            .into_iter()
            .collect::<TractResult<Vec<_>>>()
            .map_err(err)?;
        split::join(parts).map_err(err)
    })
}

/// tract's model of an ONNX file (external data read from its directory), a quantized graph's
/// activation pairs dropped (see [`quant`]).
#[cfg(feature = "tract")]
fn read_onnx(onnx: &Path) -> TractResult<tract_onnx::prelude::InferenceModel> {
    let framework = tract_onnx::onnx();
    let mut proto = framework.proto_model_for_path(onnx)?;
    let dropped = quant::drop_activation_pairs(&mut proto);
    if dropped > 0 {
        log::info!(
            "{}: {dropped} activations run in fp32 (their quantize/dequantize pairs dropped)",
            onnx.display()
        );
    }
    let dir = onnx.parent().and_then(Path::to_str);
    let parsed = framework.parse(&proto, dir)?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(tract_nnef::tract_core::internal::format_err!(
            "unresolved inputs: {:?}",
            parsed.unresolved_inputs
        ));
    }
    Ok(parsed.model)
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
#[cfg(feature = "tract")]
const TRACT_VERSION: &str = "0.23.9";

/// The format of the prepared-model cache: raised whenever what is stored changes (2: the
/// model's parts, each an NNEF archive, in one tar file).
#[cfg(feature = "tract")]
const CACHE_FORMAT: u32 = 2;

/// Where the prepared model of `onnx` for images of `size` pixels lives in `cache` (`None`
/// when the cache is off). Reads the file to hash it, unless the cache is off.
#[cfg(feature = "tract")]
pub fn tract_cache_file(onnx: &Path, size: usize, cache: &TractCache) -> Result<Option<PathBuf>> {
    if *cache == TractCache::Off {
        return Ok(None);
    }
    // The ONNX file of a model directory reads its weights from `model.safetensors`.
    let digest = |path: &Path| {
        nasnet_core::fsutil::sha256_file(path)
            .map_err(|e| Error::backend("tract", e.to_string(), e))
    };
    let weights = onnx.with_file_name(nasnet_core::meta::WEIGHTS_FILE);
    let sha = match weights.exists() {
        true => format!("{}{}", &digest(onnx)?[..16], &digest(&weights)?[..16]),
        false => digest(onnx)?,
    };
    let key = format!(
        "tract-{}-{size}px-tract{TRACT_VERSION}-v{CACHE_FORMAT}.nnef.tar",
        &sha[..32]
    );
    Ok(Some(match cache {
        TractCache::In(dir) => dir.join(key),
        _ => nasnet_core::fsutil::hidden_sibling(onnx, &key),
    }))
}

/// A model from NNEF bytes, as tract writes them (read with only the operators NASNet
/// uses: see [`nnef`]).
fn nnef_model(bytes: Vec<u8>) -> TractResult<TypedModel> {
    let nnef = nnef::reader();
    let proto = nnef.proto_model_for_read(&mut std::io::Cursor::new(bytes))?;
    nnef.model_for_proto_model(&proto)
}

/// The tract version that wrote an NNEF model.
#[cfg(feature = "tract")]
fn nnef_written_by(model: &TypedModel) -> Option<String> {
    let v = model.properties.get("tract_nnef_ser_version")?;
    v.try_as_plain_ram()
        .ok()?
        .to_scalar::<String>()
        .ok()
        .cloned()
}

/// The parts of a cache file, each an NNEF archive; `None` when it is missing or damaged.
#[cfg(feature = "tract")]
fn read_parts(path: &Path) -> Option<Vec<Vec<u8>>> {
    use std::io::Read;
    // The whole file at once: tract and tar read through small reads.
    let bytes = std::fs::read(path).ok()?;
    let mut archive = tar::Archive::new(std::io::Cursor::new(bytes));
    let mut parts = vec![];
    for entry in archive.entries().ok()? {
        let mut part = vec![];
        entry.ok()?.read_to_end(&mut part).ok()?;
        parts.push(part);
    }
    (!parts.is_empty()).then_some(parts)
}

/// Whether part `i` of `k` of a cached model was written by this tract and, as the first
/// part, reads an image of `size` pixels, or, as the last, gives the two outputs.
#[cfg(feature = "tract")]
fn fits(model: &TypedModel, i: usize, k: usize, size: usize) -> bool {
    let input_shape = || concrete_shape(model, *model.input_outlets().ok()?.first()?);
    nnef_written_by(model).as_deref() == Some(TRACT_VERSION)
        && (i > 0 || input_shape() == Some(vec![1, 3, size, size]))
        && (i + 1 < k || model.output_outlets().is_ok_and(|o| o.len() == 2))
}

/// Writes the model's parts to a cache file atomically (a unique temporary file in the same
/// directory, renamed into place). Beside a model, the files an earlier `model.onnx` left go.
#[cfg(feature = "tract")]
fn store_prepared(
    onnx: &Path,
    path: &Path,
    parts: &[TypedModel],
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
    {
        let mut archive = tar::Builder::new(std::io::BufWriter::new(tmp.as_file_mut()));
        let nnef = tract_nnef::nnef();
        for (i, part) in parts.iter().enumerate() {
            let nnef = nnef
                .write_to_tar(part, Vec::new())
                .map_err(std::io::Error::other)?;
            let mut header = tar::Header::new_gnu();
            header.set_size(nnef.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            archive.append_data(&mut header, format!("part{i}.nnef.tar"), &nnef[..])?;
        }
        archive
            .into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?;
    }
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

/// A part optimized and made runnable.
fn plan(onnx: &Path, part: TypedModel) -> Result<Arc<TypedRunnableModel>> {
    optimized(onnx, part)?
        .into_runnable()
        .map_err(|e| backend_err("tract", Some(&onnx.display().to_string()), e))
}

/// The model's runnable parts, each read and optimized on a thread of its own when
/// `parallel`.
fn plans(
    source: &Source,
    size: usize,
    cache: &TractCache,
    parallel: bool,
) -> Result<Vec<Arc<TypedRunnableModel>>> {
    let parts = match source {
        Source::Nnef { file, classes } => {
            let _ = cache; // the NNEF file is the prepared model
            nnef_parts(file, size, *classes)?
        }
        #[cfg(feature = "tract")]
        Source::Onnx(onnx) => match onnx_parts(onnx, size, cache, parallel)? {
            Prepared::Plans(plans) => return Ok(plans),
            Prepared::Parts(parts) => parts,
        },
    };
    each(parts, parallel, |part| plan(source.path(), part))
        .into_iter()
        .collect()
}

/// Reads an NNEF model (a tar archive, as [`write_nnef`] writes it) and checks that it is a
/// model of this project for one image of `size` pixels: one input `1 x 3 x size x size`, two
/// outputs (logits and features), `classes` logits.
fn read_nnef(nnef: &Path, size: usize, classes: usize) -> Result<TypedModel> {
    let bytes = std::fs::read(nnef).map_err(|e| Error::Model {
        message: format!("{}: {e}", nnef.display()),
        source: Some(e.into()),
    })?;
    let model = guarded(nnef, || {
        nnef_model(bytes).map_err(|e| {
            backend_err(
                "tract",
                Some(&format!("{}: not a readable NNEF model", nnef.display())),
                e,
            )
        })
    })?;
    let inputs = model
        .input_outlets()
        .map(|o| o.to_vec())
        .unwrap_or_default();
    let input = (inputs.len() == 1)
        .then(|| concrete_shape(&model, inputs[0]))
        .flatten();
    expect_shape(nnef, "input", input, &[1, 3, size, size])?;
    let outputs = model
        .output_outlets()
        .map(|o| o.to_vec())
        .unwrap_or_default();
    if outputs.len() != 2 {
        return Err(Error::Model {
            message: format!(
                "{}: the NNEF model has {} outputs, expected 2 (logits and features)",
                nnef.display(),
                outputs.len()
            ),
            source: None,
        });
    }
    expect_shape(
        nnef,
        "logits",
        concrete_shape(&model, outputs[0]),
        &[1, classes],
    )?;
    Ok(model)
}

/// The shape of `outlet` when it is known.
fn concrete_shape(model: &TypedModel, outlet: OutletId) -> Option<Vec<usize>> {
    Some(
        model
            .outlet_fact(outlet)
            .ok()?
            .shape
            .as_concrete()?
            .to_vec(),
    )
}

/// An error naming `nnef` unless its `what` has the shape `model.json` implies.
fn expect_shape(nnef: &Path, what: &str, got: Option<Vec<usize>>, want: &[usize]) -> Result<()> {
    if got.as_deref() == Some(want) {
        return Ok(());
    }
    Err(Error::Model {
        message: format!(
            "{}: the NNEF model's {what} is {}, but model.json implies {want:?}",
            nnef.display(),
            got.map_or("not one tensor of known shape".into(), |s| format!("{s:?}"))
        ),
        source: None,
    })
}

/// An NNEF model's parts (see [`split`]).
fn nnef_parts(nnef: &Path, size: usize, classes: usize) -> Result<Vec<TypedModel>> {
    split_file(nnef, read_nnef(nnef, size, classes)?)
}

/// The parts of `file`'s decluttered model (see [`split`]).
fn split_file(file: &Path, model: TypedModel) -> Result<Vec<TypedModel>> {
    guarded(file, || {
        split::split(model).map_err(|e| backend_err("tract", Some(&file.display().to_string()), e))
    })
}

/// The decluttered graph of `onnx` for one image of `size` pixels written as an NNEF archive
/// to `out`, atomically (a temporary file beside it, renamed into place): a model file that
/// tract reads without its ONNX front end (`model.nnef.tar` in a model directory).
#[cfg(feature = "tract")]
pub fn write_nnef(onnx: &Path, size: usize, out: &Path) -> Result<()> {
    use nasnet_core::fsutil::{FsError, io, write_file_atomically};
    let model = decluttered(onnx, size, true)?;
    let bytes = guarded(onnx, || {
        tract_nnef::nnef()
            .write_to_tar(&model, Vec::new())
            .map_err(|e| backend_err("tract", Some(&onnx.display().to_string()), e))
    })?;
    write_file_atomically(out, |tmp| std::fs::write(tmp, &bytes).map_err(io(tmp))).map_err(
        |e: FsError| Error::Model {
            message: e.to_string(),
            source: Some(e.into()),
        },
    )
}

/// What the prepared-model cache gives: whole plans, or parts still to optimize.
#[cfg(feature = "tract")]
enum Prepared {
    Plans(Vec<Arc<TypedRunnableModel>>),
    Parts(Vec<TypedModel>),
}

/// An ONNX model's runnable parts read from the cache when it holds this model's, else its
/// parts made from the ONNX file (decluttered, split) and, best effort, stored there.
#[cfg(feature = "tract")]
fn onnx_parts(onnx: &Path, size: usize, cache: &TractCache, parallel: bool) -> Result<Prepared> {
    let path = tract_cache_file(onnx, size, cache)?;
    if let Some(parts) = path.as_deref().and_then(read_parts) {
        let k = parts.len();
        let read = each(
            parts.into_iter().enumerate().collect(),
            parallel,
            |(i, bytes)| {
                let model = guarded(onnx, || {
                    nnef_model(bytes).map_err(|e| backend_err("tract", None, e))
                })
                .ok()?;
                if !fits(&model, i, k, size) {
                    return None;
                }
                plan(onnx, model).ok()
            },
        );
        if let Some(plans) = read.into_iter().collect::<Option<Vec<_>>>() {
            log::info!(
                "read the prepared model {}",
                path.unwrap_or_default().display()
            );
            return Ok(Prepared::Plans(plans));
        }
    }
    let parts = split_file(onnx, decluttered(onnx, size, parallel)?)?;
    if let Some(path) = &path {
        // A cache that cannot be written (a read-only model directory) only costs time.
        match store_prepared(onnx, path, &parts, cache) {
            Ok(()) => log::info!("prepared {}", path.display()),
            Err(e) => log::info!("cannot keep the prepared model {}: {e}", path.display()),
        }
    }
    Ok(Prepared::Parts(parts))
}

/// What tract makes of an ONNX file for one image: operator names and counts of the
/// optimized model (a diagnostic: e.g. no batch norm should survive next to a convolution).
#[cfg(feature = "tract")]
pub fn optimized_ops(
    onnx: &Path,
    size: usize,
) -> Result<std::collections::BTreeMap<String, usize>> {
    let mut h = std::collections::BTreeMap::new();
    let source = Source::Onnx(onnx.to_owned());
    for plan in plans(&source, size, &TractCache::Off, true)? {
        for n in plan.model().nodes() {
            *h.entry(n.op().name().to_string()).or_default() += 1;
        }
    }
    Ok(h)
}

impl TractEngine {
    pub(crate) fn open(
        source: &Source,
        size: usize,
        threads: Option<usize>,
        cache: &TractCache,
    ) -> Result<Self> {
        let start = std::time::Instant::now();
        let plans = plans(source, size, cache, threads != Some(1))?;
        log::info!(
            "{} ready in {:.0} ms ({} parts)",
            source.path().display(),
            start.elapsed().as_secs_f64() * 1e3,
            plans.len()
        );
        Ok(Self {
            plans,
            idle: Mutex::default(),
            size,
            pool: Pool::new(threads),
        })
    }

    /// Runs the parts on one image, with kept states if a set is free.
    fn run_one(&self, x: Tensor) -> Result<TVec<TValue>> {
        let kept = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut states = match kept {
            Some(states) => states,
            None => self
                .plans
                .iter()
                .map(|p| p.spawn())
                .collect::<TractResult<Vec<_>>>()
                .map_err(|e| backend_err("tract", None, e))?,
        };
        let out = self
            .pool
            .run(|| {
                let mut values = tvec!(x.into());
                for state in &mut states {
                    values = state.run(values)?;
                }
                TractResult::Ok(values)
            })
            .map_err(|e| backend_err("tract", None, e))?;
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(states);
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
#[cfg(feature = "tract")]
pub fn profile_ops(
    onnx: &Path,
    size: usize,
    threads: Option<usize>,
    runs: usize,
) -> Result<Vec<(String, usize, f64)>> {
    let source = Source::Onnx(onnx.to_owned());
    let engine = TractEngine::open(&source, size, threads, &TractCache::Off)?;
    let input: Tensor =
        Tensor::zero::<f32>(&[1, 3, size, size]).map_err(|e| backend_err("tract", None, e))?;
    // Per operator: the (part, node) pairs it runs as, and its milliseconds.
    type Nodes = std::collections::HashSet<(usize, usize)>;
    let mut totals: std::collections::HashMap<String, (Nodes, f64)> = Default::default();
    let mut states = engine
        .plans
        .iter()
        .map(tract_nnef::tract_core::plan::SimpleState::new)
        .collect::<TractResult<Vec<_>>>()
        .map_err(|e| backend_err("tract", None, e))?;
    for run in 0..=runs {
        engine
            .pool
            .run(|| {
                let mut values = tvec!(input.clone().into());
                for (part, state) in states.iter_mut().enumerate() {
                    values = state.run_plan_with_eval(values, |ctx, st, node, inputs| {
                        let t = std::time::Instant::now();
                        let out = tract_nnef::tract_core::plan::eval(ctx, st, node, inputs);
                        if run > 0 {
                            let e = totals.entry(node.op().name().to_string()).or_default();
                            e.0.insert((part, node.id));
                            e.1 += t.elapsed().as_secs_f64() * 1e3;
                        }
                        out
                    })?;
                }
                TractResult::Ok(())
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

#[cfg(all(test, feature = "tract"))]
mod tests {
    use super::*;

    #[test]
    fn an_nnef_model_of_another_shape_is_refused_by_name() -> TractResult<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("model.nnef.tar");
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 3, 4, 4]))?;
        model.select_output_outlets(&[x])?;
        std::fs::write(&file, tract_nnef::nnef().write_to_tar(&model, Vec::new())?)?;
        let e = read_nnef(&file, 4, 10).err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(
            e.contains(&file.display().to_string()) && e.contains("1 outputs"),
            "{e}"
        );
        let e = read_nnef(&file, 8, 10).err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(e.contains("input is [1, 3, 4, 4]"), "{e}");
        Ok(())
    }

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
