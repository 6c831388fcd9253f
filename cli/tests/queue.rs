//! `nasnet search --redis` with `nasnet worker` processes on a real Redis server (started here
//! on 127.0.0.1 from the `redis-server` binary): a worker killed mid-job has its job taken
//! over, a controller killed mid-search resumes, and every job finishes exactly once.

use nasnet_testsupport::cli::{nasnet, ok};

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private `redis-server` on a free port, without persistence, stopped on drop.
struct Redis {
    child: Child,
    url: String,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn spawn(port: u16, dir: &Path) -> Child {
        Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn wait_ready(&self) {
        let t0 = Instant::now();
        loop {
            let ping = redis::Client::open(self.url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server (SIGKILL: it loses everything) and starts an empty one on its port.
    fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port, self.dir.path());
        self.wait_ready();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Redis, or says why the test is skipped (never in CI, which sets
/// NASNET_REQUIRE_REDIS).
fn redis() -> Option<Redis> {
    let found = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("NASNET_REQUIRE_REDIS").is_none(),
            "NASNET_REQUIRE_REDIS is set but redis-server is not installed"
        );
        eprintln!("SKIPPED: redis-server is not installed (scripts/setup.sh installs it)");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let child = Redis::spawn(port, dir.path());
    let r = Redis {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
        port,
        dir,
    };
    r.wait_ready();
    Some(r)
}

fn query<T: redis::FromRedisValue>(url: &str, cmd: &mut redis::Cmd) -> T {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    cmd.query(&mut c).unwrap()
}

/// A worker whose stderr goes to a file.
fn worker(url: &str, queue: &str, name: &str, log: &Path, timeout: &str) -> Child {
    nasnet()
        .command()
        .args(["worker", "--redis", url, "--queue", queue, "--name", name])
        .args(["--visibility-timeout", timeout])
        .stderr(File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn stop(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// Every journal line of a kind, as JSON.
fn records(dir: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// Each proposed child has exactly one result; the workers (their logs) trained each job
/// once: as many answers as jobs published; and the search deleted every result it took
/// from the result stream.
fn assert_each_child_finished_once(
    dir: &Path,
    url: &str,
    queue: &str,
    budget: usize,
    worker_logs: &[&Path],
) {
    let results = assert_each_child_has_one_result(dir, budget);
    let published: usize = query(url, redis::cmd("HLEN").arg(format!("{queue}:published")));
    let trained = results.iter().filter(|r| r["cached"] != true).count();
    assert_eq!(published, trained, "jobs published vs children trained");
    let answered: usize = worker_logs
        .iter()
        .map(|l| {
            std::fs::read_to_string(l)
                .unwrap()
                .lines()
                .filter(|l| l.contains(" done: reward "))
                .count()
        })
        .sum();
    assert_eq!(
        answered, published,
        "a job was answered twice (trained again)"
    );
    assert_results_trimmed(url, queue);
}

/// The journal has one result per proposed child, and no failure.
fn assert_each_child_has_one_result(dir: &Path, budget: usize) -> Vec<serde_json::Value> {
    let proposals = records(dir, "proposal");
    let results = records(dir, "result");
    assert_eq!(proposals.len(), budget);
    let mut per_id: HashMap<u64, usize> = HashMap::new();
    for r in &results {
        *per_id.entry(r["id"].as_u64().unwrap()).or_default() += 1;
    }
    assert_eq!(per_id.len(), budget, "children without a result");
    assert!(
        per_id.values().all(|&n| n == 1),
        "a child finished twice: {per_id:?}"
    );
    assert!(records(dir, "failed").is_empty());
    results
}

fn assert_results_trimmed(url: &str, queue: &str) {
    let left: usize = query(url, redis::cmd("XLEN").arg(format!("{queue}:results")));
    assert_eq!(
        left, 0,
        "results the search took are deleted from the stream"
    );
}

/// Waits for a process to exit, failing the test if it takes longer than `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(t0.elapsed() < limit, "the process hung");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn search_args<'a>(url: &'a str, queue: &'a str, dir: &'a str, budget: &'a str) -> Vec<&'a str> {
    vec![
        "search",
        "--strategy",
        "random",
        "--dataset",
        "synthetic:1500",
        "--budget",
        budget,
        "--workers",
        "2",
        "--redis",
        url,
        "--queue",
        queue,
        "--seed",
        "5",
        "--quiet",
        "-o",
        dir,
    ]
}

#[test]
fn a_worker_killed_mid_job_has_its_job_taken_over() {
    let Some(r) = redis() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("search");
    let (log_a, log_b) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let a = worker(&r.url, "q1", "a", &log_a, "2");
    let b = worker(&r.url, "q1", "b", &log_b, "2");
    let d = dir.to_str().unwrap();
    let mut search = nasnet()
        .command()
        .args(search_args(&r.url, "q1", d, "6"))
        .spawn()
        .unwrap();
    // Each synthetic child takes 1.5 s: kill worker a just after it starts one.
    wait_for("worker a to start a job", Duration::from_secs(60), || {
        std::fs::read_to_string(&log_a).is_ok_and(|l| l.contains(" started"))
    });
    stop(a);
    let status = wait_exit(&mut search, Duration::from_secs(120));
    stop(b);
    assert!(status.success());
    let log = std::fs::read_to_string(&log_b).unwrap();
    assert!(log.contains("(taken over)"), "worker b's log:\n{log}");
    assert_each_child_finished_once(&dir, &r.url, "q1", 6, &[&log_a, &log_b]);
}

#[test]
fn a_killed_controller_resumes_and_no_job_runs_twice() {
    let Some(r) = redis() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("search");
    let (log_a, log_b) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let a = worker(&r.url, "q2", "a", &log_a, "10");
    let b = worker(&r.url, "q2", "b", &log_b, "10");
    let d = dir.to_str().unwrap();
    let args = search_args(&r.url, "q2", d, "8");
    let mut search = nasnet().command().args(&args).spawn().unwrap();
    wait_for("two results", Duration::from_secs(60), || {
        records(&dir, "result").len() >= 2
    });
    search.kill().unwrap(); // SIGKILL, with two children on the workers
    search.wait().unwrap();
    let before = records(&dir, "result").len();
    assert!(before < 8, "killed too late to test anything");
    let mut resume = args.clone();
    resume.push("--resume");
    let out = nasnet().command().args(&resume).output().unwrap();
    stop(a);
    stop(b);
    ok(&out);
    assert_each_child_finished_once(&dir, &r.url, "q2", 8, &[&log_a, &log_b]);
}

#[test]
fn a_search_trains_real_children_on_workers_that_check_the_dataset() {
    let data = PathBuf::from("/usr/share/datasets/fashion-mnist");
    if !data.is_dir() {
        assert!(
            std::env::var_os("NASNET_REQUIRE_DATASET").is_none(),
            "NASNET_REQUIRE_DATASET is set but {} does not exist",
            data.display()
        );
        eprintln!("SKIPPED: {} is not installed", data.display());
        return;
    }
    let Some(r) = redis() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("search");
    let w = worker(&r.url, "q3", "w", &tmp.path().join("w.log"), "30");
    let spec = format!("fashion-mnist:{}", data.display());
    let out = nasnet()
        .command()
        .args(["search", "--strategy", "random", "--dataset", &spec])
        .args(["--budget", "2", "--cells", "1", "--filters", "4"])
        .args(["--train-subset", "64", "--val-count", "64"])
        .args(["--redis", &r.url, "--queue", "q3", "--quiet", "-o"])
        .arg(&dir)
        .output()
        .unwrap();
    stop(w);
    ok(&out);
    let results = records(&dir, "result");
    assert_eq!(results.len(), 2);
    for r in &results {
        let reward = r["reward"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&reward), "{r}");
        assert!(r["params"].as_u64().unwrap() > 1000, "{r}");
    }
    // The job carried the dataset's checksum, which the worker verified.
    let job: Vec<redis::Value> = query(
        &r.url,
        redis::cmd("XRANGE")
            .arg("q3:jobs")
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1),
    );
    let text = format!("{job:?}");
    assert!(text.contains("sha256"), "{text}");
}

#[test]
fn an_unreachable_redis_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // Exit code 2 and the message on stderr.
    let dir = tmp.path().join("s");
    let e = nasnet().fails_with_status_2(&search_args(
        "redis://127.0.0.1:1/",
        "q",
        dir.to_str().unwrap(),
        "2",
    ));
    assert!(e.contains("Redis at redis://127.0.0.1:1/"), "{e}");
    let e = nasnet().fails_with_status_2(&["worker", "--redis", "redis://127.0.0.1:1/"]);
    assert!(e.contains("Redis at redis://127.0.0.1:1/"), "{e}");
    let e = nasnet().fails_with_status_2(&[
        "worker",
        "--redis",
        "redis://x/",
        "--visibility-timeout",
        "0",
    ]);
    assert!(e.contains("--visibility-timeout must be positive"), "{e}");
    let mut args = search_args("redis://x/", "q", dir.to_str().unwrap(), "2");
    args.extend(["--visibility-timeout", "0"]);
    let e = nasnet().fails_with_status_2(&args);
    assert!(e.contains("--visibility-timeout must be positive"), "{e}");
    // The dataset is checked before Redis is reached.
    let d = dir.to_str().unwrap();
    let e = nasnet().fails_with_status_2(&[
        "search",
        "--dataset",
        "mnist:/no/such/dir",
        "--redis",
        "redis://127.0.0.1:1/",
        "-o",
        d,
    ]);
    assert!(e.contains("/no/such/dir: no such directory"), "{e}");
}

/// Jobs no worker can run: one whose only worker died (past --max-deliveries) and one whose
/// dataset differs from the worker's copy are answered as failed; a stream entry that is not
/// a job is dropped.
#[test]
fn jobs_nobody_can_run_are_answered_failed_and_garbage_is_dropped() {
    let Some(r) = redis() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("x.bin"), b"the worker's copy").unwrap();
    let job = |id: &str, dataset: serde_json::Value| {
        serde_json::json!({
            "id": id,
            "genotype": nasnet_search::Genotype::nasnet_a(),
            "budget": {
                "dataset": "synthetic:0", "cells": 1, "filters": 4, "epochs": 1,
                "train_subset": null, "val_count": 10, "batch_size": 8, "lr": 0.05, "seed": 0
            },
            "dataset": dataset,
        })
        .to_string()
    };
    let orphan = job("s/orphan", serde_json::Value::Null);
    let other = serde_json::json!({"spec": format!("folder:{}", data.display()), "sha256": "0"});
    let mismatched = job("s/mismatched", other);
    let _: () = query(
        &r.url,
        redis::cmd("XGROUP").arg(&["CREATE", "q4:jobs", "workers", "0", "MKSTREAM"][..]),
    );
    for (field, value) in [
        ("job", orphan.as_str()),
        ("junk", "x"),
        ("job", &mismatched),
    ] {
        let _: String = query(
            &r.url,
            redis::cmd("XADD").arg(&["q4:jobs", "*", field, value][..]),
        );
    }
    // A worker that takes the first job and dies.
    let _: redis::Value = query(
        &r.url,
        redis::cmd("XREADGROUP").arg(
            &[
                "GROUP", "workers", "ghost", "COUNT", "1", "STREAMS", "q4:jobs", ">",
            ][..],
        ),
    );
    let log = tmp.path().join("w.log");
    let w = nasnet()
        .command()
        .args(["worker", "--redis", &r.url, "--queue", "q4", "--name", "w"])
        .args(["--visibility-timeout", "0.3", "--max-deliveries", "1"])
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for("two answers", Duration::from_secs(30), || {
        query::<usize>(&r.url, redis::cmd("XLEN").arg("q4:results")) >= 2
    });
    stop(w);
    let results: Vec<(String, Vec<(String, String)>)> = query(
        &r.url,
        redis::cmd("XRANGE").arg(&["q4:results", "-", "+"][..]),
    );
    assert_eq!(results.len(), 2, "{results:?}");
    for (_, fields) in &results {
        let text = &fields.iter().find(|(k, _)| k == "result").unwrap().1;
        assert!(text.contains("given up after 1 deliveries"), "{text}");
    }
    let pending: (usize, redis::Value, redis::Value, redis::Value) = query(
        &r.url,
        redis::cmd("XPENDING").arg(&["q4:jobs", "workers"][..]),
    );
    assert_eq!(pending.0, 0, "every entry acknowledged");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("is not a job; dropped"), "{log}");
    assert!(
        log.contains("job s/mismatched left for another worker")
            && log.contains("not the search's dataset"),
        "{log}"
    );
}

#[test]
fn a_redis_restart_without_persistence_loses_no_child() {
    let Some(mut r) = redis() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("search");
    let (log_a, log_b) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let a = worker(&r.url, "q5", "a", &log_a, "2");
    let b = worker(&r.url, "q5", "b", &log_b, "2");
    let d = dir.to_str().unwrap();
    let mut args = search_args(&r.url, "q5", d, "8");
    args.extend(["--visibility-timeout", "2"]);
    let mut search = nasnet().command().args(&args).spawn().unwrap();
    wait_for("two results", Duration::from_secs(60), || {
        records(&dir, "result").len() >= 2
    });
    // Jobs in the stream, jobs on the workers, results not yet read: all gone.
    r.restart_empty();
    let status = wait_exit(&mut search, Duration::from_secs(120));
    stop(a);
    stop(b);
    assert!(status.success());
    assert_each_child_has_one_result(&dir, 8);
    // A job a worker was running when Redis lost it was published again and may have run
    // twice: a second answer that came after the search had finished is all that may be left.
    let hashes: Vec<String> = records(&dir, "proposal")
        .iter()
        .map(|p| p["hash"].as_str().unwrap().to_string())
        .collect();
    let left: Vec<(String, Vec<(String, String)>)> = query(
        &r.url,
        redis::cmd("XRANGE").arg(&["q5:results", "-", "+"][..]),
    );
    for (_, fields) in &left {
        let text = &fields.iter().find(|(k, _)| k == "result").unwrap().1;
        let job: serde_json::Value = serde_json::from_str(text).unwrap();
        let job = job["job"].as_str().unwrap();
        assert!(
            hashes.iter().any(|h| job.ends_with(&format!("/{h}"))),
            "a result the search did not take: {text}"
        );
    }
}

#[test]
fn a_second_live_worker_with_the_same_name_is_refused() {
    let Some(r) = redis() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("a.log");
    let first = worker(&r.url, "q6", "a", &log, "1");
    wait_for("the first worker", Duration::from_secs(30), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("waiting for jobs"))
    });
    let args = ["worker", "--redis", &r.url, "--queue", "q6", "--name", "a"];
    let e = nasnet().fails_with_status_2(&args);
    assert!(
        e.contains("a live worker is already named \"a\"") && e.contains("q6"),
        "{e}"
    );
    // Another queue, or another name, is fine; and once the first is dead (its name not
    // renewed for the visibility timeout), the name is free again.
    let other = tmp.path().join("b.log");
    let second = worker(&r.url, "q6", "b", &other, "1");
    stop(first);
    std::thread::sleep(Duration::from_millis(1500));
    let log2 = tmp.path().join("a2.log");
    let again = worker(&r.url, "q6", "a", &log2, "1");
    wait_for("the name taken again", Duration::from_secs(30), || {
        std::fs::read_to_string(&log2).is_ok_and(|l| l.contains("waiting for jobs"))
    });
    stop(again);
    stop(second);
    assert!(
        std::fs::read_to_string(&other)
            .unwrap()
            .contains("waiting for jobs")
    );
}
