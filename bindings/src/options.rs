//! How a model is opened: the backend, device, threads, ONNX Runtime's library and tract's
//! cache, set on an opaque builder made for the caller's ABI version.

use std::ffi::c_char;
use std::path::PathBuf;

use nasnet_runtime::{Backend, Device, Options, TractCache};

use crate::edge::*;

/// Inference engine: one of the `NASNET_BACKEND_*` values. A plain integer, so that any value
/// a caller passes is defined behaviour; others get `NASNET_STATUS_INVALID_ARGUMENT`.
pub type NasnetBackend = u32;
/// tract: pure Rust, CPU.
pub const NASNET_BACKEND_TRACT: NasnetBackend = 0;
/// ONNX Runtime, loaded at run time.
pub const NASNET_BACKEND_ORT: NasnetBackend = 1;

fn backend_arg(b: NasnetBackend) -> Res<Backend> {
    match b {
        NASNET_BACKEND_TRACT => Ok(Backend::Tract),
        NASNET_BACKEND_ORT => Ok(Backend::Ort),
        other => fail(
            NasnetStatus::InvalidArgument,
            format!("backend {other} is not NASNET_BACKEND_TRACT (0) or NASNET_BACKEND_ORT (1)"),
        ),
    }
}

/// How to open a model (opaque): made by [`nasnet_options_new`], changed by the
/// `nasnet_options_set_*` calls, released by [`nasnet_options_free`]. New options are new
/// setters, so callers built against an older header keep working.
#[derive(Debug, Clone)]
pub struct NasnetOptions {
    /// The ABI version the caller was compiled against, checked at open.
    pub(crate) abi_version: u32,
    pub(crate) options: Options,
}

/// An options handle argument, for a setter.
///
/// # Safety
/// `o` is null or a handle from [`nasnet_options_new`] not yet freed, used by no other thread.
unsafe fn options_arg<'a>(o: *mut NasnetOptions) -> Res<&'a mut NasnetOptions> {
    // SAFETY: null or a live handle this thread owns, by the caller's contract.
    unsafe { o.as_mut() }.map_or_else(|| null("options"), Ok)
}

/// New options for a caller compiled against `abi_version` (pass `NASNET_ABI_VERSION`):
/// tract, the CPU, every core, ONNX Runtime from its default location. Null (with an error)
/// if the library does not speak that ABI. Release with [`nasnet_options_free`].
#[unsafe(no_mangle)]
pub extern "C" fn nasnet_options_new(abi_version: u32) -> *mut NasnetOptions {
    boundary(|| {
        check_abi(abi_version)?;
        Ok(Box::into_raw(Box::new(NasnetOptions {
            abi_version,
            options: Options::default(),
        })))
    })
}

pub(crate) fn check_abi(abi_version: u32) -> Res<()> {
    if abi_version != NASNET_ABI_VERSION {
        return fail(
            NasnetStatus::AbiMismatch,
            format!(
                "the caller was compiled against ABI version {abi_version}, this library has \
                 version {NASNET_ABI_VERSION}: rebuild it with this library's nasnet.h"
            ),
        );
    }
    Ok(())
}

/// Releases options. Null is a no-op.
///
/// # Safety
/// `options` is null or a handle from [`nasnet_options_new`], not used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_options_free(options: *mut NasnetOptions) {
    boundary(|| {
        if !options.is_null() {
            // SAFETY: a live handle from nasnet_options_new (Box::into_raw), freed once.
            drop(unsafe { Box::from_raw(options) });
        }
        Ok(())
    })
}

/// Sets the backend: `NASNET_BACKEND_TRACT` (the default) or `NASNET_BACKEND_ORT`.
///
/// # Safety
/// `options` is null or a live handle from [`nasnet_options_new`] no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_options_set_backend(
    options: *mut NasnetOptions,
    backend: NasnetBackend,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let o = unsafe { options_arg(options) }?;
        o.options.backend = backend_arg(backend)?;
        Ok(())
    })
}

