//! `nasnet search` through the binary: killed with SIGKILL mid-search and resumed, no finished
//! child is lost or trained again; the report summarizes and plots.

use nasnet_testsupport::cli::{nasnet, ok};

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// `(id, reward)` of every result line, in journal order.
fn results(dir: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "result")
        .map(|v| (v["id"].as_u64().unwrap(), v["reward"].as_f64().unwrap()))
        .collect()
}

#[test]
fn a_killed_search_resumes_without_losing_or_repeating_a_child() {
    for strategy in ["rl", "evolution"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("search");
        let d = dir.to_str().unwrap();
        let args = [
            "search",
            "--strategy",
            strategy,
            "--dataset",
            "synthetic:120",
            "--budget",
            "24",
            "--workers",
            "2",
            "--quiet",
            "-o",
            d,
        ];
        let mut child = nasnet().command().args(args).spawn().unwrap();
        let t0 = Instant::now();
        while results(&dir).len() < 6 {
            assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let before = results(&dir);
        assert!(before.len() < 24, "killed too late to test anything");
        let out = nasnet().command().args(args).output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
        let mut resume = args.to_vec();
        resume.push("--resume");
        let out = nasnet().command().args(&resume).output().unwrap();
        ok(&out);
        let after = results(&dir);
        let mut count: HashMap<u64, usize> = HashMap::new();
        for (id, _) in &after {
            *count.entry(*id).or_default() += 1;
        }
        assert_eq!(count.len(), 24, "{strategy}: every child finished");
        assert!(
            count.values().all(|&n| n == 1),
            "{strategy}: a child ran twice"
        );
        assert_eq!(
            &after[..before.len()],
            &before[..],
            "{strategy}: finished children kept"
        );
        let report = String::from_utf8(out.stdout).unwrap();
        assert!(report.contains("24 children"), "{report}");
        assert!(dir.join("search.svg").is_file());
        assert!(dir.join("best_genotype.json").is_file());
        // The best cell trains: `nasnet train --genotype` takes the exported file.
        let g = std::fs::read_to_string(dir.join("best_genotype.json")).unwrap();
        assert!(g.contains("\"normal\"") && g.contains("\"reduction\""));
    }
}

#[test]
fn the_report_compares_strategies() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = vec![];
    for strategy in ["random", "evolution", "rl"] {
        let dir = tmp.path().join(strategy);
        let out = nasnet()
            .command()
            .args([
                "search",
                "--strategy",
                strategy,
                "--dataset",
                "synthetic",
                "--budget",
                "30",
                "--quiet",
                "-o",
                dir.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        ok(&out);
        dirs.push(dir);
    }
    let plot = tmp.path().join("figure6.svg");
    let mut args = vec![
        "search".to_string(),
        "report".into(),
        "--plot".into(),
        plot.display().to_string(),
    ];
    args.extend(dirs.iter().map(|d| d.display().to_string()));
    let out = nasnet().command().args(&args).output().unwrap();
    let text = ok(&out);
    for s in [
        "random search",
        "evolution search",
        "rl search",
        "top-25 mean",
    ] {
        assert!(text.contains(s), "{text}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    for legend in ["random", "evolution", "rl"] {
        assert!(svg.lines().any(|l| l.trim() == legend), "{legend} missing");
    }
    // A trained model from the best genotype.
    let best = dirs[1].join("best_genotype.json");
    let data = tmp.path().join("none");
    let out = nasnet()
        .command()
        .args([
            "train",
            "--genotype",
            best.to_str().unwrap(),
            "--dataset",
            &format!("fashion-mnist:{}", data.display()),
            "-o",
            tmp.path().join("r").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    // The genotype is read first: a valid one gets as far as the (missing) dataset, a broken
    // one is named.
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("train-images-idx3-ubyte"), "{e}");
    let broken = tmp.path().join("broken.json");
    std::fs::write(&broken, "{\"normal\": 3}").unwrap();
    let out = nasnet()
        .command()
        .args([
            "train",
            "--genotype",
            broken.to_str().unwrap(),
            "--dataset",
            &format!("fashion-mnist:{}", data.display()),
            "-o",
            tmp.path().join("r").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("broken.json: not a genotype"), "{e}");
    let e = String::from_utf8_lossy(
        &nasnet()
            .command()
            .args(["search", "report", tmp.path().to_str().unwrap()])
            .output()
            .unwrap()
            .stderr,
    )
    .into_owned();
    assert!(e.contains("no search journal"), "{e}");
}

#[test]
fn bad_search_and_eval_requests_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let run = |args: &[&str]| {
        let out = nasnet().command().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let d = dir.to_str().unwrap();
    let e = run(&["search", "--dataset", "synthetic", "--resume", "-o", d]);
    assert!(e.contains("no search to resume"), "{e}");
    let e = run(&["search", "--dataset", "synthetic:soon", "-o", d]);
    assert!(e.contains("expected synthetic:MILLISECONDS"), "{e}");
    let e = run(&["search", "--dataset", "synthetics", "-o", d]);
    assert!(
        e.contains("synthetics: expected synthetic or synthetic:MILLISECONDS"),
        "{e}"
    );
    let e = run(&["search", "--dataset", "synthetic"]);
    assert!(e.contains("needs --dataset and -o"), "{e}");
    // More class folders than the model has classes.
    let model = tmp.path().join("model");
    let out = nasnet()
        .command()
        .args([
            "synthetic",
            "--arch",
            "nasnet-a-cifar",
            "--filters",
            "8",
            "--classes",
            "2",
            "-o",
        ])
        .arg(&model)
        .output()
        .unwrap();
    ok(&out);
    let folder = tmp.path().join("folder");
    for class in ["a", "b", "c"] {
        std::fs::create_dir_all(folder.join(class)).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images/chelsea.jpg"),
            folder.join(class).join("x.jpg"),
        )
        .unwrap();
    }
    let e = run(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--dataset",
        &format!("folder:{}", folder.display()),
    ]);
    assert!(
        e.contains("3 class folders, but the model has 2 classes"),
        "{e}"
    );
}

#[test]
fn a_second_search_on_a_busy_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("search");
    let d = dir.to_str().unwrap();
    let args = [
        "search",
        "--strategy",
        "random",
        "--dataset",
        "synthetic:120",
        "--budget",
        "16",
        "--workers",
        "1",
        "--quiet",
        "-o",
        d,
    ];
    let mut first = nasnet().command().args(args).spawn().unwrap();
    let t0 = Instant::now();
    while results(&dir).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut resume = args.to_vec();
    resume.push("--resume");
    let second = nasnet().command().args(&resume).output().unwrap();
    let e = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{e}");
    assert!(
        e.contains(d) && e.contains(&format!("process {}", first.id())),
        "names the directory and the holder: {e}"
    );
    assert!(first.wait().unwrap().success());
    let mut count: HashMap<u64, usize> = HashMap::new();
    for (id, _) in results(&dir) {
        *count.entry(id).or_default() += 1;
    }
    assert_eq!(count.len(), 16);
    assert!(count.values().all(|&n| n == 1), "a child recorded twice");
}
