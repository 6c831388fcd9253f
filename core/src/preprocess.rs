//! The evaluation transform, exactly as `model.json` describes it: decode (EXIF orientation
//! applied), RGB, resize the shorter side (torchvision `Resize(int)` rule), center crop
//! (torchvision `CenterCrop` rounding), scale to [0, 1], normalize with mean/std, CHW layout.

use std::path::Path;

use crate::meta::{Interpolation, Preprocessing};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader};

/// File extensions (lowercase) of the image formats this build decodes.
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "bmp", "gif"];

/// Whether `path` names an image file by its extension (any case).
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
    #[error("{path}: cannot decode image: {error}")]
    Decode {
        /// The image file.
        path: String,
        /// The decoder's error.
        error: image::ImageError,
    },
    /// The image is larger than the decoder's limits allow (a decompression bomb, or a
    /// picture far beyond any camera's).
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
pub fn decode(path: &Path) -> Result<DynamicImage, ImageError> {
    let p = || path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| ImageError::Io { path: p(), error })?;
    let mut reader = ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|error| ImageError::Io { path: p(), error })?;
    if reader.format() == Some(image::ImageFormat::Jpeg)
        && let Some(problem) = jpeg_truncation(&bytes)
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
    if img.width() == 0 || img.height() == 0 {
        return Err(ImageError::Empty {
            path: p(),
            width: img.width(),
            height: img.height(),
        });
    }
    Ok(img)
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
pub fn preprocess(img: &DynamicImage, p: &Preprocessing) -> Vec<f32> {
    let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
    let (w, h) = resized_dims(rgb.width(), rgb.height(), p.resize);
    let filter = match p.interpolation {
        Interpolation::Bilinear => FilterType::Triangle,
        Interpolation::Bicubic => FilterType::CatmullRom,
    };
    let resized = rgb.resize_exact(w, h, filter).to_rgb8();
    let (x0, y0) = crop_origin(w, h, p.crop);
    let c = p.crop;
    let mut out = vec![0f32; 3 * c * c];
    for y in 0..c {
        for x in 0..c {
            // A crop larger than the image reads zeros beyond it, as torchvision pads.
            let (sx, sy) = (x0 as usize + x, y0 as usize + y);
            let px = if sx < w as usize && sy < h as usize {
                resized.get_pixel(sx as u32, sy as u32).0
            } else {
                [0, 0, 0]
            };
            for ch in 0..3 {
                let v = px[ch] as f32 / 255.0;
                out[ch * c * c + y * c + x] = (v - p.mean[ch]) / p.std[ch];
            }
        }
    }
    out
}

/// Decodes and preprocesses an image file.
pub fn load_image(path: &Path, p: &Preprocessing) -> Result<Vec<f32>, ImageError> {
    Ok(preprocess(&decode(path)?, p))
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
    if width == 0 || height == 0 {
        return Err(format!("image is empty ({width}x{height})"));
    }
    if channels != 3 && channels != 4 {
        return Err(format!(
            "{channels} channels: expected RGB8 (3) or RGBA8 (4)"
        ));
    }
    let row = width as usize * channels;
    if stride < row {
        return Err(format!(
            "stride {stride} is smaller than a row ({width} pixels x {channels} bytes = {row})"
        ));
    }
    let needed = stride * (height as usize - 1) + row;
    if pixels.len() < needed {
        return Err(format!(
            "buffer of {} bytes is smaller than {needed}",
            pixels.len()
        ));
    }
    let mut rgb = image::RgbImage::new(width, height);
    for (y, out) in rgb.rows_mut().enumerate() {
        let src = &pixels[y * stride..y * stride + row];
        for (px, s) in out.zip(src.chunks_exact(channels)) {
            *px = image::Rgb([s[0], s[1], s[2]]);
        }
    }
    Ok(preprocess(&DynamicImage::ImageRgb8(rgb), p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
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
    }

    #[test]
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
