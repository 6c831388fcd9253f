//! Downloads against a loopback server that misbehaves: it stalls, drops the connection
//! halfway, answers 5xx or 4xx; and two processes' worth of downloads of one file.

use std::path::Path;
use std::time::{Duration, Instant};

use nasnet_fetch::{Error, Policy, download_with};
use nasnet_testsupport::http::{Route, Server};

fn quick(retries: usize) -> Policy {
    Policy {
        connect_timeout: Duration::from_millis(500),
        read_timeout: Duration::from_millis(500),
        retries,
        backoff: Duration::from_millis(50),
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect()
}

#[test]
fn a_stalled_server_fails_within_the_timeout_and_names_the_url() {
    let server = Server::start();
    let url = server.route("/stall.bin", Route::Stall);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("stall.bin");
    let t = Instant::now();
    let e = download_with(&url, &dest, false, &quick(2), |_| Ok(())).unwrap_err();
    let took = t.elapsed();
    let msg = e.to_string();
    assert!(matches!(e, Error::Download { .. }), "{msg}");
    assert!(msg.contains(&url) && msg.contains("3 attempts"), "{msg}");
    // Three attempts of 0.5 s and two short waits: far from hanging.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(server.log().len(), 3, "{:?}", server.log());
    assert!(!dest.exists());
}

#[test]
fn a_dropped_transfer_resumes_with_a_range_request() {
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let server = Server::start();
    let url = server.route("/w.bin", Route::flaky(body.clone(), 1));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("w.bin");
    let want = nasnet_testsupport::sha256(&body);
    download_with(&url, &dest, false, &quick(3), |p| {
        let got = nasnet_fetch::sha256_file(p)?;
        assert_eq!(got, want, "the checksum covers the whole file");
        Ok(())
    })
    .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let log = server.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        log[1],
        format!("GET /w.bin from {}", body.len() / 2),
        "{log:?}"
    );
    assert_eq!(leftovers(dir.path()), vec!["w.bin".to_string()]);
}

#[test]
fn server_errors_are_retried_and_client_errors_are_not() {
    let server = Server::start();
    let url = server.route("/gone", Route::Status(404));
    let dir = tempfile::tempdir().unwrap();
    let e = download_with(&url, &dir.path().join("gone"), false, &quick(3), |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("404") && e.contains(&url), "{e}");
    assert_eq!(server.requests(), 1, "a 4xx is final");

    let url = server.route("/busy", Route::Status(503));
    let e = download_with(&url, &dir.path().join("busy"), false, &quick(2), |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("503") && e.contains("3 attempts"), "{e}");
    assert_eq!(server.requests(), 1 + 3);
}

#[test]
fn a_refused_connection_is_tried_twice_not_as_often_as_other_failures() {
    // A port nothing listens on once the listener is gone.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/w.pth");
    let dir = tempfile::tempdir().unwrap();
    let e = download_with(
        &url,
        &dir.path().join("w.pth"),
        false,
        &quick(4),
        |_| Ok(()),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Unreachable { .. }), "{msg}");
    assert!(
        msg.contains(&url) && msg.contains("refused") && msg.contains("tried 2 times"),
        "{msg}"
    );
    // With no retries allowed it is tried once, and still said to be unreachable.
    let e = download_with(
        &url,
        &dir.path().join("w.pth"),
        false,
        &quick(0),
        |_| Ok(()),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[test]
fn a_bad_checksum_deletes_the_download() {
    let server = Server::start();
    let url = server.route("/f", Route::File(b"payload".to_vec()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f");
    let e = download_with(&url, &dest, false, &quick(0), |p| {
        Err(Error::Checksum {
            path: p.display().to_string(),
            kind: "sha256",
            expected: "00".into(),
            actual: nasnet_fetch::sha256_file(p)?,
        })
    })
    .unwrap_err();
    assert!(
        matches!(&e, Error::Checksum { path, .. } if path == &url),
        "{e}"
    );
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}
