//! Opening a model (a directory, or a zoo id already in the cache), closing it, and what it
//! says about itself: input size, classes, features, name, labels, backend.

use std::ffi::{CString, c_char};
use std::path::{Path, PathBuf};

use nasnet_runtime::{Model, Options};

use crate::edge::*;
use crate::options::{NasnetOptions, check_abi};

/// What a model expects and returns.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NasnetModelInfo {
    /// Square input resolution (pixels) after preprocessing.
    pub input_size: u32,
    pub num_classes: u32,
    /// Length of the feature (embedding) vector.
    pub num_features: u32,
}

/// An open model (opaque).
pub struct NasnetModel {
    pub(crate) model: Model,
    pub(crate) labels: Vec<CString>,
    pub(crate) name: CString,
    pub(crate) backend: CString,
}

/// A model handle argument.
///
/// # Safety
/// `m` is null or a handle from `nasnet_model_open*` not yet closed.
pub(crate) unsafe fn model_arg<'a>(m: *const NasnetModel) -> Res<&'a NasnetModel> {
    // SAFETY: null or a live handle, by the caller's contract.
    unsafe { m.as_ref() }.map_or_else(|| null("model"), Ok)
}

fn open_dir(dir: &Path, opts: Option<&NasnetOptions>) -> Res<NasnetModel> {
    let options = match opts {
        Some(o) => {
            check_abi(o.abi_version)?;
            o.options.clone()
        }
        None => Options::default(),
    };
    let model = Model::open(dir, options).map_err(runtime_err)?;
    let cstr = |s: &str| CString::new(s.replace('\0', " ")).unwrap_or_default();
    let labels = model.meta().labels.iter().map(|l| cstr(l)).collect();
    let name = cstr(&model.meta().name);
    let backend = cstr(model.backend().name());
    Ok(NasnetModel {
        model,
        labels,
        name,
        backend,
    })
}

/// Opens the directory `find` names and stores the handle in `*out`.
///
/// # Safety
/// `opts` is null or a live options handle; `out` is null or writable.
unsafe fn open_into(
    opts: *const NasnetOptions,
    out: *mut *mut NasnetModel,
    find: impl FnOnce() -> Res<PathBuf>,
) -> Res<()> {
    if out.is_null() {
        return null("out");
    }
    // SAFETY: null or a live options handle, by the caller's contract.
    let m = open_dir(&find()?, unsafe { opts.as_ref() })?;
    // SAFETY: checked not null above; writable by the contract.
    unsafe { put(out, Box::into_raw(Box::new(m)), "out") }
}

/// Opens a model directory (`model.json` + `model.nnef.tar` or `model.onnx`; tract reads the
/// NNEF file where there is one, and a library built with the `nnef` feature alone reads
/// nothing else) with `options` (null: the defaults; options made for another ABI version fail
/// with `NASNET_STATUS_ABI_MISMATCH`). On success `*out` holds a handle to close with
/// [`nasnet_model_close`].
///
/// # Safety
/// `dir` is null or a NUL-terminated string; `options` is null or a live handle from
/// [`nasnet_options_new`]; `out` is null or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_model_open(
    dir: *const c_char,
    options: *const NasnetOptions,
    out: *mut *mut NasnetModel,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract (dir is a C string or null).
        unsafe { open_into(options, out, || Ok(PathBuf::from(str_arg(dir, "dir")?))) }
    })
}

/// Opens a zoo model already in the cache (`$NASNET_HOME/models/ID/VERSION`, as `nasnet
/// pull` leaves it): `id` is `ID` (the newest cached version) or `ID@VERSION`. The library
/// never downloads.
///
/// # Safety
/// As [`nasnet_model_open`], with `id` for `dir`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_model_open_zoo(
    id: *const c_char,
    options: *const NasnetOptions,
    out: *mut *mut NasnetModel,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract (id is a C string or null).
        unsafe { open_into(options, out, || zoo_dir(str_arg(id, "id")?)) }
    })
}

/// The cached model directory of `ID` (newest version) or `ID@VERSION`.
fn zoo_dir(spec: &str) -> Res<PathBuf> {
    use nasnet_core::cache;
    let Some(r) = cache::ModelRef::parse(spec) else {
        return fail(
            NasnetStatus::InvalidArgument,
            format!("{spec}: not a model id"),
        );
    };
    let home = cache::nasnet_home();
    cache::resolve(&home, &r).map_or_else(
        || {
            fail(
                NasnetStatus::Model,
                format!(
                    "{spec} is not in the cache under {} (fetch it with `nasnet pull {spec}`)",
                    cache::model_root(&home, &r.id).display()
                ),
            )
        },
        Ok,
    )
}

/// Closes a model and sets `*model` to null. Closing a null handle (e.g. twice) returns
/// `NASNET_STATUS_NULL_ARGUMENT` and does nothing else.
///
/// # Safety
/// `model` is null or points to null or to a live handle that no other thread is using;
/// the handle is not used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_model_close(model: *mut *mut NasnetModel) -> NasnetStatus {
    boundary(|| {
        if model.is_null() {
            return null("model");
        }
        // SAFETY: not null, and readable and writable by the contract.
        let m = unsafe { model.replace(std::ptr::null_mut()) };
        if m.is_null() {
            return fail(NasnetStatus::NullArgument, "model is already closed");
        }
        // SAFETY: a live handle made by Box::into_raw in open_into, released once (the
        // caller's pointer is already null).
        drop(unsafe { Box::from_raw(m) });
        Ok(())
    })
}

/// Input size, class and feature counts.
///
/// # Safety
/// `model` is null or a live handle; `out` is null or valid for writing a
/// [`NasnetModelInfo`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_model_info(
    model: *const NasnetModel,
    out: *mut NasnetModelInfo,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_arg(model) }?;
        let c = &m.model.meta().architecture;
        let info = NasnetModelInfo {
            input_size: m.model.input_size() as u32,
            num_classes: c.num_classes as u32,
            num_features: c.num_features() as u32,
        };
        // SAFETY: forwarded contract.
        unsafe { put(out, info, "out") }
    })
}

/// The model's name (valid while the model is open), or null with an error.
///
/// # Safety
/// `model` is null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_model_name(model: *const NasnetModel) -> *const c_char {
    // SAFETY: forwarded contract.
    boundary(|| Ok(unsafe { model_arg(model) }?.name.as_ptr()))
}

/// The label of class `index` (valid while the model is open), or null with an error when out
/// of range.
///
/// # Safety
/// `model` is null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_model_label(
    model: *const NasnetModel,
    index: usize,
) -> *const c_char {
    boundary(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_arg(model) }?;
        match m.labels.get(index) {
            Some(l) => Ok(l.as_ptr()),
            None => fail(
                NasnetStatus::InvalidArgument,
                format!(
                    "class {index} is out of range (the model has {})",
                    m.labels.len()
                ),
            ),
        }
    })
}

/// The backend name, "tract" or "ort" (valid while the model is open), or null with an error.
///
/// # Safety
/// `model` is null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_model_backend(model: *const NasnetModel) -> *const c_char {
    // SAFETY: forwarded contract.
    boundary(|| Ok(unsafe { model_arg(model) }?.backend.as_ptr()))
}
