//! Downloads: a URL to a file, through a `.partial` file that is checked (length, then the
//! caller's checksum) before it gets its final name, so a file under its final name is always
//! complete. Connections and reads time out, failed transfers are retried with exponential
//! backoff and resumed with HTTP `Range` where the server allows, and one process at a time
//! downloads a file ([`Policy`]). A connection that cannot be made at all (no network, a
//! refused port, a name that does not resolve) is tried once more, not as often: it fails
//! fast, as [`Error::Unreachable`]. Used by the zoo for model weights and by the queue for
//! datasets; it knows nothing of either.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use md5::Digest as _;
use nasnet_core::fsutil::{FsError, hidden_sibling};

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
    /// No connection could be made (the name did not resolve, the connection was refused or
    /// timed out, the network is unreachable), twice.
    #[error("{url}: cannot connect: {problem}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What the system said.
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

/// How downloads behave on a bad network: timeouts and retries.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed without receiving a byte.
    pub read_timeout: Duration,
    /// Attempts after the first, on timeouts, dropped connections and 5xx answers; a 4xx
    /// answer is never retried, and a connection that cannot be made is tried once more only.
    pub retries: usize,
    /// The first wait between attempts; each next one doubles (with jitter), up to 30 s.
    pub backoff: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            retries: 4,
            backoff: Duration::from_secs(1),
        }
    }
}

impl Policy {
    /// The default, with `NASNET_HTTP_TIMEOUT` (seconds, both timeouts) and
    /// `NASNET_HTTP_RETRIES` applied when set.
    pub fn from_env() -> Self {
        let mut p = Self::default();
        let num = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        if let Some(t) = num("NASNET_HTTP_TIMEOUT").filter(|t| *t > 0.0) {
            p.connect_timeout = Duration::from_secs_f64(t);
            p.read_timeout = Duration::from_secs_f64(t);
            p.backoff = p.backoff.min(Duration::from_secs_f64(t));
        }
        if let Some(r) = num("NASNET_HTTP_RETRIES").filter(|r| *r >= 0.0) {
            p.retries = r as usize;
        }
        p
    }

