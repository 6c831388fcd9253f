//! The evaluation transform, exactly as `model.json` describes it: decode (EXIF orientation
//! applied), RGB, resize the shorter side (torchvision `Resize(int)` rule), center crop
//! (torchvision `CenterCrop` rounding), scale to [0, 1], normalize with mean/std, CHW layout.
//!
//! The transform of pixels in memory needs only the `pixels` feature (the resizer); decoding
//! files (JPEG, PNG, WebP, BMP, GIF) is the `image` feature's, which camera apps that hand
//! over pixels can leave out.

#[cfg(feature = "image")]
use std::path::Path;

use crate::meta::{Interpolation, Preprocessing};
#[cfg(feature = "image")]
use image::{DynamicImage, ImageDecoder, ImageReader};

/// File extensions (lowercase) of the image formats this build decodes.
#[cfg(feature = "image")]
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "bmp", "gif"];

/// Whether `path` names an image file by its extension (any case).
#[cfg(feature = "image")]
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// An image that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file cannot be opened or read.
    #[error("{path}: {error}")]
    Io {
        /// The image file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The format is unknown or the content is corrupt.
    #[cfg(feature = "image")]
    #[error("{path}: cannot decode image: {error}")]
    Decode {
        /// The image file.
        path: String,
        /// The decoder's error.
        error: image::ImageError,
    },
    /// The image is larger than the decoder's limits allow (a decompression bomb, or a
    /// picture far beyond any camera's).
    #[cfg(feature = "image")]
    #[error("{path}: image too large to decode: {error} (limits: {MAX_SIDE} pixels a side, {} MiB of pixels)", MAX_ALLOC >> 20)]
    TooLarge {
        /// The image file.
        path: String,
        /// The decoder's error.
        error: image::ImageError,
    },
    /// The file ends before the image does (a JPEG cut short).
    #[error("{path}: truncated image: {problem}")]
    Truncated {
        /// The image file.
        path: String,
        /// Where the data stops.
        problem: String,
    },
    /// The image decodes to zero pixels.
    #[error("{path}: image is empty ({width}x{height})")]
    Empty {
        /// The image file.
        path: String,
        /// Decoded width, in pixels.
        width: u32,
        /// Decoded height, in pixels.
        height: u32,
    },
}

/// The largest width or height [`decode`] accepts, in pixels.
pub const MAX_SIDE: u32 = 32_768;
/// The most memory [`decode`] lets a decoder allocate, in bytes.
pub const MAX_ALLOC: u64 = 1 << 30;

/// Where the entropy-coded data of a JPEG stops short of its end-of-image marker, if it does.
/// Walks the marker segments (skipping each by its length) and the scans (skipping stuffed
/// bytes and restart markers); a baseline or progressive file must reach `FF D9`.
#[cfg(feature = "image")]
fn jpeg_truncation(b: &[u8]) -> Option<String> {
    let seg_len = |i: usize| -> Option<usize> {
        Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize)
    };
    let mut i = 2; // after SOI
    loop {
        // Find the next marker.
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return Some(format!(
                "the data ends at byte {} without an end-of-image marker",
                b.len()
            ));
        };
        i += 1;
        match marker {
            0xD9 => return None,
            0xD0..=0xD7 | 0x01 => {}
            0xDA => {
                // Start of scan: its header, then entropy-coded data up to the next real marker.
                let Some(len) = seg_len(i) else {
                    return Some(format!("a scan header is cut at byte {}", b.len()));
                };
                i += len;
                loop {
                    match (b.get(i), b.get(i + 1)) {
                        (Some(0xFF), Some(0x00 | 0xD0..=0xD7)) => i += 2,
                        (Some(0xFF), Some(_)) => break,
                        (Some(_), _) => i += 1,
                        (None, _) => {
                            return Some(format!(
                                "the scan data ends at byte {} without an end-of-image marker",
                                b.len()
                            ));
                        }
                    }
                }
            }
            _ => {
                let Some(len) = seg_len(i) else {
                    return Some(format!("a marker segment is cut at byte {}", b.len()));
                };
                if i + len > b.len() {
                    return Some(format!("a marker segment is cut at byte {}", b.len()));
                }
                i += len;
            }
        }
    }
}

