//! The model registry: which model versions exist, where their weights come from, how to
//! check and convert them. The built-in manifest (`zoo/registry.json`) is compiled in; a user
//! registry file (`--registry FILE` or `$NASNET_REGISTRY`) adds entries or overrides entries
//! with the same id and version, so an organisation can run its own zoo. Models this project
//! trains enter a zoo through [`crate::publish`]: their sources are model directories
//! ([`Format::Nasnet`]) on any static HTTP server or in a plain directory, and the bundled
//! models ([`crate::bundled`]) are compiled in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nasnet_core::meta::Precision;
use nasnet_core::{NetworkConfig, PoolingRule, Preprocessing, Preset};
use serde::{Deserialize, Serialize};

use crate::import::SourceFormat;
use crate::{Error, Result};

/// The built-in manifest.
pub const BUILTIN: &str = include_str!("../registry.json");

/// Environment variable naming a user registry file.
pub const REGISTRY_ENV: &str = "NASNET_REGISTRY";

/// A Hugging Face Hub file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HfFile {
    /// `owner/name`.
    pub repo: String,
    /// A commit (pinned) or a branch.
    pub revision: String,
    pub file: String,
}

/// Where a weight file can be fetched, and how to check and read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hf: Option<HfFile>,
    /// Mirrors, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub url: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The md5 an upstream publishes where that is all there is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// The sha256 prefix in a PyTorch-hub file name (`name-<prefix>.pth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256_prefix: Option<String>,
    /// The upstream layout, which selects the importer.
    pub format: Format,
    /// Overrides the entry's pooling rule for this source (a fallback of another lineage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<PoolingRule>,
    /// Overrides the entry's eval transform for this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Transform>,
    /// For a [`Format::Nasnet`] source: the files of the model directory and their sha256.
    /// Each `url` is then the directory holding them: `http(s)://…/`, a local directory
    /// (relative to the registry file's own directory), or `bundled:ID/VERSION/`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

impl Source {
    /// A [`Format::Nasnet`] source: the model directory published at each of `url`.
    pub fn model_dir(url: Vec<String>, files: BTreeMap<String, String>) -> Self {
        Self {
            hf: None,
            url,
            sha256: None,
            md5: None,
            sha256_prefix: None,
            format: Format::Nasnet,
            pooling: None,
            preprocessing: None,
            files,
        }
    }
}

/// Serialized names of [`SourceFormat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Timm,
    Cadene,
    Keras,
    /// A model directory this project wrote (`model.json`, `model.safetensors`,
    /// `model.onnx`), copied as it is.
    Nasnet,
}

impl Format {
    /// The importer for an upstream file; `None` for a model directory, which needs none.
    pub fn importer(self) -> Option<SourceFormat> {
        match self {
            Format::Timm => Some(SourceFormat::Timm),
            Format::Cadene => Some(SourceFormat::Cadene),
            Format::Keras => Some(SourceFormat::Keras),
            Format::Nasnet => None,
        }
    }
}

/// Which published eval transform a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    Timm,
    Cadene,
}

/// A reported accuracy and where it was reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub top1: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top5: Option<f64>,
    pub source: String,
}

/// One model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// Semantic version `MAJOR.MINOR.PATCH`.
    pub version: String,
    /// The preset the weights belong to; a published model gives its `config` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Preset>,
    /// Replaces the preset's configuration (a trained model's genotype and sizes, a zoo of
    /// custom widths, or tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<NetworkConfig>,
    /// The pooling rule of the imported weights (upstream files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<PoolingRule>,
    /// The eval transform of the imported weights (upstream files only; a model directory's
    /// `model.json` carries its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Transform>,
    pub num_classes: usize,
    /// `imagenet-1k`, or the class names.
    #[serde(default = "imagenet")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<Accuracy>,
    /// The numbers the model computes with (`fp32` when absent; `int8`, `int8-weights` and
    /// `f16-weights` for the forms `nasnet quantize` writes).
    #[serde(default, skip_serializing_if = "is_fp32")]
    pub precision: Precision,
    pub license: String,
    /// Alternatives, tried in order.
    pub sources: Vec<Source>,
}

/// Class names of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Labels {
    Named(String),
    List(Vec<String>),
}

fn is_fp32(p: &Precision) -> bool {
    *p == Precision::Fp32
}

fn imagenet() -> Labels {
    Labels::Named("imagenet-1k".into())
}

impl Entry {
    /// `id@version`.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    /// The network configuration, with the entry's class count and pooling rule. A checked
    /// entry has a `config` or an `arch`; one with neither gets NASNet-A Mobile's.
    pub fn config(&self) -> NetworkConfig {
        let mut c = self
            .config
            .clone()
            .unwrap_or_else(|| self.arch.unwrap_or(Preset::Mobile).config());
        c.num_classes = self.num_classes;
        c.pooling = self.pooling.unwrap_or(c.pooling);
        c
    }

