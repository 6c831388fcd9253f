//! Pulling a registry entry: download the upstream file (Hugging Face Hub through `hf-hub`, or
//! plain URLs trying mirrors in order), verify its checksum before anything reads it, convert
//! it once into `$NASNET_HOME/models/<id>/<version>/`, written atomically.
//!
//! `hf` sources live in the Hugging Face cache (`HF_HOME`, `HF_HUB_CACHE`; `HF_ENDPOINT` and
//! `HF_TOKEN` are honoured); `url` sources in `$NASNET_HOME/downloads/`. A transfer is written
//! to a `.partial` file and renamed only once complete and verified, so an interrupted
//! download never counts as a file; a complete one is removed once converted (the model
//! directory holds the weights). Offline (`--offline` or `HF_HUB_OFFLINE=1`), nothing
//! touches the network and a missing piece is named. Without a network, a pull fails fast:
//! each URL and hub file is tried twice, sources stop being tried once none could be reached
//! for 20 s, and the error says that the network could not be reached.

use std::path::{Path, PathBuf};

use crate::import::{ImportOptions, import};
use crate::registry::{Entry, Format, Source, is_url};
use crate::{Error, Result};
use nasnet_core::meta::{self, ModelMeta};
use nasnet_fetch::sha256_file;

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
    nasnet_core::cache::is_complete(&entry.cache_dir(home))
}

/// A model directory, or a zoo reference (`ID[@VERSION]`) resolved in `registry` and pulled
/// into the cache under `home` on first use (saying so on stderr when `opts.progress`).
pub fn locate(
    model: &str,
    registry: &crate::registry::Registry,
    home: &Path,
    opts: &PullOptions,
) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if model.contains(['/', '\\']) || path.exists() {
        return Err(Error::Invalid {
            path: model.to_owned(),
            problem: "not a model directory".into(),
        });
    }
    let entry = registry.resolve(model)?;
    let offline = opts.offline || offline_from_env();
    if opts.progress && !offline && !is_cached(entry, home) {
        eprintln!("pulling {} (first use)", entry.spec());
    }
    pull(entry, home, opts)
}

