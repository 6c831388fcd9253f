//! End to end through the `nasnet` binary: import upstream-layout weight files with synthetic
//! weights, classify the reference inputs, compare with the reference logits; and bad input.

use nasnet_testsupport::cli::{nasnet, ok};
use nasnet_testsupport::{backends, fixture};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use nasnet_core::Preset;
use nasnet_model::init::{synthetic_input, synthetic_state_dict};

/// Calibrated statistics and expected outputs of a reference fixture.
fn reference(name: &str) -> (HashMap<String, Tensor>, HashMap<String, Tensor>) {
    let all = candle_core::safetensors::load(fixture(name), &Device::Cpu).unwrap();
    all.into_iter()
        .partition(|(k, _)| !k.starts_with("expected."))
}

/// Writes an upstream-layout safetensors file: `rename` maps canonical to upstream keys, and
/// every batch norm gets PyTorch's `num_batches_tracked`.
fn write_upstream(
    path: &Path,
    preset: Preset,
    stats: &HashMap<String, Tensor>,
    rename: impl Fn(&str) -> String,
) {
    let sd = synthetic_state_dict(&preset.config(), stats).unwrap();
    let mut out = HashMap::new();
    for (k, v) in sd {
        if let Some(bn) = k.strip_suffix(".running_var") {
            out.insert(
                rename(&format!("{bn}.num_batches_tracked")),
                Tensor::new(100i64, &Device::Cpu).unwrap(),
            );
        }
        out.insert(rename(&k), v);
    }
    candle_core::safetensors::save(&out, path).unwrap();
}

/// The logits of every JSON line, in order.
fn logits_of(
    stdout: &str,
    classes: usize,
    backend: &str,
) -> Vec<(String, Option<usize>, Vec<f32>)> {
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let mut logits = vec![f32::NAN; classes];
            let preds = v["predictions"].as_array().unwrap();
            let mut last = f64::INFINITY;
            for p in preds {
                let prob = p["probability"].as_f64().unwrap();
                assert!(prob <= last, "sorted by probability");
                last = prob;
                logits[p["index"].as_u64().unwrap() as usize] = p["logit"].as_f64().unwrap() as f32;
            }
            assert_eq!(v["backend"], backend);
            let row = v["row"].as_u64().map(|r| r as usize);
            (v["input"].as_str().unwrap().to_owned(), row, logits)
        })
        .collect()
}

fn check_rows(what: &str, got: &[f32], expected: &Tensor, row: usize) {
    let e = expected.get(row).unwrap().to_vec1::<f32>().unwrap();
    let max = e.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = got
        .iter()
        .zip(&e)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("{what} row {row}: max |Δ| = {d:.3e}, max |logit| = {max:.3}");
    assert!(d <= 1e-4 * max, "{what} row {row}: max |Δ| = {d}");
}

fn import_and_classify(preset: Preset, upstream: &Path, from: &str, expected: &Tensor) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let size = preset.config().image_size;
    ok(&nasnet().run(&[
        "import",
        "--arch",
        preset.name(),
        "--from",
        from,
        upstream.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
    ]));
    assert!(model.join("model.json").exists() && model.join("model.safetensors").exists());
    let x2 = dir.path().join("x2.npy");
    let x1 = dir.path().join("x1.npy");
    let x = synthetic_input(2, size).unwrap();
    x.write_npy(&x2).unwrap();
    x.narrow(0, 0, 1).unwrap().write_npy(&x1).unwrap();
    assert!(model.join("model.onnx").exists());
    for backend in backends() {
        let stdout = ok(&nasnet().run(&[
            "classify",
            "--model",
            model.to_str().unwrap(),
            "--backend",
            backend,
            "--top-k",
            "1000",
            "--json",
            x2.to_str().unwrap(),
            x1.to_str().unwrap(),
        ]));
        let rows = logits_of(&stdout, 1000, backend);
        assert_eq!(rows.len(), 3, "two rows of x2, one of x1");
        for (input, row, logits) in &rows {
            let what = format!("{} {from} {backend}", preset.name());
            check_rows(&format!("{what} {input}"), logits, expected, row.unwrap());
        }
    }
}

