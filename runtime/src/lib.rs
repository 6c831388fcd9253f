//! Serving NASNet models: the evaluation preprocessing each model was trained with (from its
//! `model.json`). Builds without Candle, so apps and the C library can use it alone.

pub mod preprocess;

pub use preprocess::{ImageError, decode, load_image, preprocess};
