//! The building blocks of a NASNet cell. Field names are the PyTorch state-dict segments of the
//! timm / Cadene ports (`conv_1x1.conv.weight`, `comb_iter_0_left.separable_1.depthwise_conv2d`,
//! `path_1.conv.weight`, `final_path_bn`), so upstream weights load by name.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use nasnet_core::{Op, PoolingRule};

use crate::Result;
use crate::graph::Graph;
pub use crate::ops::BatchNorm;
use crate::ops::{ConvSpec, Pads, Pool, PoolKind};

/// TF "SAME" padding for one dimension: output `ceil(n / stride)`, the odd pixel at the end.
pub fn same_pad(n: usize, kernel: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let out = n.div_ceil(stride);
    let extent = (kernel - 1) * dilation + 1;
    let total = ((out - 1) * stride + extent).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// TF "SAME" padding for a `kh x kw` window on an `h x w` input.
pub fn same_pads(hw: [usize; 2], kernel: [usize; 2], stride: usize, dilation: usize) -> Pads {
    let (t, b) = same_pad(hw[0], kernel[0], stride, dilation);
    let (l, r) = same_pad(hw[1], kernel[1], stride, dilation);
    [t, l, b, r]
}

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// TF "SAME": output `ceil(n / stride)`, the odd pixel of padding at the end
    /// ([`same_pads`]).
    Same,
    /// No padding.
    Valid,
}

/// A bias-free 2-D convolution (key `weight`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// `[out, in / groups, kh, kw]`.
    pub weight: Tensor,
    /// Step between windows, in both dimensions.
    pub stride: usize,
    /// Spacing between kernel taps (1: dense).
    pub dilation: usize,
    /// Channel groups (`in` for a depthwise convolution).
    pub groups: usize,
    /// How the input is padded.
    pub padding: Padding,
}

impl Conv2d {
    /// Reads `weight` (`[out_c, in_c / groups, kernel[0], kernel[1]]`) from `vb`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: &VarBuilder,
        in_c: usize,
        out_c: usize,
        kernel: [usize; 2],
        stride: usize,
        dilation: usize,
        groups: usize,
        padding: Padding,
    ) -> Result<Self> {
        let weight = vb.get((out_c, in_c / groups, kernel[0], kernel[1]), "weight")?;
        Ok(Self {
            weight,
            stride,
            dilation,
            groups,
            padding,
        })
    }

    /// A 1x1 convolution with stride.
    pub fn pointwise(vb: &VarBuilder, in_c: usize, out_c: usize, stride: usize) -> Result<Self> {
        Self::new(vb, in_c, out_c, [1, 1], stride, 1, 1, Padding::Valid)
    }

    /// Convolves `x` (`[N, in, H, W]`), padding it as [`Conv2d::padding`] says.
    pub fn forward<G: Graph>(&self, g: &mut G, x: &G::Value) -> Result<G::Value> {
        let [_, h, w] = g.chw(x)?;
        let (_, _, kh, kw) = self.weight.dims4()?;
        let pads = match self.padding {
            Padding::Same => same_pads([h, w], [kh, kw], self.stride, self.dilation),
            Padding::Valid => [0; 4],
        };
        let spec = ConvSpec {
            stride: self.stride,
            dilation: self.dilation,
            pads,
            groups: self.groups,
        };
        g.conv2d(x, &self.weight, spec)
    }
}

/// Optional ReLU, convolution, batch norm (keys `conv`, `bn`).
#[derive(Debug, Clone)]
pub struct ConvBn {
    /// Whether a ReLU precedes the convolution.
    pub relu: bool,
    /// The convolution (key `conv`).
    pub conv: Conv2d,
    /// Batch norm over the convolution's output channels (key `bn`).
    pub bn: BatchNorm,
}

impl ConvBn {
    /// Wraps `conv`, reading the batch norm from `vb` under `bn`.
    pub fn new(vb: &VarBuilder, relu: bool, conv: Conv2d, eps: f64) -> Result<Self> {
        let c = conv.weight.dim(0)?;
        Ok(Self {
            relu,
            conv,
            bn: BatchNorm::new(&vb.pp("bn"), c, eps)?,
        })
    }

    /// ReLU, 1x1 convolution with stride, batch norm.
    pub fn relu_pointwise(
        vb: &VarBuilder,
        in_c: usize,
        out_c: usize,
        stride: usize,
        eps: f64,
    ) -> Result<Self> {
        let conv = Conv2d::pointwise(&vb.pp("conv"), in_c, out_c, stride)?;
        Self::new(vb, true, conv, eps)
    }