    /// The configuration for weights from `source`.
    pub fn config_for(&self, source: &Source) -> NetworkConfig {
        let mut c = self.config();
        c.pooling = source.pooling.unwrap_or(c.pooling);
        c
    }

    /// The eval transform for weights from `source`.
    pub fn preprocessing_for(&self, source: &Source) -> Preprocessing {
        let size = self.config().image_size;
        match source
            .preprocessing
            .or(self.preprocessing)
            .unwrap_or(Transform::Timm)
        {
            Transform::Timm => Preprocessing::timm(size),
            Transform::Cadene => Preprocessing::cadene(size),
        }
    }

    /// The architecture's name: the preset's, or `custom` for a configuration of its own.
    pub fn arch_name(&self) -> &'static str {
        match (&self.config, self.arch) {
            (None, Some(p)) => p.name(),
            _ => "custom",
        }
    }

    pub fn labels(&self) -> Vec<String> {
        match &self.labels {
            Labels::List(l) => l.clone(),
            Labels::Named(_) => nasnet_core::meta::default_labels(self.num_classes),
        }
    }

    /// Where the converted model lives in the cache.
    pub fn cache_dir(&self, home: &Path) -> PathBuf {
        nasnet_core::cache::model_dir(home, &self.id, &self.version)
    }

    fn check(&self, origin: &str) -> Result<()> {
        let bad = |problem: String| Error::Invalid {
            path: origin.to_owned(),
            problem: format!("{}: {problem}", self.spec()),
        };
        if nasnet_core::cache::Version::parse(&self.version).is_none() {
            return Err(bad(format!(
                "version {:?} is not MAJOR.MINOR.PATCH",
                self.version
            )));
        }
        if !nasnet_core::cache::is_plain_id(&self.id) {
            return Err(bad(format!("id {:?} is not a plain name", self.id)));
        }
        if self.sources.is_empty() {
            return Err(bad("no sources".into()));
        }
        if self.arch.is_none() && self.config.is_none() {
            return Err(bad("neither `arch` nor `config`".into()));
        }
        for s in &self.sources {
            if s.hf.is_none() && s.url.is_empty() {
                return Err(bad("a source has neither `hf` nor `url`".into()));
            }
            if s.format == Format::Nasnet {
                if !s.files.contains_key(nasnet_core::meta::META_FILE) {
                    return Err(bad("a model directory source lists no model.json".into()));
                }
                for (name, sha) in &s.files {
                    if !is_plain_file_name(name) {
                        return Err(bad(format!("file name {name:?} is not a plain name")));
                    }
                    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(bad(format!("the sha256 of {name} is not 64 hex digits")));
                    }
                }
            } else {
                if s.pooling.or(self.pooling).is_none() {
                    return Err(bad("an upstream source without a pooling rule".into()));
                }
                if s.preprocessing.or(self.preprocessing).is_none() {
                    return Err(bad("an upstream source without preprocessing".into()));
                }
            }
        }
        if let Labels::List(l) = &self.labels
            && l.len() != self.num_classes
        {
            return Err(bad(format!(
                "{} labels for {} classes",
                l.len(),
                self.num_classes
            )));
        }
        self.config().validate().map_err(|e| bad(e.to_string()))
    }
}

/// A file name with no directory part that is not hidden (`model.json`).
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).components().count() == 1
}

/// The manifest format.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    #[serde(default = "one")]
    format_version: u32,
    models: Vec<Entry>,
}

fn one() -> u32 {
    1
}

/// All known model versions.
#[derive(Debug, Clone)]
pub struct Registry {
    pub entries: Vec<Entry>,
}

/// Whether a model directory location is a URL (`http://`, `https://`) rather than a path.
pub fn is_url(location: &str) -> bool {
    location.starts_with("http://") || location.starts_with("https://")
}

/// Resolves the relative model directory locations of `entries` against `base`.
fn resolve_locations(entries: &mut [Entry], base: impl Fn(&str) -> String) {
    for e in entries {
        for s in e.sources.iter_mut().filter(|s| s.format == Format::Nasnet) {
            for u in &mut s.url {
                if !is_url(u)
                    && !u.starts_with(crate::bundled::SCHEME)
                    && !Path::new(u).is_absolute()
                {
                    *u = base(u);
                }
            }
        }
    }
}

/// Serializes a registry file's text.
pub fn to_json(entries: &[Entry]) -> String {
    let m = Manifest {
        format_version: 1,
        models: entries.to_vec(),
    };
    let mut text = serde_json::to_string_pretty(&m).expect("registry entries always serialize");
    text.push('\n');
    text
}

