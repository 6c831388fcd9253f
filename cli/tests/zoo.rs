//! The zoo end to end against an HTTP server on 127.0.0.1 started by the tests: Hugging Face
//! resolve URLs (through hf-hub) and plain URLs serving small synthetic files, pulled through
//! a user registry. No test reaches the internet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use nasnet_core::{NetworkConfig, Preset};
use nasnet_model::init::{synthetic_input, synthetic_state_dict};
use nasnet_testsupport::cli::{Nasnet, nasnet};
use nasnet_testsupport::http::{Route, Server};
use nasnet_testsupport::{fixture, sha256, small};
use serde_json::json;

/// A sandbox: its own cache, Hugging Face home, registry, and the server as hub endpoint.
struct Env {
    dir: tempfile::TempDir,
    server: Server,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            server: Server::start(),
        }
    }

    fn registry(&self, entries: serde_json::Value) -> PathBuf {
        let p = self.dir.path().join("registry.json");
        std::fs::write(
            &p,
            json!({"format_version": 1, "models": entries}).to_string(),
        )
        .unwrap();
        p
    }

    /// The binary with this sandbox's cache, hub home and endpoint.
    fn cli(&self) -> Nasnet {
        nasnet()
            .env("NASNET_HOME", self.dir.path().join("home"))
            .env("HF_HOME", self.dir.path().join("hf"))
            .env("HF_ENDPOINT", self.server.base())
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("HF_HUB_CACHE")
            .env_remove("NASNET_REGISTRY")
            .env_remove("HF_TOKEN")
            // One retry after a short wait keeps the fault tests quick.
            .env("NASNET_HTTP_RETRIES", "1")
    }

    fn ok(&self, args: &[&str]) -> String {
        self.cli().ok(args)
    }

    fn fails(&self, args: &[&str]) -> String {
        self.cli().fails_one_line(args)
    }

    /// Logits of `nasnet classify` on the synthetic input.
    fn logits(&self, model: &str, registry: &Path, size: usize, classes: usize) -> Vec<f32> {
        let x = self.dir.path().join(format!("x{size}.npy"));
        synthetic_input(1, size).unwrap().write_npy(&x).unwrap();
        let out = self.ok(&[
            "classify",
            "--model",
            model,
            "--registry",
            registry.to_str().unwrap(),
            "--backend",
            "candle",
            "--json",
            "--top-k",
            &classes.to_string(),
            x.to_str().unwrap(),
        ]);
        logits_of(&out, classes)
    }
}

/// The logits of one `nasnet classify --json` record with every class in its top k.
fn logits_of(record: &str, classes: usize) -> Vec<f32> {
    let v: serde_json::Value = serde_json::from_str(record.trim()).unwrap();
    let mut l = vec![0f32; classes];
    for p in v["predictions"].as_array().unwrap() {
        l[p["index"].as_u64().unwrap() as usize] = p["logit"].as_f64().unwrap() as f32;
    }
    l
}

/// `nasnet publish RUN --id tiny --version VERSION --to ZOO`.
fn publish_args(run: &Path, zoo: &Path, version: &str) -> Vec<String> {
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    [
        "publish",
        &path(run),
        "--id",
        "tiny",
        "--version",
        version,
        "--to",
        &path(zoo),
    ]
    .map(String::from)
    .to_vec()
}

fn entry(id: &str, config: &NetworkConfig, source: serde_json::Value) -> serde_json::Value {
    json!({
        "id": id, "version": "1.0.0", "arch": "nasnet-a-mobile", "config": config,
        "pooling": "tf", "preprocessing": "cadene", "num_classes": config.num_classes,
        "license": "test", "sources": [source],
    })
}

