//! [`CandleGraph`]: the [`Graph`] that computes the network with Candle, in inference or
//! training mode (batch statistics, dropout, ScheduledDropPath).

use candle_core::Tensor;
use nasnet_core::rng::Rng;

use crate::Result;
use crate::graph::Graph;
use crate::kernels::{self, Depthwise};
use crate::ops::{BatchNorm, ConvSpec, Pool, PoolKind};

/// Evaluates the network with Candle, in inference or training mode.
#[derive(Debug, Default)]
pub struct CandleGraph {
    /// Training mode: batch statistics in batch norm, dropout and drop-path active.
    pub train: bool,
    /// Fraction of training done, in `[0, 1]`, for ScheduledDropPath.
    pub progress: f64,
    /// In training mode, the weight of each batch in the batch-norm running statistics
    /// (PyTorch's `momentum`); `None` leaves them alone.
    pub bn_momentum: Option<f64>,
    /// Draws dropout and drop-path masks.
    pub rng: Rng,
    /// When `Some`, every endpoint's shape is recorded here.
    pub endpoints: Option<Vec<(String, Vec<usize>)>>,
}

impl CandleGraph {
    /// Inference mode.
    pub fn eval() -> Self {
        Self::default()
    }

    /// Training mode at `progress` through training, masks drawn from `rng`; batch norm
    /// updates its running statistics with `bn_momentum` when given.
    pub fn train(progress: f64, bn_momentum: Option<f64>, rng: Rng) -> Self {
        Self {
            train: true,
            progress,
            bn_momentum,
            rng,
            endpoints: None,
        }
    }

    /// A `[shape]` tensor of 0 / `1 / keep` values, each kept with probability `keep`.
    fn mask(&mut self, shape: &[usize], keep: f64, like: &Tensor) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let scale = (1.0 / keep) as f32;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                if (self.rng.uniform() as f64) < keep {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Tensor::from_vec(v, shape, like.device())?.to_dtype(like.dtype())?)
    }

    /// Inference mode, recording the shape of every endpoint.
    pub fn recording() -> Self {
        Self {
            endpoints: Some(vec![]),
            ..Self::default()
        }
    }
}

impl Graph for CandleGraph {
    type Value = Tensor;

    fn chw(&self, x: &Tensor) -> Result<[usize; 3]> {
        let (_, c, h, w) = x.dims4()?;
        Ok([c, h, w])
    }

    fn conv2d(&mut self, x: &Tensor, weight: &Tensor, spec: ConvSpec) -> Result<Tensor> {
        let (out, _, kh, kw) = weight.dims4()?;
        let c = x.dim(1)?;
        if spec.groups > 1 && spec.groups == c && weight.dim(1)? == 1 {
            let op = Depthwise {
                stride: spec.stride,
                dilation: spec.dilation,
                pads: spec.pads,
            };
            return Ok(kernels::depthwise_conv2d(x, weight, op)?);
        }
        if (kh, kw) == (1, 1) && spec.groups == 1 {
            // A 1x1 convolution is a matrix product over channels, after subsampling.
            let x = if spec.stride > 1 || spec.pads != [0; 4] {
                let pick = Pool {
                    kind: PoolKind::Avg,
                    kernel: 1,
                    stride: spec.stride,
                    pads: spec.pads,
                    count_include_pad: true,
                };
                kernels::pool2d(x, pick)?
            } else {
                x.clone()
            };
            let (n, c, h, w) = x.dims4()?;
            let y = weight
                .reshape((out, c))?
                .broadcast_matmul(&x.reshape((n, c, h * w))?)?;
            return Ok(y.reshape((n, out, h, w))?);
        }
        let x = kernels::pad2d(x, spec.pads, 0.0)?;
        // Drop the rows and columns no window reaches, so that candle's backward pass (which
        // infers one output padding from the height) sees an exactly covered input.
        let (_, _, h, w) = x.dims4()?;
        let used = |n: usize, k: usize| {
            let extent = spec.dilation * (k - 1) + 1;
            (n - extent) / spec.stride * spec.stride + extent
        };
        let x = x.narrow(2, 0, used(h, kh))?.narrow(3, 0, used(w, kw))?;
        Ok(x.conv2d(weight, 0, spec.stride, spec.dilation, spec.groups)?)
    }

    fn batch_norm(&mut self, x: &Tensor, bn: &BatchNorm) -> Result<Tensor> {
        let c = x.dim(1)?;
        if self.train {
            let (y, stats) = kernels::batch_norm_train(x, &bn.weight, &bn.bias, bn.eps)?;
            if let Some(momentum) = self.bn_momentum {
                let count = x.elem_count() / c;
                bn.update_stats(&stats.get(0)?, &stats.get(1)?, count, momentum)?;
            }
            return Ok(y);
        }
        let (scale, shift) = bn.scale_shift()?;
        Ok(x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, c, 1, 1))?)?)
    }

    fn relu(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(x.relu()?)
    }

    fn add(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok((a + b)?)
    }

    fn concat(&mut self, xs: &[Tensor]) -> Result<Tensor> {
        Ok(Tensor::cat(xs, 1)?)
    }

    fn pool(&mut self, x: &Tensor, op: Pool) -> Result<Tensor> {
        Ok(kernels::pool2d(x, op)?)
    }

    fn crop_top_left(&mut self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        Ok(x.narrow(2, 1, h - 1)?.narrow(3, 1, w - 1)?)
    }

    fn global_avg_pool(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(x.mean((2, 3))?)
    }

    fn linear(&mut self, x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&weight.t()?)?.broadcast_add(bias)?)
    }

    fn dropout(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        if !self.train || p == 0.0 {
            return Ok(x.clone());
        }
        let mask = self.mask(x.dims(), 1.0 - p, x)?;
        Ok((x * mask)?)
    }

    fn drop_path(&mut self, x: &Tensor, keep: f64) -> Result<Tensor> {
        if !self.train || keep >= 1.0 {
            return Ok(x.clone());
        }
        // Official "v3" schedule: the drop probability grows linearly with training progress.
        let keep = 1.0 - self.progress.clamp(0.0, 1.0) * (1.0 - keep);
        let mask = self.mask(&[x.dim(0)?, 1, 1, 1], keep, x)?;
        Ok(x.broadcast_mul(&mask)?)
    }

    fn endpoint(&mut self, name: &str, x: &Tensor) {
        if let Some(e) = &mut self.endpoints {
            e.push((name.to_owned(), x.dims().to_vec()));
        }
    }
}
