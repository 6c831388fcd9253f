//! Running a model: top-k classes and features, from pixels in memory, image files or
//! preprocessed tensors, into the caller's buffers or memory the library allocates.

use std::ffi::c_char;
use std::path::Path;

use crate::edge::*;
use crate::model::{NasnetModel, model_arg};

/// Pixel layout of an image buffer: one of the `NASNET_PIXEL_FORMAT_*` values (others get
/// `NASNET_STATUS_INVALID_ARGUMENT`).
pub type NasnetPixelFormat = u32;
/// 8-bit red, green, blue.
pub const NASNET_PIXEL_FORMAT_RGB8: NasnetPixelFormat = 0;
/// 8-bit red, green, blue, alpha (alpha ignored).
pub const NASNET_PIXEL_FORMAT_RGBA8: NasnetPixelFormat = 1;

fn channels_arg(f: NasnetPixelFormat) -> Res<usize> {
    match f {
        NASNET_PIXEL_FORMAT_RGB8 => Ok(3),
        NASNET_PIXEL_FORMAT_RGBA8 => Ok(4),
        other => fail(
            NasnetStatus::InvalidArgument,
            format!(
                "pixel format {other} is not NASNET_PIXEL_FORMAT_RGB8 (0) or NASNET_PIXEL_FORMAT_RGBA8 (1)"
            ),
        ),
    }
}

/// One class of a top-k answer. `label` belongs to the model and stays valid until it is
/// closed.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NasnetPrediction {
    pub index: usize,
    pub probability: f32,
    pub logit: f32,
    pub label: *const c_char,
}

const NO_PREDICTION: NasnetPrediction = NasnetPrediction {
    index: 0,
    probability: 0.0,
    logit: 0.0,
    label: std::ptr::null(),
};

/// One image of a batch: `height` rows of `width` pixels in `format`, `stride` bytes apart
/// (at least `width * 3` or `width * 4`); `pixels` holds `stride * (height - 1) + width *
/// channels` bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NasnetImage {
    pub pixels: *const u8,
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub format: NasnetPixelFormat,
}

// ---- Inputs ----

/// One image's pixels, preprocessed as the model says.
///
/// # Safety
/// `img.pixels` is null or valid for `stride * (height - 1) + width * channels` bytes.
unsafe fn image_input(m: &NasnetModel, img: &NasnetImage) -> Res<Vec<f32>> {
    let NasnetImage {
        pixels,
        width,
        height,
        stride,
        format,
    } = *img;
    if pixels.is_null() {
        return null("pixels");
    }
    let channels = channels_arg(format)?;
    let len = match nasnet_core::preprocess::pixel_buffer_len(width, height, stride, channels) {
        Ok(len) => len,
        Err(problem) => return fail(NasnetStatus::InvalidArgument, problem),
    };
    // SAFETY: not null, and valid for `len` bytes by the caller's contract.
    let buf = unsafe { std::slice::from_raw_parts(pixels, len) };
    m.model
        .load_pixels(buf, width, height, stride, channels)
        .map_err(runtime_err)
}

/// `n` preprocessed images of `3 x S x S` floats each, from `len` floats.
///
/// # Safety
/// `data` is null or valid for reading `len` floats.
unsafe fn tensor_input<'a>(
    m: &NasnetModel,
    data: *const f32,
    len: usize,
    n: usize,
) -> Res<&'a [f32]> {
    let s = m.model.input_size();
    let per = 3 * s * s;
    if n == 0 || n.checked_mul(per) != Some(len) {
        return fail(
            NasnetStatus::InvalidArgument,
            format!(
                "expected {n} x 3 x {s} x {s} = {} floats (n >= 1), got {len}",
                n.saturating_mul(per)
            ),
        );
    }
    // SAFETY: forwarded contract.
    unsafe { slice_arg(data, len, "data") }
}

// ---- Outputs ----

/// Runs `n` preprocessed images and writes each one's top `k` classes, image after image, into
/// `out[0..out_len]`; `*written` gets the count (or the count needed, with
/// `NASNET_STATUS_BUFFER_TOO_SMALL`).
///
/// # Safety
/// `out` is null or valid for writing `out_len` predictions; `written` is null or writable.
unsafe fn top_k_into(
    m: &NasnetModel,
    input: &[f32],
    n: usize,
    k: usize,
    out: *mut NasnetPrediction,
    out_len: usize,
    written: *mut usize,
) -> Res<()> {
    if written.is_null() {
        return null("written");
    }
    let k = k.min(m.labels.len());
    let needed = n * k;
    if out_len < needed {
        // SAFETY: checked not null; writable by the contract.
        unsafe { written.write(needed) };
        return fail(
            NasnetStatus::BufferTooSmall,
            format!("out holds {out_len} predictions, {needed} needed"),
        );
    }
    // SAFETY: forwarded contract; `needed <= out_len`.
    let out = unsafe { slice_mut_arg(out, needed, "out") }?;
    let outputs = m.model.run(input, n).map_err(runtime_err)?;
    for (row, chunk) in out.chunks_mut(k.max(1)).take(n).enumerate() {
        for (slot, p) in chunk.iter_mut().zip(outputs.top_k(row, k)) {
            *slot = NasnetPrediction {
                index: p.index,
                probability: p.probability,
                logit: p.logit,
                label: m.labels[p.index].as_ptr(),
            };
        }
    }
    // SAFETY: checked not null; writable by the contract.
    unsafe { written.write(needed) };
    Ok(())
}

