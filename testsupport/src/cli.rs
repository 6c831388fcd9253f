//! Running the `nasnet` binary from a test, and the exit rules it follows: 0 on success, 1
//! when some inputs failed but the command ran (per-item errors), 2 when the command itself
//! failed (usage or a fatal error).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test, with the environment every run gets.
#[derive(Debug, Clone)]
pub struct Nasnet {
    path: PathBuf,
    env: Vec<(String, Option<String>)>,
}

/// The `nasnet` binary of the target directory the running test belongs to (cargo builds a
/// package's binaries before its integration tests).
pub fn nasnet() -> Nasnet {
    let exe = std::env::current_exe().expect("the test's path");
    // target/PROFILE/deps/TEST-HASH -> target/PROFILE/nasnet
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary under target/PROFILE/deps");
    Nasnet::new(dir.join(format!("nasnet{}", std::env::consts::EXE_SUFFIX)))
}

impl Nasnet {
    /// The binary at `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            env: vec![],
        }
    }

    /// Sets an environment variable for every run.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        let value = value.as_ref().to_string_lossy().into_owned();
        self.env.push((key.to_owned(), Some(value)));
        self
    }

    /// Removes an environment variable for every run.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.to_owned(), None));
        self
    }

    /// A command for the binary, to add arguments to.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    /// Runs it with `args` and waits.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("nasnet runs")
    }

    /// Runs it and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        ok(&self.run(args))
    }

    /// Writes a small synthetic model directory at `out` (NASNet-A Mobile wiring, F = 8, stem
    /// multiplier 0.25) with `classes` classes, or ImageNet's 1000 when `None`.
    pub fn small_model(&self, out: &Path, classes: Option<usize>) {
        let classes = classes.map(|c| c.to_string());
        let mut args = vec![
            "synthetic",
            "--arch",
            "nasnet-a-mobile",
            "--filters",
            "8",
            "--stem-multiplier",
            "0.25",
            "-o",
            out.to_str().expect("a UTF-8 path"),
        ];
        if let Some(c) = &classes {
            args.extend(["--classes", c.as_str()]);
        }
        self.ok(&args);
    }

    /// Runs it and asserts the fatal-error rule: exit status 2 and a one-line message on
    /// stderr, which is returned.
    pub fn fails_one_line(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "expected failure: {args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        err
    }

    /// Runs it and asserts exit status 2 (the command failed); returns stderr, which may hold
    /// progress lines before the error.
    pub fn fails_with_status_2(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// Asserts that the command succeeded (showing its stderr if not); returns its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "nasnet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}
