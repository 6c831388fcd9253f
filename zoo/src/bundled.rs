//! Models compiled into the zoo, so that they run with no network and no file beside the
//! program: the zoo directory `zoo/bundled/` that `nasnet publish --to zoo/bundled` writes,
//! its `registry.json` and every file it lists. Their sources say `bundled:ID/VERSION/`.

/// The location prefix of a bundled model directory.
pub const SCHEME: &str = "bundled:";

/// The bundled zoo's registry file.
pub const REGISTRY: &str = include_str!("../bundled/registry.json");

/// One bundled file: its path under `zoo/bundled/` and its content.
macro_rules! bundled {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!("../bundled/", $path)))),*]
    };
}

/// Every bundled file (about 1.3 MB: NASNet-A N=2 F=8 trained on Fashion-MNIST, and its int8
/// form).
static FILES: &[(&str, &[u8])] = bundled![
    "nasnet-a-fashion-mnist/1.0.0/model.json",
    "nasnet-a-fashion-mnist/1.0.0/model.safetensors",
    "nasnet-a-fashion-mnist/1.0.0/model.onnx",
    "nasnet-a-fashion-mnist-int8/1.0.0/model.json",
    "nasnet-a-fashion-mnist-int8/1.0.0/model.onnx",
];

/// The content of file `name` in the bundled model directory `location` (`bundled:ID/VERSION/`).
pub fn file(location: &str, name: &str) -> Option<&'static [u8]> {
    let dir = location.strip_prefix(SCHEME)?.trim_end_matches('/');
    let path = format!("{dir}/{name}");
    FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, bytes)| *bytes)
}

#[cfg(test)]
mod tests {
    use crate::registry::Registry;

    /// Every file the bundled registry lists is compiled in with the sha256 it gives.
    #[test]
    fn bundled_files_match_their_registry() {
        let dir = std::env::temp_dir().join(format!("nasnet-bundled-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let entries = Registry::parse(super::REGISTRY, "bundled").unwrap();
        assert!(!entries.is_empty());
        for e in &entries {
            let source = &e.sources[0];
            let location = format!("{}{}", super::SCHEME, source.url[0]);
            for (name, sha) in &source.files {
                let bytes = super::file(&location, name)
                    .unwrap_or_else(|| panic!("{}: {name} is not bundled", e.spec()));
                let path = dir.join(name);
                std::fs::write(&path, bytes).unwrap();
                let got = nasnet_core::fsutil::sha256_file(&path).unwrap();
                assert_eq!(&got, sha, "{}: {name}", e.spec());
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
