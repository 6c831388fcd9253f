//! Classify images with the one-call API.
//!
//! ```sh
//! cargo run --release --example classify -- nasnet-a-mobile photo.jpg [more.jpg ...]
//! cargo run --release --example classify -- runs/fmnist examples/images/bag-0018.png
//! ```
//! The first argument is a model directory or a zoo id (pulled on first use).

use nasnet::Classifier;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model), images) = (args.next(), args.collect::<Vec<_>>()) else {
        return Err("usage: classify MODEL_DIR|ZOO_ID IMAGE...".into());
    };
    let classifier = if std::path::Path::new(&model).is_dir() {
        Classifier::open(&model)?
    } else {
        Classifier::from_pretrained(&model)?
    };
    let mut failed = false;
    for image in &images {
        match classifier.classify(image, 3) {
            Ok(predictions) => {
                println!("{image}");
                for p in predictions {
                    println!("  {:>7.4}  {} ({})", p.probability, p.label, p.index);
                }
            }
            Err(e) => {
                eprintln!("{image}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}
