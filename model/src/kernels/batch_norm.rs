//! Training-mode batch norm on the CPU (batch statistics), with its backward pass.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::f32_slice;

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
    /// Added to the batch variance before the square root.
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
