//! Direct CPU kernels for the two operations candle handles poorly for NASNet:
//! depthwise convolution (candle runs `groups = C` as C separate convolutions) and padded
//! pooling with an explicit divisor rule (candle's pools take no padding, and have no backward
//! pass when kernel and stride differ), plus training-mode batch norm. Each has its backward pass
//! written as a kernel of the same kind, so training runs on them too. On other devices (CUDA)
//! the same operations are compositions of candle primitives over the window's taps — no
//! per-channel loop, and differentiable for every kernel and stride — checked against the
//! kernels, values and gradients, in the tests below.

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

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(x.apply_op2_no_bwd(&grad, &PoolGrad(*self))?))
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

/// Per-channel mean and biased variance of `x [N, C, H, W]`, as `[2, C]`, accumulated in f64.
#[derive(Debug, Clone, Copy)]
struct ChannelStats;

fn channel_stats(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut s, mut s2) = (0f64, 0f64);
            for b in 0..n {
                let p = &x[(b * c + ch) * hw..(b * c + ch + 1) * hw];
                let (mut a, mut a2) = (0f32, 0f32);
                for &v in p {
                    a += v;
                    a2 += v * v;
                }
                s += a as f64;
                s2 += a2 as f64;
            }
            let m = (n * hw) as f64;
            let mean = s / m;
            (mean, (s2 / m - mean * mean).max(0.0))
        })
        .collect()
}

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "nasnet-channel-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let (n, c, h, w) = l.shape().dims4()?;
        let stats = channel_stats(x, n, c, h * w);
        let mut out: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
        out.extend(stats.iter().map(|s| s.1 as f32));
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// Training-mode batch norm, `(x [N, C, H, W], weight [C], bias [C]) -> y`, normalizing with
/// the batch's statistics; its backward pass is one kernel too.
#[derive(Debug, Clone, Copy)]
pub struct BatchNormTrain {
    pub eps: f64,
}

impl candle_core::CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "nasnet-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let wt = f32_slice(s2, l2, self.name())?;
        let bs = f32_slice(s3, l3, self.name())?;
        let (n, c, h, w) = l1.shape().dims4()?;
        let hw = h * w;
        let stats = channel_stats(x, n, c, hw);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(hw).enumerate().for_each(|(plane, o)| {
            let ch = plane % c;
            let (mean, var) = stats[ch];
            let scale = wt[ch] as f64 / (var + self.eps).sqrt();
            let (scale, shift) = (scale as f32, (bs[ch] as f64 - mean * scale) as f32);
            for (o, &v) in o.iter_mut().zip(&x[plane * hw..(plane + 1) * hw]) {
                *o = v * scale + shift;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let packed = x.apply_op3_no_bwd(weight, &grad, &BatchNormTrainGrad { eps: self.eps })?;
        let (n, c, h, w) = x.dims4()?;
        let len = n * c * h * w;
        let gx = packed.narrow(0, 0, len)?.reshape((n, c, h, w))?;
        let gw = packed.narrow(0, len, c)?;
        let gb = packed.narrow(0, len + c, c)?;
        Ok((Some(gx), Some(gw), Some(gb)))
    }
}

/// `(x, weight, grad) ->` the gradients of [`BatchNormTrain`] for x, weight and bias, packed
/// into one vector.
#[derive(Debug, Clone, Copy)]
struct BatchNormTrainGrad {
    eps: f64,
}

impl candle_core::CustomOp3 for BatchNormTrainGrad {
    fn name(&self) -> &'static str {
        "nasnet-batch-norm-train-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let wt = f32_slice(s2, l2, self.name())?;
        let g = f32_slice(s3, l3, self.name())?;
        let (n, c, h, w) = l1.shape().dims4()?;
        let hw = h * w;
        let m = (n * hw) as f64;
        let stats = channel_stats(x, n, c, hw);
        // Per channel: sum(g) and sum(g * xhat).
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mean, var) = stats[ch];
                let inv = 1.0 / (var + self.eps).sqrt();
                let (mut sg, mut sgx) = (0f64, 0f64);
                for b in 0..n {
                    let at = (b * c + ch) * hw;
                    let (mut a, mut ax) = (0f32, 0f32);
                    for (&gv, &xv) in g[at..at + hw].iter().zip(&x[at..at + hw]) {
                        a += gv;
                        ax += gv * xv;
                    }
                    sg += a as f64;
                    sgx += ax as f64;
                }
                // sum(g * (x - mean) * inv)
                (sg, (sgx - mean * sg) * inv)
            })
            .collect();
        let len = n * c * hw;
        let mut out = vec![0f32; len + 2 * c];
        let (gx, tail) = out.split_at_mut(len);
        gx.par_chunks_mut(hw).enumerate().for_each(|(plane, o)| {
            let ch = plane % c;
            let (mean, var) = stats[ch];
            let inv = 1.0 / (var + self.eps).sqrt();
            let (sg, sgxh) = sums[ch];
            // dx = w * inv * (g - sum(g) / m - xhat * sum(g * xhat) / m)
            let k = wt[ch] as f64 * inv;
            let a = (k) as f32;
            let b = (-k * sg / m + k * sgxh / m * mean * inv) as f32;
            let cx = (-k * sgxh / m * inv) as f32;
            let at = plane * hw;
            for ((o, &gv), &xv) in o.iter_mut().zip(&g[at..at + hw]).zip(&x[at..at + hw]) {
                *o = a * gv + cx * xv + b;
            }
        });
        for ch in 0..c {
            tail[ch] = sums[ch].1 as f32;
            tail[c + ch] = sums[ch].0 as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(len + 2 * c)))
    }
}

