//! Training data: CIFAR-10 (binary version), MNIST / Fashion-MNIST (IDX files, plain or
//! gzipped) and image folders (one sub-folder per class), held in memory as 8-bit images, with
//! the augmentations of the paper's CIFAR recipe (random crop with padding, horizontal flip,
//! cutout) and a seeded validation split.

use std::path::{Path, PathBuf};

use nasnet_core::meta::{Interpolation, Preprocessing};

use crate::rng::Rng;

mod batch;
mod formats;

pub use batch::{Augment, Batcher};
pub use formats::{LabelledFiles, folder_files};
use formats::{cifar10, folder, idx};

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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
