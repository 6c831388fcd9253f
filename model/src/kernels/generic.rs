//! The dispatchers (the CPU kernels for f32 on the CPU, else compositions of candle primitives
//! that run on any device and are differentiable for every kernel and stride).

use candle_core::{DType, Tensor};

use super::Depthwise;
use crate::ops::output_size;
use crate::ops::{Pads, Pool, PoolKind};

/// Pads the two spatial dimensions with a constant.
pub fn pad2d(x: &Tensor, pads: Pads, value: f32) -> candle_core::Result<Tensor> {
    let [pt, pl, pb, pr] = pads;
    if value == 0.0 {
        return x.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr);
    }
    let (n, c, h, w) = x.dims4()?;
    let full = |dims: (usize, usize, usize, usize)| {
        Tensor::full(value, dims, x.device())?.to_dtype(x.dtype())
    };
    let mut parts = vec![];
    if pt > 0 {
        parts.push(full((n, c, pt, w))?);
    }
    parts.push(x.clone());
    if pb > 0 {
        parts.push(full((n, c, pb, w))?);
    }
    let x = Tensor::cat(&parts, 2)?;
    let h = h + pt + pb;
    let mut parts = vec![];
    if pl > 0 {
        parts.push(full((n, c, h, pl))?);
    }
    parts.push(x);
    if pr > 0 {
        parts.push(full((n, c, h, pr))?);
    }
    Tensor::cat(&parts, 3)
}

/// Depthwise convolution on any device.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, op: Depthwise) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op2(&w.contiguous()?, op);
    }
    depthwise_generic(x, w, op)
}

/// Every `stride`-th row and column of `x`, starting at the first: `[.., L, M] -> [..,
/// ceil(L / s), ceil(M / s)]`, by padding, reshaping and slicing (all differentiable).
fn subsample(x: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    if stride == 1 {
        return Ok(x.clone());
    }
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
    let x = x.pad_with_zeros(2, 0, oh * stride - h)?;
    let x = x
        .reshape((n, c, oh, stride, w))?
        .narrow(3, 0, 1)?
        .reshape((n, c, oh, w))?;
    let x = x.pad_with_zeros(3, 0, ow * stride - w)?;
    x.reshape((n, c, oh, ow, stride))?
        .narrow(4, 0, 1)?
        .reshape((n, c, oh, ow))
}

/// The `(ky, kx)` tap of a strided, dilated window over the padded input `xp`: the input pixel
/// each of the `oh x ow` outputs reads through that tap.
fn tap(
    xp: &Tensor,
    (ky, kx): (usize, usize),
    (oh, ow): (usize, usize),
    stride: usize,
    dilation: usize,
) -> candle_core::Result<Tensor> {
    let span = |o: usize| (o - 1) * stride + 1;
    let t = xp
        .narrow(2, ky * dilation, span(oh))?
        .narrow(3, kx * dilation, span(ow))?;
    subsample(&t, stride)
}

/// Depthwise convolution with candle primitives (any device, differentiable): a sum over the
/// kernel's taps of shifted inputs times per-channel weights, so no per-channel loop.
pub(super) fn depthwise_generic(
    x: &Tensor,
    w: &Tensor,
    op: Depthwise,
) -> candle_core::Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let [pt, pl, pb, pr] = op.pads;
    let (s, d) = (op.stride, op.dilation);
    let oh = output_size(h, pt, pb, d * (kh - 1) + 1, s);
    let ow = output_size(wd, pl, pr, d * (kw - 1) + 1, s);
    let xp = pad2d(x, op.pads, 0.0)?;
    let w = w.reshape((c, kh * kw))?;
    let mut out: Option<Tensor> = None;
    for ky in 0..kh {
        for kx in 0..kw {
            let wt = w.narrow(1, ky * kw + kx, 1)?.reshape((1, c, 1, 1))?;
            let term = tap(&xp, (ky, kx), (oh, ow), s, d)?.broadcast_mul(&wt)?;
            out = Some(match out {
                Some(o) => (o + term)?,
                None => term,
            });
        }
    }
    out.ok_or_else(|| candle_core::Error::Msg("empty depthwise kernel".into()))
}

/// Pooling on any device.
pub fn pool2d(x: &Tensor, op: Pool) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(op);
    }
    pool_generic(x, op)
}

/// Pooling with candle primitives (any device, differentiable for every kernel and stride):
/// the maximum or sum over the window's taps of shifted inputs.
pub(super) fn pool_generic(x: &Tensor, op: Pool) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let [pt, pl, pb, pr] = op.pads;
    let (k, s) = (op.kernel, op.stride);
    let (oh, ow) = (output_size(h, pt, pb, k, s), output_size(w, pl, pr, k, s));
    let fill = match op.kind {
        PoolKind::Max => f32::NEG_INFINITY,
        PoolKind::Avg => 0.0,
    };
    let reduce = |xp: &Tensor, max: bool| -> candle_core::Result<Tensor> {
        let mut acc: Option<Tensor> = None;
        for ky in 0..k {
            for kx in 0..k {
                let t = tap(xp, (ky, kx), (oh, ow), s, 1)?;
                acc = Some(match acc {
                    Some(a) if max => a.maximum(&t)?,
                    Some(a) => (a + t)?,
                    None => t,
                });
            }
        }
        acc.ok_or_else(|| candle_core::Error::Msg("empty pooling window".into()))
    };
    let xp = pad2d(x, op.pads, fill)?;
    match op.kind {
        PoolKind::Max => reduce(&xp, true),
        PoolKind::Avg => {
            let sum = reduce(&xp, false)?;
            if op.count_include_pad {
                return sum / (k * k) as f64;
            }
            let ones = Tensor::ones((1, 1, h, w), x.dtype(), x.device())?;
            let count = reduce(&pad2d(&ones, op.pads, 0.0)?, false)?;
            sum.broadcast_div(&count)
        }
    }
}