/// Decodes an image file (JPEG, PNG, WebP, BMP, GIF first frame) within [`MAX_SIDE`] and
/// [`MAX_ALLOC`] and applies its EXIF orientation. A JPEG cut short is an error, not a
/// picture padded with gray.
#[cfg(feature = "image")]
pub fn decode(path: &Path) -> Result<DynamicImage, ImageError> {
    let bytes = read(path)?;
    decode_bytes(path, &bytes)
}

#[cfg(feature = "image")]
fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|error| ImageError::Io {
        path: path.display().to_string(),
        error,
    })
}

#[cfg(feature = "image")]
fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<DynamicImage, ImageError> {
    let p = || path.display().to_string();
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|error| ImageError::Io { path: p(), error })?;
    if reader.format() == Some(image::ImageFormat::Jpeg)
        && let Some(problem) = jpeg_truncation(bytes)
    {
        return Err(ImageError::Truncated { path: p(), problem });
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let decode_err = |error: image::ImageError| match error {
        e @ image::ImageError::Limits(_) => ImageError::TooLarge {
            path: p(),
            error: e,
        },
        e => ImageError::Decode {
            path: p(),
            error: e,
        },
    };
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let orientation = decoder.orientation().map_err(decode_err)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
    non_empty(path, img)
}

#[cfg(feature = "image")]
fn non_empty(path: &Path, img: DynamicImage) -> Result<DynamicImage, ImageError> {
    if img.width() == 0 || img.height() == 0 {
        return Err(ImageError::Empty {
            path: path.display().to_string(),
            width: img.width(),
            height: img.height(),
        });
    }
    Ok(img)
}

/// A decoded picture that may be smaller than the file's: JPEG's DCT scaling decodes a
/// large photo at 1/2, 1/4 or 1/8 of its size for a fraction of the work.
#[cfg(feature = "image")]
struct Picture {
    img: DynamicImage,
    /// The full size, after EXIF orientation (equal to `img`'s unless the decode was scaled).
    full: (u32, u32),
}

/// How many times the resize target a DCT-scaled decode keeps on its shorter side. Twice is
/// the floor for an antialiased resize to stay close to a full decode; four times keeps a
/// 12 MP photo within half a gray level of PIL's full-size pipeline on average
/// (`runtime/tests/preprocess.rs`), for a tenth more time than twice.
#[cfg(feature = "image")]
const DCT_MARGIN: u32 = 4;

/// The library that decodes JPEG files for the transform.
#[cfg(feature = "image")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum JpegDecoder {
    /// libjpeg-turbo (the `turbojpeg` feature): SIMD Huffman decoding and inverse DCT, at any
    /// of the DCT scales, full size included; PIL decodes with it too.
    LibjpegTurbo = 1,
    /// jpeg-decoder, pure Rust, for the reduced DCT scales; full-size JPEGs go to the image
    /// crate's decoder.
    Rust = 2,
}

#[cfg(feature = "image")]
impl JpegDecoder {
    /// libjpeg-turbo when it is compiled in, else the pure-Rust decoder.
    pub const DEFAULT: JpegDecoder = if cfg!(feature = "turbojpeg") {
        JpegDecoder::LibjpegTurbo
    } else {
        JpegDecoder::Rust
    };

    /// The decoders this build has.
    pub fn compiled() -> &'static [JpegDecoder] {
        if cfg!(feature = "turbojpeg") {
            &[JpegDecoder::LibjpegTurbo, JpegDecoder::Rust]
        } else {
            &[JpegDecoder::Rust]
        }
    }
}

/// The process's JPEG decoder as its `repr(u8)` value; 0 for [`JpegDecoder::DEFAULT`].
#[cfg(feature = "image")]
static PROCESS_DECODER: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

#[cfg(feature = "image")]
thread_local! {
    static THREAD_DECODER: std::cell::Cell<Option<JpegDecoder>> = const { std::cell::Cell::new(None) };
}

