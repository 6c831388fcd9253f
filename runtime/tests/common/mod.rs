//! What the runtime's integration tests share.

use std::path::Path;

use nasnet_core::meta::{self, FileDigest, ModelMeta, Preprocessing};
use nasnet_model::NasNet;
use nasnet_model::onnx;

/// Writes a model directory holding only what the runtimes read: model.json and model.onnx.
pub fn model_dir(dir: &Path, net: &NasNet) {
    std::fs::create_dir_all(dir).unwrap();
    onnx::write_onnx(net, &dir.join(meta::ONNX_FILE)).unwrap();
    let c = &net.config;
    let m = ModelMeta {
        format_version: meta::FORMAT_VERSION,
        name: "test".into(),
        architecture: c.clone(),
        preprocessing: Preprocessing::cadene(c.image_size),
        labels: meta::default_labels(c.num_classes),
        provenance: None,
        training: None,
        weights: FileDigest {
            file: meta::WEIGHTS_FILE.into(),
            sha256: String::new(),
        },
        nnef: None,
        quantization: None,
    };
    std::fs::write(dir.join(meta::META_FILE), m.to_json()).unwrap();
}
