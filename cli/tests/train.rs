//! `nasnet train` and `nasnet eval` end to end on small datasets the tests write: the run
//! directory is a model every backend serves, runs stop and resume, fine-tuning replaces the
//! classifier, bad datasets fail with the file named.

use nasnet_testsupport::backends;
use nasnet_testsupport::cli::{nasnet, ok};

use std::path::Path;

/// A 28x28 grey image of class `label`: a bright bar whose position is the class, on noise.
fn pattern(label: usize, seed: u64) -> Vec<u8> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut img = vec![0u8; 28 * 28];
    for v in img.iter_mut() {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
        *v = (s >> 58) as u8 * 4;
    }
    for y in 0..28 {
        for x in label * 9..label * 9 + 8 {
            img[y * 28 + x] = 230;
        }
    }
    img
}

/// Writes Fashion-MNIST-layout IDX files (classes 0..3 only) with `n` training and `m` test
/// images.
fn write_idx(dir: &Path, n: usize, m: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, count) in [("train", n), ("t10k", m)] {
        let mut images = vec![0, 0, 8, 3];
        let mut labels = vec![0, 0, 8, 1];
        images.extend((count as u32).to_be_bytes());
        images.extend(28u32.to_be_bytes());
        images.extend(28u32.to_be_bytes());
        labels.extend((count as u32).to_be_bytes());
        for i in 0..count {
            let label = i % 3;
            images.extend(pattern(
                label,
                i as u64 + if prefix == "t10k" { 10_000 } else { 0 },
            ));
            labels.push(label as u8);
        }
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

/// A 24-bit BMP of a grey image (any extension: decoding goes by content).
fn write_bmp(path: &Path, grey: &[u8], w: u32, h: u32) {
    let row = (w * 3).div_ceil(4) * 4;
    let mut b = vec![];
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&(54 + row * h).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&(w as i32).to_le_bytes());
    b.extend_from_slice(&(-(h as i32)).to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    for y in 0..h {
        for x in 0..w {
            let v = grey[(y * w + x) as usize];
            b.extend_from_slice(&[v, v, v]);
        }
        b.resize(b.len() + (row - w * 3) as usize, 0);
    }
    std::fs::write(path, b).unwrap();
}

fn train_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--dataset",
        data,
        "--cells",
        "1",
        "--filters",
        "4",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--val-count",
        "12",
        "--lr",
        "0.05",
        "--quiet",
        "--png",
        "-o",
        out,
    ]
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn a_training_run_is_a_model_every_backend_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("fmnist");
    write_idx(&data_dir, 96, 30);
    let data = format!("fashion-mnist:{}", data_dir.display());
    let run = tmp.path().join("run");
    let run_s = run.to_str().unwrap();
    ok(&nasnet().run(&train_args(&data, run_s)));
    for f in [
        "model.json",
        "model.safetensors",
        "model.onnx",
        "metrics.csv",
        "steps.csv",
        "curves.svg",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(run.join("curves.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("validation"), "{svg}");
    let png = std::fs::read(run.join("curves.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "curves.png is not a PNG"
    );
    // steps.csv: the toy's short epochs are logged at every step, up to the end of epoch 2.
    let steps = std::fs::read_to_string(run.join("steps.csv")).unwrap();
    let rows: Vec<&str> = steps.lines().skip(1).collect();
    let epochs = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let last = epochs.lines().last().unwrap().split(',').nth(1).unwrap();
    assert_eq!(rows.len().to_string(), last, "a row per step: {steps}");
    assert_eq!(
        rows.last().unwrap().split(',').nth(1),
        Some("2.0000"),
        "{steps}"
    );
    let meta = json(&std::fs::read_to_string(run.join("model.json")).unwrap());
    assert_eq!(meta["labels"][0], "T-shirt/top");
    // model.json records how the model was trained, for `nasnet publish`.
    let training = &meta["training"];
    assert!(
        training["command"]
            .as_str()
            .unwrap()
            .starts_with("nasnet train --dataset fashion-mnist:"),
        "{training}"
    );
    assert_eq!(training["config"]["epochs"], 2, "{training}");
    assert!(
        training["test_top1"].is_number() && training["test_count"] == 30,
        "{training}"
    );
    assert_eq!(meta["labels"].as_array().unwrap().len(), 10);
    assert_eq!(meta["architecture"]["cells"], 1);
    assert!(meta["architecture"]["genotype"]["normal"]["blocks"].is_array());
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let result = json(&std::fs::read_to_string(run.join("result.json")).unwrap());
    let trained_top1 = result["test_top1"].as_f64().unwrap();
    println!("toy test top-1 after 2 epochs: {trained_top1}");

    // `nasnet eval` serves the same accuracy the trainer measured, on every backend.
    for backend in backends() {
        let out = ok(&nasnet().run(&[
            "eval",
            "--model",
            run_s,
            "--dataset",
            &data,
            "--backend",
            backend,
            "--json",
        ]));
        let v = json(&out);
        assert_eq!(v["count"], 30);
        let top1 = v["top1"].as_f64().unwrap();
        assert!(v["top5"].as_f64().unwrap() >= top1);
        assert!(
            (top1 - trained_top1).abs() <= 1.0 / 30.0 + 1e-9,
            "{backend}: {top1} vs {trained_top1}"
        );
        if backend == "candle" {
            assert_eq!(top1, trained_top1);
        }
    }
    // And `nasnet classify` takes an image file.
    let img = tmp.path().join("bar.png");
    write_bmp(&img, &pattern(2, 7), 28, 28);
    for backend in backends() {
        let out = ok(&nasnet().run(&[
            "classify",
            "--model",
            run_s,
            "--backend",
            backend,
            "--json",
            img.to_str().unwrap(),
        ]));
        let v = json(out.lines().next().unwrap());
        assert_eq!(v["predictions"].as_array().unwrap().len(), 5);
    }
}

#[test]
fn runs_stop_and_resume_and_refuse_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("fmnist");
    write_idx(&data_dir, 64, 9);
    let data = format!("fashion-mnist:{}", data_dir.display());
    let run = tmp.path().join("run");
    let run_s = run.to_str().unwrap();
    let mut args = train_args(&data, run_s);
    args.extend(["--max-steps", "3"]);
    ok(&nasnet().run(&args));
    assert!(
        !run.join("model.json").exists(),
        "no model before the run ends"
    );
    let e = nasnet().fails_with_status_2(&train_args(&data, run_s));
    assert!(
        e.contains("already holds a run") && e.contains("--resume"),
        "{e}"
    );
    let mut resume = train_args(&data, run_s);
    resume.push("--resume");
    let other = resume
        .iter()
        .map(|a| if *a == "0.05" { "0.1" } else { a })
        .collect::<Vec<_>>();
    let e = nasnet().fails_with_status_2(&other);
    assert!(e.contains("other training settings"), "{e}");
    // While another process writes the run, a resume is refused at once, naming it.
    let held = nasnet_core::fsutil::Lock::try_dir(&run).unwrap();
    let e = nasnet().fails_with_status_2(&resume);
    assert!(
        e.contains(run_s) && e.contains(&format!("process {}", std::process::id())),
        "{e}"
    );
    drop(held);
    ok(&nasnet().run(&resume));
    assert!(run.join("model.json").is_file());
    // The same run without interruption ends with the same weights.
    let whole = tmp.path().join("whole");
    ok(&nasnet().run(&train_args(&data, whole.to_str().unwrap())));
    assert_eq!(
        std::fs::read(run.join("model.safetensors")).unwrap(),
        std::fs::read(whole.join("model.safetensors")).unwrap()
    );
}

#[test]
fn fine_tuning_replaces_the_classifier_for_a_folder_of_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("fmnist");
    write_idx(&data_dir, 48, 6);
    let base = tmp.path().join("base");
    let base_s = base.to_str().unwrap();
    ok(&nasnet().run(&train_args(
        &format!("fashion-mnist:{}", data_dir.display()),
        base_s,
    )));
    // A folder dataset with two classes, train/ and val/.
    let folder = tmp.path().join("folder");
    for (split, count) in [("train", 16), ("val", 4)] {
        for (k, class) in ["left", "middle"].iter().enumerate() {
            let d = folder.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..count {
                write_bmp(
                    &d.join(format!("{i}.bmp")),
                    &pattern(k, i + 50 * k as u64),
                    28,
                    28,
                );
            }
        }
    }
    std::fs::write(folder.join("train/left/readme.txt"), "not an image").unwrap();
    let tuned = tmp.path().join("tuned");
    let spec = format!("folder:{}", folder.display());
    ok(&nasnet().run(&[
        "train",
        "--from",
        base_s,
        "--train",
        "head",
        "--dataset",
        &spec,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--val-count",
        "4",
        "--quiet",
        "-o",
        tuned.to_str().unwrap(),
    ]));
    let meta = json(&std::fs::read_to_string(tuned.join("model.json")).unwrap());
    assert_eq!(meta["labels"], serde_json::json!(["left", "middle"]));
    assert_eq!(meta["architecture"]["num_classes"], 2);
    let base_w =
        candle_core::safetensors::load(base.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let tuned_w =
        candle_core::safetensors::load(tuned.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    assert_eq!(tuned_w["last_linear.weight"].dims(), &[2, 96]);
    // Head-only: the body is the base model's, unchanged (running statistics included).
    for key in ["conv0.conv.weight", "cell_0.conv_1x1.bn.running_var"] {
        let d = (&base_w[key] - &tuned_w[key])
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{key}");
    }
    let out = ok(&nasnet().run(&[
        "eval",
        "--model",
        tuned.to_str().unwrap(),
        "--dataset",
        &spec,
        "--json",
    ]));
    assert_eq!(json(&out)["count"], 8);
}

#[test]
fn bad_datasets_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let e = nasnet().fails_with_status_2(&train_args(
        &format!("fashion-mnist:{}", tmp.path().display()),
        out.to_str().unwrap(),
    ));
    assert!(e.contains("train-images-idx3-ubyte"), "{e}");
    let good = tmp.path().join("good");
    write_idx(&good, 8, 2);
    let spec = format!("fashion-mnist:{}", good.display());
    let mut resume = train_args(&spec, out.to_str().unwrap());
    resume.push("--resume");
    let e = nasnet().fails_with_status_2(&resume);
    assert!(e.contains("no checkpoint to resume from"), "{e}");
    let e = nasnet().fails_with_status_2(&train_args("imagenet:/nowhere", out.to_str().unwrap()));
    assert!(e.contains("unknown dataset"), "{e}");
    let data_dir = tmp.path().join("bad");
    write_idx(&data_dir, 8, 2);
    std::fs::write(
        data_dir.join("train-images-idx3-ubyte"),
        b"\0\0\x08\x03\0\0\0\x08\0\0\0\x1c\0\0\0\x1c",
    )
    .unwrap();
    let e = nasnet().fails_with_status_2(&train_args(
        &format!("fashion-mnist:{}", data_dir.display()),
        out.to_str().unwrap(),
    ));
    assert!(e.contains("train-images-idx3-ubyte: 16 bytes"), "{e}");
    assert!(!out.join("model.json").exists());
}
