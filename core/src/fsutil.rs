//! Files: hashing and atomic directory writes, so that a directory another process or a later
//! run reads is either complete or absent.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A file operation that failed; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// Reading, writing or renaming failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The destination exists and replacing it was not asked for.
    #[error("{}: already exists (pass --force to replace it)", path.display())]
    Exists {
        /// The destination.
        path: PathBuf,
    },
    /// The path cannot be a directory's destination.
    #[error("{}: not a directory name", path.display())]
    NotADirectoryName {
        /// The path.
        path: PathBuf,
    },
}

type Result<T, E = FsError> = std::result::Result<T, E>;

/// Maps an I/O error on `path` to [`FsError::Io`].
pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FsError + '_ {
    move |source| FsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Feeds a file to `update` in 1 MiB chunks (for digests).
pub fn for_each_chunk(path: &Path, mut update: impl FnMut(&[u8])) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            return Ok(());
        }
        update(&buf[..n]);
    }
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for_each_chunk(path, |c| h.update(c))?;
    Ok(hex(&h.finalize()))
}

/// Gives a file the permissions of a model's other files, readable by all (`rw-r--r--` on
/// Unix): for one written through a temporary file private to its owner, as the safetensors
/// crate writes weights.
pub fn readable_by_all(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(io(path))?;
    }
    Ok(())
}

/// `.NAME.SUFFIX` beside `path` (`NAME` its file name): where a file's partial download, lock
/// or temporary copy lives, hidden from listings.
pub fn hidden_sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{suffix}"))
}

