//! Training data: CIFAR-10 (binary version), MNIST / Fashion-MNIST (IDX files, plain or
//! gzipped) and image folders (one sub-folder per class), held in memory as 8-bit images, with
//! the augmentations of the paper's CIFAR recipe (random crop with padding, horizontal flip,
//! cutout) and a seeded validation split.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use nasnet_core::meta::{Interpolation, Preprocessing};

use crate::rng::Rng;

/// Errors reading a dataset; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
    #[error(
        "unknown dataset {0:?}: expected cifar10:DIR, fashion-mnist:DIR, mnist:DIR or folder:DIR"
    )]
    Spec(String),
}

type Result<T> = std::result::Result<T, DataError>;

fn invalid(path: &Path, problem: impl Into<String>) -> DataError {
    DataError::Invalid {
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |error| DataError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Where a dataset is and in which layout: `cifar10:DIR`, `fashion-mnist:DIR`, `mnist:DIR`,
/// `folder:DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSpec {
    Cifar10(PathBuf),
    FashionMnist(PathBuf),
    Mnist(PathBuf),
    Folder(PathBuf),
}

impl std::str::FromStr for DatasetSpec {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        let (kind, dir) = s
            .split_once(':')
            .ok_or_else(|| DataError::Spec(s.to_owned()))?;
        let dir = PathBuf::from(dir);
        Ok(match kind {
            "cifar10" | "cifar-10" => Self::Cifar10(dir),
            "fashion-mnist" | "fashion_mnist" => Self::FashionMnist(dir),
            "mnist" => Self::Mnist(dir),
            "folder" => Self::Folder(dir),
            _ => return Err(DataError::Spec(s.to_owned())),
        })
    }
}

impl std::fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, dir) = match self {
            Self::Cifar10(d) => ("cifar10", d),
            Self::FashionMnist(d) => ("fashion-mnist", d),
            Self::Mnist(d) => ("mnist", d),
            Self::Folder(d) => ("folder", d),
        };
        write!(f, "{kind}:{}", dir.display())
    }
}

impl DatasetSpec {
    pub fn dir(&self) -> &Path {
        match self {
            Self::Cifar10(d) | Self::FashionMnist(d) | Self::Mnist(d) | Self::Folder(d) => d,
        }
    }

    /// Loads a split. Folder images are resized (shorter side) and center-cropped to `size`.
    pub fn load(&self, split: Split, size: usize) -> Result<Dataset> {
        match self {
            Self::Cifar10(dir) => cifar10(dir, split),
            Self::FashionMnist(dir) => idx(dir, split, FASHION_CLASSES, "fashion-mnist"),
            Self::Mnist(dir) => idx(dir, split, DIGITS, "mnist"),
            Self::Folder(dir) => folder(&folder_split(dir, split), size),
        }
    }

    /// The per-channel mean and standard deviation (of pixels in [0, 1]) the network is fed
    /// with: the dataset's own for the standard sets, ImageNet's for folders.
    pub fn normalization(&self) -> ([f32; 3], [f32; 3]) {
        match self {
            Self::Cifar10(_) => ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
            Self::FashionMnist(_) => ([0.2860; 3], [0.3530; 3]),
            Self::Mnist(_) => ([0.1307; 3], [0.3081; 3]),
            Self::Folder(_) => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        }
    }

    /// The evaluation transform for a network trained on this dataset at `size` pixels.
    pub fn preprocessing(&self, size: usize) -> Preprocessing {
        let (mean, std) = self.normalization();
        Preprocessing {
            resize: size,
            crop: size,
            interpolation: Interpolation::Bilinear,
            mean,
            std,
        }
    }
}

/// For a folder dataset: `DIR/train` for training and `DIR/val` or `DIR/test` for testing
/// where they exist, else `DIR` itself (the ImageNet validation layout).
pub fn folder_split(dir: &Path, split: Split) -> PathBuf {
    let names: &[&str] = match split {
        Split::Train => &["train"],
        Split::Test => &["val", "test"],
    };
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| dir.to_path_buf())
}

