//! The op vocabulary of the network: what a [`crate::graph::Graph`] is asked to compute, with
//! no knowledge of how. Convolution geometry, pooling, padding and the batch-norm parameters
//! are plain data here, shared by the Candle evaluator, the CPU kernels and the ONNX exporter.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::Result;

/// Padding in pixels: top, left, bottom, right.
pub type Pads = [usize; 4];

/// A convolution's geometry; the weight is `[out, in / groups, kh, kw]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Step between windows, in both dimensions.
    pub stride: usize,
    /// Spacing between kernel taps (1: dense).
    pub dilation: usize,
    /// Zero padding around the input.
    pub pads: Pads,
    /// Channel groups (`C` for a depthwise convolution).
    pub groups: usize,
}

/// Output length of a window of `extent` pixels sliding by `stride` over `n` pixels padded by
/// `before` and `after` (floor mode, as every NASNet pool and convolution).
pub fn output_size(n: usize, before: usize, after: usize, extent: usize, stride: usize) -> usize {
    (n + before + after).saturating_sub(extent) / stride + 1
}

/// Max or average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// The window's maximum; padding never wins.
    Max,
    /// The window's mean.
    Avg,
}

/// 2-D pooling with explicit padding. Max pools ignore padding (TF/PyTorch's -inf padding);
/// average pools divide by the full window (`count_include_pad`) or by the valid pixels only.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    /// Max or average.
    pub kind: PoolKind,
    /// Square window size.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Padding around the input.
    pub pads: Pads,
    /// Average pools: divide by the full window (true) or by the valid pixels only.
    pub count_include_pad: bool,
}

/// Batch norm (keys `weight`, `bias`, `running_mean`, `running_var`).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    /// Scale (gamma), `[C]`.
    pub weight: Tensor,
    /// Shift (beta), `[C]`.
    pub bias: Tensor,
    /// Running mean, `[C]`, used in inference.
    pub running_mean: Tensor,
    /// Running (unbiased) variance, `[C]`, used in inference.
    pub running_var: Tensor,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// The whole running-statistics tensors and this batch norm's first channel in them, where
    /// training writes updated statistics (a [`BatchNorm::narrow`] view updates its slice).
    stats: (Tensor, Tensor, usize),
}

impl BatchNorm {
    /// Reads the four `[c]` tensors from `vb` (keys `weight`, `bias`, `running_mean`,
    /// `running_var`).
    pub fn new(vb: &VarBuilder, c: usize, eps: f64) -> Result<Self> {
        let running_mean = vb.get(c, "running_mean")?;
        let running_var = vb.get(c, "running_var")?;
        Ok(Self {
            weight: vb.get(c, "weight")?,
            bias: vb.get(c, "bias")?,
            stats: (running_mean.clone(), running_var.clone(), 0),
            running_mean,
            running_var,
            eps,
        })
    }

    /// Channels `start..start + len` of this batch norm.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        let (mean, var, offset) = &self.stats;
        Ok(Self {
            weight: self.weight.narrow(0, start, len)?,
            bias: self.bias.narrow(0, start, len)?,
            running_mean: self.running_mean.narrow(0, start, len)?,
            running_var: self.running_var.narrow(0, start, len)?,
            eps: self.eps,
            stats: (mean.clone(), var.clone(), offset + start),
        })
    }

    /// Moves the running statistics towards a batch's (`momentum` in PyTorch's sense: the
    /// weight of the new value), in place. `var` is the batch's biased variance over `count`
    /// values per channel; the running variance gets the unbiased one, as in PyTorch.
    pub fn update_stats(
        &self,
        mean: &Tensor,
        var: &Tensor,
        count: usize,
        momentum: f64,
    ) -> Result<()> {
        let unbias = count as f64 / (count.max(2) - 1) as f64;
        let blend = |old: &Tensor, new: Tensor| -> Result<Tensor> {
            Ok(((old.detach() * (1.0 - momentum))? + (new.detach() * momentum)?)?)
        };
        let (full_mean, full_var, offset) = &self.stats;
        let m = blend(&self.running_mean, mean.flatten_all()?)?;
        let v = blend(&self.running_var, (var.flatten_all()? * unbias)?)?;
        full_mean.slice_set(&m, 0, *offset)?;
        full_var.slice_set(&v, 0, *offset)?;
        Ok(())
    }

    /// `y = x * scale + shift` in inference mode.
    pub fn scale_shift(&self) -> Result<(Tensor, Tensor)> {
        let scale = self
            .weight
            .broadcast_div(&(&self.running_var + self.eps)?.sqrt()?)?;
        let shift = (&self.bias - (&self.running_mean * &scale)?)?;
        Ok((scale, shift))
    }
}
