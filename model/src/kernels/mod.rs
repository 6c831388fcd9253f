//! Direct CPU kernels for the two operations candle handles poorly for NASNet:
//! depthwise convolution (candle runs `groups = C` as C separate convolutions) and padded
//! pooling with an explicit divisor rule (candle's pools take no padding, and have no backward
//! pass when kernel and stride differ), plus training-mode batch norm. Each has its backward pass
//! written as a kernel of the same kind, so training runs on them too. On other devices (CUDA)
//! the same operations are compositions of candle primitives over the window's taps — no
//! per-channel loop, and differentiable for every kernel and stride — checked against the
//! kernels, values and gradients, in the tests below.
//!
//! Layout: `depthwise`, `pool` and `batch_norm` hold the CPU kernels with their backward
//! passes; `generic` holds the compositions of candle primitives used on other devices, and
//! the dispatchers that pick one or the other.

mod batch_norm;
mod depthwise;
mod generic;
mod pool;
#[cfg(test)]
mod tests;

use candle_core::{CpuStorage, Layout};

pub use crate::ops::{Pads, Pool, PoolKind};
pub use batch_norm::{BatchNormTrain, batch_norm_train};
pub use depthwise::Depthwise;
pub use generic::{depthwise_conv2d, pad2d, pool2d};

pub(crate) fn f32_slice<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: input must be contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[start..end]),
        _ => Err(candle_core::Error::Msg(format!(
            "{what}: only f32 is supported"
        ))),
    }
}

/// The range of output positions `o` for which `o * stride + offset - pad` lies in `0..n`.
pub(crate) fn valid_range(
    out: usize,
    stride: usize,
    offset: usize,
    pad: usize,
    n: usize,
) -> (usize, usize) {
    // o * stride + offset >= pad  and  o * stride + offset < n + pad
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    let hi = if n + pad > offset {
        (n + pad - offset).div_ceil(stride).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}
