//! Where models live on disk: `$NASNET_HOME/models/ID/VERSION/`, and how a model reference
//! (`ID` or `ID@VERSION`) names one. The zoo writes this layout, the CLI and the C library
//! read it; this module is the one place that knows it.

use std::path::{Path, PathBuf};

use crate::meta::META_FILE;

/// `$NASNET_HOME`, else `$XDG_CACHE_HOME/nasnet`, else `~/.cache/nasnet`.
pub fn nasnet_home() -> PathBuf {
    if let Some(h) = std::env::var_os("NASNET_HOME") {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("nasnet");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache"))
        .unwrap_or_else(std::env::temp_dir)
        .join("nasnet")
}

/// A semantic version `MAJOR.MINOR.PATCH`, ordered numerically (`1.10.0` > `1.9.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    /// Parses `MAJOR.MINOR.PATCH`; anything else is `None`.
    pub fn parse(v: &str) -> Option<Self> {
        let mut it = v.split('.').map(|p| p.parse::<u64>().ok());
        let r = Self(it.next()??, it.next()??, it.next()??);
        it.next().is_none().then_some(r)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Whether `id` is a plain model name: not empty, no path separator, no `@`, no leading dot.
pub fn is_plain_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(['/', '\\', '@']) && !id.starts_with('.')
}

/// A model reference: `ID` (the newest version) or `ID@VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// The model id.
    pub id: String,
    /// The version asked for; `None` means the newest.
    pub version: Option<String>,
}

impl ModelRef {
    /// Parses `ID` or `ID@VERSION`; `None` when the id is not a plain name.
    pub fn parse(spec: &str) -> Option<Self> {
        let (id, version) = match spec.split_once('@') {
            Some((i, v)) => (i, Some(v.to_owned())),
            None => (spec, None),
        };
        is_plain_id(id).then(|| Self {
            id: id.to_owned(),
            version,
        })
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}@{v}", self.id),
            None => f.write_str(&self.id),
        }
    }
}

/// `HOME/models/ID`: every cached version of one model.
pub fn model_root(home: &Path, id: &str) -> PathBuf {
    home.join("models").join(id)
}

/// `HOME/models/ID/VERSION`: one cached model version.
pub fn model_dir(home: &Path, id: &str, version: &str) -> PathBuf {
    model_root(home, id).join(version)
}

/// Whether a complete model directory is cached there (its `model.json` is written last).
pub fn is_complete(dir: &Path) -> bool {
    dir.join(META_FILE).is_file()
}

/// The versions of `id` complete in the cache under `home`, oldest first. Directories whose
/// names are not `MAJOR.MINOR.PATCH` are ignored.
pub fn cached_versions(home: &Path, id: &str) -> Vec<(Version, PathBuf)> {
    let mut versions: Vec<(Version, PathBuf)> = std::fs::read_dir(model_root(home, id))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = Version::parse(&e.file_name().to_string_lossy())?;
            Some((v, e.path()))
        })
        .filter(|(_, p)| is_complete(p))
        .collect();
    versions.sort();
    versions
}

/// The cached directory a reference names: the exact version, or the newest complete one.
pub fn resolve(home: &Path, r: &ModelRef) -> Option<PathBuf> {
    match &r.version {
        Some(v) => Some(model_dir(home, &r.id, v)).filter(|d| is_complete(d)),
        None => cached_versions(home, &r.id).pop().map(|(_, p)| p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically_and_references_parse() {
        assert!(Version::parse("1.10.0") > Version::parse("1.9.3"));
        assert_eq!(Version::parse("1.2"), None);
        assert_eq!(Version::parse("1.2.3.4"), None);
        assert_eq!(Version::parse("1.2.x"), None);
        let r = ModelRef::parse("nasnet-a-mobile@1.0.0").unwrap();
        assert_eq!(
            (r.id.as_str(), r.version.as_deref()),
            ("nasnet-a-mobile", Some("1.0.0"))
        );
        assert_eq!(r.to_string(), "nasnet-a-mobile@1.0.0");
        assert!(ModelRef::parse("../x").is_none());
        assert!(ModelRef::parse(".hidden").is_none());
        assert!(ModelRef::parse("").is_none());
    }

    #[test]
    fn resolve_picks_the_newest_complete_version() {
        let home = std::env::temp_dir().join(format!("nasnet-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        for (v, complete) in [
            ("1.9.0", true),
            ("1.10.0", true),
            ("2.0.0", false),
            ("junk", true),
        ] {
            let d = model_dir(&home, "m", v);
            std::fs::create_dir_all(&d).unwrap();
            if complete {
                std::fs::write(d.join(META_FILE), "{}").unwrap();
            }
        }
        let newest = resolve(&home, &ModelRef::parse("m").unwrap()).unwrap();
        assert!(newest.ends_with("1.10.0"), "{}", newest.display());
        assert!(resolve(&home, &ModelRef::parse("m@2.0.0").unwrap()).is_none());
        assert!(resolve(&home, &ModelRef::parse("m@1.9.0").unwrap()).is_some());
        assert!(resolve(&home, &ModelRef::parse("other").unwrap()).is_none());
        std::fs::remove_dir_all(&home).unwrap();
    }
}
