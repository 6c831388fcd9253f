//! The evaluation preprocessing against the reference pipelines on real photographs: timm's
//! eval transform for NASNet-A Large and Cadene's `TransformImage`, both with PIL
//! (fixture made by `scripts/reference/make_preprocess_fixtures.py`). Each test runs with
//! every JPEG decoder the build has (libjpeg-turbo and the pure-Rust one), within the same
//! bounds.

use candle_core::Device;
use nasnet_core::meta::Preprocessing;
use nasnet_core::preprocess::{JpegDecoder, with_jpeg_decoder};
use nasnet_runtime::load_image;
use nasnet_testsupport::image;

/// `f` once with each JPEG decoder of this build.
fn each_decoder(f: impl Fn(JpegDecoder)) {
    for &d in JpegDecoder::compiled() {
        with_jpeg_decoder(d, || f(d));
    }
    if JpegDecoder::compiled().len() < 2 {
        eprintln!("SKIPPED (libjpeg-turbo part): this build has the pure-Rust JPEG decoder only");
    }
}

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
    each_decoder(|decoder| {
        for photo in ["chelsea", "portrait", "phone12mp"] {
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
                    "{decoder:?} {photo} {pipeline}: mean |Δ| = {mean:.5} ({:.3}/255), max |Δ| = {max:.4}",
                    mean * 255.0
                );
                assert!(
                    mean <= 1.0 / 255.0,
                    "{decoder:?} {photo} {pipeline}: mean |Δ| {mean} exceeds 1/255"
                );
            }
        }
    });
}

#[test]
fn exif_orientation_is_applied() {
    // The same photo stored rotated, with EXIF orientation 6 telling viewers to turn it back.
    each_decoder(|decoder| {
        let p = Preprocessing::cadene(224);
        let upright = load_image(&image("chelsea.jpg"), &p).unwrap();
        let tagged = load_image(&image("chelsea_exif6.jpg"), &p).unwrap();
        let mean = upright
            .iter()
            .zip(&tagged)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / upright.len() as f32;
        eprintln!("{decoder:?}: EXIF-rotated vs upright: mean |Δ| = {mean:.4}");
        // Re-encoding the JPEG costs a little; an unrotated decode would be a different picture.
        assert!(mean < 0.03, "{mean}");
    });
}

#[test]
fn photo_logits_follow_the_reference_pipeline() {
    // NASNet-A Mobile (synthetic weights and the reference's batch-norm statistics) on the
    // 12 MP photo: our pipeline (DCT-scaled decode, SIMD resize) against PIL's pixels.
    let r = nasnet_testsupport::reference("mobile.safetensors");
    let config = nasnet_core::Preset::Mobile.config();
    let net = nasnet_model::init::synthetic_network_with(&config, r.stats.clone()).unwrap();
    let refs = candle_core::safetensors::load(
        nasnet_testsupport::fixture("preprocess.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let p = Preprocessing::cadene(224);
    let theirs: Vec<f32> = refs["phone12mp.cadene224"]
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap()
        .iter()
        .map(|&b| (b as f32 / 255.0 - 0.5) / 0.5)
        .collect();
    let logits = |x: Vec<f32>| {
        let x = candle_core::Tensor::from_vec(x, (1, 3, 224, 224), &Device::Cpu).unwrap();
        net.forward(&x).unwrap().logits
    };
    let want = logits(theirs);
    each_decoder(|decoder| {
        let ours = load_image(&image("phone12mp.jpg"), &p).unwrap();
        nasnet_testsupport::assert_within(
            &format!("{decoder:?}: phone12mp logits, ours vs PIL's pixels"),
            &logits(ours),
            &want,
            1e-2,
        );
    });
}

/// A JPEG APP1 segment holding only an EXIF orientation.
fn exif_orientation_segment(orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0\x08\0\0\0".to_vec(); // little-endian, first IFD at 8
    tiff.extend(1u16.to_le_bytes()); // one entry
    tiff.extend(0x0112u16.to_le_bytes()); // Orientation
    tiff.extend(3u16.to_le_bytes()); // SHORT
    tiff.extend(1u32.to_le_bytes()); // one value
    tiff.extend(orientation.to_le_bytes());
    tiff.extend([0, 0]);
    tiff.extend(0u32.to_le_bytes()); // no next IFD
    let mut seg = vec![0xFF, 0xE1];
    seg.extend(((2 + 6 + tiff.len()) as u16).to_be_bytes());
    seg.extend(b"Exif\0\0");
    seg.extend(tiff);
    seg
}

#[test]
fn large_photos_are_turned_by_their_exif_orientation() {
    // The 12 MP photo takes the reduced-scale decode: tagged with orientation 6, it must come
    // out as the full decode turned upright does.
    let photo = std::fs::read(image("phone12mp.jpg")).unwrap();
    let mut tagged = photo[..2].to_vec();
    tagged.extend(exif_orientation_segment(6));
    tagged.extend(&photo[2..]);
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("tagged.jpg");
    std::fs::write(&path, &tagged).unwrap();
    each_decoder(|decoder| {
        let p = Preprocessing::cadene(224);
        let full = nasnet_runtime::decode(&path).unwrap();
        assert_eq!(
            (full.width(), full.height()),
            (3024, 4032),
            "turned upright"
        );
        let expected = nasnet_runtime::preprocess(&full, &p);
        let ours = load_image(&path, &p).unwrap();
        let unturned = load_image(&image("phone12mp.jpg"), &p).unwrap();
        let mean = |a: &[f32], b: &[f32]| {
            a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
        };
        let (m, u) = (mean(&ours, &expected), mean(&unturned, &expected));
        eprintln!("{decoder:?}: tagged vs full decode turned: {m:.5}; untagged: {u:.5}");
        assert!(m <= 1.0 / 255.0, "{m}");
        assert!(u > 10.0 * m, "the tag must matter: {u} vs {m}");
    });
}