/// How long a pull goes on trying sources while none could be connected to.
const UNREACHABLE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Makes sure `entry` is converted in the cache and returns its model directory.
pub fn pull(entry: &Entry, home: &Path, opts: &PullOptions) -> Result<PathBuf> {
    let dir = entry.cache_dir(home);
    if is_cached(entry, home) && !opts.force {
        return Ok(dir);
    }
    // One pull of an entry at a time: a second process waits here, then finds the first's
    // result in the cache.
    let _lock =
        nasnet_core::fsutil::Lock::wait_file(&nasnet_core::fsutil::hidden_sibling(&dir, "lock"))?;
    if is_cached(entry, home) && !opts.force {
        return Ok(dir);
    }
    let offline = opts.offline || offline_from_env();
    let mut failures = vec![];
    // Whether every source failed to connect (no network): then the error says so, and once
    // that has gone on for UNREACHABLE_DEADLINE the sources left are not tried (a network that
    // drops packets makes each connection wait out its timeout).
    let mut unreachable = true;
    let start = std::time::Instant::now();
    for source in &entry.sources {
        if unreachable && !failures.is_empty() && start.elapsed() > UNREACHABLE_DEADLINE {
            failures.push(format!(
                "{} more source(s) not tried after {} s without a connection",
                entry.sources.len() - failures.len(),
                UNREACHABLE_DEADLINE.as_secs()
            ));
            break;
        }
        if source.format == Format::Nasnet {
            match fetch_model_dir(source, &dir, offline, opts.progress) {
                Ok(()) => return Ok(dir),
                Err(e @ Error::Fetch(nasnet_fetch::Error::Checksum { .. })) => return Err(e),
                Err(e) => {
                    unreachable &= e.is_unreachable();
                    failures.push(e.to_string());
                    continue;
                }
            }
        }
        let file = match fetch(source, home, offline, opts.progress) {
            Ok(f) => f,
            Err(e @ Error::Fetch(nasnet_fetch::Error::Checksum { .. })) => return Err(e),
            Err(e) => {
                unreachable &= e.is_unreachable();
                failures.push(e.to_string());
                continue;
            }
        };
        let import_opts = ImportOptions {
            name: entry.spec(),
            config: entry.config_for(source),
            from: source.format.importer(),
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
        // The model directory is complete and verified: the weights live on in it, so the
        // converted download goes (a transfer cut short stays as its `.partial` and resumes).
        // Files of the Hugging Face cache are left alone: other programs share that cache.
        if file.starts_with(home.join("downloads")) {
            let _ = std::fs::remove_file(&file);
        }
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
    if unreachable && !failures.is_empty() {
        return Err(Error::Unreachable(format!(
            "{}: the network could not be reached: {}",
            entry.spec(),
            failures.join("; ")
        )));
    }
    Err(Error::Download {
        resource: entry.spec(),
        problem: format!("no source could be fetched: {}", failures.join("; ")),
    })
}

/// Copies a published model directory into the cache at `dir`: every listed file from the
/// first location that has them all, each verified against its sha256, then `model.json`
/// checked against the weights. The directory appears complete or not at all.
fn fetch_model_dir(source: &Source, dir: &Path, offline: bool, progress: bool) -> Result<()> {
    let mut failures = vec![];
    let mut unreachable = true;
    for location in &source.url {
        if offline && is_url(location) {
            failures.push(format!("{location}: not fetched offline"));
            continue;
        }
        let result = nasnet_core::fsutil::write_dir_atomically(dir, true, |tmp| -> Result<()> {
            for (name, sha256) in &source.files {
                let dest = tmp.join(name);
                let origin = format!("{}/{name}", location.trim_end_matches('/'));
                if is_url(location) {
                    // Verified before it gets its name.
                    nasnet_fetch::download_checked(&origin, &dest, progress, |t| {
                        check_sha256(t, sha256, &origin)
                    })?;
                    continue;
                }
                if location.starts_with(crate::bundled::SCHEME) {
                    let bytes =
                        crate::bundled::file(location, name).ok_or_else(|| Error::Invalid {
                            path: origin.clone(),
                            problem: "not bundled in this build".into(),
                        })?;
                    std::fs::write(&dest, bytes).map_err(|error| Error::Io {
                        path: dest.display().to_string(),
                        error,
                    })?;
                } else {
                    std::fs::copy(&origin, &dest).map_err(|error| Error::Io {
                        path: origin.clone(),
                        error,
                    })?;
                }
                check_sha256(&dest, sha256, &origin)?;
            }
            let origin = format!("{}/{}", location.trim_end_matches('/'), meta::META_FILE);
            let json = tmp.join(meta::META_FILE);
            let text = std::fs::read_to_string(&json).map_err(|error| Error::Io {
                path: origin.clone(),
                error,
            })?;
            let m = ModelMeta::from_json(&text, &origin).map_err(|e| Error::Invalid {
                path: origin.clone(),
                problem: e.to_string(),
            })?;
            let weights = tmp.join(&m.weights.file);
            if !crate::registry::is_plain_file_name(&m.weights.file)
                || sha256_file(&weights).ok().as_deref() != Some(m.weights.sha256.as_str())
            {
                return Err(Error::Invalid {
                    path: origin,
                    problem: format!(
                        "its weights file {} is not among the published files or differs from the sha256 it records",
                        m.weights.file
                    ),
                });
            }
            if let Some(nnef) = &m.nnef {
                let path = tmp.join(meta::NNEF_FILE);
                if nnef.file != meta::NNEF_FILE
                    || sha256_file(&path).ok().as_deref() != Some(nnef.sha256.as_str())
                {
                    return Err(Error::Invalid {
                        path: origin,
                        problem: format!(
                            "its NNEF file {} is not among the published files or differs from the sha256 it records",
                            nnef.file
                        ),
                    });
                }
            }
            Ok(())
        });
        match result {
            Ok(_) => return Ok(()),
            Err(e @ Error::Fetch(nasnet_fetch::Error::Checksum { .. })) => return Err(e),
            Err(e) => {
                unreachable &= e.is_unreachable();
                failures.push(e.to_string());
            }
        }
    }
    let problem = failures.join("; ");
    Err(if offline {
        Error::Offline(problem)
    } else if unreachable && !failures.is_empty() {
        Error::Unreachable(problem)
    } else {
        Error::Download {
            resource: "model directory".into(),
            problem,
        }
    })
}

/// Checks `path` against `want`; a mismatch names `shown` (the file as the user knows it).
fn check_sha256(path: &Path, want: &str, shown: &str) -> nasnet_fetch::Result<()> {
    let got = sha256_file(path)?;
    if got.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(nasnet_fetch::Error::Checksum {
            path: shown.to_owned(),
            kind: "sha256",
            expected: want.to_owned(),
            actual: got,
        })
    }
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
    let mut unreachable = true;
    for url in &source.url {
        match download(url, &downloads.join(name(url)), source, progress) {
            Ok(()) => return Ok(downloads.join(name(url))),
            Err(e @ Error::Fetch(nasnet_fetch::Error::Checksum { .. })) => return Err(e),
            Err(e) => {
                unreachable &= e.is_unreachable();
                failures.push(e.to_string());
            }
        }
    }
    if unreachable && !failures.is_empty() {
        return Err(Error::Unreachable(failures.join("; ")));
    }
    Err(Error::Offline(failures.join("; ")))
}

/// Downloads `url` to `dest` through a `.partial` file, verifying length and checksum first.
fn download(url: &str, dest: &Path, source: &Source, progress: bool) -> Result<()> {
    Ok(nasnet_fetch::download_checked(
        url,
        dest,
        progress,
        |tmp| check(tmp, source),
    )?)
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
    // The downloads' timeouts, and one retry: hf-hub's own five would make a pull without
    // a network wait for each of them.
    let policy = nasnet_fetch::Policy::from_env();
    let http = policy.client().map_err(|e| fail(e.to_string()))?;
    let client = hf_hub::HFClientBuilder::new()
        .client(http)
        .retry_max_attempts(policy.retries.min(1))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let pb = nasnet_fetch::bar(0, &hf.file, progress && !offline);
    let handler: std::sync::Arc<dyn hf_hub::progress::ProgressHandler> =
        std::sync::Arc::new(HfProgress(pb));
    let result = nasnet_fetch::block_on(
        client
            .model(owner, name)
            .download_file()
            .filename(hf.file.clone())
            .revision(hf.revision.clone())
            .local_files_only(offline)
            .progress(hf_hub::progress::Progress::from(handler))
            .send(),
    )?;
    result.map_err(|e| match e {
        hf_hub::HFError::LocalEntryNotFound { .. } => fail("not in the Hugging Face cache".into()),
        hf_hub::HFError::Request { source, .. } if source.is_connect() => {
            Error::Unreachable(format!(
                "{resource}: cannot connect: {}",
                nasnet_fetch::root_cause(&source)
            ))
        }
        e => fail(nasnet_fetch::describe(&e)),
    })
}

/// Deletes a file hf-hub cached (the blob and the snapshot link to it).
fn remove_hf_file(path: &Path) {
    if let Ok(blob) = std::fs::canonicalize(path) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
}

/// Checks a file against the source's checksum (sha256, md5, or a sha256 prefix). A source
/// without one is accepted as is.
pub fn verify(path: &Path, source: &Source) -> Result<()> {
    Ok(check(path, source)?)
}

fn check(path: &Path, source: &Source) -> nasnet_fetch::Result<()> {
    let mismatch =
        |kind: &'static str, expected: &str, actual: String| nasnet_fetch::Error::Checksum {
            path: path.display().to_string(),
            kind,
            expected: expected.to_owned(),
            actual,
        };
    if let Some(want) = &source.sha256 {
        check_sha256(path, want, &path.display().to_string())?;
    } else if let Some(prefix) = &source.sha256_prefix {
        let got = sha256_file(path)?;
        if !got.starts_with(&prefix.to_ascii_lowercase()) {
            return Err(mismatch("sha256 prefix", prefix, got));
        }
    }
    if let Some(want) = &source.md5 {
        let got = nasnet_fetch::md5_file(path)?;
        if !got.eq_ignore_ascii_case(want) {
            return Err(mismatch("md5", want, got));
        }
    }
    Ok(())
}
