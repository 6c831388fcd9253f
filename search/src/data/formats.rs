//! The file formats: MNIST / Fashion-MNIST IDX, CIFAR-10 binary, image folders.

use std::io::Read;
use std::path::{Path, PathBuf};

use nasnet_core::meta::{Interpolation, Preprocessing};

use super::{CIFAR_CLASSES, DataError, Dataset, Result, Split, invalid, io};

fn read_all(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = std::fs::read(path).map_err(io(path))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = vec![];
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| invalid(path, format!("cannot decompress: {e}")))?;
        bytes = out;
    }
    Ok(bytes)
}

/// The first of `names` (each also tried with `.gz`) that exists in `dir`.
fn find(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    for n in names {
        for candidate in [dir.join(n), dir.join(format!("{n}.gz"))] {
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(invalid(
        dir,
        format!("no {} (or .gz) in this directory", names.join(" or ")),
    ))
}

fn be_u32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

pub(super) fn idx(dir: &Path, split: Split, classes: &[&str], what: &str) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let img_path = find(
        dir,
        &[
            &format!("{prefix}-images-idx3-ubyte"),
            &format!("{prefix}-images.idx3-ubyte"),
        ],
    )?;
    let lbl_path = find(
        dir,
        &[
            &format!("{prefix}-labels-idx1-ubyte"),
            &format!("{prefix}-labels.idx1-ubyte"),
        ],
    )?;
    let img = read_all(&img_path)?;
    let lbl = read_all(&lbl_path)?;
    if img.len() < 16 || be_u32(&img, 0) != 0x803 {
        return Err(invalid(
            &img_path,
            format!("not an IDX image file ({what})"),
        ));
    }
    if lbl.len() < 8 || be_u32(&lbl, 0) != 0x801 {
        return Err(invalid(
            &lbl_path,
            format!("not an IDX label file ({what})"),
        ));
    }
    let (n, h, w) = (be_u32(&img, 4), be_u32(&img, 8), be_u32(&img, 12));
    if img.len() != 16 + n * h * w {
        return Err(invalid(
            &img_path,
            format!("{} bytes, expected 16 + {n} x {h} x {w}", img.len()),
        ));
    }
    let m = be_u32(&lbl, 4);
    if m != n || lbl.len() != 8 + n {
        return Err(invalid(
            &lbl_path,
            format!("{m} labels in {} bytes for {n} images", lbl.len()),
        ));
    }
    let labels: Vec<u32> = lbl[8..].iter().map(|&l| l as u32).collect();
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes.len()) {
        return Err(invalid(&lbl_path, format!("label {bad} out of range")));
    }
    Ok(Dataset {
        images: img[16..].to_vec(),
        labels,
        channels: 1,
        height: h,
        width: w,
        classes: classes.iter().map(|s| s.to_string()).collect(),
    })
}

pub(super) fn cifar10(dir: &Path, split: Split) -> Result<Dataset> {
    let files: Vec<String> = match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    };
    let record = 1 + 3 * 32 * 32;
    let (mut images, mut labels) = (vec![], vec![]);
    for f in &files {
        let path = find(dir, &[f])?;
        let bytes = read_all(&path)?;
        if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
            return Err(invalid(
                &path,
                format!(
                    "{} bytes is not a whole number of {record}-byte CIFAR-10 records",
                    bytes.len()
                ),
            ));
        }
        for r in bytes.chunks_exact(record) {
            if r[0] > 9 {
                return Err(invalid(&path, format!("label {} out of range", r[0])));
            }
            labels.push(r[0] as u32);
            images.extend_from_slice(&r[1..]);
        }
    }
    let classes = std::fs::read_to_string(dir.join("batches.meta.txt"))
        .ok()
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|c| c.len() == 10)
        .unwrap_or_else(|| CIFAR_CLASSES.iter().map(|s| s.to_string()).collect());
    Ok(Dataset {
        images,
        labels,
        channels: 3,
        height: 32,
        width: 32,
        classes,
    })
}

/// Image files with their class index.
pub type LabelledFiles = Vec<(PathBuf, u32)>;

/// The class sub-folders of `dir` (sorted by name, which is the class index, as in the
/// ImageNet validation layout) and their image files (sorted).
pub fn folder_files(dir: &Path) -> Result<(Vec<String>, LabelledFiles)> {
    let mut classes = vec![];
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if entry.path().is_dir() {
            classes.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    classes.sort();
    if classes.is_empty() {
        return Err(invalid(dir, "no class sub-folders"));
    }
    let mut files = vec![];
    for (label, class) in classes.iter().enumerate() {
        let sub = dir.join(class);
        let mut found: Vec<PathBuf> = std::fs::read_dir(&sub)
            .map_err(io(&sub))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| nasnet_core::preprocess::has_image_extension(p))
            .collect();
        found.sort();
        files.extend(found.into_iter().map(|p| (p, label as u32)));
    }
    if files.is_empty() {
        return Err(invalid(dir, "no images in the class sub-folders"));
    }
    Ok((classes, files))
}

pub(super) fn folder(dir: &Path, size: usize) -> Result<Dataset> {
    let (classes, files) = folder_files(dir)?;
    let p = Preprocessing {
        resize: size,
        crop: size,
        interpolation: Interpolation::Bilinear,
        mean: [0.0; 3],
        std: [1.0; 3],
    };
    let mut images = Vec::with_capacity(files.len() * 3 * size * size);
    let mut labels = vec![];
    for (path, label) in &files {
        let img =
            nasnet_core::preprocess::load_image(path, &p).map_err(|e| DataError::Invalid {
                path: path.display().to_string(),
                problem: e.to_string(),
            })?;
        images.extend(
            img.iter()
                .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8),
        );
        labels.push(*label);
    }
    Ok(Dataset {
        images,
        labels,
        channels: 3,
        height: size,
        width: size,
        classes,
    })
}