    /// Optional ReLU, convolution, batch norm.
    pub fn forward<G: Graph>(&self, g: &mut G, x: &G::Value) -> Result<G::Value> {
        let x = if self.relu { g.relu(x)? } else { x.clone() };
        let x = self.conv.forward(g, &x)?;
        g.batch_norm(&x, &self.bn)
    }
}

/// Depthwise then pointwise convolution, no nonlinearity between
/// (keys `depthwise_conv2d`, `pointwise_conv2d`).
#[derive(Debug, Clone)]
pub struct SeparableConv {
    /// `k x k` depthwise convolution (`groups = in`) with the stride, SAME padding.
    pub depthwise_conv2d: Conv2d,
    /// 1x1 convolution from `in` to `out` channels.
    pub pointwise_conv2d: Conv2d,
}

impl SeparableConv {
    /// Reads both convolutions from `vb`: a `k x k` depthwise one with `stride`, then a 1x1
    /// one from `in_c` to `out_c` channels.
    pub fn new(
        vb: &VarBuilder,
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
    ) -> Result<Self> {
        Ok(Self {
            depthwise_conv2d: Conv2d::new(
                &vb.pp("depthwise_conv2d"),
                in_c,
                in_c,
                [k, k],
                stride,
                1,
                in_c,
                Padding::Same,
            )?,
            pointwise_conv2d: Conv2d::pointwise(&vb.pp("pointwise_conv2d"), in_c, out_c, 1)?,
        })
    }

    /// Depthwise then pointwise convolution.
    pub fn forward<G: Graph>(&self, g: &mut G, x: &G::Value) -> Result<G::Value> {
        let x = self.depthwise_conv2d.forward(g, x)?;
        self.pointwise_conv2d.forward(g, &x)
    }
}

/// The `separable_KxK_2` operation: [ReLU, separable conv (stride), BN] twice
/// (timm/Cadene `BranchSeparables`; the first pointwise maps straight to the cell's width).
#[derive(Debug, Clone)]
pub struct BranchSeparables {
    /// First separable convolution, `in -> out` channels, with the branch's stride.
    pub separable_1: SeparableConv,
    /// Batch norm after `separable_1`.
    pub bn_sep_1: BatchNorm,
    /// Second separable convolution, `out -> out` channels, stride 1.
    pub separable_2: SeparableConv,
    /// Batch norm after `separable_2`.
    pub bn_sep_2: BatchNorm,
}

impl BranchSeparables {
    /// Reads the two `k x k` separable convolutions and their batch norms from `vb`.
    pub fn new(
        vb: &VarBuilder,
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            separable_1: SeparableConv::new(&vb.pp("separable_1"), in_c, out_c, k, stride)?,
            bn_sep_1: BatchNorm::new(&vb.pp("bn_sep_1"), out_c, eps)?,
            separable_2: SeparableConv::new(&vb.pp("separable_2"), out_c, out_c, k, 1)?,
            bn_sep_2: BatchNorm::new(&vb.pp("bn_sep_2"), out_c, eps)?,
        })
    }

    /// ReLU, `separable_1`, `bn_sep_1`, ReLU, `separable_2`, `bn_sep_2`.
    pub fn forward<G: Graph>(&self, g: &mut G, x: &G::Value) -> Result<G::Value> {
        let x = g.relu(x)?;
        let x = self.separable_1.forward(g, &x)?;
        let x = g.batch_norm(&x, &self.bn_sep_1)?;
        let x = g.relu(&x)?;
        let x = self.separable_2.forward(g, &x)?;
        g.batch_norm(&x, &self.bn_sep_2)
    }
}

/// Halves the resolution without losing the odd pixels: two stride-2 1x1 convolutions, the
/// second on the input shifted by one pixel, concatenated, then batch norm
/// (keys `path_1.conv`, `path_2.conv`, `final_path_bn`, at the owner's level).
#[derive(Debug, Clone)]
pub struct FactorizedReduction {
    /// Stride-2 1x1 convolution to `out / 2` channels on the input as is.
    pub path_1: Conv2d,
    /// Stride-2 1x1 convolution to `out / 2` channels on the input shifted by one pixel.
    pub path_2: Conv2d,
    /// Batch norm over the concatenated `out` channels (`path_1`'s half first).
    pub final_path_bn: BatchNorm,
}