/// Sets the decoder of the JPEGs the whole process transforms (for example to reproduce
/// what a build without libjpeg-turbo gives); a decoder this build lacks is refused.
#[cfg(feature = "image")]
pub fn set_jpeg_decoder(decoder: JpegDecoder) -> Result<(), String> {
    if !JpegDecoder::compiled().contains(&decoder) {
        return Err(format!("this build has no {decoder:?} JPEG decoder"));
    }
    PROCESS_DECODER.store(decoder as u8, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// The decoder for the JPEGs this thread transforms.
#[cfg(feature = "image")]
fn jpeg_decoder() -> JpegDecoder {
    THREAD_DECODER.with(|d| d.get()).unwrap_or_else(|| {
        match PROCESS_DECODER.load(std::sync::atomic::Ordering::Relaxed) {
            1 => JpegDecoder::LibjpegTurbo,
            2 => JpegDecoder::Rust,
            _ => JpegDecoder::DEFAULT,
        }
    })
}

/// Runs `f` with the JPEGs this thread transforms decoded by `decoder` (to compare the
/// decoders); a decoder this build lacks is the default.
#[cfg(feature = "image")]
pub fn with_jpeg_decoder<R>(decoder: JpegDecoder, f: impl FnOnce() -> R) -> R {
    let decoder = if JpegDecoder::compiled().contains(&decoder) {
        decoder
    } else {
        JpegDecoder::DEFAULT
    };
    let before = THREAD_DECODER.with(|d| d.replace(Some(decoder)));
    struct Restore(Option<JpegDecoder>);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREAD_DECODER.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

/// Decodes `path` for a transform that resizes the shorter side to `resize`: a JPEG at least
/// `2 * DCT_MARGIN` times that size is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that
/// keeps the shorter side at `DCT_MARGIN * resize` or more, other JPEGs in full by
/// libjpeg-turbo where it is the decoder; everything else by [`decode`].
#[cfg(feature = "image")]
fn decode_for(path: &Path, bytes: &[u8], resize: usize) -> Result<Picture, ImageError> {
    if bytes.starts_with(&[0xFF, 0xD8])
        && jpeg_truncation(bytes).is_none()
        && let Some(picture) = decode_jpeg_scaled(bytes, DCT_MARGIN * resize as u32, jpeg_decoder())
    {
        let img = non_empty(path, picture.img)?;
        return Ok(Picture { img, ..picture });
    }
    let img = decode_bytes(path, bytes)?;
    let full = (img.width(), img.height());
    Ok(Picture { img, full })
}

/// The DCT-scaled decode (at full size too, by libjpeg-turbo), or `None` when the file is not
/// worth scaling or is anything the full decoder should judge (its errors and limits are the
/// ones users see). The header and the EXIF orientation are read by jpeg-decoder either way.
#[cfg(feature = "image")]
fn decode_jpeg_scaled(bytes: &[u8], min_short: u32, decoder: JpegDecoder) -> Option<Picture> {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.read_info().ok()?;
    let info = d.info()?;
    let (w, h) = (info.width as u32, info.height as u32);
    if w > MAX_SIDE || h > MAX_SIDE || min_short == 0 {
        return None;
    }
    let short = w.min(h);
    // The pure-Rust path leaves full-size decodes to the full decoder.
    let scales: &[u32] = match decoder {
        JpegDecoder::LibjpegTurbo => &[8, 4, 2, 1],
        JpegDecoder::Rust => &[8, 4, 2],
    };
    let k = scales
        .iter()
        .copied()
        .find(|&k| short.div_ceil(k) >= min_short || k == 1)?;
    let (sw, sh) = (w.div_ceil(k), h.div_ceil(k));
    let mut img = match decoder {
        JpegDecoder::LibjpegTurbo => decode_turbo(bytes, k, (sw, sh))?,
        JpegDecoder::Rust => decode_rust_scaled(&mut d, (sw, sh))?,
    };
    let orientation = d
        .exif_data()
        .and_then(image::metadata::Orientation::from_exif_chunk)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    img.apply_orientation(orientation);
    let full = if img.width() == sw { (w, h) } else { (h, w) };
    Some(Picture { img, full })
}

/// jpeg-decoder's decode at `size`, a reduced DCT scale of the file's.
#[cfg(feature = "image")]
fn decode_rust_scaled(
    d: &mut jpeg_decoder::Decoder<&[u8]>,
    size: (u32, u32),
) -> Option<DynamicImage> {
    d.set_max_decoding_buffer_size(MAX_ALLOC as usize);
    let (sw, sh) = d.scale(size.0 as u16, size.1 as u16).ok()?;
    if (sw as u32, sh as u32) != size {
        return None;
    }
    let pixels = d.decode().ok()?;
    match d.info()?.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => Some(DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(size.0, size.1, pixels)?,
        )),
        jpeg_decoder::PixelFormat::L8 => Some(DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(size.0, size.1, pixels)?,
        )),
        // CMYK and 16-bit JPEGs are rare: the full decoder handles them.
        _ => None,
    }
}

