//! Direct CPU kernels for the two operations candle handles poorly for NASNet:
//! depthwise convolution (candle runs `groups = C` as C separate convolutions) and padded
//! pooling with an explicit divisor rule (candle's pools take no padding). On other devices the
//! same operations fall back to candle primitives, so results match everywhere.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Padding in pixels: top, left, bottom, right.
pub type Pads = [usize; 4];

fn out_size(n: usize, before: usize, after: usize, extent: usize, stride: usize) -> usize {
    (n + before + after).saturating_sub(extent) / stride + 1
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
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
fn valid_range(out: usize, stride: usize, offset: usize, pad: usize, n: usize) -> (usize, usize) {
    // o * stride + offset >= pad  and  o * stride + offset < n + pad
    let lo = pad.saturating_sub(offset).div_ceil(stride);
    let hi = if n + pad > offset {
        (n + pad - offset).div_ceil(stride).min(out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// Depthwise 2-D convolution: `x [N, C, H, W]`, `w [C, 1, KH, KW]`.
#[derive(Debug, Clone, Copy)]
pub struct Depthwise {
    pub stride: usize,
    pub dilation: usize,
    pub pads: Pads,
}

impl CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "nasnet-depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let (n, c, h, wd) = l1.shape().dims4()?;
        let (wc, one, kh, kw) = l2.shape().dims4()?;
        if wc != c || one != 1 {
            candle_core::bail!(
                "depthwise weight {:?} does not fit input {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        let [pt, pl, pb, pr] = self.pads;
        let (s, d) = (self.stride, self.dilation);
        let oh = out_size(h, pt, pb, d * (kh - 1) + 1, s);
        let ow = out_size(wd, pl, pr, d * (kw - 1) + 1, s);
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(plane, o)| {
                let ch = plane % c;
                let xi = &x[plane * h * wd..(plane + 1) * h * wd];
                let wk = &w[ch * kh * kw..(ch + 1) * kh * kw];
                for kx in 0..kw {
                    let (ox_lo, ox_hi) = valid_range(ow, s, kx * d, pl, wd);
                    if ox_lo >= ox_hi {
                        continue;
                    }
                    for ky in 0..kh {
                        let wv = wk[ky * kw + kx];
                        let (oy_lo, oy_hi) = valid_range(oh, s, ky * d, pt, h);
                        for oy in oy_lo..oy_hi {
                            let iy = oy * s + ky * d - pt;
                            let row = &xi[iy * wd..(iy + 1) * wd];
                            let orow = &mut o[oy * ow..(oy + 1) * ow];
                            if s == 1 {
                                let ix0 = ox_lo + kx * d - pl;
                                let src = &row[ix0..ix0 + (ox_hi - ox_lo)];
                                for (dst, v) in orow[ox_lo..ox_hi].iter_mut().zip(src) {
                                    *dst += wv * v;
                                }
                            } else {
                                for ox in ox_lo..ox_hi {
                                    orow[ox] += wv * row[ox * s + kx * d - pl];
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// Max or average pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// 2-D pooling with explicit padding. Max pools ignore padding (TF/PyTorch's -inf padding);
/// average pools divide by the full window (`count_include_pad`) or by the valid pixels only.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub kind: PoolKind,
    pub kernel: usize,
    pub stride: usize,
    pub pads: Pads,
    pub count_include_pad: bool,
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        "nasnet-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let (n, c, h, w) = l.shape().dims4()?;
        let [pt, pl, pb, pr] = self.pads;
        let (k, st) = (self.kernel, self.stride);
        let oh = out_size(h, pt, pb, k, st);
        let ow = out_size(w, pl, pr, k, st);
        let full = (k * k) as f32;
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(plane, o)| {
                let xi = &x[plane * h * w..(plane + 1) * h * w];
                for oy in 0..oh {
                    let y0 = (oy * st).saturating_sub(pt);
                    let y1 = (oy * st + k).saturating_sub(pt).min(h);
                    for ox in 0..ow {
                        let x0 = (ox * st).saturating_sub(pl);
                        let x1 = (ox * st + k).saturating_sub(pl).min(w);
                        let v = match self.kind {
                            PoolKind::Max => {
                                let mut m = f32::NEG_INFINITY;
                                for iy in y0..y1 {
                                    for &v in &xi[iy * w + x0..iy * w + x1] {
                                        m = m.max(v);
                                    }
                                }
                                m
                            }
                            PoolKind::Avg => {
                                let mut sum = 0f32;
                                for iy in y0..y1 {
                                    for &v in &xi[iy * w + x0..iy * w + x1] {
                                        sum += v;
                                    }
                                }
                                let count = if self.count_include_pad {
                                    full
                                } else {
                                    ((y1 - y0) * (x1 - x0)) as f32
                                };
                                sum / count
                            }
                        };
                        o[oy * ow + ox] = v;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

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
        return x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &op);
    }
    depthwise_generic(x, w, op)
}

/// Depthwise convolution with candle primitives (any device).
fn depthwise_generic(x: &Tensor, w: &Tensor, op: Depthwise) -> candle_core::Result<Tensor> {
    let c = x.dim(1)?;
    pad2d(x, op.pads, 0.0)?.conv2d(w, 0, op.stride, op.dilation, c)
}

/// Pooling on any device.
pub fn pool2d(x: &Tensor, op: Pool) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&op);
    }
    pool_generic(x, op)
}

/// Pooling with candle primitives (any device).
fn pool_generic(x: &Tensor, op: Pool) -> candle_core::Result<Tensor> {
    let k = (op.kernel, op.kernel);
    let s = (op.stride, op.stride);
    match op.kind {
        PoolKind::Max => pad2d(x, op.pads, f32::NEG_INFINITY)?.max_pool2d_with_stride(k, s),
        PoolKind::Avg => {
            let sum = pad2d(x, op.pads, 0.0)?.avg_pool2d_with_stride(k, s)?;
            if op.count_include_pad {
                return Ok(sum);
            }
            let (_, _, h, w) = x.dims4()?;
            let ones = Tensor::ones((1, 1, h, w), x.dtype(), x.device())?;
            let frac = pad2d(&ones, op.pads, 0.0)?.avg_pool2d_with_stride(k, s)?;
            sum.broadcast_div(&frac)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn ramp(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f32> = (0..n as u64)
            .map(|i| (((i * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn depthwise_matches_grouped_conv() {
        for (h, k, s, d, pads) in [
            (9, 3, 1, 1, [1, 1, 1, 1]),
            (10, 5, 2, 1, [1, 1, 2, 2]),
            (11, 7, 2, 1, [3, 3, 3, 3]),
            (8, 3, 1, 2, [2, 2, 2, 2]),
            (7, 3, 2, 1, [0, 0, 0, 0]),
            (2, 5, 1, 2, [4, 4, 4, 4]),
            (1, 7, 2, 1, [3, 3, 3, 3]),
        ] {
            let x = ramp((2, 3, h, h + 1), 1);
            let w = ramp((3, 1, k, k), 2);
            let op = Depthwise {
                stride: s,
                dilation: d,
                pads,
            };
            let fast = x.apply_op2_no_bwd(&w, &op).unwrap();
            let slow = depthwise_generic(&x, &w, op).unwrap();
            assert!(max_diff(&fast, &slow) < 1e-5, "h={h} k={k} s={s} d={d}");
        }
    }

    #[test]
    fn pools_match_the_fallback() {
        for kind in [PoolKind::Max, PoolKind::Avg] {
            for count_include_pad in [false, true] {
                for (h, k, s, pads) in [
                    (9, 3, 1, [1, 1, 1, 1]),
                    (10, 3, 2, [0, 0, 1, 1]),
                    (11, 5, 2, [2, 2, 2, 2]),
                ] {
                    let x = ramp((2, 3, h, h), 3);
                    let op = Pool {
                        kind,
                        kernel: k,
                        stride: s,
                        pads,
                        count_include_pad,
                    };
                    let fast = x.apply_op1_no_bwd(&op).unwrap();
                    let slow = pool_generic(&x, op).unwrap();
                    assert!(
                        max_diff(&fast, &slow) < 1e-6,
                        "{kind:?} {count_include_pad} h={h}"
                    );
                }
            }
        }
    }

    #[test]
    fn corner_average_excludes_padding() {
        let x = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let op = |count_include_pad| Pool {
            kind: PoolKind::Avg,
            kernel: 3,
            stride: 2,
            pads: [0, 0, 1, 1],
            count_include_pad,
        };
        let tf = x.apply_op1_no_bwd(&op(false)).unwrap();
        let timm = x.apply_op1_no_bwd(&op(true)).unwrap();
        assert_eq!(
            tf.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0; 4]
        );
        let t = timm.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(t[0], 1.0);
        assert!((t[3] - 4.0 / 9.0).abs() < 1e-6);
    }
}
