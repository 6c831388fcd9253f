//! Datasets referenced by location and checksum.
//!
//! A job names its dataset as the controller's spec (`fashion-mnist:/data/fmnist`, or a URL
//! location such as `fashion-mnist:https://host/fmnist/`) and the sha256 digest of the files.
//! A worker uses a local path as it is, or downloads the layout's standard files from a URL
//! into its cache, and refuses a dataset whose digest differs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A dataset as a job refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRef {
    /// `KIND:LOCATION`, LOCATION a directory or an `http(s)://` URL of one.
    pub spec: String,
    /// [`dataset_digest`] of the dataset's directory.
    pub sha256: String,
}

fn split(spec: &str) -> Result<(&str, &str)> {
    spec.split_once(':').ok_or_else(|| Error::Dataset {
        path: spec.into(),
        problem: "expected KIND:LOCATION".into(),
    })
}

fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// The files a layout is made of, as published upstream, for downloading from a URL.
fn standard_files(kind: &str) -> Option<Vec<String>> {
    match kind {
        "fashion-mnist" | "fashion_mnist" | "mnist" => Some(
            [
                "train-images-idx3-ubyte.gz",
                "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
            ]
            .map(String::from)
            .to_vec(),
        ),
        "cifar10" | "cifar-10" => Some(
            (1..=5)
                .map(|i| format!("data_batch_{i}.bin"))
                .chain(["test_batch.bin".to_string()])
                .collect(),
        ),
        _ => None,
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.display().to_string(),
        error,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of a dataset directory: of the list of its regular files (recursively, hidden
/// ones excepted), each as its relative path and its own sha256, in path order.
pub fn dataset_digest(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io(&d))? {
            let entry = entry.map_err(io(&d))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type().map_err(io(&path))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() || path.is_file() {
                files.push(path);
            }
        }
    }
    if files.is_empty() {
        return Err(Error::Dataset {
            path: dir.display().to_string(),
            problem: "no files".into(),
        });
    }
    let mut listed: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap_or(&p).to_string_lossy();
            (rel.replace('\\', "/"), p)
        })
        .collect();
    listed.sort();
    let mut h = Sha256::new();
    for (rel, path) in &listed {
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(nasnet_core::fsutil::sha256_file(path)?.as_bytes());
        h.update(b"\n");
    }
    Ok(hex(&h.finalize()))
}

/// Downloads the layout's standard files from `url` into a directory of `cache` (once: a
/// complete download is reused) and returns that directory.
fn fetch(kind: &str, url: &str, cache: &Path) -> Result<PathBuf> {
    let files = standard_files(kind).ok_or_else(|| Error::Dataset {
        path: format!("{kind}:{url}"),
        problem: format!("a {kind} dataset is referenced by path only, not by URL"),
    })?;
    let key = hex(&Sha256::digest(format!("{kind}:{url}").as_bytes()));
    let dir = cache.join("datasets").join(&key[..16]);
    if dir.is_dir() {
        return Ok(dir);
    }
    let parent = cache.join("datasets");
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let tmp = parent.join(format!(".{}.partial-{}", &key[..16], std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let base = url.trim_end_matches('/');
    let result = files.iter().try_for_each(|f| {
        nasnet_fetch::download_url(&format!("{base}/{f}"), &tmp.join(f), false).map_err(Error::from)
    });
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another worker on this machine finished first.
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(io(&dir)(e)),
    }
}

impl DatasetRef {
    /// The reference to the dataset at `spec`, digested now (a URL is downloaded into `cache`
    /// first).
    pub fn new(spec: &str, cache: &Path) -> Result<Self> {
        let local = Self::local_dir(spec, cache)?;
        Ok(Self {
            spec: spec.into(),
            sha256: dataset_digest(&local)?,
        })
    }

    fn local_dir(spec: &str, cache: &Path) -> Result<PathBuf> {
        let (kind, location) = split(spec)?;
        if is_url(location) {
            return fetch(kind, location, cache);
        }
        let dir = PathBuf::from(location);
        if !dir.is_dir() {
            return Err(Error::Dataset {
                path: location.into(),
                problem: "no such directory on this machine".into(),
            });
        }
        Ok(dir)
    }

    /// The dataset on this machine, as a spec to load: the path as it is, or the cached
    /// download of the URL, after checking its digest.
    pub fn resolve(&self, cache: &Path) -> Result<String> {
        let (kind, _) = split(&self.spec)?;
        let dir = Self::local_dir(&self.spec, cache)?;
        let got = dataset_digest(&dir)?;
        if got != self.sha256 {
            return Err(Error::Dataset {
                path: dir.display().to_string(),
                problem: format!(
                    "not the search's dataset: its files' sha256 is {got}, the job's {}",
                    self.sha256
                ),
            });
        }
        Ok(format!("{kind}:{}", dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_covers_names_and_contents_and_is_checked() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("a.bin"), b"one").unwrap();
        std::fs::write(d.path().join("sub/b.bin"), b"two").unwrap();
        std::fs::write(d.path().join(".hidden"), b"ignored").unwrap();
        let spec = format!("folder:{}", d.path().display());
        let cache = tempfile::tempdir().unwrap();
        let r = DatasetRef::new(&spec, cache.path()).unwrap();
        assert_eq!(r.sha256.len(), 64);
        assert_eq!(r.resolve(cache.path()).unwrap(), spec);

        std::fs::write(d.path().join(".hidden"), b"changed").unwrap();
        assert_eq!(dataset_digest(d.path()).unwrap(), r.sha256);
        std::fs::write(d.path().join("sub/b.bin"), b"TWO").unwrap();
        let e = r.resolve(cache.path()).unwrap_err().to_string();
        assert!(e.contains("not the search's dataset"), "{e}");
        std::fs::write(d.path().join("sub/b.bin"), b"two").unwrap();
        std::fs::rename(d.path().join("a.bin"), d.path().join("c.bin")).unwrap();
        assert_ne!(dataset_digest(d.path()).unwrap(), r.sha256);

        let e = DatasetRef::new("mnist:/no/such/dir", cache.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/dir: no such directory"), "{e}");
        let e = DatasetRef::new("folder:http://127.0.0.1:1/x", cache.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("referenced by path only"), "{e}");
        let e = DatasetRef::new("no-kind", cache.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-kind: expected KIND:LOCATION"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = DatasetRef::new(&format!("folder:{}", empty.path().display()), cache.path())
            .unwrap_err()
            .to_string();
        assert!(e.ends_with(": no files"), "{e}");
    }
}