/// libjpeg-turbo's decode at 1/`k` of the file's size (`size` pixels), as RGB.
#[cfg(feature = "turbojpeg")]
fn decode_turbo(bytes: &[u8], k: u32, size: (u32, u32)) -> Option<DynamicImage> {
    let (w, h) = (size.0 as usize, size.1 as usize);
    if (w * h * 3) as u64 > MAX_ALLOC {
        return None;
    }
    let mut d = turbojpeg::Decompressor::new().ok()?;
    d.set_scaling_factor(turbojpeg::ScalingFactor::new(1, k as usize))
        .ok()?;
    let mut pixels = vec![0u8; w * h * 3];
    let out = turbojpeg::Image {
        pixels: &mut pixels[..],
        width: w,
        pitch: w * 3,
        height: h,
        format: turbojpeg::PixelFormat::RGB,
    };
    // CMYK and 12-bit JPEGs are refused here: the full decoder handles them.
    d.decompress(bytes, out).ok()?;
    Some(DynamicImage::ImageRgb8(image::RgbImage::from_raw(
        size.0, size.1, pixels,
    )?))
}

#[cfg(all(feature = "image", not(feature = "turbojpeg")))]
fn decode_turbo(_: &[u8], _: u32, _: (u32, u32)) -> Option<DynamicImage> {
    None
}

/// The size after resizing the shorter side to `size` (torchvision truncates the longer side).
pub fn resized_dims(width: u32, height: u32, size: usize) -> (u32, u32) {
    let size = size as u64;
    let (w, h) = (width as u64, height as u64);
    if w <= h {
        (size as u32, ((size * h) / w).max(1) as u32)
    } else {
        (((size * w) / h).max(1) as u32, size as u32)
    }
}

/// Top-left corner of a centered `crop x crop` window (Python's round-half-to-even, as
/// torchvision's `CenterCrop`).
pub fn crop_origin(width: u32, height: u32, crop: usize) -> (u32, u32) {
    let off = |n: u32| ((n as f64 - crop as f64) / 2.0).round_ties_even().max(0.0) as u32;
    (off(width), off(height))
}

/// Applies the transform to a decoded image; returns `3 x crop x crop` floats, CHW.
#[cfg(feature = "image")]
pub fn preprocess(img: &DynamicImage, p: &Preprocessing) -> Vec<f32> {
    let full = (img.width(), img.height());
    transform_image(img, full, p)
}

/// The transform on a picture decoded at `full` size or reduced from it (DCT scaling).
#[cfg(feature = "image")]
fn transform_image(img: &DynamicImage, full: (u32, u32), p: &Preprocessing) -> Vec<f32> {
    let converted;
    let rgb: &image::RgbImage = match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => {
            converted = other.to_rgb8();
            &converted
        }
    };
    match transform(rgb.as_raw(), (rgb.width(), rgb.height()), full, p) {
        Ok(v) => v,
        // Unreachable: the buffer is the image's own and both sides are RGB8; fall back to
        // the image crate's resize rather than fail.
        Err(_) => {
            let (w, h) = resized_dims(full.0, full.1, p.resize);
            let filter = match p.interpolation {
                Interpolation::Bilinear => image::imageops::FilterType::Triangle,
                Interpolation::Bicubic => image::imageops::FilterType::CatmullRom,
            };
            let resized = image::imageops::resize(rgb, w, h, filter).into_raw();
            crop_normalize(&resized, (w, h), p)
        }
    }
}