impl FactorizedReduction {
    /// Reads both paths (`in_c -> out_c / 2` channels each) and the batch norm from `vb`.
    pub fn new(vb: &VarBuilder, in_c: usize, out_c: usize, eps: f64) -> Result<Self> {
        let half = out_c / 2;
        Ok(Self {
            path_1: Conv2d::pointwise(&vb.pp("path_1").pp("conv"), in_c, half, 2)?,
            path_2: Conv2d::pointwise(&vb.pp("path_2").pp("conv"), in_c, half, 2)?,
            final_path_bn: BatchNorm::new(&vb.pp("final_path_bn"), 2 * half, eps)?,
        })
    }

    /// The input is expected already activated (the caller applies the ReLU).
    ///
    /// Batch norm is per channel, so `final_path_bn` is applied to each path's half before the
    /// concatenation: the same function, and each half follows its convolution, so inference
    /// runtimes fold it into the convolution's weights.
    pub fn forward<G: Graph>(&self, g: &mut G, x: &G::Value) -> Result<G::Value> {
        let half = self.path_1.weight.dim(0)?;
        let p1 = self.path_1.forward(g, x)?;
        let p1 = g.batch_norm(&p1, &self.final_path_bn.narrow(0, half)?)?;
        // Shift by one pixel: drop the first row and column, pad one zero row and column at
        // the bottom and right (TF: pad then slice [1:, 1:]), then subsample.
        let shifted = g.crop_top_left(x)?;
        let spec = ConvSpec {
            stride: 2,
            dilation: 1,
            pads: [0, 0, 1, 1],
            groups: 1,
        };
        let p2 = g.conv2d(&shifted, &self.path_2.weight, spec)?;
        let p2 = g.batch_norm(&p2, &self.final_path_bn.narrow(half, half)?)?;
        g.concat(&[p1, p2])
    }
}

/// A fully connected layer with bias (keys `weight`, `bias`).
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Tensor,
}

impl Linear {
    /// Reads `weight` (`[out_c, in_c]`) and `bias` (`[out_c]`) from `vb`.
    pub fn new(vb: &VarBuilder, in_c: usize, out_c: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.get((out_c, in_c), "weight")?,
            bias: vb.get(out_c, "bias")?,
        })
    }

    /// `x [N, in] -> [N, out]`.
    pub fn forward<G: Graph>(&self, g: &mut G, x: &G::Value) -> Result<G::Value> {
        g.linear(x, &self.weight, &self.bias)
    }
}

/// One operation of a block, as built for a given input (the `comb_iter_K_{left,right}`
/// modules). Parameter-free operations have no keys.
#[derive(Debug, Clone)]
pub enum Branch {
    /// The input unchanged (stride 1, same channels).
    Identity,
    /// Identity across a stride or channel change: ReLU, 1x1 conv, BN (keys `conv`, `bn`).
    Project(ConvBn),
    /// A pooling window, followed by a 1x1 conv and BN when channels change.
    Pool {
        /// Max or average.
        kind: PoolKind,
        /// Square window size.
        kernel: usize,
        /// The branch's stride (2 on a reduction cell's inputs).
        stride: usize,
        /// Average pools: divide by the full window, padding included ([`PoolingRule::Timm`]
        /// at stride 2).
        count_include_pad: bool,
        /// 1x1 conv and BN, no ReLU, to the cell's width (keys `conv`, `bn`).
        project: Option<ConvBn>,
    },
    /// A `sep_conv_KxK` operation.
    Separable(BranchSeparables),
    /// Plain convolutions (`conv_1x1`, `conv_3x3`, dilated, and the factorized 1xk/kx1 pair
    /// as `conv_1`, `conv_2`).
    Conv(Vec<ConvBn>),
}

