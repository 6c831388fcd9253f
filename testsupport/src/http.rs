//! A loopback HTTP/1.1 server for download tests: routes set (and replaced) while it runs,
//! each request logged, and faults on demand (an HTTP status, a body cut in half).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
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
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    log.lock().unwrap().push(format!("{method} {path}"));
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