#[test]
fn pull_every_upstream_format_and_match_a_direct_import() {
    let env = Env::new();
    // timm safetensors (Large layout, small width) on the hub.
    let large = small(Preset::Large, 8, 0.75, 10);
    let st = env.dir.path().join("model.safetensors");
    candle_core::safetensors::save(&synthetic_state_dict(&large, &HashMap::new()).unwrap(), &st)
        .unwrap();
    let st_bytes = std::fs::read(&st).unwrap();
    env.server.route(
        "/acme/nasnet-large-small/resolve/v1/model.safetensors",
        Route::Hf(st_bytes.clone()),
    );
    let large_timm = {
        let mut c = large.clone();
        c.pooling = nasnet_core::PoolingRule::Timm;
        c
    };
    let mut timm_entry = entry(
        "large-timm",
        &large_timm,
        json!({
        "hf": {"repo": "acme/nasnet-large-small", "revision": "v1", "file": "model.safetensors"},
        "sha256": sha256(&st_bytes), "format": "timm"}),
    );
    timm_entry["arch"] = json!("nasnet-a-large");
    timm_entry["pooling"] = json!("timm");
    // Cadene .pth files (legacy and zip) behind a first mirror that fails.
    let broken = env.server.route("/down/x.pth", Route::Status(500));
    let legacy = env.server.route(
        "/files/mobile_small_legacy.pth",
        Route::File(std::fs::read(fixture("mobile_small_legacy.pth")).unwrap()),
    );
    let zip = env.server.route(
        "/files/large_small_zip.pth",
        Route::File(std::fs::read(fixture("large_small_zip.pth")).unwrap()),
    );
    let keras_bytes = std::fs::read(fixture("keras_mobile_small.h5")).unwrap();
    let keras = env.server.route(
        "/files/keras_mobile_small.h5",
        Route::File(keras_bytes.clone()),
    );
    let mobile = small(Preset::Mobile, 8, 0.25, 10);
    let mut cadene_large = entry(
        "large-cadene",
        &large,
        json!({"url": [zip], "format": "cadene"}),
    );
    cadene_large["arch"] = json!("nasnet-a-large");
    // Keras, Large wiring (2 blocks per stage).
    let mut large2 = large.clone();
    large2.cells = 2;
    let keras_large = env.server.route(
        "/files/keras_large_small.h5",
        Route::File(std::fs::read(fixture("keras_large_small.h5")).unwrap()),
    );
    let mut keras_large_entry = entry(
        "large-keras",
        &large2,
        json!({"url": [keras_large], "format": "keras"}),
    );
    keras_large_entry["arch"] = json!("nasnet-a-large");
    // Mobile as safetensors in Cadene's layout, on the hub.
    let mst = env.dir.path().join("mobile.safetensors");
    candle_core::safetensors::save(
        &synthetic_state_dict(&mobile, &HashMap::new()).unwrap(),
        &mst,
    )
    .unwrap();
    env.server.route(
        "/acme/m/resolve/main/mobile.safetensors",
        Route::Hf(std::fs::read(&mst).unwrap()),
    );
    let registry = env.registry(json!([
        timm_entry,
        entry("mobile-cadene", &mobile, json!({"url": [broken, legacy], "format": "cadene"})),
        cadene_large,
        entry("mobile-keras", &mobile, json!({"url": [keras], "md5": md5_hex(&keras_bytes), "format": "keras"})),
        keras_large_entry,
        entry("mobile-st", &mobile, json!({"hf": {"repo": "acme/m", "revision": "main", "file": "mobile.safetensors"}, "format": "cadene"})),
    ]));
    let reg = registry.to_str().unwrap();
    let cases: [(&str, PathBuf, &str, &NetworkConfig); 6] = [
        ("large-timm", st.clone(), "timm", &large_timm),
        (
            "mobile-cadene",
            fixture("mobile_small_legacy.pth"),
            "cadene",
            &mobile,
        ),
        (
            "large-cadene",
            fixture("large_small_zip.pth"),
            "cadene",
            &large,
        ),
        (
            "mobile-keras",
            fixture("keras_mobile_small.h5"),
            "keras",
            &mobile,
        ),
        (
            "large-keras",
            fixture("keras_large_small.h5"),
            "keras",
            &large2,
        ),
        ("mobile-st", mst.clone(), "cadene", &mobile),
    ];
    for (id, file, from, config) in cases {
        let dir = env.ok(&["pull", id, "--registry", reg]);
        assert!(Path::new(dir.trim()).join("model.onnx").exists(), "{id}");
        let pulled = env.logits(id, &registry, config.image_size, 10);
        // The same file imported directly.
        let direct = env.dir.path().join(format!("direct-{id}"));
        let opts = nasnet_zoo::import::ImportOptions {
            name: id.into(),
            config: (*config).clone(),
            from: Some(match from {
                "timm" => nasnet_zoo::import::SourceFormat::Timm,
                "keras" => nasnet_zoo::import::SourceFormat::Keras,
                _ => nasnet_zoo::import::SourceFormat::Cadene,
            }),
            pooling: None,
            force: false,
            preprocessing: None,
            labels: None,
        };
        nasnet_zoo::import::import(&file, &direct, &opts).unwrap();
        let (_, net) = nasnet_model::load_model_dir(&direct, &Device::Cpu).unwrap();
        let x = synthetic_input(1, config.image_size).unwrap();
        let want: Vec<f32> = net
            .forward(&x)
            .unwrap()
            .logits
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let d = want
            .iter()
            .zip(&pulled)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!("{id}: pulled vs direct import max |Δ| = {d:e}");
        assert!(d < 1e-5, "{id}: {d}");
    }
    let log = env.server.log();
    assert!(
        log.contains(&"GET /down/x.pth".to_string()),
        "the failing mirror was tried first: {log:?}"
    );
}