/// Batch norm with the batch's statistics (training), and those statistics as `[2, C]`
/// (mean, biased variance) for the running averages.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> candle_core::Result<(Tensor, Tensor)> {
    let c = x.dim(1)?;
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let x = x.contiguous()?;
        let stats = x.apply_op1_no_bwd(&ChannelStats)?;
        let y = x.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            BatchNormTrain { eps },
        )?;
        return Ok((y, stats));
    }
    let mean = x.mean_keepdim((0, 2, 3))?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim((0, 2, 3))?;
    let y = centered.broadcast_div(&(&var + eps)?.sqrt()?)?;
    let y = y
        .broadcast_mul(&weight.reshape((1, c, 1, 1))?)?
        .broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
    let stats = Tensor::cat(&[mean.flatten_all()?, var.flatten_all()?], 0)?.reshape((2, c))?;
    Ok((y, stats.detach()))
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
fn depthwise_generic(x: &Tensor, w: &Tensor, op: Depthwise) -> candle_core::Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let [pt, pl, pb, pr] = op.pads;
    let (s, d) = (op.stride, op.dilation);
    let oh = out_size(h, pt, pb, d * (kh - 1) + 1, s);
    let ow = out_size(wd, pl, pr, d * (kw - 1) + 1, s);
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
fn pool_generic(x: &Tensor, op: Pool) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let [pt, pl, pb, pr] = op.pads;
    let (k, s) = (op.kernel, op.stride);
    let (oh, ow) = (out_size(h, pt, pb, k, s), out_size(w, pl, pr, k, s));
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
            let grouped = pad2d(&x, pads, 0.0)
                .unwrap()
                .conv2d(&w, 0, s, d, 3)
                .unwrap();
            assert!(max_diff(&fast, &grouped) < 1e-5, "h={h} k={k} s={s} d={d}");
            let generic = depthwise_generic(&x, &w, op).unwrap();
            assert!(max_diff(&fast, &generic) < 1e-5, "h={h} k={k} s={s} d={d}");
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

    /// `d/dx sum(f(x) * r)` by autograd and by central differences, element by element.
    fn check_grad(f: &dyn Fn(&Tensor) -> Tensor, x: &Tensor, what: &str) {
        let var = candle_core::Var::from_tensor(x).unwrap();
        let y = f(var.as_tensor());
        let r = ramp(
            (
                y.dim(0).unwrap(),
                y.dim(1).unwrap(),
                y.dim(2).unwrap(),
                y.dim(3).unwrap(),
            ),
            7,
        );
        let loss = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap();
        let grads = loss(&y).backward().unwrap();
        let analytic = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap();
        let analytic = analytic.to_vec1::<f32>().unwrap();
        let base = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let eps = 1e-2f32;
        for i in 0..base.len() {
            let probe = |d: f32| {
                let mut v = base.clone();
                v[i] += d;
                let t = Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap();
                loss(&f(&t)).to_scalar::<f32>().unwrap()
            };
            let numeric = (probe(eps) - probe(-eps)) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() < 2e-2 * (1.0 + numeric.abs()),
                "{what}: element {i}: numeric {numeric}, analytic {}",
                analytic[i]
            );
        }
    }

    #[test]
    fn depthwise_gradients_match_finite_differences() {
        for (h, k, s, d, pads) in [
            (6, 3, 1, 1, [1, 1, 1, 1]),
            (7, 5, 2, 1, [1, 2, 2, 2]),
            (5, 3, 1, 2, [2, 2, 2, 2]),
            (2, 5, 2, 1, [2, 2, 2, 2]),
        ] {
            let op = Depthwise {
                stride: s,
                dilation: d,
                pads,
            };
            let x = ramp((2, 3, h, h + 1), 1);
            let w = ramp((3, 1, k, k), 2);
            let wc = w.clone();
            check_grad(&|x| depthwise_conv2d(x, &wc, op).unwrap(), &x, "input");
            let xc = x.clone();
            check_grad(&|w| depthwise_conv2d(&xc, w, op).unwrap(), &w, "weight");
        }
    }

    #[test]
    fn pool_gradients_match_finite_differences() {
        for kind in [PoolKind::Max, PoolKind::Avg] {
            for count_include_pad in [false, true] {
                for (h, k, s, pads) in [
                    (6, 3, 1, [1, 1, 1, 1]),
                    (7, 3, 2, [0, 0, 1, 1]),
                    (6, 1, 2, [0; 4]),
                ] {
                    let op = Pool {
                        kind,
                        kernel: k,
                        stride: s,
                        pads,
                        count_include_pad,
                    };
                    // Distinct values, so that a small step never changes a window's maximum.
                    let x = ramp((2, 2, h, h), 3);
                    let x = (x + Tensor::arange(0f32, (4 * h * h) as f32, &Device::Cpu)
                        .unwrap()
                        .reshape((2, 2, h, h))
                        .unwrap()
                        * 0.1)
                        .unwrap();
                    check_grad(
                        &|x| pool2d(x, op).unwrap(),
                        &x,
                        &format!("{kind:?} k={k} s={s}"),
                    );
                }
            }
        }
    }

    #[test]
    fn training_batch_norm_matches_finite_differences_and_the_fallback() {
        let x = ramp((3, 2, 4, 5), 4);
        let w = Tensor::new(&[1.5f32, -0.7], &Device::Cpu).unwrap();
        let b = Tensor::new(&[0.2f32, 0.1], &Device::Cpu).unwrap();
        let eps = 1e-3;
        // The kernel against candle primitives.
        let (y, stats) = batch_norm_train(&x, &w, &b, eps).unwrap();
        let mean = x.mean_keepdim((0, 2, 3)).unwrap();
        let centered = x.broadcast_sub(&mean).unwrap();
        let var = centered.sqr().unwrap().mean_keepdim((0, 2, 3)).unwrap();
        let want = centered
            .broadcast_div(&(var.clone() + eps).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&w.reshape((1, 2, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, 2, 1, 1)).unwrap())
            .unwrap();
        assert!(max_diff(&y, &want) < 1e-5);
        let s = stats.to_vec2::<f32>().unwrap();
        let m = mean.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let v = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for c in 0..2 {
            assert!((s[0][c] - m[c]).abs() < 1e-6 && (s[1][c] - v[c]).abs() < 1e-5);
        }
        // Gradients with respect to the input, the scale and the shift.
        let (wc, bc) = (w.clone(), b.clone());
        let as4 = |t: &Tensor| t.reshape((1, 2, 1, 1)).unwrap();
        check_grad(
            &|x| batch_norm_train(x, &wc, &bc, eps).unwrap().0,
            &x,
            "bn input",
        );
        let xc = x.clone();
        check_grad(
            &|w4| {
                batch_norm_train(&xc, &w4.flatten_all().unwrap(), &bc, eps)
                    .unwrap()
                    .0
            },
            &as4(&w),
            "bn weight",
        );
        check_grad(
            &|b4| {
                batch_norm_train(&xc, &wc, &b4.flatten_all().unwrap(), eps)
                    .unwrap()
                    .0
            },
            &as4(&b),
            "bn bias",
        );
    }

    /// Gradients of `sum(f(x) * r)` for x (and the weight) through a kernel and its fallback.
    fn grads(
        f: &dyn Fn(&Tensor, &Tensor) -> Tensor,
        x: &Tensor,
        w: &Tensor,
    ) -> (Tensor, Tensor, Tensor) {
        let (vx, vw) = (
            candle_core::Var::from_tensor(x).unwrap(),
            candle_core::Var::from_tensor(w).unwrap(),
        );
        let y = f(vx.as_tensor(), vw.as_tensor());
        let r = ramp(y.dims4().unwrap(), 9);
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gw = g
            .get(vw.as_tensor())
            .cloned()
            .unwrap_or_else(|| w.zeros_like().unwrap());
        (y, g.get(vx.as_tensor()).unwrap().clone(), gw)
    }

    #[test]
    fn the_fallbacks_train_like_the_kernels() {
        for (h, k, s, d, pads) in [
            (9, 3, 1, 1, [1, 1, 1, 1]),
            (10, 5, 2, 1, [1, 1, 2, 2]),
            (8, 3, 1, 2, [2, 2, 2, 2]),
            (7, 7, 2, 1, [3, 3, 3, 3]),
        ] {
            let x = ramp((2, 3, h, h + 1), 1);
            let w = ramp((3, 1, k, k), 2);
            let op = Depthwise {
                stride: s,
                dilation: d,
                pads,
            };
            let a = grads(&|x, w| depthwise_conv2d(x, w, op).unwrap(), &x, &w);
            let b = grads(&|x, w| depthwise_generic(x, w, op).unwrap(), &x, &w);
            for (p, q) in [(&a.0, &b.0), (&a.1, &b.1), (&a.2, &b.2)] {
                assert!(max_diff(p, q) < 1e-4, "depthwise h={h} k={k} s={s} d={d}");
            }
        }
        for kind in [PoolKind::Max, PoolKind::Avg] {
            for count_include_pad in [false, true] {
                for (h, k, s, pads) in [
                    (9, 3, 1, [1, 1, 1, 1]),
                    (10, 3, 2, [0, 0, 1, 1]),
                    (6, 1, 2, [0; 4]),
                ] {
                    let op = Pool {
                        kind,
                        kernel: k,
                        stride: s,
                        pads,
                        count_include_pad,
                    };
                    let x = (ramp((2, 2, h, h), 3)
                        + Tensor::arange(0f32, (4 * h * h) as f32, &Device::Cpu)
                            .unwrap()
                            .reshape((2, 2, h, h))
                            .unwrap()
                            * 0.01)
                        .unwrap();
                    let none = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
                    let a = grads(&|x, _| pool2d(x, op).unwrap(), &x, &none);
                    let b = grads(&|x, _| pool_generic(x, op).unwrap(), &x, &none);
                    assert!(max_diff(&a.0, &b.0) < 1e-5, "{kind:?} h={h} k={k} s={s}");
                    assert!(
                        max_diff(&a.1, &b.1) < 1e-5,
                        "{kind:?} grad h={h} k={k} s={s}"
                    );
                }
            }
        }
    }
}
