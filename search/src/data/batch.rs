//! Batches: augmentation (random crop, flip, cutout) and normalization into tensors.

use candle_core::{Device, Tensor};

use crate::rng::Rng;

use super::Dataset;

/// Random crop after zero padding, horizontal flip, cutout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Pixels of zero padding on each side before a random crop back to the image size.
    pub pad: usize,
    pub flip: bool,
    /// Side of the square zeroed at a random center (0: none).
    pub cutout: usize,
}

impl Augment {
    pub const NONE: Self = Self {
        pad: 0,
        flip: false,
        cutout: 0,
    };
}

/// Turns images into a normalized `[B, 3, H, W]` batch, augmenting them when `augment` is set.
#[derive(Debug, Clone)]
pub struct Batcher {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub augment: Augment,
}

impl Batcher {
    pub fn batch(
        &self,
        data: &Dataset,
        indices: &[usize],
        rng: &mut Rng,
        device: &Device,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let (h, w, c) = (data.height, data.width, data.channels);
        let plane = h * w;
        let mut out = vec![0f32; indices.len() * 3 * plane];
        let a = self.augment;
        for (b, &i) in indices.iter().enumerate() {
            let img = data.image(i);
            let (dy, dx) = if a.pad > 0 {
                (rng.below(2 * a.pad + 1), rng.below(2 * a.pad + 1))
            } else {
                (a.pad, a.pad)
            };
            let flip = a.flip && rng.below(2) == 1;
            let cut = (a.cutout > 0).then(|| (rng.below(h), rng.below(w)));
            let dst = &mut out[b * 3 * plane..(b + 1) * 3 * plane];
            for ch in 0..3 {
                let src = &img[(ch % c) * plane..(ch % c + 1) * plane];
                let zero = -self.mean[ch] / self.std[ch];
                for y in 0..h {
                    for x in 0..w {
                        // Output (y, x) reads padded (y + dy, x + dx), i.e. source (y + dy - pad).
                        let sy = (y + dy).wrapping_sub(a.pad);
                        let xx = if flip { w - 1 - x } else { x };
                        let sx = (xx + dx).wrapping_sub(a.pad);
                        let mut v = if sy < h && sx < w {
                            (src[sy * w + sx] as f32 / 255.0 - self.mean[ch]) / self.std[ch]
                        } else {
                            zero
                        };
                        if let Some((cy, cx)) = cut {
                            let half = a.cutout / 2;
                            if y + half >= cy
                                && y < cy + a.cutout - half
                                && x + half >= cx
                                && x < cx + a.cutout - half
                            {
                                v = 0.0;
                            }
                        }
                        dst[ch * plane + y * w + x] = v;
                    }
                }
            }
        }
        let x = Tensor::from_vec(out, (indices.len(), 3, h, w), device)?;
        let labels: Vec<u32> = indices.iter().map(|&i| data.labels[i]).collect();
        let y = Tensor::from_vec(labels, indices.len(), device)?;
        Ok((x, y))
    }
}
