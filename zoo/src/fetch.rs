//! Pulling a registry entry: download the upstream file (Hugging Face Hub through `hf-hub`, or
//! plain URLs trying mirrors in order), verify its checksum before anything reads it, convert
//! it once into `$NASNET_HOME/models/<id>/<version>/`, written atomically.
//!
//! `hf` sources live in the Hugging Face cache (`HF_HOME`, `HF_HUB_CACHE`; `HF_ENDPOINT` and
//! `HF_TOKEN` are honoured); `url` sources in `$NASNET_HOME/downloads/`. A transfer is written
//! to a `.partial` file and renamed only once complete and verified, so an interrupted
//! download never counts as a file. Offline (`--offline` or `HF_HUB_OFFLINE=1`), nothing
//! touches the network and a missing piece is named.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::Digest as _;
use nasnet_core::meta::META_FILE;

use crate::fsutil::sha256_file;
use crate::import::{ImportOptions, import};
use crate::registry::{Entry, Source};
use crate::{Error, Result};

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Never touch the network.
    pub offline: bool,
    /// Convert again even if the model is cached.
    pub force: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// Whether `HF_HUB_OFFLINE` asks for offline mode.
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes" | "on"))
}

/// Whether the converted model is in the cache.
pub fn is_cached(entry: &Entry, home: &Path) -> bool {
    entry.cache_dir(home).join(META_FILE).exists()
}

/// Makes sure `entry` is converted in the cache and returns its model directory.
pub fn pull(entry: &Entry, home: &Path, opts: &PullOptions) -> Result<PathBuf> {
    let dir = entry.cache_dir(home);
    if is_cached(entry, home) && !opts.force {
        return Ok(dir);
    }
    let offline = opts.offline || offline_from_env();
    let mut failures = vec![];
    for source in &entry.sources {
        let file = match fetch(source, home, offline, opts.progress) {
            Ok(f) => f,
            Err(e @ Error::Checksum { .. }) => return Err(e),
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        let import_opts = ImportOptions {
            name: entry.spec(),
            config: entry.config_for(source),
            from: Some(source.format.into()),
            pooling: Some(entry.config_for(source).pooling),
            force: true,
            preprocessing: Some(entry.preprocessing_for(source)),
            labels: Some(entry.labels()),
        };
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|error| Error::Io {
                path: parent.display().to_string(),
                error,
            })?;
        }
        import(&file, &dir, &import_opts)?;
        return Ok(dir);
    }
    if offline {
        return Err(Error::Offline(format!(
            "offline: {} is not in the cache ({}) and no source file is cached: {}",
            entry.spec(),
            dir.display(),
            failures.join("; ")
        )));
    }
    Err(Error::Download {
        resource: entry.spec(),
        problem: format!("no source could be fetched: {}", failures.join("; ")),
    })
}

/// Fetches one source (or finds it cached) and verifies it.
fn fetch(source: &Source, home: &Path, offline: bool, progress: bool) -> Result<PathBuf> {
    if let Some(hf) = &source.hf {
        let path = fetch_hf(hf, offline, progress)?;
        verify(&path, source).inspect_err(|_| remove_hf_file(&path))?;
        return Ok(path);
    }
    let downloads = home.join("downloads");
    let name = |url: &str| -> String {
        url.rsplit('/')
            .next()
            .filter(|n| !n.is_empty() && !n.starts_with('.'))
            .unwrap_or("download")
            .to_owned()
    };
    // Complete files only ever get their final name, after verification; check again anyway.
    for url in &source.url {
        let dest = downloads.join(name(url));
        if dest.exists() {
            verify(&dest, source).inspect_err(|_| {
                let _ = std::fs::remove_file(&dest);
            })?;
            return Ok(dest);
        }
    }
    if offline {
        let names: Vec<String> = source.url.iter().map(|u| name(u)).collect();
        return Err(Error::Offline(format!(
            "{} not downloaded in {}",
            names.join(" / "),
            downloads.display()
        )));
    }
    let mut failures = vec![];
    for url in &source.url {
        match download(url, &downloads.join(name(url)), source, progress) {
            Ok(()) => return Ok(downloads.join(name(url))),
            Err(e @ Error::Checksum { .. }) => return Err(e),
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(Error::Offline(failures.join("; ")))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| Error::Io {
            path: "async runtime".into(),
            error,
        })
}

fn bar(total: u64, what: &str, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Downloads `url` to `dest` through a `.partial` file, verifying length and checksum first.
fn download(url: &str, dest: &Path, source: &Source, progress: bool) -> Result<()> {
    download_checked(url, dest, progress, |tmp| verify(tmp, source))
}

/// Downloads `url` to `dest` through a `.partial` file, so that `dest` is complete or absent;
/// the caller checks the contents.
pub fn download_url(url: &str, dest: &Path, progress: bool) -> Result<()> {
    download_checked(url, dest, progress, |_| Ok(()))
}

fn download_checked(
    url: &str,
    dest: &Path,
    progress: bool,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let fail = |problem: String| Error::Download {
        resource: url.to_owned(),
        problem,
    };
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|error| Error::Io {
        path: dir.display().to_string(),
        error,
    })?;
    let tmp = dest.with_file_name(format!(
        ".{}.partial-{}",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = runtime()?.block_on(async {
        let mut resp = reqwest::get(url).await.map_err(|e| fail(format!("{e}")))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let total = resp.content_length();
        let pb = bar(
            total.unwrap_or(0),
            url.rsplit('/').next().unwrap_or(url),
            progress,
        );
        let mut f = std::fs::File::create(&tmp).map_err(|error| Error::Io {
            path: tmp.display().to_string(),
            error,
        })?;
        let mut written = 0u64;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    f.write_all(&c).map_err(|error| Error::Io {
                        path: tmp.display().to_string(),
                        error,
                    })?;
                    written += c.len() as u64;
                    pb.set_position(written);
                }
                Ok(None) => break,
                Err(e) => return Err(fail(format!("transfer failed after {written} bytes: {e}"))),
            }
        }
        pb.finish_and_clear();
        if let Some(t) = total.filter(|&t| t != written) {
            return Err(fail(format!("transfer ended after {written} of {t} bytes")));
        }
        f.sync_all().map_err(|error| Error::Io {
            path: tmp.display().to_string(),
            error,
        })
    });
    let result = result.and_then(|()| check(&tmp));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(match e {
            Error::Checksum {
                kind,
                expected,
                actual,
                ..
            } => Error::Checksum {
                path: url.to_owned(),
                kind,
                expected,
                actual,
            },
            e => e,
        });
    }
    std::fs::rename(&tmp, dest).map_err(|error| Error::Io {
        path: dest.display().to_string(),
        error,
    })
}

