//! What the zoo offers and what is cached: where a command finds its model (`--registry`,
//! `--offline`, a directory or a zoo id), `nasnet models` and `nasnet cache`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::quiet;

/// Where models come from.
#[derive(clap::Args)]
pub struct ZooArgs {
    /// A registry file, or the URL of one, adding or overriding entries (also
    /// $NASNET_REGISTRY).
    #[arg(long, value_name = "FILE|URL", global = true)]
    registry: Option<PathBuf>,
    /// Never touch the network (also HF_HUB_OFFLINE=1).
    #[arg(long, global = true)]
    pub offline: bool,
}

impl ZooArgs {
    pub fn registry(&self) -> anyhow::Result<nasnet_zoo::registry::Registry> {
        Ok(nasnet_zoo::registry::Registry::load(
            self.registry.as_deref(),
        )?)
    }

    /// A model directory, or a zoo id (`ID[@VERSION]`) pulled on first use.
    pub fn model_dir(&self, model: &str) -> anyhow::Result<PathBuf> {
        let path = Path::new(model);
        if path.is_dir() {
            return Ok(path.to_path_buf());
        }
        let opts = nasnet_zoo::fetch::PullOptions {
            offline: self.offline,
            force: false,
            progress: !quiet(),
        };
        let home = nasnet_runtime::nasnet_home();
        Ok(nasnet_zoo::fetch::locate(
            model,
            &self.registry()?,
            &home,
            &opts,
        )?)
    }
}

#[derive(Subcommand)]
pub enum CacheAction {
    /// Each cached model version: id, version, size and directory (the default action).
    List {
        /// One JSON object per model version.
        #[arg(long)]
        json: bool,
    },
    /// Remove `ID@VERSION`, or every cached version of `ID`.
    Rm {
        /// `ID` or `ID@VERSION`.
        spec: String,
    },
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Every complete model version in the cache, sorted by id then version.
fn cached_models(home: &Path) -> Vec<(String, nasnet_core::cache::Version, PathBuf)> {
    let root = home.join("models");
    let mut ids: Vec<String> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|id| nasnet_core::cache::is_plain_id(id))
        .collect();
    ids.sort();
    ids.into_iter()
        .flat_map(|id| {
            nasnet_core::cache::cached_versions(home, &id)
                .into_iter()
                .map(move |(v, p)| (id.clone(), v, p))
        })
        .collect()
}

