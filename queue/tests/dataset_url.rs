//! A dataset referenced by URL: downloaded from a local HTTP server into the cache once,
//! digested, and refused when the server's files change.

use nasnet_queue::DatasetRef;
use nasnet_testsupport::http::{Route, Server};

#[test]
fn a_url_dataset_is_downloaded_once_and_checked() {
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    let server = Server::start();
    for (i, n) in names.iter().enumerate() {
        server.route(
            &format!("/fm/{n}"),
            Route::File(format!("file {i}").into_bytes()),
        );
    }
    let spec = format!("fashion-mnist:{}/fm/", server.base());

    // The controller's cache and a worker's.
    let (controller, worker) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let r = DatasetRef::new(&spec, controller.path()).unwrap();
    assert_eq!(server.requests(), 4);
    let local = r.resolve(worker.path()).unwrap();
    assert_eq!(server.requests(), 8);
    let dir = local.strip_prefix("fashion-mnist:").unwrap();
    assert!(dir.starts_with(worker.path().to_str().unwrap()), "{local}");
    for (i, n) in names.iter().enumerate() {
        let got = std::fs::read(std::path::Path::new(dir).join(n)).unwrap();
        assert_eq!(got, format!("file {i}").into_bytes());
    }
    // Cached: no second download.
    assert_eq!(r.resolve(worker.path()).unwrap(), local);
    assert_eq!(server.requests(), 8);

    // The server's copy changed: a fresh worker downloads it and refuses it.
    server.route(&format!("/fm/{}", names[0]), Route::File(b"other".to_vec()));
    let fresh = tempfile::tempdir().unwrap();
    let e = r.resolve(fresh.path()).unwrap_err().to_string();
    assert!(e.contains("not the search's dataset"), "{e}");

    // A missing file names the URL and leaves no partial directory.
    server.route(&format!("/fm/{}", names[3]), Route::Status(404));
    let empty = tempfile::tempdir().unwrap();
    let e = r.resolve(empty.path()).unwrap_err().to_string();
    assert!(e.contains(names[3]) && e.contains("404"), "{e}");
    let left: Vec<_> = std::fs::read_dir(empty.path().join("datasets"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
