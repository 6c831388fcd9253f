//! Publishing a trained model into a zoo directory: `ZOO/ID/VERSION/` holds the model
//! directory (`model.json`, `model.safetensors`, `model.onnx`) and `SHA256SUMS`, and
//! `ZOO/registry.json` lists every version with the sha256 of each file. Any static HTTP server
//! can host the directory, or it can be used as it is. Versions are immutable: publishing one
//! that exists is refused.

use std::collections::BTreeMap;
use std::path::Path;

use nasnet_core::cache::{Version, is_plain_id};
use nasnet_core::fsutil::{Lock, hidden_sibling, io, write_dir_atomically, write_file_atomically};
use nasnet_core::meta::{self, ModelMeta};
use nasnet_fetch::sha256_file;

use crate::registry::{Accuracy, Entry, Labels, Registry, Source, to_json};
use crate::{Error, Result};

/// The registry file of a zoo directory.
pub const REGISTRY_FILE: &str = "registry.json";

/// What to publish, and where.
#[derive(Debug, Clone)]
pub struct PublishOptions<'a> {
    /// A model directory: a finished training run, or any directory with a `model.json`.
    pub run: &'a Path,
    /// The model's id in the zoo (a plain name).
    pub id: &'a str,
    /// `MAJOR.MINOR.PATCH`.
    pub version: &'a str,
    /// The zoo directory.
    pub zoo: &'a Path,
    /// Where the zoo directory will be served (`https://host/zoo/`); without it the registry
    /// gives locations relative to itself, which work for a plain directory and for a copy of
    /// the registry kept beside it.
    pub base_url: Option<&'a str>,
    /// The license of the weights.
    pub license: &'a str,
}

/// The files of a published model directory: `model.json`, the weights file it names
/// (`model.safetensors`, or `model.onnx` for a quantized model, whose graph holds its
/// weights), `model.onnx`, and `model.nnef.tar` where the run has one.
fn published_files(m: &ModelMeta) -> Vec<&str> {
    let mut files = vec![meta::META_FILE, m.weights.file.as_str(), meta::ONNX_FILE];
    files.dedup();
    files
}

/// Publishes `opts.run` as `ID@VERSION` into `opts.zoo`, returning the registry entry
/// written. Two publishers of one zoo take turns; a version that exists is refused.
pub fn publish(opts: &PublishOptions) -> Result<Entry> {
    let spec = format!("{}@{}", opts.id, opts.version);
    let invalid = |path: &Path, problem: String| Error::Invalid {
        path: path.display().to_string(),
        problem,
    };
    if !is_plain_id(opts.id) {
        return Err(invalid(
            opts.run,
            format!("id {:?} is not a plain name", opts.id),
        ));
    }
    if Version::parse(opts.version).is_none() {
        return Err(invalid(
            opts.run,
            format!("version {:?} is not MAJOR.MINOR.PATCH", opts.version),
        ));
    }
    let mut m = ModelMeta::load(opts.run).map_err(|e| invalid(opts.run, e.to_string()))?;
    if !crate::registry::is_plain_file_name(&m.weights.file) {
        return Err(invalid(
            &opts.run.join(meta::META_FILE),
            format!(
                "its weights file {:?} is not a plain file name",
                m.weights.file
            ),
        ));
    }
    for name in [m.weights.file.as_str(), meta::ONNX_FILE] {
        let path = opts.run.join(name);
        if !path.is_file() {
            return Err(invalid(
                &path,
                "missing: a published model carries its weights and its ONNX graph (`nasnet export` writes the graph)".into(),
            ));
        }
    }
    let weights = sha256_file(&opts.run.join(&m.weights.file))?;
    if weights != m.weights.sha256 {
        return Err(invalid(
            &opts.run.join(&m.weights.file),
            "differs from the sha256 that model.json records".into(),
        ));
    }
    // The NNEF form (`nasnet export --format nnef`) travels too, checked like the weights.
    let nnef = opts.run.join(meta::NNEF_FILE);
    let with_nnef = nnef.is_file();
    if with_nnef {
        let sha = sha256_file(&nnef)?;
        if m.nnef.as_ref().map(|d| d.sha256.as_str()) != Some(sha.as_str()) {
            return Err(invalid(
                &nnef,
                "differs from the sha256 that model.json records (write it with `nasnet export --format nnef`)".into(),
            ));
        }
    } else {
        m.nnef = None;
    }
    m.name = spec.clone();

    std::fs::create_dir_all(opts.zoo).map_err(io(opts.zoo))?;
    let registry_path = opts.zoo.join(REGISTRY_FILE);
    let _lock = Lock::wait_file(&hidden_sibling(&registry_path, "lock"))?;
    let mut entries = if registry_path.exists() {
        let text = std::fs::read_to_string(&registry_path).map_err(io(&registry_path))?;
        Registry::parse(&text, &registry_path.display().to_string())?
    } else {
        vec![]
    };
    let out = opts.zoo.join(opts.id).join(opts.version);
    if out.exists()
        || entries
            .iter()
            .any(|e| e.id == opts.id && e.version == opts.version)
    {
        return Err(Error::Published {
            spec,
            zoo: opts.zoo.display().to_string(),
        });
    }

    let mut files = BTreeMap::new();
    write_dir_atomically(&out, false, |tmp| -> Result<()> {
        let nnef = with_nnef.then_some(meta::NNEF_FILE);
        for name in published_files(&m).into_iter().chain(nnef) {
            let dest = tmp.join(name);
            if name == meta::META_FILE {
                std::fs::write(&dest, m.to_json()).map_err(io(&dest))?;
            } else {
                let from = opts.run.join(name);
                std::fs::copy(&from, &dest).map_err(io(&from))?;
            }
            files.insert(name.to_owned(), sha256_file(&dest)?);
        }
        let sums: String = files
            .iter()
            .map(|(name, sha)| format!("{sha}  {name}\n"))
            .collect();
        let path = tmp.join("SHA256SUMS");
        std::fs::write(&path, sums).map_err(io(&path))?;
        Ok(())
    })?;

    let location = match opts.base_url {
        Some(base) => format!(
            "{}/{}/{}/",
            base.trim_end_matches('/'),
            opts.id,
            opts.version
        ),
        None => format!("{}/{}/", opts.id, opts.version),
    };
    // The accuracy training measured is the fp32 weights'; a quantized model has its own.
    let trained = m.training.as_ref().filter(|_| m.quantization.is_none());
    let accuracy = trained.and_then(|t| {
        Some(Accuracy {
            top1: (t.test_top1? * 1e4).round() / 1e2,
            top5: None,
            source: format!(
                "nasnet train, test split of {} ({} images)",
                t.dataset.as_deref().unwrap_or("the dataset"),
                t.test_count.unwrap_or(0)
            ),
        })
    });
    let entry = Entry {
        id: opts.id.to_owned(),
        version: opts.version.to_owned(),
        arch: None,
        config: Some(m.architecture.clone()),
        pooling: None,
        preprocessing: None,
        num_classes: m.architecture.num_classes,
        labels: Labels::List(m.labels.clone()),
        accuracy,
        precision: m.precision(),
        license: opts.license.to_owned(),
        sources: vec![Source::model_dir(vec![location], files)],
    };
    entries.push(entry.clone());
    let text = to_json(&entries);
    // The entries that were there still parse with the new one.
    Registry::parse(&text, &registry_path.display().to_string())?;
    write_file_atomically(&registry_path, |p| -> Result<()> {
        Ok(std::fs::write(p, &text).map_err(io(p))?)
    })?;
    Ok(entry)
}