/// The transform on `size.0 x size.1` RGB8 pixels (rows packed) that are the whole picture of
/// `full` size or a reduction of it (DCT scaling): the resize reads the pixels as the full
/// picture's area, so the geometry is the full picture's, exactly as if it had been decoded
/// whole.
fn transform(
    rgb: &[u8],
    size: (u32, u32),
    full: (u32, u32),
    p: &Preprocessing,
) -> Result<Vec<f32>, String> {
    let (w, h) = resized_dims(full.0, full.1, p.resize);
    // A DCT-scaled decode has ceil(full / k) pixels, the last one partly past the picture:
    // resize the exact area `full / k` so that the sampling grid is the full picture's.
    let k = (full.0 as f64 / size.0 as f64).round().max(1.0);
    let area = (full.0 as f64 / k, full.1 as f64 / k);
    let resized = resize_rgb(rgb, size, area, (w, h), p.interpolation)?;
    Ok(crop_normalize(&resized, (w, h), p))
}

/// The center crop of resized RGB8 pixels, scaled and normalized, CHW.
fn crop_normalize(resized: &[u8], (w, h): (u32, u32), p: &Preprocessing) -> Vec<f32> {
    let (x0, y0) = crop_origin(w, h, p.crop);
    let c = p.crop;
    // Per-channel lookup: 8-bit value -> normalized float.
    let lut: [[f32; 256]; 3] = std::array::from_fn(|ch| {
        std::array::from_fn(|v| (v as f32 / 255.0 - p.mean[ch]) / p.std[ch])
    });
    // A crop larger than the image reads zeros beyond it, as torchvision pads.
    let mut out: Vec<f32> = lut
        .iter()
        .flat_map(|l| std::iter::repeat_n(l[0], c * c))
        .collect();
    let (w, h) = (w as usize, h as usize);
    for y in 0..c.min(h.saturating_sub(y0 as usize)) {
        let sy = y0 as usize + y;
        let row = &resized[sy * w * 3..(sy + 1) * w * 3];
        for x in 0..c.min(w.saturating_sub(x0 as usize)) {
            let px = &row[(x0 as usize + x) * 3..][..3];
            for ch in 0..3 {
                out[ch * c * c + y * c + x] = lut[ch][px[ch] as usize];
            }
        }
    }
    out
}

/// Resizes `size.0 x size.1` RGB8 pixels (the `area` of them) to `w x h` with the antialiased
/// convolution PIL uses (its support widens with the downscale factor), SIMD where the CPU
/// has it.
fn resize_rgb(
    src: &[u8],
    size: (u32, u32),
    area: (f64, f64),
    (w, h): (u32, u32),
    interpolation: Interpolation,
) -> Result<Vec<u8>, String> {
    use fast_image_resize as fr;
    let filter = match interpolation {
        Interpolation::Bilinear => fr::FilterType::Bilinear,
        Interpolation::Bicubic => fr::FilterType::CatmullRom,
    };
    // The `compact` feature builds the resizer with its RGBA code only (its other pixel types
    // are most of its size): the pixels are widened to RGBA, resized with the alpha channel
    // left alone, and narrowed again. The convolution is per channel, so RGB's values are the
    // same.
    #[cfg(feature = "compact")]
    let (pixel, src) = (
        fr::PixelType::U8x4,
        &src.chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect::<Vec<u8>>(),
    );
    #[cfg(not(feature = "compact"))]
    let pixel = fr::PixelType::U8x3;
    let mut dst = fr::images::Image::new(w, h, pixel);
    let view = fr::images::ImageRef::new(size.0, size.1, src, pixel)
        .map_err(|e| format!("cannot resize: {e}"))?;
    let mut options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(filter))
        .use_alpha(false);
    if area != (size.0 as f64, size.1 as f64) {
        options = options.crop(0.0, 0.0, area.0, area.1);
    }
    fr::Resizer::new()
        .resize(&view, &mut dst, &options)
        .map_err(|e| format!("cannot resize: {e}"))?;
    #[cfg(feature = "compact")]
    return Ok(dst
        .into_vec()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect());
    #[cfg(not(feature = "compact"))]
    Ok(dst.into_vec())
}

/// Decodes and preprocesses an image file. A JPEG much larger than the transform needs is
/// decoded at a reduced DCT scale (never below four times the resize target).
#[cfg(feature = "image")]
pub fn load_image(path: &Path, p: &Preprocessing) -> Result<Vec<f32>, ImageError> {
    load_image_from_memory(&read(path)?, path, p)
}