/// Writes a file through `fill` on a hidden temporary beside it, then renames it into place,
/// so that `path` is either complete or untouched; the temporary is removed on failure.
pub fn write_file_atomically<E: From<FsError>>(
    path: &Path,
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let tmp = hidden_sibling(path, &format!("partial-{}", std::process::id()));
    let result = fill(&tmp).and_then(|()| Ok(std::fs::rename(&tmp, path).map_err(io(path))?));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes a directory when dropped, unless disarmed.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Whether `dir` holds a run already (`marker`, a file or directory in it, is there), and an
/// error naming the directory when it does and `resume` was not asked for: one command must
/// not overwrite another's run (`what`: `a run`, `a search`).
pub fn existing_run(
    dir: &Path,
    marker: &str,
    what: &str,
    resume: bool,
) -> std::result::Result<bool, String> {
    let exists = dir.join(marker).exists();
    if exists && !resume {
        return Err(format!(
            "{}: already holds {what} (use --resume to continue it, or another directory)",
            dir.display()
        ));
    }
    Ok(exists)
}

/// Fills a fresh directory with `fill`, then moves it to `out` in one rename, so that `out`
/// either does not exist or is complete. An existing `out` is an error unless `force`.
pub fn write_dir_atomically<E: From<FsError>>(
    out: &Path,
    force: bool,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<PathBuf, E> {
    let exists = out.exists();
    if exists && !force {
        return Err(FsError::Exists {
            path: out.to_path_buf(),
        }
        .into());
    }
    let name = out
        .file_name()
        .ok_or_else(|| FsError::NotADirectoryName {
            path: out.to_path_buf(),
        })?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    replace_dir(out, &tmp, fill)
}

/// Fills `tmp`, a fresh directory (whatever is there first is removed), with `fill`, then puts
/// it at `out` in one rename. An `out` that exists is moved aside just before and removed
/// just after, so that `out`, or its old content under a hidden name, is on disk at every
/// moment, and a `fill` that fails leaves the old `out` as it was and no `tmp`. No other
/// process may use `tmp` ([`write_dir_atomically`] names it by the process; a training run
/// holds its directory's [`Lock`]).
pub fn replace_dir<E: From<FsError>>(
    out: &Path,
    tmp: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<PathBuf, E> {
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir(tmp).map_err(io(tmp))?;
    let mut guard = TempDir(Some(tmp.to_path_buf()));
    fill(tmp)?;
    if out.exists() {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let old = out.with_file_name(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(out, &old).map_err(io(out))?;
        let _old_guard = TempDir(Some(old));
        std::fs::rename(tmp, out).map_err(io(out))?;
    } else {
        std::fs::rename(tmp, out).map_err(io(out))?;
    }
    guard.0 = None;
    Ok(out.to_path_buf())
}

/// An advisory lock that makes one process the only writer of a directory (a search, a
/// training run) or of a cache entry. It is the operating system's file lock on a `.lock`
/// file that records the holder's pid: released when the value drops or the process dies, so
/// a lock left by a killed process is taken over at once.
#[derive(Debug)]
pub struct Lock {
    _file: std::fs::File,
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error("{}: in use by process {pid} (only one process may write there at a time)", dir.display())]
    Busy {
        /// What is locked.
        dir: PathBuf,
        /// The holder's pid, as it recorded it (`?` when unreadable).
        pid: String,
    },
    /// The lock file cannot be created or locked.
    #[error(transparent)]
    Fs(#[from] FsError),
}

fn lock_file(lock: &Path) -> Result<std::fs::File> {
    if let Some(parent) = lock.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock)
        .map_err(io(lock))
}

fn record_pid(file: &mut std::fs::File, lock: &Path) -> Result<()> {
    use std::io::{Seek, Write};
    file.set_len(0).map_err(io(lock))?;
    file.seek(std::io::SeekFrom::Start(0)).map_err(io(lock))?;
    write!(file, "{}", std::process::id()).map_err(io(lock))?;
    file.flush().map_err(io(lock))
}

impl Lock {
    /// Takes the lock `DIR/.lock` for `dir`, or fails at once naming the holder.
    pub fn try_dir(dir: &Path) -> std::result::Result<Self, LockError> {
        Self::try_file(&dir.join(".lock"), dir)
    }

    /// Takes the lock file `lock` (for `what`), or fails at once naming the holder.
    pub fn try_file(lock: &Path, what: &Path) -> std::result::Result<Self, LockError> {
        let mut file = lock_file(lock)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(lock)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "?".into());
                return Err(LockError::Busy {
                    dir: what.to_path_buf(),
                    pid,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(lock)(e).into()),
        }
        record_pid(&mut file, lock)?;
        Ok(Self { _file: file })
    }

    /// Takes the lock file `lock`, waiting while another process holds it (a second download
    /// of the same file waits for the first and then uses its result).
    pub fn wait_file(lock: &Path) -> Result<Self> {
        let mut file = lock_file(lock)?;
        file.lock().map_err(io(lock))?;
        record_pid(&mut file, lock)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_made_readable_by_all_or_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let private = d.path().join("weights");
        std::fs::write(&private, b"x").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let owner_only = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(&private, owner_only).unwrap();
            readable_by_all(&private).unwrap();
            let mode = std::fs::metadata(&private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
            let missing = d.path().join("missing");
            let e = readable_by_all(&missing).unwrap_err().to_string();
            assert!(e.contains(&missing.display().to_string()), "{e}");
        }
    }

    #[test]
    fn failed_fill_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("model");
        let r = write_dir_atomically(&out, false, |tmp| {
            std::fs::write(tmp.join("half"), b"x").unwrap();
            Err(FsError::NotADirectoryName { path: "x".into() })
        });
        assert!(r.is_err());
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    /// Replacing a directory (a training run's checkpoint of the same step, a model written
    /// again) whose new content fails midway leaves the old one whole and nothing else.
    #[test]
    fn a_replacement_that_fails_midway_keeps_the_old_directory() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("step-00000010");
        write_dir_atomically(&out, false, |t| {
            std::fs::write(t.join("model.safetensors"), b"old").map_err(io(t))
        })
        .unwrap();
        let r = write_dir_atomically(&out, true, |t| {
            std::fs::write(t.join("model.safetensors"), b"new, half written").map_err(io(t))?;
            Err(FsError::NotADirectoryName { path: "x".into() })
        });
        assert!(r.is_err());
        assert_eq!(
            std::fs::read(out.join("model.safetensors")).unwrap(),
            b"old"
        );
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn existing_dir_needs_force() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("model");
        write_dir_atomically(&out, false, |t| {
            std::fs::write(t.join("a"), b"1").map_err(io(t))
        })
        .unwrap();
        assert!(matches!(
            write_dir_atomically::<FsError>(&out, false, |_| Ok(())),
            Err(FsError::Exists { .. })
        ));
        write_dir_atomically(&out, true, |t| {
            std::fs::write(t.join("b"), b"2").map_err(io(t))
        })
        .unwrap();
        assert!(out.join("b").exists() && !out.join("a").exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_directory_has_one_writer_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let first = Lock::try_dir(d.path()).unwrap();
        match Lock::try_dir(d.path()) {
            Err(LockError::Busy { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(first);
        Lock::try_dir(d.path()).unwrap();
    }

    #[test]
    fn atomic_file_writes_leave_the_old_file_or_the_new_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.txt");
        write_file_atomically::<FsError>(&p, |t| std::fs::write(t, b"one").map_err(io(t))).unwrap();
        let r = write_file_atomically(&p, |t| {
            std::fs::write(t, b"half").map_err(io(t))?;
            Err(FsError::NotADirectoryName { path: t.into() })
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        assert_eq!(hidden_sibling(&p, "lock"), d.path().join(".f.txt.lock"));
    }

    #[test]
    fn sha256_of_abc() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
