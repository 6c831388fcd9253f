//! The model registry: which model versions exist, where their weights come from, how to
//! check and convert them. The built-in manifest (`zoo/registry.json`) is compiled in; a user
//! registry file (`--registry FILE` or `$NASNET_REGISTRY`) adds entries or overrides entries
//! with the same id and version, so an organisation can run its own zoo.

use std::path::{Path, PathBuf};

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
}

/// Serialized names of [`SourceFormat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Timm,
    Cadene,
    Keras,
}

impl From<Format> for SourceFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Timm => SourceFormat::Timm,
            Format::Cadene => SourceFormat::Cadene,
            Format::Keras => SourceFormat::Keras,
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
    pub arch: Preset,
    /// Replaces the preset's configuration (a zoo of custom widths, or tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<NetworkConfig>,
    pub pooling: PoolingRule,
    pub preprocessing: Transform,
    pub num_classes: usize,
    /// `imagenet-1k`, or the class names.
    #[serde(default = "imagenet")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<Accuracy>,
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

fn imagenet() -> Labels {
    Labels::Named("imagenet-1k".into())
}

impl Entry {
    /// `id@version`.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    /// The network configuration, with the entry's class count and pooling rule.
    pub fn config(&self) -> NetworkConfig {
        let mut c = self.config.clone().unwrap_or_else(|| self.arch.config());
        c.num_classes = self.num_classes;
        c.pooling = self.pooling;
        c
    }

    /// The configuration for weights from `source`.
    pub fn config_for(&self, source: &Source) -> NetworkConfig {
        let mut c = self.config();
        c.pooling = source.pooling.unwrap_or(self.pooling);
        c
    }

    /// The eval transform for weights from `source`.
    pub fn preprocessing_for(&self, source: &Source) -> Preprocessing {
        let size = self.config().image_size;
        match source.preprocessing.unwrap_or(self.preprocessing) {
            Transform::Timm => Preprocessing::timm(size),
            Transform::Cadene => Preprocessing::cadene(size),
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
        for s in &self.sources {
            if s.hf.is_none() && s.url.is_empty() {
                return Err(bad("a source has neither `hf` nor `url`".into()));
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

    /// The built-in manifest only.
    pub fn builtin() -> Result<Self> {
        Ok(Self {
            entries: Self::parse(BUILTIN, "built-in registry")?,
        })
    }

    /// The built-in manifest plus `$NASNET_REGISTRY` and `user`, later ones overriding
    /// entries with the same id and version.
    pub fn load(user: Option<&Path>) -> Result<Self> {
        let mut reg = Self::builtin()?;
        let env = std::env::var_os(REGISTRY_ENV).map(PathBuf::from);
        for path in env.iter().map(PathBuf::as_path).chain(user) {
            let text = std::fs::read_to_string(path).map_err(|error| Error::Io {
                path: path.display().to_string(),
                error,
            })?;
            for e in Self::parse(&text, &path.display().to_string())? {
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
        let (id, version) = match spec.split_once('@') {
            Some((i, v)) => (i, Some(v)),
            None => (spec, None),
        };
        let candidates = self
            .entries
            .iter()
            .filter(|e| e.id == id && version.is_none_or(|v| e.version == v));
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
        assert_eq!(large.arch, Preset::Large);
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
}