/// Sets the device: -1 for the CPU (the default), N >= 0 for CUDA device N (ONNX Runtime).
///
/// # Safety
/// `options` is null or a live handle from [`nasnet_options_new`] no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_options_set_device(
    options: *mut NasnetOptions,
    device: i32,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let o = unsafe { options_arg(options) }?;
        o.options.device = match device {
            -1 => Device::Cpu,
            d if d >= 0 => Device::Cuda(d as usize),
            d => {
                return fail(
                    NasnetStatus::InvalidArgument,
                    format!("device {d}: expected -1 (CPU) or a CUDA device number"),
                );
            }
        };
        Ok(())
    })
}

/// Sets the threads one run may use: tract's pool, ONNX Runtime's intra-op threads; 0 (the
/// default) means every core for tract and ONNX Runtime's own choice.
///
/// # Safety
/// `options` is null or a live handle from [`nasnet_options_new`] no other thread uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_options_set_threads(
    options: *mut NasnetOptions,
    threads: u32,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let o = unsafe { options_arg(options) }?;
        o.options.threads = (threads > 0).then_some(threads as usize);
        Ok(())
    })
}

/// Sets the ONNX Runtime shared library to load (null: `ORT_DYLIB_PATH`, else the default
/// location). A process loads one ONNX Runtime: the first model opened on it chooses.
///
/// # Safety
/// `options` is null or a live handle from [`nasnet_options_new`] no other thread uses;
/// `path` is null or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_options_set_ort_library(
    options: *mut NasnetOptions,
    path: *const c_char,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let o = unsafe { options_arg(options) }?;
        o.options.ort_library = if path.is_null() {
            None
        } else {
            // SAFETY: not null, NUL-terminated by the contract.
            Some(PathBuf::from(unsafe { str_arg(path, "path") }?))
        };
        Ok(())
    })
}

/// Where the tract backend keeps the models it has prepared, if anywhere
/// (see [`nasnet_options_set_tract_cache`]).
pub type NasnetTractCache = u32;
/// A hidden file beside `model.onnx`.
pub const NASNET_TRACT_CACHE_BESIDE_MODEL: NasnetTractCache = 0;
/// A directory of the caller's (for models in a read-only place, such as an app's assets).
pub const NASNET_TRACT_CACHE_DIR: NasnetTractCache = 1;
/// No cache: every open prepares the model (the default).
pub const NASNET_TRACT_CACHE_OFF: NasnetTractCache = 2;

/// Sets where the tract backend keeps prepared models of ONNX files:
/// `NASNET_TRACT_CACHE_BESIDE_MODEL` (`dir` null), `NASNET_TRACT_CACHE_DIR` (in `dir`, made if
/// missing) or `NASNET_TRACT_CACHE_OFF` (the default; `dir` null). Opening an ONNX model on
/// tract prepares it; with a cache, from the second open on, the prepared model is read, which
/// saves part of an open at the cost of the weights stored a second time. NNEF models are
/// prepared already. A place that cannot be written to leaves the model uncached, not
/// failing.
///
/// # Safety
/// `options` is null or a live handle from [`nasnet_options_new`] no other thread uses;
/// `dir` is null or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_options_set_tract_cache(
    options: *mut NasnetOptions,
    mode: NasnetTractCache,
    dir: *const c_char,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let o = unsafe { options_arg(options) }?;
        o.options.tract_cache = match (mode, dir.is_null()) {
            (NASNET_TRACT_CACHE_BESIDE_MODEL, true) => TractCache::BesideModel,
            (NASNET_TRACT_CACHE_OFF, true) => TractCache::Off,
            (NASNET_TRACT_CACHE_DIR, false) => {
                // SAFETY: not null, NUL-terminated by the contract.
                TractCache::In(PathBuf::from(unsafe { str_arg(dir, "dir") }?))
            }
            (NASNET_TRACT_CACHE_DIR, true) => {
                return fail(
                    NasnetStatus::NullArgument,
                    "NASNET_TRACT_CACHE_DIR needs a directory",
                );
            }
            (m @ (NASNET_TRACT_CACHE_BESIDE_MODEL | NASNET_TRACT_CACHE_OFF), false) => {
                return fail(
                    NasnetStatus::InvalidArgument,
                    format!("tract cache mode {m} takes no directory (pass null)"),
                );
            }
            (m, _) => {
                return fail(
                    NasnetStatus::InvalidArgument,
                    format!(
                        "tract cache mode {m}: expected 0 (beside the model), 1 (a directory) or 2 (off)"
                    ),
                );
            }
        };
        Ok(())
    })
}