/// Runs one preprocessed image and writes its features into `out[0..len]`; `*written` gets
/// the count, or the count needed with `NASNET_STATUS_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `out` is null or valid for writing `len` floats; `written` is null or writable.
unsafe fn features_into(
    m: &NasnetModel,
    input: &[f32],
    out: *mut f32,
    len: usize,
    written: *mut usize,
) -> Res<()> {
    if written.is_null() {
        return null("written");
    }
    let needed = m.model.meta().architecture.num_features();
    // SAFETY: checked not null; writable by the contract.
    unsafe { written.write(needed) };
    if len < needed {
        return fail(
            NasnetStatus::BufferTooSmall,
            format!("out holds {len} floats, {needed} needed"),
        );
    }
    // SAFETY: forwarded contract; `needed <= len`.
    let out = unsafe { slice_mut_arg(out, needed, "out") }?;
    let outputs = m.model.run(input, 1).map_err(runtime_err)?;
    out.copy_from_slice(outputs.features(0));
    Ok(())
}

fn load_file(m: &NasnetModel, path: &str) -> Res<Vec<f32>> {
    m.model.load_image(Path::new(path)).map_err(runtime_err)
}

// ---- Classification ----

/// Classifies an 8-bit RGB or RGBA image of `width x height` pixels, `stride` bytes per row
/// (at least `width * 3` or `width * 4`), preprocessed as the model says. Top `k` into `out`
/// (`out_len` entries); `*written` gets the count (or the count needed, with
/// `NASNET_STATUS_BUFFER_TOO_SMALL`).
///
/// # Safety
/// `model` is null or a live handle; `pixels` is null or valid for `stride * (height - 1) +
/// width * channels` bytes; `out` is null or valid for writing `out_len` predictions;
/// `written` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_classify_image(
    model: *const NasnetModel,
    pixels: *const u8,
    width: u32,
    height: u32,
    stride: usize,
    format: NasnetPixelFormat,
    k: usize,
    out: *mut NasnetPrediction,
    out_len: usize,
    written: *mut usize,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_arg(model) }?;
        let img = NasnetImage {
            pixels,
            width,
            height,
            stride,
            format,
        };
        // SAFETY: forwarded contract.
        let x = unsafe { image_input(m, &img) }?;
        // SAFETY: forwarded contract.
        unsafe { top_k_into(m, &x, 1, k, out, out_len, written) }
    })
}

/// Classifies `n` images in one run: image `i`'s top `min(k, classes)` go to `out[i * kk ..]`
/// (`kk` = that count), `n * kk` in all; `*written` gets `n * kk` (or that count needed, with
/// `NASNET_STATUS_BUFFER_TOO_SMALL`). An invalid image fails the whole call.
///
/// # Safety
/// `model` is null or a live handle; `images` is null or valid for reading `n` images, each
/// as [`nasnet_classify_image`] requires; `out` is null or valid for writing `out_len`
/// predictions; `written` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_classify_images(
    model: *const NasnetModel,
    images: *const NasnetImage,
    n: usize,
    k: usize,
    out: *mut NasnetPrediction,
    out_len: usize,
    written: *mut usize,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_arg(model) }?;
        // SAFETY: forwarded contract.
        let images = unsafe { slice_arg(images, n, "images") }?;
        if images.is_empty() {
            return fail(NasnetStatus::InvalidArgument, "n is 0");
        }
        let mut x = vec![];
        for (i, img) in images.iter().enumerate() {
            // SAFETY: forwarded contract.
            let v = unsafe { image_input(m, img) }
                .map_err(|Failure(s, msg)| Failure(s, format!("image {i}: {msg}")))?;
            x.extend(v);
        }
        // SAFETY: forwarded contract.
        unsafe { top_k_into(m, &x, images.len(), k, out, out_len, written) }
    })
}

/// Classifies an image file (JPEG, PNG, WebP, BMP, GIF). A library built without the `decode`
/// feature (the pixels-only app build) answers `NASNET_STATUS_UNAVAILABLE`.
///
/// # Safety
/// `model` is null or a live handle; `path` is null or a NUL-terminated string; `out` is null
/// or valid for writing `out_len` predictions; `written` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_classify_file(
    model: *const NasnetModel,
    path: *const c_char,
    k: usize,
    out: *mut NasnetPrediction,
    out_len: usize,
    written: *mut usize,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_arg(model) }?;
        // SAFETY: forwarded contract.
        let x = load_file(m, unsafe { str_arg(path, "path") }?)?;
        // SAFETY: forwarded contract.
        unsafe { top_k_into(m, &x, 1, k, out, out_len, written) }
    })
}

