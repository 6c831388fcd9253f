//! The one-call path: [`Classifier`] opens a model (a directory, or a zoo id pulled on first
//! use) on the runtime and answers with labelled predictions.

use std::path::{Path, PathBuf};

use nasnet_runtime::{Model, Options, Prediction};

/// Errors of the one-call path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening or running the model.
    #[error(transparent)]
    Runtime(#[from] nasnet_runtime::Error),
    /// Finding or pulling the model in the zoo.
    #[cfg(feature = "zoo")]
    #[error(transparent)]
    Zoo(#[from] nasnet_zoo::Error),
    /// Listing a directory of images.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The answer for one input of a batch: its predictions, or why it failed.
#[derive(Debug)]
pub struct Classification {
    /// The input file.
    pub input: PathBuf,
    /// Its top-k predictions, or its error (other inputs are unaffected).
    pub result: Result<Vec<Prediction>, Error>,
}

/// A model ready to classify and embed images.
pub struct Classifier {
    model: Model,
}

impl Classifier {
    /// The zoo model `id` (`ID` or `ID@VERSION`, e.g. `nasnet-a-mobile`), pulled into the
    /// cache on first use, on the default backend.
    #[cfg(feature = "zoo")]
    pub fn from_pretrained(id: &str) -> Result<Self, Error> {
        Self::from_pretrained_with(id, Options::default())
    }

    /// [`Classifier::from_pretrained`] with other options (backend, device, threads).
    #[cfg(feature = "zoo")]
    pub fn from_pretrained_with(id: &str, options: Options) -> Result<Self, Error> {
        let registry = nasnet_zoo::registry::Registry::load(None)?;
        let pull = nasnet_zoo::fetch::PullOptions {
            offline: false,
            force: false,
            progress: false,
        };
        let dir =
            nasnet_zoo::fetch::locate(id, &registry, &nasnet_core::cache::nasnet_home(), &pull)?;
        Self::open_with(&dir, options)
    }

    /// A model directory (`model.json` with `model.onnx`) on the default backend.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(dir.as_ref(), Options::default())
    }

    /// A model directory with other options.
    pub fn open_with(dir: &Path, options: Options) -> Result<Self, Error> {
        Ok(Self {
            model: Model::open(dir, options)?,
        })
    }

    /// The model underneath, for batches and raw outputs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The `k` most probable classes of an image file.
    pub fn classify(&self, image: impl AsRef<Path>, k: usize) -> Result<Vec<Prediction>, Error> {
        let input = self.model.load_image(image.as_ref())?;
        Ok(self.model.run(&input, 1)?.top_k(0, k))
    }

    /// The `k` most probable classes of RGB (`channels` 3) or RGBA (4) pixels, rows `stride`
    /// bytes apart.
    pub fn classify_pixels(
        &self,
        pixels: &[u8],
        width: u32,
        height: u32,
        stride: usize,
        channels: usize,
        k: usize,
    ) -> Result<Vec<Prediction>, Error> {
        let input = self
            .model
            .load_pixels(pixels, width, height, stride, channels)?;
        Ok(self.model.run(&input, 1)?.top_k(0, k))
    }

    /// Every image of a directory (sorted by name), each with its own result: a file that
    /// cannot be read fails alone.
    pub fn classify_dir(
        &self,
        dir: impl AsRef<Path>,
        k: usize,
    ) -> Result<Vec<Classification>, Error> {
        let dir = dir.as_ref();
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && nasnet_core::preprocess::has_image_extension(p))
            .collect();
        files.sort();
        Ok(files
            .into_iter()
            .map(|input| Classification {
                result: self.classify(&input, k),
                input,
            })
            .collect())
    }

    /// The embedding (pooled penultimate features) of an image file.
    pub fn embed(&self, image: impl AsRef<Path>) -> Result<Vec<f32>, Error> {
        let input = self.model.load_image(image.as_ref())?;
        Ok(self.model.run(&input, 1)?.features(0).to_vec())
    }
}
