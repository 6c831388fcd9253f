//! A dataset referenced by URL: downloaded from a local HTTP server into the cache once,
//! digested, and refused when the server's files change.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use nasnet_queue::DatasetRef;

/// Serves `files` (path -> bytes) over HTTP/1.1 on 127.0.0.1; counts requests.
fn serve(files: Arc<Mutex<HashMap<String, Vec<u8>>>>, hits: Arc<Mutex<usize>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
            }
            *hits.lock().unwrap() += 1;
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let body = files.lock().unwrap().get(&path).cloned();
            let mut s = stream;
            let _ = match body {
                Some(b) => write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    b.len()
                )
                .and_then(|()| s.write_all(&b)),
                None => write!(
                    s,
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
            };
        }
    });
    base
}

#[test]
fn a_url_dataset_is_downloaded_once_and_checked() {
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Default::default();
    for (i, n) in names.iter().enumerate() {
        files
            .lock()
            .unwrap()
            .insert(format!("/fm/{n}"), format!("file {i}").into_bytes());
    }
    let hits = Arc::new(Mutex::new(0));
    let base = serve(files.clone(), hits.clone());
    let spec = format!("fashion-mnist:{base}/fm/");

    // The controller's cache and a worker's.
    let (controller, worker) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let r = DatasetRef::new(&spec, controller.path()).unwrap();
    assert_eq!(*hits.lock().unwrap(), 4);
    let local = r.resolve(worker.path()).unwrap();
    assert_eq!(*hits.lock().unwrap(), 8);
    let dir = local.strip_prefix("fashion-mnist:").unwrap();
    assert!(dir.starts_with(worker.path().to_str().unwrap()), "{local}");
    for (i, n) in names.iter().enumerate() {
        let got = std::fs::read(std::path::Path::new(dir).join(n)).unwrap();
        assert_eq!(got, format!("file {i}").into_bytes());
    }
    // Cached: no second download.
    assert_eq!(r.resolve(worker.path()).unwrap(), local);
    assert_eq!(*hits.lock().unwrap(), 8);

    // The server's copy changed: a fresh worker downloads it and refuses it.
    files
        .lock()
        .unwrap()
        .insert(format!("/fm/{}", names[0]), b"other".to_vec());
    let fresh = tempfile::tempdir().unwrap();
    let e = r.resolve(fresh.path()).unwrap_err().to_string();
    assert!(e.contains("not the search's dataset"), "{e}");

    // A missing file names the URL and leaves no partial directory.
    files.lock().unwrap().remove(&format!("/fm/{}", names[3]));
    let empty = tempfile::tempdir().unwrap();
    let e = r.resolve(empty.path()).unwrap_err().to_string();
    assert!(e.contains(names[3]) && e.contains("404"), "{e}");
    let left: Vec<_> = std::fs::read_dir(empty.path().join("datasets"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