/// [`load_image`] on an encoded image in memory (a file's content); `origin` names it in
/// errors.
#[cfg(feature = "image")]
pub fn load_image_from_memory(
    bytes: &[u8],
    origin: &Path,
    p: &Preprocessing,
) -> Result<Vec<f32>, ImageError> {
    let picture = decode_for(origin, bytes, p.resize)?;
    Ok(transform_image(&picture.img, picture.full, p))
}

/// The bytes an 8-bit image spans: `height` rows of `width` pixels of `channels` (3: RGB, 4:
/// RGBA) bytes, `stride` bytes apart, the last row without its padding:
/// `stride * (height - 1) + width * channels`. Every product and sum is checked, and the span
/// must fit an allocation (`isize::MAX` bytes); the error says what is wrong. The one check of
/// a pixel buffer's layout, for the runtime and the C library alike.
pub fn pixel_buffer_len(
    width: u32,
    height: u32,
    stride: usize,
    channels: usize,
) -> Result<usize, String> {
    if width == 0 || height == 0 {
        return Err(format!("image is empty ({width}x{height})"));
    }
    if channels != 3 && channels != 4 {
        return Err(format!(
            "{channels} channels: expected RGB8 (3) or RGBA8 (4)"
        ));
    }
    let row = (width as usize)
        .checked_mul(channels)
        .ok_or_else(|| format!("{width} pixels a row overflow the address space"))?;
    if stride < row {
        return Err(format!(
            "stride {stride} is smaller than a row ({width} pixels x {channels} bytes = {row})"
        ));
    }
    stride
        .checked_mul(height as usize - 1)
        .and_then(|n| n.checked_add(row))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| format!("{height} rows of stride {stride} overflow the address space"))
}

