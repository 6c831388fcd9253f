//! Embed images (the pooled penultimate features) and compare them by cosine similarity.
//!
//! ```sh
//! cargo run --release --example embed -- runs/fmnist examples/images/bag-0018.png examples/images/coat-0006.png
//! ```

use nasnet::Classifier;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::MIN_POSITIVE)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, images @ ..] = args.as_slice() else {
        return Err("usage: embed MODEL_DIR|ZOO_ID IMAGE...".into());
    };
    let classifier = if std::path::Path::new(model).is_dir() {
        Classifier::open(model)?
    } else {
        Classifier::from_pretrained(model)?
    };
    let embeddings = images
        .iter()
        .map(|i| classifier.embed(i))
        .collect::<Result<Vec<_>, _>>()?;
    for (image, e) in images.iter().zip(&embeddings) {
        println!("{image}: {} features", e.len());
    }
    for i in 0..embeddings.len() {
        for j in i + 1..embeddings.len() {
            println!(
                "cosine({}, {}) = {:.4}",
                images[i],
                images[j],
                cosine(&embeddings[i], &embeddings[j])
            );
        }
    }
    Ok(())
}