/// Forwards hf-hub's download events to a progress bar.
struct HfProgress(indicatif::ProgressBar);

impl hf_hub::progress::ProgressHandler for HfProgress {
    fn on_progress(&self, event: &hf_hub::progress::ProgressEvent) {
        use hf_hub::progress::{DownloadEvent, ProgressEvent};
        if let ProgressEvent::Download(d) = event {
            match d {
                DownloadEvent::Start { total_bytes, .. } => self.0.set_length(*total_bytes),
                DownloadEvent::Progress { files } => {
                    let done: u64 = files.iter().map(|f| f.bytes_completed).sum();
                    self.0.set_position(done);
                }
                DownloadEvent::AggregateProgress {
                    bytes_completed,
                    total_bytes,
                    ..
                } => {
                    self.0.set_length(*total_bytes);
                    self.0.set_position(*bytes_completed);
                }
                DownloadEvent::Complete => self.0.finish_and_clear(),
            }
        }
    }
}

fn fetch_hf(hf: &crate::registry::HfFile, offline: bool, progress: bool) -> Result<PathBuf> {
    let resource = format!("hf://{}@{}/{}", hf.repo, hf.revision, hf.file);
    let fail = |problem: String| Error::Download {
        resource: resource.clone(),
        problem,
    };
    let (owner, name) = hf
        .repo
        .split_once('/')
        .ok_or_else(|| fail("repo must be owner/name".into()))?;
    let client = hf_hub::HFClient::new().map_err(|e| fail(e.to_string()))?;
    let pb = bar(0, &hf.file, progress && !offline);
    let handler: std::sync::Arc<dyn hf_hub::progress::ProgressHandler> =
        std::sync::Arc::new(HfProgress(pb));
    let result = runtime()?.block_on(
        client
            .model(owner, name)
            .download_file()
            .filename(hf.file.clone())
            .revision(hf.revision.clone())
            .local_files_only(offline)
            .progress(hf_hub::progress::Progress::from(handler))
            .send(),
    );
    result.map_err(|e| match e {
        hf_hub::HFError::LocalEntryNotFound { .. } => fail("not in the Hugging Face cache".into()),
        e => fail(e.to_string()),
    })
}

/// Deletes a file hf-hub cached (the blob and the snapshot link to it).
fn remove_hf_file(path: &Path) {
    if let Ok(blob) = std::fs::canonicalize(path) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
}

fn md5_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|error| Error::Io {
        path: path.display().to_string(),
        error,
    })?;
    let mut h = md5::Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|error| Error::Io {
            path: path.display().to_string(),
            error,
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks a file against the source's checksum (sha256, md5, or a sha256 prefix). A source
/// without one is accepted as is.
pub fn verify(path: &Path, source: &Source) -> Result<()> {
    let mismatch = |kind: &'static str, expected: &str, actual: String| Error::Checksum {
        path: path.display().to_string(),
        kind,
        expected: expected.to_owned(),
        actual,
    };
    if let Some(want) = &source.sha256 {
        let got = sha256_file(path)?;
        if !got.eq_ignore_ascii_case(want) {
            return Err(mismatch("sha256", want, got));
        }
    } else if let Some(prefix) = &source.sha256_prefix {
        let got = sha256_file(path)?;
        if !got.starts_with(&prefix.to_ascii_lowercase()) {
            return Err(mismatch("sha256 prefix", prefix, got));
        }
    }
    if let Some(want) = &source.md5 {
        let got = md5_file(path)?;
        if !got.eq_ignore_ascii_case(want) {
            return Err(mismatch("md5", want, got));
        }
    }
    Ok(())
}