fn md5_hex(b: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[test]
fn cache_offline_checksum_truncation_and_overrides() {
    let env = Env::new();
    let mobile = small(Preset::Mobile, 8, 0.25, 10);
    let legacy_bytes = std::fs::read(fixture("mobile_small_legacy.pth")).unwrap();
    let url = env
        .server
        .route("/files/mobile.pth", Route::File(legacy_bytes.clone()));
    let bad = env
        .server
        .route("/files/bad.pth", Route::File(legacy_bytes.clone()));
    let cut = env
        .server
        .route("/files/cut.pth", Route::Truncated(legacy_bytes.clone()));
    // A user registry overriding the built-in nasnet-a-mobile@1.0.0: the default model.
    let registry = env.registry(json!([
        entry(
            "nasnet-a-mobile",
            &mobile,
            json!({"url": [url], "sha256": sha256(&legacy_bytes), "format": "cadene"})
        ),
        entry(
            "bad-sum",
            &mobile,
            json!({"url": [bad], "sha256": "00".repeat(32), "format": "cadene"})
        ),
        entry("cut", &mobile, json!({"url": [cut], "format": "cadene"})),
    ]));
    let reg = registry.to_str().unwrap();
    let home = env.dir.path().join("home");
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images/chelsea.jpg");
    let photo = photo.to_str().unwrap();

    // Offline without cache: says what is missing, touches nothing.
    let e = env.fails(&["classify", "--registry", reg, "--offline", photo]);
    assert!(e.contains("offline") && e.contains("mobile.pth"), "{e}");
    assert_eq!(env.server.requests(), 0);

    // First use pulls (default model = nasnet-a-mobile, overridden), then classifies.
    let out = env.ok(&["classify", "--registry", reg, "--json", photo]);
    assert_eq!(out.lines().count(), 1);
    let after_first = env.server.requests();
    assert_eq!(after_first, 1);
    // The weights live on in the model directory: the converted download is gone.
    assert!(
        !home.join("downloads/mobile.pth").exists(),
        "the download is removed once converted"
    );
    // Second time: from the cache, no request; offline too.
    env.ok(&["classify", "--registry", reg, photo]);
    env.ok(&["classify", "--registry", reg, "--offline", photo]);
    env.ok(&["pull", "nasnet-a-mobile", "--registry", reg]);
    assert_eq!(env.server.requests(), after_first, "served from the cache");
    let models = env.ok(&["models", "--registry", reg, "--json"]);
    let cached: Vec<serde_json::Value> = models
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        cached
            .iter()
            .any(|m| m["id"] == "nasnet-a-mobile" && m["cached"] == true),
        "{models}"
    );
    assert!(
        cached
            .iter()
            .any(|m| m["id"] == "nasnet-a-large" && m["cached"] == false),
        "{models}"
    );

    // The cache lists it with its size; export takes its id; rm removes it, and the next use
    // pulls again.
    let listed: Vec<serde_json::Value> = env
        .ok(&["cache", "list", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], "nasnet-a-mobile");
    assert_eq!(listed[0]["version"], "1.0.0");
    let dir = Path::new(listed[0]["dir"].as_str().unwrap()).to_path_buf();
    let files: u64 = ["model.json", "model.onnx", "model.safetensors"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
        .sum();
    assert!(listed[0]["bytes"].as_u64().unwrap() >= files);
    assert!(env.ok(&["cache"]).contains("nasnet-a-mobile"));
    let onnx = env.dir.path().join("exported.onnx");
    env.ok(&[
        "export",
        "--model",
        "nasnet-a-mobile@1.0.0",
        "--registry",
        reg,
        "--offline",
        "--format",
        "onnx",
        "-o",
        onnx.to_str().unwrap(),
    ]);
    // The export stands alone: it holds the weights the cached model.onnx reads from
    // model.safetensors.
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&onnx) > size(&dir.join("model.onnx")) + size(&dir.join("model.safetensors")) / 2);
    let e = env.fails(&["cache", "rm", "nasnet-a-large"]);
    assert!(e.contains("nasnet-a-large is not in the cache"), "{e}");
    let e = env.fails(&["cache", "rm", "../escape"]);
    assert!(e.contains("../escape: not a model id"), "{e}");
    env.ok(&["cache", "rm", "nasnet-a-mobile@1.0.0"]);
    assert!(!dir.exists());
    assert_eq!(env.ok(&["cache", "list", "--json"]), "");
    env.ok(&["classify", "--registry", reg, photo]);
    assert!(dir.join("model.json").is_file(), "pulled again");

    // Checksum mismatch: both hashes, nothing kept.
    let e = env.fails(&["pull", "bad-sum", "--registry", reg]);
    assert!(
        e.contains(&"00".repeat(32)) && e.contains(&sha256(&legacy_bytes)),
        "{e}"
    );
    assert!(!home.join("downloads/bad.pth").exists());
    assert!(!home.join("models/bad-sum").join("1.0.0").exists());

    // Truncated transfer: an error after the retries, and no file that later counts as
    // complete (only the hidden `.partial` a later pull resumes, and its lock).
    let e = env.fails(&["pull", "cut", "--registry", reg]);
    assert!(
        e.contains("cut.pth") && e.contains("bytes") && e.contains("2 attempts"),
        "{e}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(home.join("downloads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        leftovers
            .iter()
            .filter(|n| n.contains("cut"))
            .all(|n| n == ".cut.pth.partial" || n == ".cut.pth.lock"),
        "{leftovers:?}"
    );
    let e = env.fails(&["pull", "cut", "--registry", reg, "--offline"]);
    assert!(e.contains("offline"), "{e}");

    // Unknown ids and bad registries are one clear line.
    let e = env.fails(&["pull", "resnet50", "--registry", reg]);
    assert!(e.contains("resnet50") && e.contains("known"), "{e}");
    let broken = env.dir.path().join("broken.json");
    std::fs::write(&broken, "{\"models\": [").unwrap();
    let e = env.fails(&["models", "--registry", broken.to_str().unwrap()]);
    assert!(e.contains("broken.json") && e.contains("registry"), "{e}");
}