const FASHION_CLASSES: &[&str] = &[
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
const DIGITS: &[&str] = &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
const CIFAR_CLASSES: &[&str] = &[
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Labelled 8-bit images, channel-first.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// `len × channels × height × width` bytes.
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    /// 1 (grey, fed to the network as three equal channels) or 3.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Self {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
            ..*self
        }
    }

    /// A seeded random split into `(train, held_out)` with `held_out` images in the second.
    pub fn split(&self, held_out: usize, seed: u64) -> (Self, Self) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        Rng::new(seed).shuffle(&mut order);
        let held_out = held_out.min(self.len());
        let (val, train) = order.split_at(held_out);
        let (mut val, mut train) = (val.to_vec(), train.to_vec());
        val.sort_unstable();
        train.sort_unstable();
        (self.subset(&train), self.subset(&val))
    }

    /// A seeded random subset of `count` images (all of them when `count >= len`).
    pub fn take(&self, count: usize, seed: u64) -> Self {
        if count >= self.len() {
            return self.clone();
        }
        self.split(count, seed).1
    }
}

/// Random crop after zero padding, horizontal flip, cutout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Pixels of zero padding on each side before a random crop back to the image size.
    pub pad: usize,
    pub flip: bool,
    /// Side of the square zeroed at a random center (0: none).
    pub cutout: usize,
}

impl Augment {
    pub const NONE: Self = Self {
        pad: 0,
        flip: false,
        cutout: 0,
    };
}

/// Turns images into a normalized `[B, 3, H, W]` batch, augmenting them when `augment` is set.
#[derive(Debug, Clone)]
pub struct Batcher {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub augment: Augment,
}

impl Batcher {
    pub fn batch(
        &self,
        data: &Dataset,
        indices: &[usize],
        rng: &mut Rng,
        device: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (h, w, c) = (data.height, data.width, data.channels);
        let plane = h * w;
        let mut out = vec![0f32; indices.len() * 3 * plane];
        let a = self.augment;
        for (b, &i) in indices.iter().enumerate() {
            let img = data.image(i);
            let (dy, dx) = if a.pad > 0 {
                (rng.below(2 * a.pad + 1), rng.below(2 * a.pad + 1))
            } else {
                (a.pad, a.pad)
            };
            let flip = a.flip && rng.below(2) == 1;
            let cut = (a.cutout > 0).then(|| (rng.below(h), rng.below(w)));
            let dst = &mut out[b * 3 * plane..(b + 1) * 3 * plane];
            for ch in 0..3 {
                let src = &img[(ch % c) * plane..(ch % c + 1) * plane];
                let zero = -self.mean[ch] / self.std[ch];
                for y in 0..h {
                    for x in 0..w {
                        // Output (y, x) reads padded (y + dy, x + dx), i.e. source (y + dy - pad).
                        let sy = (y + dy).wrapping_sub(a.pad);
                        let xx = if flip { w - 1 - x } else { x };
                        let sx = (xx + dx).wrapping_sub(a.pad);
                        let mut v = if sy < h && sx < w {
                            (src[sy * w + sx] as f32 / 255.0 - self.mean[ch]) / self.std[ch]
                        } else {
                            zero
                        };
                        if let Some((cy, cx)) = cut {
                            let half = a.cutout / 2;
                            if y + half >= cy
                                && y < cy + a.cutout - half
                                && x + half >= cx
                                && x < cx + a.cutout - half
                            {
                                v = 0.0;
                            }
                        }
                        dst[ch * plane + y * w + x] = v;
                    }
                }
            }
        }
        let x = Tensor::from_vec(out, (indices.len(), 3, h, w), device)?;
        let labels: Vec<u32> = indices.iter().map(|&i| data.labels[i]).collect();
        let y = Tensor::from_vec(labels, indices.len(), device)?;
        Ok((x, y))
    }
}

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

fn idx(dir: &Path, split: Split, classes: &[&str], what: &str) -> Result<Dataset> {
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

fn cifar10(dir: &Path, split: Split) -> Result<Dataset> {
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

const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "webp", "bmp", "gif", "JPG", "JPEG", "PNG",
];

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
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e))
            })
            .collect();
        found.sort();
        files.extend(found.into_iter().map(|p| (p, label as u32)));
    }
    if files.is_empty() {
        return Err(invalid(dir, "no images in the class sub-folders"));
    }
    Ok((classes, files))
}

