//! The operations a NASNet network is made of, as a trait.
//!
//! The network in [`crate::model`] is written once, generically over [`Graph`]. Running it on
//! [`crate::candle_graph::CandleGraph`] computes it with Candle; the ONNX exporter
//! ([`crate::onnx::OnnxGraph`]) implements the same trait to record the graph instead, so the
//! wiring exists in one place only. The values the trait passes around are described in
//! [`crate::ops`].

use candle_core::Tensor;

use crate::Result;
use crate::ops::{BatchNorm, ConvSpec, Pool};

/// A backend that evaluates (or records) the network's operations on values of type `Value`,
/// each of shape `[N, C, H, W]` (or `[N, C]` after global pooling).
pub trait Graph {
    /// A value of the graph: a tensor being computed, or a name being recorded.
    type Value: Clone;

    /// Channels, height and width of a `[N, C, H, W]` value.
    fn chw(&self, x: &Self::Value) -> Result<[usize; 3]>;
    /// 2-D convolution without bias; `weight` is `[out, in / groups, kh, kw]`.
    fn conv2d(&mut self, x: &Self::Value, weight: &Tensor, spec: ConvSpec) -> Result<Self::Value>;
    /// Batch norm over channels (running statistics in inference, the batch's in training).
    fn batch_norm(&mut self, x: &Self::Value, bn: &BatchNorm) -> Result<Self::Value>;
    /// Element-wise `max(x, 0)`.
    fn relu(&mut self, x: &Self::Value) -> Result<Self::Value>;
    /// Element-wise sum of two values of the same shape.
    fn add(&mut self, a: &Self::Value, b: &Self::Value) -> Result<Self::Value>;
    /// Concatenation along channels.
    fn concat(&mut self, xs: &[Self::Value]) -> Result<Self::Value>;
    /// Max or average pooling with explicit padding.
    fn pool(&mut self, x: &Self::Value, op: Pool) -> Result<Self::Value>;
    /// `x[:, :, 1:, 1:]`.
    fn crop_top_left(&mut self, x: &Self::Value) -> Result<Self::Value>;
    /// Mean over height and width: `[N, C, H, W] -> [N, C]`.
    fn global_avg_pool(&mut self, x: &Self::Value) -> Result<Self::Value>;
    /// `x [N, in] @ weight[out, in]^T + bias`.
    fn linear(&mut self, x: &Self::Value, weight: &Tensor, bias: &Tensor) -> Result<Self::Value>;
    /// Dropout with drop probability `p` (training only).
    fn dropout(&mut self, x: &Self::Value, p: f64) -> Result<Self::Value>;
    /// ScheduledDropPath with this layer's final keep probability (training only).
    fn drop_path(&mut self, x: &Self::Value, keep: f64) -> Result<Self::Value>;
    /// Marks a named intermediate result (`Stem`, `Cell_3`, `Reduction_Cell_0`, ...).
    fn endpoint(&mut self, _name: &str, _x: &Self::Value) {}
}