impl Branch {
    /// Builds `op` for an input of `in_c` channels producing `out_c` channels.
    pub fn new(
        vb: &VarBuilder,
        op: Op,
        in_c: usize,
        out_c: usize,
        stride: usize,
        pooling: PoolingRule,
        eps: f64,
    ) -> Result<Self> {
        let conv = |vb: &VarBuilder, k: [usize; 2], stride, dilation, in_c| -> Result<ConvBn> {
            let c = Conv2d::new(
                &vb.pp("conv"),
                in_c,
                out_c,
                k,
                stride,
                dilation,
                1,
                Padding::Same,
            )?;
            ConvBn::new(vb, true, c, eps)
        };
        let pool = |kind, kernel| -> Result<Branch> {
            let project = if in_c != out_c {
                let c = Conv2d::pointwise(&vb.pp("conv"), in_c, out_c, 1)?;
                Some(ConvBn::new(vb, false, c, eps)?)
            } else {
                None
            };
            Ok(Branch::Pool {
                kind,
                kernel,
                stride,
                count_include_pad: kind == PoolKind::Avg
                    && stride > 1
                    && pooling == PoolingRule::Timm,
                project,
            })
        };
        Ok(match op {
            Op::Identity if stride == 1 && in_c == out_c => Branch::Identity,
            Op::Identity => Branch::Project(ConvBn::relu_pointwise(vb, in_c, out_c, stride, eps)?),
            Op::AvgPool3x3 => pool(PoolKind::Avg, 3)?,
            Op::MaxPool3x3 => pool(PoolKind::Max, 3)?,
            Op::MaxPool5x5 => pool(PoolKind::Max, 5)?,
            Op::MaxPool7x7 => pool(PoolKind::Max, 7)?,
            Op::SepConv3x3 | Op::SepConv5x5 | Op::SepConv7x7 => {
                let k = match op {
                    Op::SepConv3x3 => 3,
                    Op::SepConv5x5 => 5,
                    _ => 7,
                };
                Branch::Separable(BranchSeparables::new(vb, in_c, out_c, k, stride, eps)?)
            }
            Op::Conv1x1 => Branch::Conv(vec![conv(vb, [1, 1], stride, 1, in_c)?]),
            Op::Conv3x3 => Branch::Conv(vec![conv(vb, [3, 3], stride, 1, in_c)?]),
            Op::DilConv3x3 => Branch::Conv(vec![conv(vb, [3, 3], stride, 2, in_c)?]),
            Op::Conv1x3And3x1 | Op::Conv1x7And7x1 => {
                let k = if op == Op::Conv1x3And3x1 { 3 } else { 7 };
                Branch::Conv(vec![
                    conv(&vb.pp("conv_1"), [1, k], stride, 1, in_c)?,
                    conv(&vb.pp("conv_2"), [k, 1], 1, 1, out_c)?,
                ])
            }
        })
    }

    /// Whether drop-path applies (every operation except identity, as in the official code).
    pub fn drops_path(&self) -> bool {
        !matches!(self, Branch::Identity | Branch::Project(_))
    }

    /// Applies the operation; pools pad TF "SAME".
    pub fn forward<G: Graph>(&self, g: &mut G, x: &G::Value) -> Result<G::Value> {
        match self {
            Branch::Identity => Ok(x.clone()),
            Branch::Project(p) => p.forward(g, x),
            Branch::Pool {
                kind,
                kernel,
                stride,
                count_include_pad,
                project,
            } => {
                let [_, h, w] = g.chw(x)?;
                let op = Pool {
                    kind: *kind,
                    kernel: *kernel,
                    stride: *stride,
                    pads: same_pads([h, w], [*kernel, *kernel], *stride, 1),
                    count_include_pad: *count_include_pad,
                };
                let y = g.pool(x, op)?;
                match project {
                    Some(p) => p.forward(g, &y),
                    None => Ok(y),
                }
            }
            Branch::Separable(s) => s.forward(g, x),
            Branch::Conv(convs) => {
                let mut y = x.clone();
                for c in convs {
                    y = c.forward(g, &y)?;
                }
                Ok(y)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tf() {
        // Odd sizes: symmetric, like PyTorch's k // 2.
        assert_eq!(same_pad(165, 5, 2, 1), (2, 2));
        assert_eq!(same_pad(83, 7, 2, 1), (3, 3));
        // Even sizes at stride 2: the extra pixel goes at the end.
        assert_eq!(same_pad(42, 3, 2, 1), (0, 1));
        assert_eq!(same_pad(42, 5, 2, 1), (1, 2));
        assert_eq!(same_pad(56, 7, 2, 1), (2, 3));
        // Stride 1: symmetric, dilation widens the window.
        assert_eq!(same_pad(11, 3, 1, 1), (1, 1));
        assert_eq!(same_pad(11, 3, 1, 2), (2, 2));
        assert_eq!(same_pad(11, 1, 2, 1), (0, 0));
    }
}
