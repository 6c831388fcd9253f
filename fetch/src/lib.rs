//! Downloads: a URL to a file, through a `.partial` file that is checked (length, then the
//! caller's checksum) before it gets its final name, so a file under its final name is always
//! complete. Used by the zoo for model weights and by the queue for datasets; it knows nothing
//! of either.

use std::io::Write;
use std::path::{Path, PathBuf};

use md5::Digest as _;
use nasnet_core::fsutil::FsError;

pub use nasnet_core::fsutil::sha256_file;

/// Errors of a download; each names the URL or the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local file operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The transfer failed (connection, HTTP status, short body).
    #[error("{url}: {problem}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        problem: String,
    },
    /// The file's content is not what was expected; the download was deleted.
    #[error(
        "{path}: checksum mismatch: expected {kind} {expected}, got {actual}; the download was deleted"
    )]
    Checksum {
        /// The file or URL.
        path: String,
        /// `sha256`, `sha256 prefix` or `md5`.
        kind: &'static str,
        /// The expected digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
}

/// The result of a download.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| {
        FsError::Io {
            path: path.to_path_buf(),
            source,
        }
        .into()
    }
}

/// A single-threaded async runtime for one blocking call.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io(Path::new("async runtime")))?;
    Ok(rt.block_on(f))
}

/// A byte-count progress bar labelled `what`, hidden unless `show`.
pub fn bar(total: u64, what: &str, show: bool) -> indicatif::ProgressBar {
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

/// Downloads `url` to `dest` through a `.partial` file, so that `dest` is complete or absent;
/// the caller checks the contents.
pub fn download_url(url: &str, dest: &Path, progress: bool) -> Result<()> {
    download_checked(url, dest, progress, |_| Ok(()))
}

/// The temporary name a download of `dest` is written under by this process.
fn partial_path(dest: &Path) -> PathBuf {
    dest.with_file_name(format!(
        ".{}.partial-{}",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ))
}

/// Downloads `url` to `dest` through a `.partial` file; `check` sees the complete file before
/// it is renamed, and a failed check deletes it (a checksum error then names the URL).
pub fn download_checked(
    url: &str,
    dest: &Path,
    progress: bool,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let fail = |problem: String| Error::Download {
        url: url.to_owned(),
        problem,
    };
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = partial_path(dest);
    let result = block_on(async {
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
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        let mut written = 0u64;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    f.write_all(&c).map_err(io(&tmp))?;
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
        f.sync_all().map_err(io(&tmp))
    })?;
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
    std::fs::rename(&tmp, dest).map_err(io(dest))
}

/// The lowercase hex md5 of a file (some upstream weights publish only that).
pub fn md5_file(path: &Path) -> Result<String> {
    let mut h = md5::Md5::new();
    nasnet_core::fsutil::for_each_chunk(path, |c| h.update(c))?;
    Ok(nasnet_core::fsutil::hex(&h.finalize()))
}