    /// An HTTP client with these timeouts (for libraries that take one, such as hf-hub).
    pub fn client(&self) -> reqwest::Result<reqwest::Client> {
        reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .user_agent(concat!("nasnet/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// The waits between attempts: exponential with jitter (backon's builder).
    fn waits(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.backoff)
            .with_max_delay(Duration::from_secs(30))
            .with_max_times(self.retries)
            .with_jitter()
            .build()
    }
}

/// Downloads `url` to `dest` through a `.partial` file, so that `dest` is complete or absent;
/// the caller checks the contents.
pub fn download_url(url: &str, dest: &Path, progress: bool) -> Result<()> {
    download_checked(url, dest, progress, |_| Ok(()))
}

/// How one attempt ended, when it did not finish.
enum Attempt {
    /// Worth another try (timeout, dropped connection, 5xx), with what happened.
    Retry(String),
    /// No connection could be made: worth one more try, not more.
    Unreachable(String),
    /// Final (4xx, a local error).
    Fail(Error),
}

/// Downloads `url` to `dest` through a `.partial` file, with the [`Policy`] from the
/// environment; `check` sees the complete file before it is renamed, and a failed check
/// deletes it (a checksum error then names the URL). A second process downloading the same
/// `dest` waits for the first and uses its file.
pub fn download_checked(
    url: &str,
    dest: &Path,
    progress: bool,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    download_with(url, dest, progress, &Policy::from_env(), check)
}

/// [`download_checked`] with an explicit policy.
pub fn download_with(
    url: &str,
    dest: &Path,
    progress: bool,
    policy: &Policy,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let _lock = nasnet_core::fsutil::Lock::wait_file(&hidden_sibling(dest, "lock"))?;
    if dest.exists() {
        // Another process finished it while this one waited.
        return check(dest);
    }
    // One writer at a time (the lock above), so the partial file can be resumed.
    let tmp = hidden_sibling(dest, "partial");
    let name = url.rsplit('/').next().unwrap_or(url);
    let pb = bar(0, name, progress);
    let client = policy.client().map_err(|e| Error::Download {
        url: url.to_owned(),
        problem: format!("cannot start an HTTP client: {e}"),
    })?;
    let mut waits = policy.waits();
    let mut attempts = 0;
    let mut unreachable = 0;
    let result = block_on(async {
        loop {
            attempts += 1;
            let problem = match attempt(&client, url, &tmp, &pb).await {
                Ok(()) => return Ok(()),
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry(problem)) => problem,
                Err(Attempt::Unreachable(problem)) => {
                    // Without a network every attempt fails the same way: one more try (a
                    // moment's outage), then give up, instead of waiting out every retry.
                    unreachable += 1;
                    if unreachable > 1 {
                        return Err(Error::Unreachable {
                            url: url.to_owned(),
                            problem: format!("{problem} (tried {attempts} times)"),
                        });
                    }
                    problem
                }
            };
            let Some(wait) = waits.next() else {
                let problem = format!("{problem} (gave up after {attempts} attempts)");
                let url = url.to_owned();
                return Err(if unreachable == attempts {
                    Error::Unreachable { url, problem }
                } else {
                    Error::Download { url, problem }
                });
            };
            pb.set_message(format!("{name} (retrying)"));
            let note = format!("{url}: {problem}; retrying in {:.1} s", wait.as_secs_f64());
            if progress {
                pb.println(note);
            } else {
                tracing::warn!("{note}");
            }
            tokio::time::sleep(wait).await;
        }
    })?;
    pb.finish_and_clear();
    let result = result.and_then(|()| check(&tmp));
    if let Err(e) = result {
        if !matches!(e, Error::Download { .. }) {
            // A bad file is not resumed; a failed transfer is, by the next download.
            let _ = std::fs::remove_file(&tmp);
        }
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

/// One request: resumes `tmp` from its length with a `Range` request when it has bytes (and
/// starts over if the server ignores the range), appends what arrives, and checks the length.
async fn attempt(
    client: &reqwest::Client,
    url: &str,
    tmp: &Path,
    pb: &indicatif::ProgressBar,
) -> std::result::Result<(), Attempt> {
    let retry = |e: reqwest::Error| Attempt::Retry(describe(&e));
    let have = std::fs::metadata(tmp).map(|m| m.len()).unwrap_or(0);
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().await.map_err(|e| {
        if e.is_connect() {
            Attempt::Unreachable(root_cause(&e))
        } else {
            retry(e)
        }
    })?;
    let status = resp.status();
    if status.is_server_error() {
        return Err(Attempt::Retry(format!("HTTP {status}")));
    }
    if !status.is_success() {
        return Err(Attempt::Fail(Error::Download {
            url: url.to_owned(),
            problem: format!("HTTP {status}"),
        }));
    }
    let resumed = have > 0 && status == reqwest::StatusCode::PARTIAL_CONTENT;
    let start = if resumed { have } else { 0 };
    let total = resp.content_length().map(|n| n + start);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(tmp)
        .map_err(|e| Attempt::Fail(io(tmp)(e)))?;
    pb.set_length(total.unwrap_or(0));
    let mut written = start;
    pb.set_position(written);
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                f.write_all(&c).map_err(|e| Attempt::Fail(io(tmp)(e)))?;
                written += c.len() as u64;
                pb.set_position(written);
            }
            Ok(None) => break,
            Err(e) => {
                let _ = f.sync_all();
                return Err(Attempt::Retry(format!(
                    "transfer failed after {written} bytes: {e}"
                )));
            }
        }
    }
    if let Some(t) = total.filter(|&t| t != written) {
        let _ = f.sync_all();
        return Err(Attempt::Retry(format!(
            "transfer ended after {written} of {t} bytes"
        )));
    }
    f.sync_all().map_err(|e| Attempt::Fail(io(tmp)(e)))
}

/// An error of reqwest with its causes ("error sending request" alone does not say that the
/// connection was refused).
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}

/// The innermost cause of an error: for a connection that failed, what the system said
/// ("Connection refused (os error 111)", "failed to lookup address information: ...").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

/// The lowercase hex md5 of a file (some upstream weights publish only that).
pub fn md5_file(path: &Path) -> Result<String> {
    let mut h = md5::Md5::new();
    nasnet_core::fsutil::for_each_chunk(path, |c| h.update(c))?;
    Ok(nasnet_core::fsutil::hex(&h.finalize()))
}