fn folder(dir: &Path, size: usize) -> Result<Dataset> {
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
            nasnet_runtime::preprocess::load_image(path, &p).map_err(|e| DataError::Invalid {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Dataset {
        Dataset {
            images: (0..n * 4).map(|i| i as u8).collect(),
            labels: (0..n as u32).collect(),
            channels: 1,
            height: 2,
            width: 2,
            classes: vec!["a".into()],
        }
    }

    #[test]
    fn split_is_seeded_and_disjoint() {
        let d = toy(50);
        let (t1, v1) = d.split(10, 3);
        let (t2, v2) = d.split(10, 3);
        assert_eq!((t1.len(), v1.len()), (40, 10));
        assert_eq!(v1, v2);
        assert_eq!(t1, t2);
        let mut all: Vec<u32> = t1.labels.iter().chain(&v1.labels).copied().collect();
        all.sort();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        assert_ne!(d.split(10, 4).1.labels, v1.labels);
        // Each image stays with its label.
        for (k, &l) in v1.labels.iter().enumerate() {
            assert_eq!(v1.image(k), d.image(l as usize));
        }
    }

    #[test]
    fn augmentation_shifts_flips_and_cuts() {
        let d = Dataset {
            images: (1..=16).collect(),
            labels: vec![0],
            channels: 1,
            height: 4,
            width: 4,
            classes: vec!["a".into()],
        };
        let plain = Batcher {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
            augment: Augment::NONE,
        };
        let mut rng = Rng::new(1);
        let (x, y) = plain.batch(&d, &[0], &mut rng, &Device::Cpu).unwrap();
        assert_eq!(y.to_vec1::<u32>().unwrap(), vec![0]);
        let v: Vec<f32> = x
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|p| p.round())
            .collect();
        let first: Vec<f32> = (1..=16).map(|i| i as f32).collect();
        assert_eq!(&v[..16], &first[..]);
        assert_eq!(&v[16..32], &first[..], "grey is repeated on three channels");
        // Every augmented image is a shifted, maybe mirrored copy with zero fill.
        let aug = Batcher {
            augment: Augment {
                pad: 1,
                flip: true,
                cutout: 0,
            },
            ..plain.clone()
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let (x, _) = aug.batch(&d, &[0], &mut rng, &Device::Cpu).unwrap();
            let v: Vec<f32> = x
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|p| p.round())
                .collect();
            let zeros = v[..16].iter().filter(|&&p| p == 0.0).count();
            assert!([0, 3, 4, 7].contains(&zeros), "{v:?}");
            seen.insert(v[..16].iter().map(|p| *p as u8).collect::<Vec<_>>());
        }
        assert_eq!(seen.len(), 18, "9 shifts x 2 flips");
        let cut = Batcher {
            augment: Augment {
                pad: 0,
                flip: false,
                cutout: 2,
            },
            ..plain
        };
        let (x, _) = cut.batch(&d, &[0], &mut rng, &Device::Cpu).unwrap();
        let v: Vec<f32> = x
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|p| p.round())
            .collect();
        let zeros = v[..16].iter().filter(|&&p| p == 0.0).count();
        assert!((1..=4).contains(&zeros));
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let spec: DatasetSpec = format!("fashion-mnist:{}", dir.path().display())
            .parse()
            .unwrap();
        let e = spec.load(Split::Train, 28).unwrap_err().to_string();
        assert!(e.contains("train-images-idx3-ubyte"), "{e}");
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte"),
            b"nonsense, not idx",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            b"\0\0\x08\x01\0\0\0\0",
        )
        .unwrap();
        let e = spec.load(Split::Train, 28).unwrap_err().to_string();
        assert!(
            e.contains("train-images-idx3-ubyte: not an IDX image file"),
            "{e}"
        );
        let c: DatasetSpec = format!("cifar10:{}", dir.path().display()).parse().unwrap();
        std::fs::write(dir.path().join("data_batch_1.bin"), vec![0u8; 100]).unwrap();
        let e = c.load(Split::Train, 32).unwrap_err().to_string();
        assert!(e.contains("data_batch_1.bin: 100 bytes"), "{e}");
        assert!("imagenet:/x".parse::<DatasetSpec>().is_err());
    }
}
