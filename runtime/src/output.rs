//! What a model returns, in one shape: [`Outputs`] for a batch (logits and features, row by
//! row) and [`Prediction`] for one class of a top-k answer, with its label.

use std::sync::Arc;

/// The class names of a model, and their WordNet ids where the labels are ImageNet-1k's.
#[derive(Debug, Clone)]
pub struct Labels {
    names: Arc<[String]>,
    synsets: Option<Arc<[String]>>,
}

impl Labels {
    /// The labels of `names` (WordNet ids attached when they are ImageNet-1k's).
    pub fn new(names: &[String]) -> Self {
        Self {
            synsets: nasnet_core::meta::synsets_for(names).map(Arc::from),
            names: Arc::from(names),
        }
    }

    /// The name of class `index` (empty when out of range).
    pub fn name(&self, index: usize) -> &str {
        self.names.get(index).map_or("", String::as_str)
    }

    /// The WordNet id of class `index`, for ImageNet-1k labels.
    pub fn synset(&self, index: usize) -> Option<&str> {
        self.synsets.as_ref()?.get(index).map(String::as_str)
    }

    /// Every class name, in class order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// One class of a top-k answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// The class index.
    pub index: usize,
    /// The class name (empty when the model has no name for it).
    pub label: String,
    /// The class's WordNet id, where the labels are ImageNet-1k's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synset: Option<String>,
    /// Softmax probability.
    pub probability: f32,
    /// The raw logit.
    pub logit: f32,
}

/// The outputs of a batch, with the labels to name its classes.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Rows in the batch.
    pub batch: usize,
    /// Logits per row.
    pub num_classes: usize,
    /// Features per row.
    pub num_features: usize,
    /// `batch x num_classes`, row-major.
    pub logits: Vec<f32>,
    /// `batch x num_features`, row-major.
    pub features: Vec<f32>,
    /// The model's class names.
    pub labels: Labels,
}

/// Softmax of one row of logits (in f64, then rounded).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| (e / sum) as f32).collect()
}

/// The indices of the `k` largest logits, largest first (ties by index), with their
/// probabilities.
pub fn top_k_indices(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let p = softmax(logits);
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, p[i])).collect()
}

/// The `k` most probable classes of one row of logits, most probable first (ties by index),
/// named by `labels`.
pub fn top_k(logits: &[f32], k: usize, labels: &Labels) -> Vec<Prediction> {
    top_k_indices(logits, k)
        .into_iter()
        .map(|(i, probability)| Prediction {
            index: i,
            label: labels.name(i).to_owned(),
            synset: labels.synset(i).map(str::to_owned),
            probability,
            logit: logits[i],
        })
        .collect()
}

impl Outputs {
    /// The logits of row `row`.
    pub fn logits(&self, row: usize) -> &[f32] {
        &self.logits[row * self.num_classes..(row + 1) * self.num_classes]
    }

    /// The features (pooled penultimate activations) of row `row`.
    pub fn features(&self, row: usize) -> &[f32] {
        &self.features[row * self.num_features..(row + 1) * self.num_features]
    }

    /// The class probabilities of row `row`.
    pub fn probabilities(&self, row: usize) -> Vec<f32> {
        softmax(self.logits(row))
    }

    /// The `k` most probable classes of row `row`, with their labels.
    pub fn top_k(&self, row: usize, k: usize) -> Vec<Prediction> {
        top_k(self.logits(row), k, &self.labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_logit_and_names_classes() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let labels = Labels::new(&names);
        let p = top_k(&[1.0, 3.0, 3.0], 2, &labels);
        assert_eq!((p[0].index, p[0].label.as_str(), p[1].index), (1, "b", 2));
        assert!((p[0].probability - p[1].probability).abs() < 1e-7);
        assert!(p[0].synset.is_none());
        let imagenet = Labels::new(&nasnet_core::meta::imagenet_labels());
        assert_eq!(imagenet.synset(0), Some("n01440764"));
        assert_eq!(imagenet.name(0), "tench");
    }
}
