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
