//! The evaluation preprocessing against the reference pipelines on real photographs: timm's
//! eval transform for NASNet-A Large and Cadene's `TransformImage`, both with PIL
//! (fixture made by `scripts/reference/make_preprocess_fixtures.py`).

use candle_core::Device;
use nasnet_core::meta::Preprocessing;
use nasnet_runtime::load_image;
use nasnet_testsupport::image;

/// Mean and max absolute difference, in normalized units (the network's input scale).
fn compare(ours: &[f32], reference_u8: &[u8]) -> (f32, f32) {
    assert_eq!(ours.len(), reference_u8.len());
    let mut sum = 0f64;
    let mut max = 0f32;
    for (a, &b) in ours.iter().zip(reference_u8) {
        let r = (b as f32 / 255.0 - 0.5) / 0.5;
        let d = (a - r).abs();
        sum += d as f64;
        max = max.max(d);
    }
    ((sum / ours.len() as f64) as f32, max)
}

#[test]
fn preprocessing_matches_timm_and_cadene_pipelines() {
    let refs = candle_core::safetensors::load(
        nasnet_testsupport::fixture("preprocess.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for photo in ["chelsea", "portrait"] {
        for (pipeline, p) in [
            ("timm331", Preprocessing::timm(331)),
            ("cadene224", Preprocessing::cadene(224)),
            ("cadene331", Preprocessing::cadene(331)),
        ] {
            let r = &refs[&format!("{photo}.{pipeline}")];
            assert_eq!(r.dims(), &[3, p.crop, p.crop]);
            let r: Vec<u8> = r.flatten_all().unwrap().to_vec1().unwrap();
            let ours = load_image(&image(&format!("{photo}.jpg")), &p).unwrap();
            let (mean, max) = compare(&ours, &r);
            eprintln!(
                "{photo} {pipeline}: mean |Δ| = {mean:.5} ({:.3}/255), max |Δ| = {max:.4}",
                mean * 255.0
            );
            assert!(
                mean <= 1.0 / 255.0,
                "{photo} {pipeline}: mean |Δ| {mean} exceeds 1/255"
            );
        }
    }
}

#[test]
fn exif_orientation_is_applied() {
    // The same photo stored rotated, with EXIF orientation 6 telling viewers to turn it back.
    let p = Preprocessing::cadene(224);
    let upright = load_image(&image("chelsea.jpg"), &p).unwrap();
    let tagged = load_image(&image("chelsea_exif6.jpg"), &p).unwrap();
    let mean = upright
        .iter()
        .zip(&tagged)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / upright.len() as f32;
    eprintln!("EXIF-rotated vs upright: mean |Δ| = {mean:.4}");
    // Re-encoding the JPEG costs a little; an unrotated decode would be a different picture.
    assert!(mean < 0.03, "{mean}");
}