#[test]
fn mobile_from_a_cadene_file_matches_pretrainedmodels() {
    let (stats, expected) = reference("mobile.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nasnetamobile.safetensors");
    // Cadene numbers Mobile's normal cells with gaps: 0..3, 6..9, 12..15.
    write_upstream(&file, Preset::Mobile, &stats, |k| {
        let numbered = k
            .strip_prefix("cell_")
            .and_then(|rest| rest.split_once('.'));
        match numbered.and_then(|(i, tail)| Some((i.parse::<usize>().ok()?, tail))) {
            Some((i, tail)) => format!("cell_{}.{tail}", (i / 4) * 6 + i % 4),
            None => k.to_owned(),
        }
    });
    import_and_classify(
        Preset::Mobile,
        &file,
        "cadene",
        &expected["expected.tf.logits"],
    );
}

#[test]
fn large_from_a_timm_file_matches_timm() {
    let (stats, expected) = reference("large.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    write_upstream(&file, Preset::Large, &stats, str::to_owned);
    import_and_classify(
        Preset::Large,
        &file,
        "timm",
        &expected["expected.timm.logits"],
    );
}

#[test]
fn bad_weight_files_fail_cleanly() {
    let (stats, _) = reference("mobile.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("mobile.safetensors");
    write_upstream(&good, Preset::Mobile, &stats, str::to_owned);
    let bytes = std::fs::read(&good).unwrap();
    let model = dir.path().join("out");
    let out = model.to_str().unwrap();
    let import = |arch: &str, file: &Path| {
        nasnet().fails_one_line(&["import", "--arch", arch, file.to_str().unwrap(), "-o", out])
    };

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = import("nasnet-a-mobile", &truncated);
    assert!(
        e.contains("truncated.safetensors") && e.contains("safetensors"),
        "{e}"
    );

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let e = import("nasnet-a-mobile", &text);
    assert!(e.contains("notes.txt: not a weight file"), "{e}");

    let e = import("nasnet-a-large", &good);
    assert!(
        e.contains("mobile.safetensors") && e.contains("conv0.conv.weight has shape [32, 3, 3, 3]"),
        "{e}"
    );

    let mut sd = candle_core::safetensors::load(&good, &Device::Cpu).unwrap();
    sd.remove("cell_7.comb_iter_0_right.bn_sep_1.running_var");
    let missing = dir.path().join("missing.safetensors");
    candle_core::safetensors::save(&sd, &missing).unwrap();
    let e = import("nasnet-a-mobile", &missing);
    assert!(
        e.contains("missing.safetensors") && e.contains("missing key cell_7.comb_iter_0_right"),
        "{e}"
    );

    let e = import("nasnet-a-mobile", &dir.path().join("absent.pth"));
    assert!(e.contains("absent.pth"), "{e}");

    // Nothing was left behind: no output directory, no partial one.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!model.exists(), "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().contains("partial")),
        "{names:?}"
    );
}

#[test]
fn unreadable_inputs_are_reported_and_the_rest_classified() {
    let (stats, _) = reference("mobile.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mobile.safetensors");
    write_upstream(&file, Preset::Mobile, &stats, str::to_owned);
    let model = dir.path().join("m");
    ok(&nasnet().run(&[
        "import",
        "--arch",
        "nasnet-a-mobile",
        file.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
    ]));
    let bad = dir.path().join("broken.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let img = dir.path().join("gradient.png");
    image_gradient(&img);
    let out = nasnet().run(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--json",
        bad.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("broken.jpg"), "{err}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["input"], img.to_str().unwrap());
    assert_eq!(v["predictions"].as_array().unwrap().len(), 5);
    let p: f64 = v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["probability"].as_f64().unwrap())
        .sum();
    assert!(p > 0.0 && p <= 1.0 + 1e-6);
    assert!(
        v["predictions"][0]["label"]
            .as_str()
            .is_some_and(|l| !l.is_empty())
    );

    let e = nasnet().fails_one_line(&[
        "classify",
        "--model",
        dir.path().join("nowhere").to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    assert!(e.contains("nowhere"), "{e}");
}

/// A small PNG with a colour gradient.
fn image_gradient(path: &Path) {
    // A minimal uncompressed PNG writer would be long; use the runtime's image dependency via
    // a 1-channel PGM-like fallback: write a BMP by hand (BITMAPINFOHEADER, 24-bit).
    let (w, h) = (64u32, 48u32);
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut b = vec![];
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&(w as i32).to_le_bytes());
    b.extend_from_slice(&(h as i32).to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    for y in 0..h {
        for x in 0..w {
            b.extend_from_slice(&[(x * 4) as u8, (y * 5) as u8, 128]);
        }
        b.resize(b.len() + (row - w * 3) as usize, 0);
    }
    // The extension says PNG; the content is BMP: decoding goes by content.
    std::fs::write(path, b).unwrap();
}

/// A synthetic Mobile model directory and a folder of three images.
fn demo() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    ok(&nasnet().run(&[
        "synthetic",
        "--arch",
        "nasnet-a-mobile",
        "-o",
        model.to_str().unwrap(),
    ]));
    // Every file of the model is readable by all, the weights too (the safetensors crate
    // writes through a temporary file private to its owner).
    #[cfg(unix)]
    for f in ["model.safetensors", "model.onnx", "model.json"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(model.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o444, 0o444, "{f}: {mode:o}");
    }
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let cat = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images/chelsea.jpg");
    std::fs::copy(&cat, images.join("a.jpg")).unwrap();
    image_gradient(&images.join("b.bmp"));
    std::fs::copy(&cat, images.join("c.JPG")).unwrap();
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    (dir, model, images)
}

#[test]
fn directories_globs_and_batches() {
    let (_d, model, images) = demo();
    let m = model.to_str().unwrap();
    let run = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut a = vec!["classify", "--model", m, "--json"];
        a.extend_from_slice(args);
        ok(&nasnet().run(&a))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let all = run(&["--batch-size", "2", images.to_str().unwrap()]);
    let names: Vec<_> = all
        .iter()
        .map(|v| {
            v["input"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names, ["a.jpg", "b.bmp", "c.JPG"], "images only, sorted");
    // Batching does not change the answer; the two copies of the photo agree.
    let single = run(&["--batch-size", "1", images.to_str().unwrap()]);
    for (a, b) in all.iter().zip(&single) {
        let (pa, pb) = (&a["predictions"][0], &b["predictions"][0]);
        assert_eq!(pa["index"], pb["index"]);
        assert!((pa["logit"].as_f64().unwrap() - pb["logit"].as_f64().unwrap()).abs() < 1e-4);
    }
    assert_eq!(
        all[0]["predictions"][0]["index"],
        all[2]["predictions"][0]["index"]
    );
    let pattern = format!("{}/*.jpg", images.display());
    assert_eq!(run(&[&pattern]).len(), 1);
    let e = nasnet().fails_one_line(&[
        "classify",
        "--model",
        m,
        &format!("{}/*.png", images.display()),
    ]);
    assert!(e.contains("no file matches"), "{e}");
}

#[test]
fn embed_writes_npy_and_json_lines() {
    let (d, model, images) = demo();
    let m = model.to_str().unwrap();
    let npy = d.path().join("features.npy");
    ok(&nasnet().run(&[
        "embed",
        "--model",
        m,
        images.to_str().unwrap(),
        "-o",
        npy.to_str().unwrap(),
    ]));
    let t = Tensor::read_npy(&npy).unwrap();
    assert_eq!(t.dims(), &[3, 1056]);
    let jsonl = ok(&nasnet().run(&[
        "embed",
        "--model",
        m,
        "--format",
        "jsonl",
        images.to_str().unwrap(),
    ]));
    let rows: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    let first: Vec<f32> = rows[0]["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let npy_first = t.get(0).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(first.len(), 1056);
    let d = first
        .iter()
        .zip(&npy_first)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(d < 1e-6, "{d}");
    assert!(first.iter().all(|v| *v >= 0.0), "pooled after ReLU");
}

#[test]
fn unavailable_devices_and_libraries_fail_clearly() {
    let (_d, model, images) = demo();
    let m = model.to_str().unwrap();
    let img = images.join("a.jpg");
    let img = img.to_str().unwrap();
    let e = nasnet().fails_one_line(&["classify", "--model", m, "--device", "cuda", img]);
    assert!(e.contains("CPU only"), "{e}");
    let e = nasnet().fails_one_line(&[
        "classify",
        "--model",
        m,
        "--backend",
        "candle",
        "--device",
        "cuda:1",
        img,
    ]);
    assert!(e.contains("CUDA"), "{e}");
    let e = nasnet().fails_one_line(&["classify", "--model", m, "--device", "gpu", img]);
    assert!(e.contains("unknown device"), "{e}");
    // ONNX Runtime missing: the ort backend says how to install it; tract keeps working.
    let out = nasnet()
        .command()
        .args(["classify", "--model", m, "--backend", "ort", img])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8(out.stderr).unwrap();
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.contains("/nonexistent/libonnxruntime.so") && e.contains("scripts/setup.sh"),
        "{e}"
    );
    let out = nasnet()
        .command()
        .args(["classify", "--model", m, "--backend", "tract", img])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    assert!(out.status.success());
    // CUDA through ONNX Runtime without its GPU build installed.
    let out = nasnet()
        .command()
        .args([
            "classify",
            "--model",
            m,
            "--backend",
            "ort",
            "--device",
            "cuda",
            img,
        ])
        .env("NASNET_HOME", "/nonexistent-home")
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(e.contains("onnxruntime-gpu"), "{e}");
}

#[test]
fn export_writes_onnx_and_safetensors() {
    let (d, model, _) = demo();
    let m = model.to_str().unwrap();
    let onnx = d.path().join("x.onnx");
    ok(&nasnet().run(&[
        "export",
        "--model",
        m,
        "--format",
        "onnx",
        "-o",
        onnx.to_str().unwrap(),
    ]));
    // The export stands alone (the directory's model.onnx reads its weights from
    // model.safetensors): a directory with only it and model.json classifies as the model.
    let alone = d.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(&onnx, alone.join("model.onnx")).unwrap();
    std::fs::copy(model.join("model.json"), alone.join("model.json")).unwrap();
    assert!(
        std::fs::metadata(&onnx).unwrap().len()
            > std::fs::metadata(model.join("model.safetensors"))
                .unwrap()
                .len()
                / 2,
        "the weights are inside the exported file"
    );
    let cat = d.path().join("images/a.jpg");
    let top = |dir: &Path| {
        let out = nasnet().run(&[
            "classify",
            "--model",
            dir.to_str().unwrap(),
            "--backend",
            "tract",
            "--json",
            "--top-k",
            "1000",
            cat.to_str().unwrap(),
        ]);
        ok(&out);
        logits_of(&String::from_utf8(out.stdout).unwrap(), 1000, "tract")[0]
            .2
            .clone()
    };
    let (a, b) = (top(&model), top(&alone));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "max |logit difference| {worst}");
    let st = d.path().join("w.safetensors");
    ok(&nasnet().run(&[
        "export",
        "--model",
        m,
        "--format",
        "safetensors",
        "-o",
        st.to_str().unwrap(),
    ]));
    let a = candle_core::safetensors::load(&st, &Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(model.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a.keys().all(|k| b.contains_key(k)));
}

/// The CRC-32 of PNG chunks (ISO 3309), bit by bit: enough for a test file.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG whose header declares `side x side` pixels (a decompression bomb needs no more).
fn png_declaring(side: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        c.extend_from_slice(&body);
        c.extend_from_slice(&crc32(&body).to_be_bytes());
        c
    };
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn bombs_and_truncated_photos_are_errors_and_the_rest_run() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    nasnet().small_model(&model, None);
    let photo = fixture("../images/chelsea.jpg");
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &std::fs::read(&photo).unwrap()[..2000]).unwrap();
    let bomb = dir.path().join("bomb.png");
    std::fs::write(&bomb, png_declaring(100_000)).unwrap();
    let out = nasnet().run(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--json",
        cut.to_str().unwrap(),
        photo.to_str().unwrap(),
        bomb.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].contains("cut.jpg") && lines[0].contains("truncated"),
        "{err}"
    );
    assert!(
        lines[1].contains("bomb.png")
            && lines[1].contains("too large")
            && lines[1].contains("32768"),
        "{err}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "the good photo still runs: {stdout}"
    );
    assert!(stdout.contains("chelsea.jpg"));
}

#[test]
fn embed_npy_rows_map_to_inputs_when_one_fails() {
    let (d, model, images) = demo();
    let m = model.to_str().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let bad = d.path().join("bad.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    // A failing input in the middle.
    let inputs = [&files[0], &bad, &files[1]];
    let npy = d.path().join("rows.npy");
    let listing = d.path().join("rows.paths.txt");
    let mut args = vec!["embed", "--model", m, "-o", npy.to_str().unwrap()];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    let e = nasnet().fails_with_status_2(&args);
    assert!(
        e.contains("bad.jpg") && e.contains("--allow-missing"),
        "{e}"
    );
    assert!(!npy.exists() && !listing.exists(), "nothing written");

    args.push("--allow-missing");
    let out = nasnet().run(&args);
    assert_eq!(out.status.code(), Some(1), "some inputs failed");
    let t = Tensor::read_npy(&npy).unwrap();
    assert_eq!(t.dims()[0], 2);
    let names: Vec<String> = std::fs::read_to_string(&listing)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        names,
        vec![
            files[0].display().to_string(),
            files[1].display().to_string()
        ]
    );
    // Row 1 is the third input's embedding, as the listing says.
    let alone = d.path().join("alone.npy");
    ok(&nasnet().run(&[
        "embed",
        "--model",
        m,
        "-o",
        alone.to_str().unwrap(),
        files[1].to_str().unwrap(),
    ]));
    let want = Tensor::read_npy(&alone).unwrap().get(0).unwrap();
    assert!(nasnet_testsupport::max_abs_diff(&t.get(1).unwrap(), &want) < 1e-6);
}

#[test]
fn classify_writes_csv_with_synsets_and_completions_are_generated() {
    let (_d, model, images) = demo();
    let m = model.to_str().unwrap();
    let csv = ok(&nasnet().run(&[
        "classify",
        "--model",
        m,
        "--format",
        "csv",
        "--top-k",
        "3",
        images.to_str().unwrap(),
    ]));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "input,row,rank,index,label,synset,probability,logit"
    );
    assert_eq!(lines.len(), 1 + 3 * 3, "{csv}");
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(first[2], "1");
    // The demo model has ImageNet's labels, so each prediction carries its WordNet id.
    assert!(
        first[5].starts_with('n') && first[5].len() == 9,
        "{}",
        lines[1]
    );
    let json = ok(&nasnet().run(&[
        "classify",
        "--model",
        m,
        "--json",
        "--top-k",
        "1",
        images.to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(v["predictions"][0]["synset"].as_str(), Some(first[5]));
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&nasnet().run(&["completions", shell]));
        assert!(
            script.contains("classify") && script.contains("top-k"),
            "{shell}"
        );
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let (search, plot) = (tmp.path().join("search"), tmp.path().join("search.svg"));
    let (search, plot) = (search.to_str().unwrap(), plot.to_str().unwrap());
    for args in [
        vec!["models", "--offline"],
        // A search prints its report when it ends.
        vec![
            "search",
            "--strategy",
            "random",
            "--dataset",
            "synthetic:120",
            "--budget",
            "2",
            "--workers",
            "1",
            "-o",
            search,
        ],
        vec!["search", "report", search, "--plot", plot],
    ] {
        // The reader is gone before the command writes a byte (`nasnet models | head -0`).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = nasnet()
            .command()
            .args(&args)
            .stdout(writer)
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {e}", out.status);
        assert!(!e.contains("panicked"), "{args:?}: {e}");
    }
    assert!(Path::new(search).join("journal.jsonl").is_file());
}

#[test]
fn a_model_path_that_is_not_a_directory_is_named() {
    let e = nasnet().fails_one_line(&["classify", "--model", "./no/such/model", "photo.jpg"]);
    assert!(
        e.contains("./no/such/model") && e.contains("not a model directory"),
        "{e}"
    );
}

#[test]
fn verbosity_flags_and_rust_log_reach_the_libraries_diagnostics() {
    let (_d, model, images) = demo();
    let (m, img) = (model.to_str().unwrap(), images.join("a.jpg"));
    let img = img.to_str().unwrap();
    let stderr = |n: nasnet_testsupport::cli::Nasnet, args: &[&str]| {
        let out = n.run(args);
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    // Quiet by default and with -q; -v shows info-level events; RUST_LOG picks targets.
    let plain = ["classify", "--model", m, img];
    assert_eq!(stderr(nasnet(), &plain), "");
    if nasnet_testsupport::ort_installed() {
        let e = stderr(
            nasnet(),
            &["-v", "classify", "--model", m, "--backend", "ort", img],
        );
        assert!(
            e.contains("INFO") && e.contains("Loaded ONNX Runtime"),
            "{e}"
        );
        let e = stderr(
            nasnet().env("RUST_LOG", "ort::load_dynamic=info"),
            &["classify", "--model", m, "--backend", "ort", img],
        );
        assert!(e.contains("Loaded ONNX Runtime"), "{e}");
        let e = stderr(
            nasnet(),
            &[
                "-q",
                "-v",
                "classify",
                "--model",
                m,
                "--backend",
                "ort",
                img,
            ],
        );
        assert_eq!(e, "", "--quiet wins");
    }
    // Errors still show with --quiet.
    let out = nasnet().run(&["-q", "classify", "--model", m, "/no/such.jpg"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("/no/such.jpg")
    );
}

#[test]
fn recursive_directories_and_lists_of_files() {
    let (d, model, images) = demo();
    let m = model.to_str().unwrap();
    let nested = images.join("more/deeper");
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::copy(images.join("a.jpg"), nested.join("d.jpg")).unwrap();
    let inputs = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["classify", "--model", m, "--format", "json"];
        a.extend_from_slice(args);
        ok(&nasnet().run(&a))
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["input"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let dir = images.to_str().unwrap();
    assert_eq!(inputs(&[dir]).len(), 3, "only the top level");
    let all = inputs(&["--recursive", dir]);
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(
        all.iter().any(|p| p.ends_with("more/deeper/d.jpg")),
        "{all:?}"
    );
    // A list: one path per line, blank lines skipped; `-` reads standard input.
    let list = d.path().join("list.txt");
    let (a, dd) = (images.join("a.jpg"), nested.join("d.jpg"));
    std::fs::write(&list, format!("{}\n\n{}\n", a.display(), dd.display())).unwrap();
    let listed = inputs(&["--files-from", list.to_str().unwrap()]);
    assert_eq!(listed, [a.display().to_string(), dd.display().to_string()]);
    let mut child = nasnet()
        .command()
        .args(["classify", "--model", m, "--files-from", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{}", a.display()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("a.jpg"));
    let e = nasnet().fails_with_status_2(&["classify", "--model", m, "--files-from", "/no/list"]);
    assert!(e.contains("/no/list"), "{e}");
}

/// A Python with ONNX Runtime, NumPy and Pillow: `$NASNET_PYTHON`, the environment
/// `scripts/setup.sh --ort` makes, or `python3`.
fn python_with_onnxruntime() -> Option<PathBuf> {
    let home = std::env::var_os("NASNET_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/nasnet")));
    let candidates = std::env::var_os("NASNET_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain(home.map(|h| h.join("venv-ort/bin/python")))
        .chain([PathBuf::from("python3")]);
    for python in candidates {
        let works = std::process::Command::new(&python)
            .args(["-c", "import onnxruntime, numpy, PIL"])
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            return Some(python);
        }
    }
    None
}

/// The README's Python section: `examples/python/classify.py` runs `model.onnx` with ONNX
/// Runtime and the transform `model.json` records, and predicts what `nasnet classify` does.
#[test]
fn the_python_example_predicts_what_the_cli_does() {
    let Some(python) = python_with_onnxruntime() else {
        assert!(
            std::env::var_os("NASNET_REQUIRE_ORT").is_none(),
            "NASNET_REQUIRE_ORT is set but no Python has onnxruntime, numpy and PIL"
        );
        eprintln!("SKIPPED: no Python with onnxruntime, numpy and Pillow (scripts/setup.sh --ort)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    nasnet().small_model(&model, Some(10));
    let images = [
        fixture("../images/chelsea.jpg"),
        fixture("../images/portrait.jpg"),
    ];
    let images: Vec<&str> = images.iter().map(|p| p.to_str().unwrap()).collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/classify.py");
    let mut args = vec![script.to_str().unwrap(), model.to_str().unwrap()];
    args.extend(&images);
    args.extend(["--top-k", "10", "--json"]);
    let out = std::process::Command::new(&python)
        .args(&args)
        .output()
        .unwrap();
    let py = ok(&out);
    let mut cli_args = vec![
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--top-k",
        "10",
        "--json",
    ];
    cli_args.extend(&images);
    let cli = ok(&nasnet().run(&cli_args));
    let logits = |line: &str| -> Vec<f64> {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut l = vec![0.0; 10];
        for p in v["predictions"].as_array().unwrap() {
            l[p["index"].as_u64().unwrap() as usize] = p["logit"].as_f64().unwrap();
        }
        l
    };
    let (py, cli): (Vec<&str>, Vec<&str>) = (py.lines().collect(), cli.lines().collect());
    assert_eq!(py.len(), 2, "{py:?}");
    assert_eq!(cli.len(), 2, "{cli:?}");
    for (a, b) in py.iter().zip(&cli) {
        let (a, b) = (logits(a), logits(b));
        let range =
            b.iter().cloned().fold(f64::MIN, f64::max) - b.iter().cloned().fold(f64::MAX, f64::min);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        // PIL's resize and ours differ by well under 1/255 per pixel on average.
        assert!(worst <= 0.02 * range.max(1e-6), "python {a:?}\ncli {b:?}");
    }
}

/// The README's first command: the bundled Fashion-MNIST model classifies the example images
/// (named by their true class) correctly, offline, from an empty cache.
#[test]
fn the_bundled_model_classifies_the_example_images() {
    let home = tempfile::tempdir().unwrap();
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/images");
    let out = ok(&nasnet().env("NASNET_HOME", home.path()).run(&[
        "classify",
        "--offline",
        "--model",
        "nasnet-a-fashion-mnist",
        "--top-k",
        "1",
        "--json",
        images.to_str().unwrap(),
    ]));
    let mut seen = 0;
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let input = v["input"].as_str().unwrap();
        let name = Path::new(input).file_stem().unwrap().to_str().unwrap();
        // CLASS-INDEX.png, CLASS as the label in lowercase with '-' for ' ' and '/'.
        let truth = name.rsplit_once('-').unwrap().0;
        let label = v["predictions"][0]["label"].as_str().unwrap();
        assert_eq!(
            label.to_lowercase().replace([' ', '/'], "-"),
            truth,
            "{line}"
        );
        seen += 1;
    }
    assert_eq!(seen, 12, "{out}");
}

#[test]
fn nasnet_jpeg_decoder_chooses_the_decoder_and_a_bad_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    nasnet().small_model(&model, None);
    let photo = fixture("../images/chelsea.jpg");
    let args = [
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--json",
        photo.to_str().unwrap(),
    ];
    for decoder in ["libjpeg-turbo", "rust"] {
        let out = nasnet().env("NASNET_JPEG_DECODER", decoder).run(&args);
        ok(&out);
        assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
    }
    let out = nasnet().env("NASNET_JPEG_DECODER", "bogus").run(&args);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("NASNET_JPEG_DECODER=bogus"), "{err}");
}
