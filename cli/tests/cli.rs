//! End to end through the `nasnet` binary: import upstream-layout weight files with synthetic
//! weights, classify the reference inputs, compare with the reference logits; and bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use nasnet_search::Preset;
use nasnet_search::init::{synthetic_input, synthetic_state_dict};

fn nasnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nasnet"))
        .args(args)
        .output()
        .expect("nasnet runs")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "nasnet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/reference")
        .join(name)
}

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
fn logits_of(stdout: &str, classes: usize) -> Vec<(String, Option<usize>, Vec<f32>)> {
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
            assert_eq!(v["backend"], "candle");
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
    ok(&nasnet(&[
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
    let stdout = ok(&nasnet(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        "--backend",
        "candle",
        "--top-k",
        "1000",
        "--json",
        x2.to_str().unwrap(),
        x1.to_str().unwrap(),
    ]));
    let rows = logits_of(&stdout, 1000);
    assert_eq!(rows.len(), 3, "two rows of x2, one of x1");
    for (input, row, logits) in &rows {
        let what = format!("{} {from}", preset.name());
        check_rows(&format!("{what} {input}"), logits, expected, row.unwrap());
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

/// Runs a failing command; returns its single stderr line.
fn fails(args: &[&str]) -> String {
    let out = nasnet(args);
    assert!(!out.status.success(), "expected failure: {args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
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
        fails(&["import", "--arch", arch, file.to_str().unwrap(), "-o", out])
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
    ok(&nasnet(&[
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
    let out = nasnet(&[
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

    let e = fails(&[
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