impl Registry {
    /// Parses and checks the entries of a registry file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Vec<Entry>> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| Error::Invalid {
            path: origin.to_owned(),
            problem: format!("not a valid registry: {e}"),
        })?;
        if m.format_version != 1 {
            return Err(Error::Invalid {
                path: origin.to_owned(),
                problem: format!(
                    "registry format_version {} is not supported",
                    m.format_version
                ),
            });
        }
        for e in &m.models {
            e.check(origin)?;
        }
        Ok(m.models)
    }

    /// The built-in manifest and the bundled models.
    pub fn builtin() -> Result<Self> {
        let mut entries = Self::parse(BUILTIN, "built-in registry")?;
        let mut bundled = Self::parse(crate::bundled::REGISTRY, "bundled registry")?;
        resolve_locations(&mut bundled, |u| format!("{}{u}", crate::bundled::SCHEME));
        entries.append(&mut bundled);
        Ok(Self { entries })
    }

    /// Parses a registry file, or downloads one from an `http(s)` URL, resolving the relative
    /// model directory locations in it against the file's own directory or URL (a zoo
    /// directory's `registry.json`).
    pub fn read_file(path: &Path) -> Result<Vec<Entry>> {
        if let Some(url) = path.to_str().filter(|p| is_url(p)) {
            return Self::read_url(url);
        }
        let text = std::fs::read_to_string(path).map_err(|error| Error::Io {
            path: path.display().to_string(),
            error,
        })?;
        let mut entries = Self::parse(&text, &path.display().to_string())?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        resolve_locations(&mut entries, |u| dir.join(u).display().to_string());
        Ok(entries)
    }

    /// Downloads a registry file (into `$NASNET_HOME/registries/`, replacing an older copy).
    fn read_url(url: &str) -> Result<Vec<Entry>> {
        if crate::fetch::offline_from_env() {
            return Err(Error::Offline(format!(
                "{url}: a registry URL cannot be read offline"
            )));
        }
        // The copy's name only has to be stable for one URL on one machine.
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            url.hash(&mut h);
            h.finish()
        };
        let dest = nasnet_core::cache::nasnet_home()
            .join("registries")
            .join(format!("{key:016x}.json"));
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(|error| Error::Io {
                path: dir.display().to_string(),
                error,
            })?;
        }
        nasnet_fetch::download_checked(url, &dest, false, |_| Ok(()))?;
        let text = std::fs::read_to_string(&dest).map_err(|error| Error::Io {
            path: dest.display().to_string(),
            error,
        })?;
        let mut entries = Self::parse(&text, url)?;
        let base = &url[..url.rfind('/').map_or(url.len(), |i| i + 1)];
        let base = if base.ends_with('/') {
            base.to_owned()
        } else {
            format!("{base}/")
        };
        resolve_locations(&mut entries, |u| format!("{base}{u}"));
        Ok(entries)
    }

    /// The built-in manifest plus `$NASNET_REGISTRY` and `user`, later ones overriding
    /// entries with the same id and version.
    pub fn load(user: Option<&Path>) -> Result<Self> {
        let mut reg = Self::builtin()?;
        let env = std::env::var_os(REGISTRY_ENV).map(PathBuf::from);
        for path in env.iter().map(PathBuf::as_path).chain(user) {
            for e in Self::read_file(path)? {
                reg.entries.retain(|x| {
                    (x.id.as_str(), x.version.as_str()) != (e.id.as_str(), e.version.as_str())
                });
                reg.entries.push(e);
            }
        }
        Ok(reg)
    }

    /// Resolves `ID` (the newest version) or `ID@VERSION`.
    pub fn resolve(&self, spec: &str) -> Result<&Entry> {
        // A spec that is no plain `ID[@VERSION]` names no entry.
        let wanted = nasnet_core::cache::ModelRef::parse(spec);
        let candidates = self.entries.iter().filter(|e| {
            wanted.as_ref().is_some_and(|r| {
                e.id == r.id && r.version.as_deref().is_none_or(|v| e.version == v)
            })
        });
        candidates
            .max_by_key(|e| nasnet_core::cache::Version::parse(&e.version))
            .ok_or_else(|| {
                let known: Vec<String> = self.entries.iter().map(Entry::spec).collect();
                Error::Invalid {
                    path: spec.to_owned(),
                    problem: format!(
                        "no such model in the registry (known: {})",
                        known.join(", ")
                    ),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_is_valid() {
        let r = Registry::builtin().unwrap();
        let large = r.resolve("nasnet-a-large").unwrap();
        assert_eq!(large.arch, Some(Preset::Large));
        assert_eq!(large.config().pooling, PoolingRule::Timm);
        assert_eq!(
            large.sources[0].hf.as_ref().unwrap().repo,
            "timm/nasnetalarge.tf_in1k"
        );
        let fallback = &large.sources[1];
        assert_eq!(fallback.sha256_prefix.as_deref(), Some("a1897284"));
        assert_eq!(large.config_for(fallback).pooling, PoolingRule::Tf);
        assert_eq!(large.preprocessing_for(fallback).resize, 378);
        let mobile = r.resolve("nasnet-a-mobile@1.0.0").unwrap();
        assert_eq!(
            mobile.sources[0].md5.as_deref(),
            Some("020fb642bf7360b370c678b08e0adf61")
        );
        assert_eq!(mobile.sources[1].sha256_prefix.as_deref(), Some("7e03cead"));
        assert_eq!(mobile.labels().len(), 1000);
        assert!(r.resolve("nasnet-a-mobile@9.9.9").is_err());
        assert!(
            r.resolve("resnet")
                .unwrap_err()
                .to_string()
                .contains("known: ")
        );
    }

    #[test]
    fn newest_version_wins_and_bad_entries_are_rejected() {
        let mut r = Registry::builtin().unwrap();
        let mut e = r.resolve("nasnet-a-mobile").unwrap().clone();
        e.version = "1.10.0".into();
        r.entries.push(e.clone());
        e.version = "1.9.0".into();
        r.entries.push(e);
        assert_eq!(r.resolve("nasnet-a-mobile").unwrap().version, "1.10.0");
        let bad = BUILTIN.replace("\"1.0.0\"", "\"one\"");
        assert!(
            Registry::parse(&bad, "x")
                .unwrap_err()
                .to_string()
                .contains("MAJOR.MINOR.PATCH")
        );
    }

    #[test]
    fn model_directory_sources_are_checked() {
        let sha = "0".repeat(64);
        let text = |files: serde_json::Value, extra: serde_json::Value| {
            let mut e = serde_json::json!({
                "id": "m", "version": "1.0.0", "config": Preset::Cifar.config(),
                "num_classes": 10, "license": "x",
                "sources": [{"url": ["m/1.0.0/"], "format": "nasnet", "files": files}],
            });
            for (k, v) in extra.as_object().unwrap() {
                e[k] = v.clone();
            }
            serde_json::json!({"format_version": 1, "models": [e]}).to_string()
        };
        let good = serde_json::json!({"model.json": sha, "model.onnx": sha});
        let e = &Registry::parse(&text(good.clone(), serde_json::json!({})), "r").unwrap()[0];
        assert_eq!(e.arch_name(), "custom");
        assert_eq!(e.config().num_classes, 10);
        for (files, extra, problem) in [
            (
                serde_json::json!({"model.onnx": sha}),
                serde_json::json!({}),
                "no model.json",
            ),
            (
                serde_json::json!({"model.json": sha, "../x": sha}),
                serde_json::json!({}),
                "not a plain name",
            ),
            (
                serde_json::json!({"model.json": "abc"}),
                serde_json::json!({}),
                "64 hex",
            ),
            (
                good.clone(),
                serde_json::json!({"config": null}),
                "neither `arch` nor `config`",
            ),
        ] {
            let err = Registry::parse(&text(files, extra), "r")
                .unwrap_err()
                .to_string();
            assert!(err.contains(problem), "{err}");
        }
        // An upstream file needs the pooling rule and transform its importer applies.
        let upstream = BUILTIN.replacen("\"pooling\": \"timm\",", "", 1);
        let err = Registry::parse(&upstream, "r").unwrap_err().to_string();
        assert!(err.contains("without a pooling rule"), "{err}");
    }

    #[test]
    fn relative_locations_follow_the_registry_file() {
        let dir = std::env::temp_dir().join(format!("nasnet-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("registry.json");
        let sha = "0".repeat(64);
        let e = serde_json::json!({
            "id": "m", "version": "1.0.0", "arch": "nasnet-a-cifar", "num_classes": 10,
            "license": "x",
            "sources": [{"url": ["m/1.0.0/", "https://example.org/zoo/m/1.0.0/"],
                         "format": "nasnet", "files": {"model.json": sha}}],
        });
        std::fs::write(&path, serde_json::json!({"models": [e]}).to_string()).unwrap();
        let entries = Registry::read_file(&path).unwrap();
        let url = &entries[0].sources[0].url;
        assert_eq!(Path::new(&url[0]), dir.join("m/1.0.0/"));
        assert_eq!(url[1], "https://example.org/zoo/m/1.0.0/");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