#[test]
fn hub_downloads_are_cached_by_hf_hub() {
    let env = Env::new();
    let mobile = small(Preset::Mobile, 8, 0.25, 10);
    let bytes = std::fs::read(fixture("mobile_small_legacy.pth")).unwrap();
    env.server
        .route("/acme/m/resolve/main/w.pth", Route::Hf(bytes.clone()));
    let registry = env.registry(json!([entry("hub-mobile", &mobile, json!({
        "hf": {"repo": "acme/m", "revision": "main", "file": "w.pth"}, "sha256": sha256(&bytes), "format": "cadene"}))]));
    let reg = registry.to_str().unwrap();
    env.ok(&["pull", "hub-mobile", "--registry", reg]);
    let n = env.server.requests();
    assert!(n >= 2, "HEAD and GET");
    // Converted model removed, source still in the Hugging Face cache: offline re-conversion.
    std::fs::remove_dir_all(env.dir.path().join("home/models")).unwrap();
    env.ok(&["pull", "hub-mobile", "--registry", reg, "--offline"]);
    assert_eq!(env.server.requests(), n);
    assert!(
        env.dir.path().join("hf").exists(),
        "hf-hub's cache under HF_HOME"
    );
}

/// Without a network: every source of the default model refuses the connection (two URLs and
/// the hub, with the default retry count). The first `classify` fails within seconds, each
/// source tried twice rather than five times, and the error names the network and the ways
/// to work offline.
#[test]
fn without_a_network_the_first_classify_fails_fast_and_says_how_to_work_offline() {
    let env = Env::new();
    let mobile = small(Preset::Mobile, 8, 0.25, 10);
    // A port nothing listens on once the listener is gone: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = |f: &str| format!("http://{closed}/{f}");
    let mut e = entry(
        "nasnet-a-mobile",
        &mobile,
        json!({"url": [url("a.pth"), url("b.pth")], "format": "cadene"}),
    );
    e["sources"].as_array_mut().unwrap().push(
        json!({"hf": {"repo": "acme/m", "revision": "main", "file": "w.pth"}, "format": "cadene"}),
    );
    let registry = env.registry(json!([e]));
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images/chelsea.jpg");
    let start = std::time::Instant::now();
    let err = env
        .cli()
        .env("HF_ENDPOINT", format!("http://{closed}"))
        .env_remove("NASNET_HTTP_RETRIES")
        .fails_with_status_2(&[
            "classify",
            "--registry",
            registry.to_str().unwrap(),
            photo.to_str().unwrap(),
        ]);
    let took = start.elapsed();
    // A note that the model is pulled on first use, then the error on one line.
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("pulling nasnet-a-mobile"), "{err}");
    assert!(took.as_secs_f64() <= 10.0, "took {took:?}: {err}");
    assert!(
        err.contains("the network could not be reached") && err.contains("refused"),
        "{err}"
    );
    for way in ["--offline", "--registry DIR", "nasnet import"] {
        assert!(err.contains(way), "names {way}: {err}");
    }
    // Two tries per URL, not five: "tried 2 times".
    assert_eq!(err.matches("tried 2 times").count(), 2, "{err}");
}

