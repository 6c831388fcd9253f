//! Padded max and average pooling on the CPU, with its backward pass.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::f32_slice;
use crate::ops::output_size;
use crate::ops::{Pool, PoolKind};

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        "nasnet-pool2d"
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(x.apply_op2_no_bwd(&grad, &PoolGrad(*self))?))
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let (n, c, h, w) = l.shape().dims4()?;
        let [pt, pl, pb, pr] = self.pads;
        let (k, st) = (self.kernel, self.stride);
        let oh = output_size(h, pt, pb, k, st);
        let ow = output_size(w, pl, pr, k, st);
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

/// Gradient of a pool with respect to its input: `(x [N, C, H, W], grad [N, C, OH, OW]) ->
/// [N, C, H, W]`. A max pool routes each gradient to the first maximum of its window, as
/// PyTorch does; an average pool spreads it over the window with the forward pass's divisor.
#[derive(Debug, Clone, Copy)]
struct PoolGrad(Pool);

impl CustomOp2 for PoolGrad {
    fn name(&self) -> &'static str {
        "nasnet-pool2d-grad"
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
        let (n, c, h, w) = l1.shape().dims4()?;
        let (_, _, oh, ow) = l2.shape().dims4()?;
        let op = self.0;
        let [pt, pl, _, _] = op.pads;
        let (k, st) = (op.kernel, op.stride);
        let full = (k * k) as f32;
        let mut out = vec![0f32; n * c * h * w];
        out.par_chunks_mut(h * w)
            .enumerate()
            .for_each(|(plane, gx)| {
                let xi = &x[plane * h * w..(plane + 1) * h * w];
                let go = &g[plane * oh * ow..(plane + 1) * oh * ow];
                for oy in 0..oh {
                    let y0 = (oy * st).saturating_sub(pt);
                    let y1 = (oy * st + k).saturating_sub(pt).min(h);
                    for ox in 0..ow {
                        let x0 = (ox * st).saturating_sub(pl);
                        let x1 = (ox * st + k).saturating_sub(pl).min(w);
                        if y0 >= y1 || x0 >= x1 {
                            continue;
                        }
                        let gv = go[oy * ow + ox];
                        match op.kind {
                            PoolKind::Max => {
                                let mut best = (f32::NEG_INFINITY, y0 * w + x0);
                                for iy in y0..y1 {
                                    for ix in x0..x1 {
                                        let v = xi[iy * w + ix];
                                        if v > best.0 {
                                            best = (v, iy * w + ix);
                                        }
                                    }
                                }
                                gx[best.1] += gv;
                            }
                            PoolKind::Avg => {
                                let count = if op.count_include_pad {
                                    full
                                } else {
                                    ((y1 - y0) * (x1 - x0)) as f32
                                };
                                let share = gv / count;
                                for iy in y0..y1 {
                                    for v in &mut gx[iy * w + x0..iy * w + x1] {
                                        *v += share;
                                    }
                                }
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}