/// `nasnet cache list`.
pub fn cache_list(json: bool) -> anyhow::Result<()> {
    let home = nasnet_runtime::nasnet_home();
    let rows = cached_models(&home);
    if json {
        for (id, v, dir) in &rows {
            let row = serde_json::json!({
                "id": id, "version": v.to_string(), "bytes": dir_size(dir), "dir": dir,
            });
            outln!("{row}")?;
        }
        return Ok(());
    }
    if rows.is_empty() {
        if !quiet() {
            eprintln!("no model in the cache ({})", home.join("models").display());
        }
        return Ok(());
    }
    outln!("{:<24} {:<9} {:>10}  directory", "id", "version", "size")?;
    let mut total = 0;
    for (id, v, dir) in &rows {
        let size = dir_size(dir);
        total += size;
        outln!(
            "{id:<24} {:<9} {:>10}  {}",
            v.to_string(),
            human_size(size),
            dir.display()
        )?;
    }
    outln!("{:<24} {:<9} {:>10}", "total", "", human_size(total))?;
    Ok(())
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// `nasnet cache rm ID[@VERSION]`: each directory is renamed out of the way first, so that no
/// process ever sees half of it, then deleted.
pub fn cache_rm(spec: &str) -> anyhow::Result<()> {
    let home = nasnet_runtime::nasnet_home();
    let r = nasnet_core::cache::ModelRef::parse(spec)
        .with_context(|| format!("{spec}: not a model id (ID or ID@VERSION)"))?;
    let dirs: Vec<PathBuf> = cached_models(&home)
        .into_iter()
        .filter(|(id, v, _)| *id == r.id && r.version.as_ref().is_none_or(|x| *x == v.to_string()))
        .map(|(_, _, d)| d)
        .collect();
    anyhow::ensure!(!dirs.is_empty(), "{spec} is not in the cache");
    for dir in dirs {
        let gone =
            nasnet_core::fsutil::hidden_sibling(&dir, &format!("removed.{}", std::process::id()));
        std::fs::rename(&dir, &gone)
            .with_context(|| format!("{}: cannot remove", dir.display()))?;
        std::fs::remove_dir_all(&gone)
            .with_context(|| format!("{}: cannot remove", gone.display()))?;
        if !quiet() {
            eprintln!("removed {}", dir.display());
        }
    }
    Ok(())
}

/// `nasnet models`: every registry entry, and whether it is cached.
pub fn models(zoo: &ZooArgs, json: bool) -> anyhow::Result<()> {
    let registry = zoo.registry()?;
    let home = nasnet_runtime::nasnet_home();
    let mut rows = vec![];
    for e in &registry.entries {
        let config = e.config();
        rows.push(serde_json::json!({
            "id": e.id,
            "version": e.version,
            "params": nasnet_model::init::count_parameters(&config)?,
            "arch": e.arch_name(),
            "input_size": config.image_size,
            "top1": e.accuracy.as_ref().map(|a| a.top1),
            "precision": e.precision.name(),
            "cached": nasnet_zoo::fetch::is_cached(e, &home),
            "license": e.license,
        }));
    }
    if json {
        for r in rows {
            outln!("{r}")?;
        }
        return Ok(());
    }
    outln!(
        "{:<28} {:<9} {:>12} {:>6} {:>7}  {:<12} cached",
        "id",
        "version",
        "params",
        "input",
        "top-1",
        "precision"
    )?;
    for r in rows {
        let top1 = r["top1"]
            .as_f64()
            .map(|t| format!("{t:.1}"))
            .unwrap_or_else(|| "-".into());
        outln!(
            "{:<28} {:<9} {:>12} {:>6} {:>7}  {:<12} {}",
            r["id"].as_str().unwrap_or(""),
            r["version"].as_str().unwrap_or(""),
            r["params"].as_u64().unwrap_or(0),
            r["input_size"].as_u64().unwrap_or(0),
            top1,
            r["precision"].as_str().unwrap_or(""),
            if r["cached"] == true { "yes" } else { "no" }
        )?;
    }
    Ok(())
}

/// Writes the network of the model directory `dir` as tract's NNEF to `out`: from its
/// `model.onnx` where it has one, else from its weights through a temporary ONNX export.
/// Written as the directory's own `model.nnef.tar`, its sha256 goes into `model.json`, so that
/// `nasnet publish` carries it and a pull verifies it.
pub fn export_nnef(dir: &Path, out: &Path) -> anyhow::Result<()> {
    use nasnet_core::meta::{FileDigest, ModelMeta, NNEF_FILE, ONNX_FILE};
    let mut meta = ModelMeta::load(dir)?;
    let onnx = dir.join(ONNX_FILE);
    let scratch = tempfile::tempdir().context("a temporary directory for the ONNX export")?;
    let onnx = if onnx.is_file() {
        onnx
    } else {
        let (_, net) = nasnet_model::load_model_dir(dir, &candle_core::Device::Cpu)?;
        let tmp = scratch.path().join(ONNX_FILE);
        nasnet_model::onnx::write_onnx(&net, &tmp)?;
        tmp
    };
    nasnet_runtime::write_nnef(&onnx, meta.preprocessing.crop, out)?;
    // `out` is the directory's own NNEF file when it is named so and lies in `dir`.
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let own = out.file_name().is_some_and(|n| n == NNEF_FILE)
        && parent.unwrap_or(Path::new(".")).canonicalize().ok() == dir.canonicalize().ok();
    if own {
        meta.nnef = Some(FileDigest {
            file: NNEF_FILE.into(),
            sha256: nasnet_core::fsutil::sha256_file(out)?,
        });
        meta.save(dir)?;
    }
    Ok(())
}
