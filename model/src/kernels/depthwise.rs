//! Depthwise 2-D convolution on the CPU, with its backward passes (input and weight).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, valid_range};
use crate::ops::Pads;
use crate::ops::output_size;

/// Depthwise 2-D convolution: `x [N, C, H, W]`, `w [C, 1, KH, KW]`.
#[derive(Debug, Clone, Copy)]
pub struct Depthwise {
    /// Step between windows, in both dimensions.
    pub stride: usize,
    /// Spacing between kernel taps (1: dense).
    pub dilation: usize,
    /// Zero padding: top, left, bottom, right.
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
        let oh = output_size(h, pt, pb, d * (kh - 1) + 1, s);
        let ow = output_size(wd, pl, pr, d * (kw - 1) + 1, s);
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

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, _, h, wd) = x.dims4()?;
        let gx = grad.apply_op2_no_bwd(
            w,
            &DepthwiseGradInput {
                op: *self,
                hw: [h, wd],
            },
        )?;
        let (_, _, kh, kw) = w.dims4()?;
        let gw = x.apply_op2_no_bwd(
            &grad,
            &DepthwiseGradWeight {
                op: *self,
                kernel: [kh, kw],
            },
        )?;
        Ok((Some(gx), Some(gw)))
    }
}

/// Calls `f(oy, iy, ox_lo, ox_hi, ix0)` for every output row `oy` and kernel tap `(ky, kx)` of a
/// strided, dilated, padded window: input row `iy`, output columns `ox_lo..ox_hi` whose input
/// column is `ox * stride + kx * dilation - pad_left` (`ix0` for `ox_lo`).
fn for_each_tap(
    op: &Depthwise,
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    [kh, kw]: [usize; 2],
    mut f: impl FnMut(usize, usize, usize, usize, usize, usize),
) {
    let [pt, pl, _, _] = op.pads;
    let (s, d) = (op.stride, op.dilation);
    for kx in 0..kw {
        let (ox_lo, ox_hi) = valid_range(ow, s, kx * d, pl, w);
        if ox_lo >= ox_hi {
            continue;
        }
        for ky in 0..kh {
            let (oy_lo, oy_hi) = valid_range(oh, s, ky * d, pt, h);
            for oy in oy_lo..oy_hi {
                let iy = oy * s + ky * d - pt;
                let ix0 = ox_lo * s + kx * d - pl;
                f(ky * kw + kx, oy, iy, ox_lo, ox_hi, ix0);
            }
        }
    }
}

/// Gradient of a depthwise convolution with respect to its input: `(grad [N, C, OH, OW],
/// w [C, 1, KH, KW]) -> [N, C, H, W]`.
#[derive(Debug, Clone, Copy)]
struct DepthwiseGradInput {
    op: Depthwise,
    hw: [usize; 2],
}

impl CustomOp2 for DepthwiseGradInput {
    fn name(&self) -> &'static str {
        "nasnet-depthwise-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = f32_slice(s1, l1, self.name())?;
        let w = f32_slice(s2, l2, self.name())?;
        let (n, c, oh, ow) = l1.shape().dims4()?;
        let (_, _, kh, kw) = l2.shape().dims4()?;
        let [h, wd] = self.hw;
        let s = self.op.stride;
        let mut out = vec![0f32; n * c * h * wd];
        out.par_chunks_mut(h * wd)
            .enumerate()
            .for_each(|(plane, gx)| {
                let ch = plane % c;
                let go = &g[plane * oh * ow..(plane + 1) * oh * ow];
                let wk = &w[ch * kh * kw..(ch + 1) * kh * kw];
                for_each_tap(
                    &self.op,
                    [h, wd],
                    [oh, ow],
                    [kh, kw],
                    |tap, oy, iy, lo, hi, ix0| {
                        let wv = wk[tap];
                        let grow = &go[oy * ow + lo..oy * ow + hi];
                        let xrow = &mut gx[iy * wd..(iy + 1) * wd];
                        if s == 1 {
                            let dst = &mut xrow[ix0..ix0 + grow.len()];
                            for (d, gv) in dst.iter_mut().zip(grow) {
                                *d += wv * gv;
                            }
                        } else {
                            for (j, gv) in grow.iter().enumerate() {
                                xrow[ix0 + j * s] += wv * gv;
                            }
                        }
                    },
                );
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, wd))))
    }
}

/// A dot product in eight independent lanes (so that it vectorizes), in a fixed order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    let mut acc: f32 = lanes.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        acc += x * y;
    }
    acc
}

/// Gradient of a depthwise convolution with respect to its weight: `(x [N, C, H, W],
/// grad [N, C, OH, OW]) -> [C, 1, KH, KW]`. Sums in a fixed order, so results repeat exactly.
#[derive(Debug, Clone, Copy)]
struct DepthwiseGradWeight {
    op: Depthwise,
    kernel: [usize; 2],
}

impl CustomOp2 for DepthwiseGradWeight {
    fn name(&self) -> &'static str {
        "nasnet-depthwise-conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let (n, c, h, wd) = l1.shape().dims4()?;
        let (_, _, oh, ow) = l2.shape().dims4()?;
        let [kh, kw] = self.kernel;
        let s = self.op.stride;
        let mut out = vec![0f32; c * kh * kw];
        out.par_chunks_mut(kh * kw)
            .enumerate()
            .for_each(|(ch, gw)| {
                for b in 0..n {
                    let plane = b * c + ch;
                    let xi = &x[plane * h * wd..(plane + 1) * h * wd];
                    let go = &g[plane * oh * ow..(plane + 1) * oh * ow];
                    for_each_tap(
                        &self.op,
                        [h, wd],
                        [oh, ow],
                        [kh, kw],
                        |tap, oy, iy, lo, hi, ix0| {
                            let grow = &go[oy * ow + lo..oy * ow + hi];
                            let xrow = &xi[iy * wd..(iy + 1) * wd];
                            gw[tap] += if s == 1 {
                                dot(grow, &xrow[ix0..ix0 + grow.len()])
                            } else {
                                let mut acc = 0f32;
                                for (j, gv) in grow.iter().enumerate() {
                                    acc += gv * xrow[ix0 + j * s];
                                }
                                acc
                            };
                        },
                    );
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((c, 1, kh, kw))))
    }
}