/// Classifies preprocessed images: `n` of them, `len` = n x 3 x S x S floats, CHW (S = input
/// size). Image `i`'s top `min(k, classes)` go to `out[i * kk ..]`, as
/// [`nasnet_classify_images`].
///
/// # Safety
/// `model` is null or a live handle; `data` is null or valid for reading `len` floats; `out`
/// is null or valid for writing `out_len` predictions; `written` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_classify_tensor(
    model: *const NasnetModel,
    data: *const f32,
    n: usize,
    len: usize,
    k: usize,
    out: *mut NasnetPrediction,
    out_len: usize,
    written: *mut usize,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_arg(model) }?;
        // SAFETY: forwarded contract.
        let x = unsafe { tensor_input(m, data, len, n) }?;
        // SAFETY: forwarded contract.
        unsafe { top_k_into(m, x, n, k, out, out_len, written) }
    })
}

/// Like [`nasnet_classify_file`], into memory the library allocates: `*out` gets `*count`
/// predictions, to release with [`nasnet_predictions_free`].
///
/// # Safety
/// `model` is null or a live handle; `path` is null or a NUL-terminated string; `out` and
/// `count` are null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_classify_file_alloc(
    model: *const NasnetModel,
    path: *const c_char,
    k: usize,
    out: *mut *mut NasnetPrediction,
    count: *mut usize,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_arg(model) }?;
        if out.is_null() || count.is_null() {
            return null("out or count");
        }
        // SAFETY: forwarded contract.
        let x = load_file(m, unsafe { str_arg(path, "path") }?)?;
        let k = k.min(m.labels.len());
        let mut buf = vec![NO_PREDICTION; k];
        let mut n = 0usize;
        // SAFETY: `buf` holds `k` predictions and `n` is a local.
        unsafe { top_k_into(m, &x, 1, k, buf.as_mut_ptr(), k, &mut n) }?;
        buf.truncate(n);
        let boxed = buf.into_boxed_slice();
        // SAFETY: both checked not null; writable by the contract.
        unsafe {
            count.write(boxed.len());
            out.write(Box::into_raw(boxed).cast());
        }
        Ok(())
    })
}

/// Releases predictions from [`nasnet_classify_file_alloc`] (`count` as returned). Null is a
/// no-op.
///
/// # Safety
/// `predictions` is null or exactly what [`nasnet_classify_file_alloc`] returned with this
/// `count`, released once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_predictions_free(predictions: *mut NasnetPrediction, count: usize) {
    boundary(|| {
        if !predictions.is_null() {
            // SAFETY: a boxed slice of `count` predictions from nasnet_classify_file_alloc
            // (Box::into_raw), released once, by the contract.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(predictions, count)) });
        }
        Ok(())
    })
}

// ---- Features ----

/// The features (embedding) of an image file into `out[0..len]`; `*written` gets the count,
/// or the count needed with `NASNET_STATUS_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `model` is null or a live handle; `path` is null or a NUL-terminated string; `out` is null
/// or valid for writing `len` floats; `written` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_features_file(
    model: *const NasnetModel,
    path: *const c_char,
    out: *mut f32,
    len: usize,
    written: *mut usize,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_arg(model) }?;
        // SAFETY: forwarded contract.
        let x = load_file(m, unsafe { str_arg(path, "path") }?)?;
        // SAFETY: forwarded contract.
        unsafe { features_into(m, &x, out, len, written) }
    })
}

/// The features of an image in memory (as [`nasnet_classify_image`] takes it) into
/// `out[0..len]`; `*written` gets the count, or the count needed with
/// `NASNET_STATUS_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `model` is null or a live handle; `pixels` as [`nasnet_classify_image`]; `out` is null or
/// valid for writing `len` floats; `written` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_features_image(
    model: *const NasnetModel,
    pixels: *const u8,
    width: u32,
    height: u32,
    stride: usize,
    format: NasnetPixelFormat,
    out: *mut f32,
    len: usize,
    written: *mut usize,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_arg(model) }?;
        let img = NasnetImage {
            pixels,
            width,
            height,
            stride,
            format,
        };
        // SAFETY: forwarded contract.
        let x = unsafe { image_input(m, &img) }?;
        // SAFETY: forwarded contract.
        unsafe { features_into(m, &x, out, len, written) }
    })
}

/// The features of one preprocessed image (`data_len` = 3 x S x S floats, CHW) into
/// `out[0..len]`; `*written` gets the count, or the count needed with
/// `NASNET_STATUS_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `model` is null or a live handle; `data` is null or valid for reading `data_len` floats;
/// `out` is null or valid for writing `len` floats; `written` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nasnet_features_tensor(
    model: *const NasnetModel,
    data: *const f32,
    data_len: usize,
    out: *mut f32,
    len: usize,
    written: *mut usize,
) -> NasnetStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let m = unsafe { model_arg(model) }?;
        // SAFETY: forwarded contract.
        let x = unsafe { tensor_input(m, data, data_len, 1) }?;
        // SAFETY: forwarded contract.
        unsafe { features_into(m, x, out, len, written) }
    })
}
