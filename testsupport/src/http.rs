//! A loopback HTTP/1.1 server for download tests: routes set (and replaced) while it runs,
//! each request logged, and faults on demand (an HTTP status, a body cut in half).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a path answers.
#[derive(Clone)]
pub enum Route {
    /// A Hugging Face `resolve` answer: the body with the ETag and commit headers the hub
    /// client reads.
    Hf(Vec<u8>),
    /// A plain file.
    File(Vec<u8>),
    /// An empty answer with this status.
    Status(u16),
    /// Announces the whole length, sends half, closes.
    Truncated(Vec<u8>),
    /// Accepts the request and never answers (until the test process ends).
    Stall,
    /// Cuts its first `n` answers in half (the count is shared between clones), then serves
    /// the file, honouring `Range: bytes=N-` with `206 Partial Content`.
    Flaky(Vec<u8>, Arc<AtomicUsize>),
}

impl Route {
    /// A [`Route::Flaky`] that cuts its first `failures` answers.
    pub fn flaky(body: Vec<u8>, failures: usize) -> Self {
        Route::Flaky(body, Arc::new(AtomicUsize::new(failures)))
    }
}

/// The server; it runs on 127.0.0.1 until the test process ends.
pub struct Server {
    base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    log: Arc<Mutex<Vec<String>>>,
}

fn reply(s: &mut TcpStream, head: bool, status: &str, headers: String, body: &[u8]) {
    let _ = write!(s, "HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n");
    if !head {
        let _ = s.write_all(body);
    }
}

fn answer(stream: TcpStream, routes: &Mutex<HashMap<String, Route>>, log: &Mutex<Vec<String>>) {
    let Ok(read) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut range_start: Option<usize> = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            range_start = v.trim().trim_end_matches('-').parse().ok();
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    log.lock().unwrap().push(match range_start {
        Some(r) => format!("{method} {path} from {r}"),
        None => format!("{method} {path}"),
    });
    let route = routes.lock().unwrap().get(path).cloned();
    let mut s = stream;
    let head = method == "HEAD";
    let length = |b: &[u8]| format!("Content-Length: {}\r\n", b.len());
    match route {
        Some(Route::Hf(b)) => {
            let h = format!(
                "{}ETag: \"{}\"\r\nX-Repo-Commit: {}\r\n",
                length(&b),
                crate::sha256(&b),
                "0123456789abcdef0123456789abcdef01234567"
            );
            reply(&mut s, head, "200 OK", h, &b);
        }
        Some(Route::File(b)) => reply(&mut s, head, "200 OK", length(&b), &b),
        Some(Route::Truncated(b)) => reply(&mut s, head, "200 OK", length(&b), &b[..b.len() / 2]),
        Some(Route::Stall) => std::thread::sleep(std::time::Duration::from_secs(3600)),
        Some(Route::Flaky(b, failures)) => {
            let cut = failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if cut {
                reply(&mut s, head, "200 OK", length(&b), &b[..b.len() / 2]);
            } else if let Some(r) = range_start.filter(|&r| r < b.len()) {
                let h = format!(
                    "{}Content-Range: bytes {r}-{}/{}\r\n",
                    length(&b[r..]),
                    b.len() - 1,
                    b.len()
                );
                reply(&mut s, head, "206 Partial Content", h, &b[r..]);
            } else {
                reply(&mut s, head, "200 OK", length(&b), &b);
            }
        }
        Some(Route::Status(c)) => reply(
            &mut s,
            head,
            &format!("{c} Error"),
            "Content-Length: 0\r\n".into(),
            b"",
        ),
        None => reply(
            &mut s,
            head,
            "404 Not Found",
            "Content-Length: 0\r\n".into(),
            b"",
        ),
    }
}

impl Server {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<Mutex<HashMap<String, Route>>> = Default::default();
        let log: Arc<Mutex<Vec<String>>> = Default::default();
        let (r, l) = (routes.clone(), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || answer(stream, &r, &l));
            }
        });
        Self { base, routes, log }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sets (or replaces) what `path` answers; returns its URL.
    pub fn route(&self, path: &str, r: Route) -> String {
        self.routes.lock().unwrap().insert(path.to_owned(), r);
        format!("{}{path}", self.base)
    }

    /// Requests served so far.
    pub fn requests(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Every request so far, as `METHOD PATH`.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}