/// Preprocesses an 8-bit RGB or RGBA buffer, `stride` bytes per row.
pub fn preprocess_pixels(
    pixels: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    channels: usize,
    p: &Preprocessing,
) -> Result<Vec<f32>, String> {
    let needed = pixel_buffer_len(width, height, stride, channels)?;
    if pixels.len() < needed {
        return Err(format!(
            "buffer of {} bytes is smaller than {needed}",
            pixels.len()
        ));
    }
    let row = width as usize * channels;
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height as usize {
        let src = &pixels[y * stride..y * stride + row];
        for s in src.chunks_exact(channels) {
            rgb.extend_from_slice(&s[..3]);
        }
    }
    transform(&rgb, (width, height), (width, height), p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "image")]
    fn every_jpeg_decoder_refuses_what_the_full_decoder_refuses() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images");
        let photo = std::fs::read(dir.join("chelsea.jpg")).unwrap();
        // The frame header (SOF0..SOF2) declaring 40000 x 40000 pixels, over the side limit.
        let mut bomb = photo.clone();
        // Walk the segments to the frame header (an embedded thumbnail has one too).
        let mut sof = 2;
        while !(0xC0..=0xC2).contains(&bomb[sof + 1]) {
            sof += 2 + u16::from_be_bytes([bomb[sof + 2], bomb[sof + 3]]) as usize;
        }
        bomb[sof + 5..sof + 9].copy_from_slice(&[0x9C, 0x40, 0x9C, 0x40]);
        let p = Preprocessing::cadene(224);
        let path = Path::new("x.jpg");
        for &decoder in JpegDecoder::compiled() {
            with_jpeg_decoder(decoder, || {
                let ok = load_image_from_memory(&photo, path, &p).unwrap();
                assert_eq!(ok.len(), 3 * 224 * 224);
                let Err(cut) = load_image_from_memory(&photo[..2000], path, &p) else {
                    panic!("a truncated file is an error");
                };
                assert!(
                    matches!(cut, ImageError::Truncated { .. }),
                    "{decoder:?}: {cut}"
                );
                let Err(big) = load_image_from_memory(&bomb, path, &p) else {
                    panic!("a bomb is an error");
                };
                assert!(
                    matches!(big, ImageError::TooLarge { .. }),
                    "{decoder:?}: {big}"
                );
                let junk =
                    load_image_from_memory(b"\xff\xd8\xff\xe0 not a jpeg", path, &p).unwrap_err();
                assert!(junk.to_string().starts_with("x.jpg"), "{decoder:?}: {junk}");
            });
        }
    }

    #[test]
    #[cfg(feature = "image")]
    fn truncated_jpegs_are_found_and_whole_ones_pass() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images");
        let mut seen = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "jpg") {
                let b = std::fs::read(&p).unwrap();
                assert_eq!(jpeg_truncation(&b), None, "{}", p.display());
                for cut in [2000, b.len() / 2, b.len() - 2] {
                    assert!(
                        jpeg_truncation(&b[..cut]).is_some(),
                        "{} cut at {cut}",
                        p.display()
                    );
                }
                seen += 1;
            }
        }
        assert!(seen >= 2);
    }

    #[test]
    fn shorter_side_rule() {
        assert_eq!(resized_dims(640, 480, 256), (341, 256));
        assert_eq!(resized_dims(480, 640, 256), (256, 341));
        assert_eq!(resized_dims(500, 500, 363), (363, 363));
    }

    #[test]
    fn center_crop_rounds_half_to_even() {
        assert_eq!(crop_origin(363, 363, 331), (16, 16));
        // (257 - 224) / 2 = 16.5 -> 16; (259 - 224) / 2 = 17.5 -> 18.
        assert_eq!(crop_origin(257, 259, 224), (16, 18));
    }

    #[test]
    #[cfg(feature = "image")]
    fn normalization_maps_to_minus_one_one() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(300, 200, |x, _| {
            if x < 150 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        }));
        let p = Preprocessing::cadene(224);
        let v = preprocess(&img, &p);
        assert_eq!(v.len(), 3 * 224 * 224);
        assert_eq!(v[0], -1.0);
        assert_eq!(v[224 * 224 - 1], 1.0);
    }

    /// A layout whose span overflows is refused, not wrapped: a stride of `usize::MAX` over
    /// two rows, a span past `isize::MAX`, and the smallest exact spans.
    #[test]
    fn a_pixel_layout_that_overflows_is_refused() {
        let e = pixel_buffer_len(2, 3, usize::MAX, 3).unwrap_err();
        assert!(e.contains("overflow"), "{e}");
        let e = pixel_buffer_len(2, 2, isize::MAX as usize, 4).unwrap_err();
        assert!(e.contains("overflow"), "{e}");
        assert_eq!(pixel_buffer_len(2, 1, usize::MAX, 3), Ok(6));
        assert_eq!(pixel_buffer_len(2, 3, 10, 4), Ok(28));
        assert!(pixel_buffer_len(2, 3, 7, 4).unwrap_err().contains("stride"));
        assert!(
            pixel_buffer_len(2, 3, 8, 2)
                .unwrap_err()
                .contains("channels")
        );
    }

    #[test]
    fn pixel_buffers_with_stride() {
        let p = Preprocessing::cadene(224);
        // 2 x 2 RGBA with 4 bytes of row padding: all white.
        let buf = vec![255u8; 12 * 2];
        let v = preprocess_pixels(&buf, 2, 2, 12, 4, &p).unwrap();
        assert!(v.iter().all(|&x| x == 1.0));
        assert!(
            preprocess_pixels(&buf, 2, 2, 7, 4, &p)
                .unwrap_err()
                .contains("stride")
        );
        assert!(
            preprocess_pixels(&buf, 3, 3, 12, 4, &p)
                .unwrap_err()
                .contains("smaller")
        );
        assert!(
            preprocess_pixels(&buf, 0, 2, 12, 4, &p)
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            preprocess_pixels(&buf, 2, 3, usize::MAX / 2, 4, &p)
                .unwrap_err()
                .contains("overflow")
        );
    }

    #[test]
    #[cfg(feature = "image")]
    fn unreadable_files_name_the_file() {
        let d = std::env::temp_dir().join(format!("nasnet-pre-{}", std::process::id()));
        std::fs::write(&d, b"not an image").unwrap();
        let e = decode(&d).unwrap_err().to_string();
        std::fs::remove_file(&d).unwrap();
        assert!(e.contains(&d.display().to_string()), "{e}");
        let e = decode(Path::new("/nonexistent/x.jpg"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/x.jpg: "), "{e}");
    }
}