#[test]
fn concurrent_pulls_of_one_model_download_once_and_both_succeed() {
    let env = Env::new();
    let mobile = small(Preset::Mobile, 8, 0.25, 10);
    let bytes = std::fs::read(fixture("mobile_small_legacy.pth")).unwrap();
    let url = env
        .server
        .route("/files/shared.pth", Route::File(bytes.clone()));
    let registry = env.registry(json!([entry(
        "shared",
        &mobile,
        json!({"url": [url], "sha256": sha256(&bytes), "format": "cadene"})
    )]));
    let reg = registry.to_str().unwrap();
    let pulls: Vec<_> = (0..3)
        .map(|_| {
            env.cli()
                .command()
                .args(["pull", "shared", "--registry", reg])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in pulls {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let gets = env
        .server
        .log()
        .iter()
        .filter(|l| l.starts_with("GET /files/shared.pth"))
        .count();
    assert_eq!(gets, 1, "{:?}", env.server.log());
    let dir = env.dir.path().join("home/models/shared/1.0.0");
    assert!(dir.join("model.json").exists() && dir.join("model.onnx").exists());
}

/// A run published into a zoo directory, served on loopback and pulled by its registry's URL,
/// classifies exactly as the run does; so does the plain directory; a published version is
/// never replaced, and a file changed on the server is caught by its checksum.
#[test]
fn publish_host_pull_and_classify_with_the_runs_logits() {
    let env = Env::new();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let run = env.dir.path().join("run");
    env.cli().small_model(&run, Some(10));
    let zoo = env.dir.path().join("zoo");
    let publish = |version: &str| publish_args(&run, &zoo, version);
    let args = publish("1.0.0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let entry: serde_json::Value = serde_json::from_str(env.ok(&args).trim()).unwrap();
    let version_dir = zoo.join("tiny/1.0.0");
    let files = entry["sources"][0]["files"].as_object().unwrap();
    assert_eq!(files.len(), 3, "{entry}");
    let sums = std::fs::read_to_string(version_dir.join("SHA256SUMS")).unwrap();
    for (name, sha) in files {
        let bytes = std::fs::read(version_dir.join(name)).unwrap();
        assert_eq!(sha.as_str().unwrap(), sha256(&bytes), "{name}");
        assert!(
            sums.contains(&format!("{}  {name}", sha256(&bytes))),
            "{sums}"
        );
    }
    assert_eq!(entry["sources"][0]["url"][0], "tiny/1.0.0/");
    let published: serde_json::Value =
        serde_json::from_slice(&std::fs::read(version_dir.join("model.json")).unwrap()).unwrap();
    assert_eq!(published["name"], "tiny@1.0.0");

    // Versions are immutable, and a second version joins the first in the registry.
    let before = std::fs::read(version_dir.join("model.json")).unwrap();
    let err = env.fails(&args);
    assert!(err.contains("tiny@1.0.0 is already published"), "{err}");
    assert_eq!(
        std::fs::read(version_dir.join("model.json")).unwrap(),
        before
    );
    // Bad input is named: a version that is not MAJOR.MINOR.PATCH, a run without its graph,
    // weights other than the ones its model.json records.
    let bad = |version: &str, from: &Path| {
        env.fails(&[
            "publish",
            &path(from),
            "--id",
            "tiny",
            "--version",
            version,
            "--to",
            &path(&zoo),
        ])
    };
    let err = bad("1.0", &run);
    assert!(err.contains("is not MAJOR.MINOR.PATCH"), "{err}");
    let partial = env.dir.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    for f in ["model.json", "model.safetensors"] {
        std::fs::copy(run.join(f), partial.join(f)).unwrap();
    }
    let err = bad("2.0.0", &partial);
    assert!(
        err.contains("model.onnx") && err.contains("missing"),
        "{err}"
    );
    std::fs::copy(run.join("model.onnx"), partial.join("model.onnx")).unwrap();
    std::fs::write(partial.join("model.safetensors"), b"other weights").unwrap();
    let err = bad("2.0.0", &partial);
    assert!(err.contains("differs from the sha256"), "{err}");
    assert!(!zoo.join("tiny/2.0.0").exists());
    let second = publish("1.1.0");
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    env.ok(&second);
    let registry = zoo.join("registry.json");
    let models = env.ok(&["models", "--json", "--registry", &path(&registry)]);
    let versions: Vec<String> = models
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["id"] == "tiny")
        .map(|v| v["version"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(versions, ["1.0.0", "1.1.0"], "{models}");

    // Hosted: every file of the zoo directory on a static server.
    let served = |rel: &str| {
        let bytes = std::fs::read(zoo.join(rel)).unwrap();
        env.server.route(&format!("/zoo/{rel}"), Route::File(bytes))
    };
    let registry_url = served("registry.json");
    for name in files.keys() {
        served(&format!("tiny/1.0.0/{name}"));
    }
    let want = env.logits(&path(&run), &registry, 224, 10);
    env.ok(&["pull", "tiny@1.0.0", "--registry", &registry_url]);
    assert!(
        env.server
            .log()
            .iter()
            .any(|l| l.ends_with("/zoo/tiny/1.0.0/model.onnx"))
    );
    let got = env.logits("tiny@1.0.0", Path::new(&registry_url), 224, 10);
    assert_eq!(got, want, "logits of the hosted model");

    // The plain directory serves too.
    env.ok(&[
        "pull",
        "--force",
        "tiny@1.0.0",
        "--registry",
        &path(&registry),
    ]);
    let got = env.logits("tiny@1.0.0", &registry, 224, 10);
    assert_eq!(got, want, "logits of the model from the directory");

    // A file changed on the server: the checksum names it and nothing is cached.
    env.server.route(
        "/zoo/tiny/1.0.0/model.onnx",
        Route::File(b"not the published graph".to_vec()),
    );
    env.ok(&["cache", "rm", "tiny@1.0.0"]);
    let err = env.fails(&["pull", "tiny@1.0.0", "--registry", &registry_url]);
    assert!(
        err.contains("model.onnx") && err.contains("sha256"),
        "{err}"
    );
    let cached = env.ok(&["cache", "list", "--json"]);
    assert!(!cached.contains("tiny"), "{cached}");
}

/// `nasnet export --format nnef` into a run records the file in its `model.json`; tract then
/// reads it and answers as from `model.onnx`; `nasnet publish` carries it (a file that differs
/// from what `model.json` records is refused) and a pull verifies it.
#[test]
fn an_nnef_export_is_published_pulled_and_classified_like_the_onnx_graph() {
    let env = Env::new();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let run = env.dir.path().join("run");
    env.cli().small_model(&run, Some(10));
    let x = env.dir.path().join("x.npy");
    synthetic_input(1, 224).unwrap().write_npy(&x).unwrap();
    let logits = |model: &str| {
        let x = path(&x);
        let args = [
            "classify",
            "--model",
            model,
            "--backend",
            "tract",
            "--json",
            "--top-k",
            "10",
            &x,
        ];
        logits_of(&env.ok(&args), 10)
    };
    let onnx = logits(&path(&run));
    let nnef = run.join("model.nnef.tar");
    env.ok(&[
        "export",
        "--model",
        &path(&run),
        "--format",
        "nnef",
        "-o",
        &path(&nnef),
    ]);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap();
    assert_eq!(
        meta["nnef"]["sha256"].as_str(),
        Some(sha256(&std::fs::read(&nnef).unwrap()).as_str())
    );
    let from_nnef = logits(&path(&run));
    let scale = onnx.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (a, b) in from_nnef.iter().zip(&onnx) {
        assert!((a - b).abs() <= 1e-5 * scale, "{from_nnef:?} vs {onnx:?}");
    }

    let zoo = env.dir.path().join("zoo");
    let publish = |version: &str| {
        let args = publish_args(&run, &zoo, version);
        env.cli()
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let published = nasnet_testsupport::cli::ok(&publish("1.0.0"));
    let entry: serde_json::Value = serde_json::from_str(published.trim()).unwrap();
    let files = entry["sources"][0]["files"].as_object().unwrap();
    assert!(files.contains_key("model.nnef.tar"), "{entry}");
    let registry = zoo.join("registry.json");
    env.ok(&["pull", "tiny@1.0.0", "--registry", &path(&registry)]);
    let cached = env.dir.path().join("home/models/tiny/1.0.0");
    assert_eq!(
        std::fs::read(cached.join("model.nnef.tar")).unwrap(),
        std::fs::read(&nnef).unwrap()
    );

    // A registry that no longer lists the NNEF file model.json records: the pull refuses.
    let mut reg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&registry).unwrap()).unwrap();
    reg["models"][0]["sources"][0]["files"]
        .as_object_mut()
        .unwrap()
        .remove("model.nnef.tar");
    // Beside the registry: its locations are relative to it.
    let unlisted = zoo.join("unlisted.json");
    std::fs::write(&unlisted, reg.to_string()).unwrap();
    let err = env.fails(&[
        "pull",
        "--force",
        "tiny@1.0.0",
        "--registry",
        &path(&unlisted),
    ]);
    assert!(err.contains("its NNEF file model.nnef.tar"), "{err}");

    // An NNEF file other than the one model.json records is not published.
    std::fs::write(&nnef, b"another file").unwrap();
    let out = publish("1.1.0");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model.nnef.tar") && err.contains("differs from the sha256"),
        "{err}"
    );
}

/// Every byte a directory holds, hidden files and subdirectories included.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                bytes_under(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// NASNet-A Mobile at full size, published, hosted and pulled, then classified on tract: the
/// cache (downloads included) holds its weights once, `model.safetensors`, which `model.onnx`
/// reads; the prepared-model cache is off.
#[test]
fn a_pulled_mobile_holds_its_weights_once_after_a_classification_on_tract() {
    let env = Env::new();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let run = env.dir.path().join("run");
    env.ok(&["synthetic", "--arch", "nasnet-a-mobile", "-o", &path(&run)]);
    let zoo = env.dir.path().join("zoo");
    let args = publish_args(&run, &zoo, "1.0.0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.ok(&args);
    let served = |rel: &str| {
        let bytes = std::fs::read(zoo.join(rel)).unwrap();
        env.server.route(&format!("/zoo/{rel}"), Route::File(bytes))
    };
    let registry_url = served("registry.json");
    for name in ["model.json", "model.onnx", "model.safetensors"] {
        served(&format!("tiny/1.0.0/{name}"));
    }
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images/chelsea.jpg");
    let out = env.ok(&[
        "classify",
        "--model",
        "tiny@1.0.0",
        "--registry",
        &registry_url,
        "--backend",
        "tract",
        "--json",
        &path(&photo),
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let home = env.dir.path().join("home");
    let weights = std::fs::metadata(home.join("models/tiny/1.0.0/model.safetensors"))
        .unwrap()
        .len();
    let total = bytes_under(&home);
    let ratio = total as f64 / weights as f64;
    eprintln!("cache {total} bytes for {weights} bytes of weights: {ratio:.3}x");
    assert!(ratio <= 1.3, "the cache holds {ratio:.2}x the weights");
}

/// The logits of `nasnet classify --json` on each image, every class in the top k.
fn logits_per_image(out: &str, classes: usize) -> Vec<Vec<f32>> {
    out.lines().map(|l| logits_of(l, classes)).collect()
}

/// `nasnet quantize` on the bundled Fashion-MNIST model, calibrated on a folder of photos:
/// `model.json` records how; the int8 graph answers within 8 % of the fp32 logits' spread,
/// with the same top-1, on the test photos on tract and on ONNX Runtime; it is published
/// (its graph holds its weights: two files), served, pulled and classified with the logits of
/// the directory it came from. A model already quantized and a folder with no image are
/// refused by name.
#[test]
fn an_int8_model_is_published_pulled_and_classified_near_its_fp32_logits() {
    let env = Env::new();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let photos = nasnet_testsupport::image("chelsea.jpg")
        .parent()
        .unwrap()
        .to_path_buf();
    let int8 = env.dir.path().join("int8");
    let fp32 = "nasnet-a-fashion-mnist";
    let quantize = |model: &str, calibrate: &Path, out: &Path| {
        let args = [
            "quantize",
            "--offline",
            "--model",
            model,
            "--calibrate",
            &path(calibrate),
            "-o",
            &path(out),
        ];
        env.cli().run(&args)
    };
    let out = quantize(fp32, &photos, &int8);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(int8.join("model.json")).unwrap()).unwrap();
    let q = &meta["quantization"];
    assert_eq!(q["precision"], "int8", "{meta}");
    assert_eq!(q["calibrator"], "percentile", "{meta}");
    assert_eq!(q["calibration_images"], 4, "{meta}");
    assert_eq!(meta["weights"]["file"], "model.onnx", "{meta}");

    let mut backends = vec!["tract"];
    let mut cli = env.cli();
    if nasnet_testsupport::ort_installed() {
        backends.push("ort");
        let lib = nasnet_runtime::ort_library(nasnet_runtime::Device::Cpu);
        cli = cli.env("ORT_DYLIB_PATH", lib);
    }
    let images: Vec<String> = ["chelsea.jpg", "portrait.jpg", "phone12mp.jpg"]
        .map(|f| path(&photos.join(f)))
        .to_vec();
    let classify = |backend: &str, model: &str| {
        let mut args = vec![
            "classify",
            "--offline",
            "--model",
            model,
            "--backend",
            backend,
        ];
        args.extend(["--json", "--top-k", "10"]);
        args.extend(images.iter().map(String::as_str));
        logits_per_image(&cli.ok(&args), 10)
    };
    for backend in &backends {
        let want = classify(backend, fp32);
        let got = classify(backend, &path(&int8));
        assert_eq!(got.len(), images.len());
        for (w, g) in want.iter().zip(&got) {
            let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b]));
            let spread = w.iter().copied().fold(f32::MIN, f32::max)
                - w.iter().copied().fold(f32::MAX, f32::min);
            let worst = w
                .iter()
                .zip(g)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            eprintln!("{backend}: max |int8 - fp32| {worst:.4} of a spread of {spread:.3}");
            assert!(worst <= 0.08 * spread, "{backend}: {w:?} against {g:?}");
            assert_eq!(argmax(w), argmax(g), "{backend}");
        }
    }

    // The weights-only forms: about a third and a half of the fp32 weights (the per-channel
    // scales and the graph weigh in a model this small), fp32 compute; float16 answers within
    // 0.01, 7-bit weights within 0.2.
    let cached = env
        .dir
        .path()
        .join("home/models/nasnet-a-fashion-mnist/1.0.0");
    let fp32_bytes = std::fs::metadata(cached.join("model.safetensors"))
        .unwrap()
        .len();
    for (precision, share, bound) in [("int8-weights", 0.35, 0.2), ("f16-weights", 0.52, 0.01)] {
        let out = env.dir.path().join(precision);
        let args = [
            "quantize",
            "--offline",
            "--model",
            fp32,
            "--precision",
            precision,
            "-o",
        ];
        let mut args = args.to_vec();
        let target = path(&out);
        args.push(&target);
        env.ok(&args);
        let bytes = std::fs::metadata(out.join("model.onnx")).unwrap().len();
        assert!(
            (bytes as f64) < share * fp32_bytes as f64,
            "{precision}: {bytes} bytes for {fp32_bytes} of fp32 weights"
        );
        for backend in &backends {
            let want = classify(backend, fp32);
            let got = classify(backend, &target);
            for (w, g) in want.iter().zip(&got) {
                let worst = w
                    .iter()
                    .zip(g)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                eprintln!("{backend} {precision}: max |difference| {worst:.4}");
                assert!(worst < bound, "{backend} {precision}: {w:?} against {g:?}");
            }
        }
    }

    // Published: the graph is the weights file; the registry and `nasnet models` say int8.
    let zoo = env.dir.path().join("zoo");
    let args = publish_args(&int8, &zoo, "1.0.0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let entry: serde_json::Value = serde_json::from_str(env.ok(&args).trim()).unwrap();
    assert_eq!(entry["precision"], "int8", "{entry}");
    let files = entry["sources"][0]["files"].as_object().unwrap();
    let mut names: Vec<&str> = files.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["model.json", "model.onnx"], "{entry}");
    let registry = zoo.join("registry.json");
    let models = env.ok(&["models", "--json", "--registry", &path(&registry)]);
    let listed = models
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["id"] == "tiny")
        .unwrap();
    assert_eq!(listed["precision"], "int8", "{models}");
    // Served, pulled, classified.
    for rel in [
        "registry.json",
        "tiny/1.0.0/model.json",
        "tiny/1.0.0/model.onnx",
    ] {
        let bytes = std::fs::read(zoo.join(rel)).unwrap();
        env.server.route(&format!("/zoo/{rel}"), Route::File(bytes));
    }
    let url = format!("{}/zoo/registry.json", env.server.base());
    env.ok(&["pull", "tiny@1.0.0", "--registry", &url]);
    let pulled = |model: &str| {
        let mut args = vec!["classify", "--model", model, "--registry", &url, "--json"];
        args.extend(["--top-k", "10", &images[0]]);
        logits_per_image(&env.ok(&args), 10)
    };
    assert_eq!(pulled("tiny@1.0.0"), pulled(&path(&int8)));

    // Refusals.
    let again = env.dir.path().join("again");
    let out = quantize(&path(&int8), &photos, &again);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already quantized"),
        "{err}"
    );
    let empty = env.dir.path().join("no-images");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), b"not an image").unwrap();
    std::fs::write(empty.join("broken.jpg"), b"\xff\xd8\xff\xe0 not a jpeg").unwrap();
    let out = quantize(fp32, &empty, &again);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no-images") && err.contains("no readable image"),
        "{err}"
    );
    assert!(!again.exists());
    // Options that do not go together, and a source that is neither a folder nor a dataset.
    let refused = |extra: &[&str], want: &str| {
        let mut args = vec!["quantize", "--offline", "--model", fp32];
        args.extend(extra);
        args.extend(["-o", again.to_str().unwrap()]);
        let out = env.cli().run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{extra:?}: {err}"
        );
    };
    refused(&["--precision", "fp32"], "the model is fp32 already");
    refused(&[], "needs calibration images");
    let photos_arg = path(&photos);
    refused(
        &["--precision", "f16-weights", "--calibrate", &photos_arg],
        "takes no --calibrate",
    );
    refused(
        &["--calibrate", "no-such-folder"],
        "no-such-folder: neither a folder nor a dataset spec",
    );
    assert!(!again.exists());
    // A model.json whose weights file is no plain file name is not published.
    let odd = env.dir.path().join("odd");
    std::fs::create_dir(&odd).unwrap();
    std::fs::copy(int8.join("model.onnx"), odd.join("model.onnx")).unwrap();
    let mut m = meta.clone();
    m["weights"]["file"] = json!("../model.onnx");
    std::fs::write(odd.join("model.json"), m.to_string()).unwrap();
    let args = publish_args(&odd, &zoo, "2.0.0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = env.fails(&args);
    assert!(err.contains("is not a plain file name"), "{err}");
}
