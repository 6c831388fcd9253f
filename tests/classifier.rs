//! The one-call path on a small synthetic model: a folder where one file is broken answers
//! per file, and a folder or model that is not there is an error naming it.

use nasnet::Classifier;
use nasnet_core::Preset;
use nasnet_testsupport::{image, small};

#[test]
fn a_folder_is_classified_file_by_file_and_missing_paths_are_named() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("model");
    nasnet_zoo::import::write_synthetic_config(
        &model,
        "small",
        small(Preset::Mobile, 8, 0.25, 10),
        false,
    )
    .unwrap();
    let c = Classifier::open(&model).unwrap();
    let photos = d.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    std::fs::copy(image("chelsea.jpg"), photos.join("a.jpg")).unwrap();
    std::fs::write(photos.join("b.jpg"), b"\xff\xd8\xff\xe0 not a jpeg").unwrap();
    std::fs::write(photos.join("notes.txt"), b"not an image").unwrap();
    let all = c.classify_dir(&photos, 3).unwrap();
    assert_eq!(all.len(), 2, "images only");
    let good = all[0].result.as_ref().unwrap();
    assert_eq!(good.len(), 3);
    assert_eq!(
        good[0].label,
        "class_".to_owned() + &good[0].index.to_string()
    );
    let e = all[1].result.as_ref().unwrap_err().to_string();
    assert!(e.contains("b.jpg"), "{e}");
    assert_eq!(c.embed(photos.join("a.jpg")).unwrap().len(), 24 * 8);

    let gone = d.path().join("gone");
    let e = c.classify_dir(&gone, 3).err().unwrap().to_string();
    assert!(e.contains("gone"), "{e}");
    let e = Classifier::open(&gone).err().unwrap().to_string();
    assert!(e.contains("gone"), "{e}");
}

/// The bundled int8 model, written out as `nasnet pull` leaves it, opens through the C library
/// like any model and agrees with the fp32 model it was made from on a photo's top class.
#[test]
fn the_c_library_opens_the_bundled_int8_model() {
    let d = tempfile::tempdir().unwrap();
    let materialize = |id: &str, files: &[&str]| {
        let dir = d.path().join(id);
        std::fs::create_dir(&dir).unwrap();
        let location = format!("{}{id}/1.0.0/", nasnet_zoo::bundled::SCHEME);
        for name in files {
            let bytes = nasnet_zoo::bundled::file(&location, name).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        dir
    };
    let int8 = materialize("nasnet-a-fashion-mnist-int8", &["model.json", "model.onnx"]);
    let fp32 = materialize(
        "nasnet-a-fashion-mnist",
        &["model.json", "model.onnx", "model.safetensors"],
    );
    let photo = image("chelsea.jpg");
    let want = Classifier::open(&fp32)
        .unwrap()
        .classify(&photo, 1)
        .unwrap();

    let c = |p: &std::path::Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let (dir, file) = (c(&int8), c(&photo));
    let mut m = std::ptr::null_mut();
    // SAFETY: a NUL-terminated path, default options, a place for the handle.
    let status =
        unsafe { nasnet_bindings::nasnet_model_open(dir.as_ptr(), std::ptr::null(), &mut m) };
    assert_eq!(status, nasnet_bindings::NasnetStatus::Ok);
    let mut out = [nasnet_bindings::NasnetPrediction {
        index: usize::MAX,
        probability: 0.0,
        logit: 0.0,
        label: std::ptr::null(),
    }];
    let mut written = 0;
    // SAFETY: `m` is open; the path is NUL-terminated; `out` holds one prediction.
    let status = unsafe {
        nasnet_bindings::nasnet_classify_file(
            m,
            file.as_ptr(),
            1,
            out.as_mut_ptr(),
            1,
            &mut written,
        )
    };
    assert_eq!(status, nasnet_bindings::NasnetStatus::Ok);
    assert_eq!((written, out[0].index), (1, want[0].index));
    // SAFETY: `m` is the handle opened above, closed once.
    let status = unsafe { nasnet_bindings::nasnet_model_close(&mut m) };
    assert_eq!(status, nasnet_bindings::NasnetStatus::Ok);
}
