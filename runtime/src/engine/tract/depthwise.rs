//! NASNet's own depthwise convolution and pooling for tract.
//!
//! Half of a NASNet-A Mobile run on tract was spent in its 160 depthwise convolutions (3x3,
//! 5x5 and 7x7, stride 1 or 2) and a tenth in its 3x3 average pools, which tract runs one
//! channel at a time and leaves single-threaded on the small planes of the later cells. This
//! op replaces tract's `Conv` wherever it is depthwise (as many groups as channels, f32,
//! NCHW, constant weights), tract's `SumPool` (an average pool is a depthwise convolution
//! with a kernel of ones, divided by the taps that fall inside the image) and tract's
//! `MaxPool` (the same walk, with max for the sum), before tract optimizes the model. Each
//! channel becomes a few long vector loops:
//!
//! - the zero-padded input plane is split into `stride x stride` phases (for stride 1, the
//!   padded plane itself), each laid out with the output's row length plus the kernel's reach,
//!   so every kernel tap reads one phase at a fixed offset;
//! - the output is accumulated over that padded row length, one pass per kernel row and phase
//!   over the whole plane (contiguous loops the compiler vectorizes; AVX2/FMA or NEON picked
//!   at run time by `multiversion`, plain SSE2 or scalar code elsewhere), then the valid
//!   columns are copied out with the bias or the pooling divisor;
//! - channels are split across tract's executor (the model's thread pool) by the amount of
//!   work, not by plane size, so the small late planes run on every core too;
//! - on the 7x7 planes of the last cells, where a channel's loops are too short to pay for
//!   their set-up, eight channels go through at once, interleaved, one per vector lane (the
//!   same sums in the same order, so the same bits).

use tract_linalg::multithread::par_chunks_mut;
use tract_nnef::prelude::*;
use tract_nnef::tract_core::internal::*;
use tract_nnef::tract_core::ops::binary::TypedBinOp;
use tract_nnef::tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PoolSpec, SumPool};
use tract_nnef::tract_core::ops::nn::DataFormat;

/// The shape of one depthwise convolution over one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Geometry {
    channels: usize,
    /// Input height and width.
    h: usize,
    w: usize,
    /// Kernel height and width.
    kh: usize,
    kw: usize,
    /// Strides.
    sh: usize,
    sw: usize,
    /// Zero padding before the first row and column (what falls past the end is implied by
    /// the output size).
    top: usize,
    left: usize,
    /// Output height and width.
    oh: usize,
    ow: usize,
}

/// The largest kernel side the fused tap loops are unrolled for; wider kernels run a tap at
/// a time.
const MAX_FUSED: usize = 8;

/// Channels computed together on small planes: the lanes of one 256-bit vector.
const LANES: usize = 8;

/// Output planes up to this size (7x7) run `LANES` channels at a time.
const SMALL_PLANE: usize = 64;

impl Geometry {
    /// The geometry of a pool spec on a concrete input shape, with whether the input has a
    /// batch axis (decluttering drops the batch axis of a batch of one: CHW); `None` where
    /// this op does not apply.
    fn of(spec: &PoolSpec, shape: &[usize], channels: usize) -> Option<(Self, bool)> {
        let batched = match (spec.data_format, shape.len()) {
            (DataFormat::NCHW, 4) => true,
            (DataFormat::CHW, 3) => false,
            _ => return None,
        };
        let chw = &shape[batched as usize..];
        if chw[0] != channels
            || spec.kernel_shape.len() != 2
            || spec
                .dilations
                .as_ref()
                .is_some_and(|d| d.iter().any(|&d| d != 1))
        {
            return None;
        }
        let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
        let strides = spec.strides.clone().unwrap_or_else(|| tvec!(1, 1));
        if strides.len() != 2 || strides.contains(&0) || kh == 0 || kw == 0 {
            return None;
        }
        let pads = spec
            .padding
            .compute(&chw[1..3], &[kh, kw], &[1, 1], &strides);
        let g = Geometry {
            channels,
            h: chw[1],
            w: chw[2],
            kh,
            kw,
            sh: strides[0],
            sw: strides[1],
            top: pads[0].pad_before,
            left: pads[1].pad_before,
            oh: pads[0].convoluted,
            ow: pads[1].convoluted,
        };
        Some((g, batched))
    }

    /// The output shape for `batch` images (`None`: no batch axis).
    fn output_shape(&self, batch: Option<usize>) -> TVec<usize> {
        batch
            .into_iter()
            .chain([self.channels, self.oh, self.ow])
            .collect()
    }

    /// Rows and row length of each phase: the output's, plus the kernel's reach.
    fn phase_dims(&self) -> (usize, usize) {
        (
            self.oh + (self.kh - 1) / self.sh,
            self.ow + (self.kw - 1) / self.sw,
        )
    }

    /// Elements of one phase, with one spare row so the last tap may read past the last row.
    fn phase_len(&self) -> usize {
        let (r, q) = self.phase_dims();
        (r + 1) * q
    }

    /// For each output position, one over the number of kernel taps that fall inside the
    /// input (an average pool that does not count the padding).
    fn inside_counts(&self) -> Vec<f32> {
        let inside = |o: usize, s: usize, pad: usize, k: usize, len: usize| {
            (0..k)
                .filter(|t| (o * s + t).checked_sub(pad).is_some_and(|i| i < len))
                .count()
        };
        let mut v = Vec::with_capacity(self.oh * self.ow);
        for y in 0..self.oh {
            let rows = inside(y, self.sh, self.top, self.kh, self.h);
            for x in 0..self.ow {
                let cols = inside(x, self.sw, self.left, self.kw, self.w);
                v.push(1.0 / (rows * cols).max(1) as f32);
            }
        }
        v
    }

    /// Lays the padded plane `x` out as `sh x sw` phases in `phases`: phase `(a, b)` holds
    /// padded rows `a, a + sh, ...` and columns `b, b + sw, ...`. `phases` is empty or was
    /// filled by this geometry with the same `pad`.
    #[inline(always)]
    fn fill_phases(&self, x: &[f32], relu: bool, pad: f32, phases: &mut Vec<f32>) {
        let len = self.phase_len();
        // The padding is written once per buffer: every channel of one op writes the same
        // cells, and the rest stays `pad`.
        if phases.len() != self.sh * self.sw * len {
            phases.clear();
            phases.resize(self.sh * self.sw * len, pad);
        }
        self.phase_rows(|at, from, n| {
            let dst = &mut phases[at..at + n];
            let src = x[from..].iter().step_by(self.sw);
            match (self.sw, relu) {
                (1, false) => dst.copy_from_slice(&x[from..from + n]),
                (_, false) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s),
                (_, true) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.max(0.0)),
            }
        });
    }

    /// The runs of phase cells that hold input pixels: `f(at, from, n)` for each, where cell
    /// `at + k` of the phases holds input element `from + k * sw` of a plane, `k < n`.
    #[inline(always)]
    fn phase_rows(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (rows, q) = self.phase_dims();
        let len = self.phase_len();
        for a in 0..self.sh {
            for b in 0..self.sw {
                // The phase's columns that fall inside the input: `c * sw + b - left` in
                // `0..w`.
                let first = self.left.saturating_sub(b).div_ceil(self.sw);
                let end = (self.w + self.left)
                    .saturating_sub(b)
                    .div_ceil(self.sw)
                    .min(q);
                for r in 0..rows {
                    let Some(y) = (r * self.sh + a).checked_sub(self.top) else {
                        continue;
                    };
                    if y >= self.h || first >= end {
                        break;
                    }
                    let at = (a * self.sw + b) * len + r * q + first;
                    f(
                        at,
                        y * self.w + first * self.sw + b - self.left,
                        end - first,
                    );
                }
            }
        }
    }

    /// The kernel's taps in the order every path sums them (kernel row, then phase column,
    /// then column), in runs of at most `MAX_FUSED` that read consecutive cells of one phase:
    /// `f(at, taps)`, where tap `taps[m]` (an index into the `kh x kw` kernel) reads phase
    /// cell `at + m`, counted from the output position's cell.
    #[inline(always)]
    fn tap_runs(&self, mut f: impl FnMut(usize, &[usize])) {
        let (_, q) = self.phase_dims();
        let len = self.phase_len();
        for i in 0..self.kh {
            for b in 0..self.sw.min(self.kw) {
                let at = ((i % self.sh) * self.sw + b) * len + (i / self.sh) * q;
                let mut run = [0usize; MAX_FUSED];
                let (mut n, mut start) = (0, 0);
                for (m, j) in (b..self.kw).step_by(self.sw).enumerate() {
                    run[n] = i * self.kw + j;
                    n += 1;
                    if n == MAX_FUSED {
                        f(at + start, &run[..n]);
                        (n, start) = (0, m + 1);
                    }
                }
                if n > 0 {
                    f(at + start, &run[..n]);
                }
            }
        }
    }

    /// One channel: `x` is its input plane, `out` its output plane.
    #[inline(always)]
    fn channel(&self, x: &[f32], ch: &Channel, out: &mut [f32], scratch: &mut Scratch) {
        let Channel {
            kernel: k,
            bias,
            scale,
            relu,
            max,
        } = *ch;
        // A max pool pads with -inf, as tract and ONNX do.
        let pad = if max { f32::NEG_INFINITY } else { 0.0 };
        self.fill_phases(x, relu, pad, &mut scratch.phases);
        let (_, q) = self.phase_dims();
        let span = self.oh * q;
        scratch.acc.clear();
        scratch.acc.resize(span, pad);
        let (phases, acc) = (&scratch.phases, &mut scratch.acc);
        self.tap_runs(|at, taps| {
            let x = &phases[at..at + span + taps.len() - 1];
            if max {
                max_taps(acc, x, taps.len());
            } else {
                let w: [f32; MAX_FUSED] =
                    std::array::from_fn(|m| taps.get(m).map_or(0.0, |&t| k[t]));
                multiply_add_taps(acc, x, &w[..taps.len()]);
            }
        });
        let rows = out.chunks_exact_mut(self.ow).zip(scratch.acc.chunks(q));
        match scale {
            None => {
                for (row, acc) in rows {
                    for (o, a) in row.iter_mut().zip(acc) {
                        *o = a + bias;
                    }
                }
            }
            Some(scale) => {
                for ((row, acc), scale) in rows.zip(scale.chunks_exact(self.ow)) {
                    for ((o, a), s) in row.iter_mut().zip(acc).zip(scale) {
                        *o = a * s + bias;
                    }
                }
            }
        }
    }

    /// Whether [`Geometry::block`] runs this geometry: small output planes (the last cells'
    /// 7x7, where the per-channel walk's fixed costs outweigh its short loops) and whole
    /// blocks of channels.
    fn blocked(&self) -> bool {
        self.oh * self.ow <= SMALL_PLANE && self.channels.is_multiple_of(LANES)
    }

    /// `LANES` channels at once, one per lane of a vector: `x` holds their input planes one
    /// after another, `out` their output planes, `ch` their parameters. The phases hold the
    /// channels interleaved, so each tap of each output is one vector multiply-add; each
    /// output sums its taps in the order [`Geometry::channel`] does, so both paths give the
    /// same result to the bit.
    #[inline(always)]
    fn block(&self, x: &[f32], ch: &[Channel; LANES], out: &mut [f32], scratch: &mut Scratch) {
        let (relu, max) = (ch[0].relu, ch[0].max);
        let pad = if max { f32::NEG_INFINITY } else { 0.0 };
        let (_, q) = self.phase_dims();
        let len = self.phase_len();
        let (in_plane, plane) = (self.h * self.w, self.oh * self.ow);
        // The phases, interleaved; the padding is written once per buffer (see fill_phases).
        let total = self.sh * self.sw * len * LANES;
        if scratch.phases.len() != total {
            scratch.phases.clear();
            scratch.phases.resize(total, pad);
        }
        for (lane, x) in x.chunks_exact(in_plane).take(LANES).enumerate() {
            let phases = &mut scratch.phases;
            self.phase_rows(|at, from, n| {
                for (k, v) in x[from..].iter().step_by(self.sw).take(n).enumerate() {
                    phases[(at + k) * LANES + lane] = if relu { v.max(0.0) } else { *v };
                }
            });
        }
        // The taps in `channel`'s order: where each reads in the phases, relative to the
        // output's position, and its weight per lane.
        let (taps, weights) = (&mut scratch.taps, &mut scratch.weights);
        taps.clear();
        weights.clear();
        self.tap_runs(|at, run| {
            for (m, &t) in run.iter().enumerate() {
                taps.push(at + m);
                weights.push(std::array::from_fn(|l| ch[l].kernel[t]));
            }
        });
        let (phases, _) = scratch.phases.as_chunks::<LANES>();
        for y in 0..self.oh {
            for xo in 0..self.ow {
                let at = y * q + xo;
                let mut acc = [pad; LANES];
                if max {
                    for &t in &scratch.taps {
                        let v = &phases[t + at];
                        for l in 0..LANES {
                            acc[l] = acc[l].max(v[l]);
                        }
                    }
                } else {
                    for (&t, w) in scratch.taps.iter().zip(&scratch.weights) {
                        let v = &phases[t + at];
                        for l in 0..LANES {
                            acc[l] += w[l] * v[l];
                        }
                    }
                }
                let o = y * self.ow + xo;
                for (l, a) in acc.iter().enumerate() {
                    out[l * plane + o] = match ch[l].scale {
                        Some(s) => a * s[o] + ch[l].bias,
                        None => a + ch[l].bias,
                    };
                }
            }
        }
    }
}

/// The planes `first..` of one chunk of the output, one channel at a time or, where the
/// geometry is [`Geometry::blocked`], `LANES` at a time (`first` then counts blocks):
/// compiled for the widest vector unit the processor has, with everything below inlined into
/// each version.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512vl+avx2+fma",
    "x86_64+avx2+fma",
    "x86_64+avx",
    "aarch64+neon"
))]
fn run_chunk(op: &Depthwise, x: &[f32], w: &Weights, first: usize, chunk: &mut [f32]) {
    let g = &op.geometry;
    let (in_plane, plane, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let kernels = w.kernel.len() / taps;
    let mut scratch = Scratch::default();
    let lanes = if g.blocked() { LANES } else { 1 };
    for (i, out) in chunk.chunks_exact_mut(lanes * plane).enumerate() {
        // A block never straddles two images: the channels are a multiple of LANES.
        let p = (first + i) * lanes;
        let c = p % g.channels;
        let x = &x[p * in_plane..][..lanes * in_plane];
        if lanes == 1 {
            g.channel(x, &w.channel(op, c, kernels, taps), out, &mut scratch);
        } else {
            let ch = std::array::from_fn(|l| w.channel(op, c + l, kernels, taps));
            g.block(x, &ch, out, &mut scratch);
        }
    }
}

/// What one channel is computed with: each output is the sum of the taps times `kernel`
/// (`kh x kw`), times `scale` (per output position) if any, plus `bias`; or, for a max pool,
/// the largest tap. `relu`: the input goes through a ReLU first.
#[derive(Clone, Copy)]
struct Channel<'a> {
    kernel: &'a [f32],
    bias: f32,
    scale: Option<&'a [f32]>,
    relu: bool,
    max: bool,
}

/// The op's constants as slices.
struct Weights<'a> {
    kernel: &'a [f32],
    bias: Option<&'a [f32]>,
    scale: Option<&'a [f32]>,
}

impl<'a> Weights<'a> {
    /// Channel `c`'s parameters (`kernels` kernels of `taps` taps).
    #[inline(always)]
    fn channel(&self, op: &Depthwise, c: usize, kernels: usize, taps: usize) -> Channel<'a> {
        Channel {
            kernel: &self.kernel[(c % kernels) * taps..][..taps],
            bias: self.bias.map_or(0.0, |b| b[c]),
            scale: self.scale,
            relu: op.relu,
            max: op.max,
        }
    }
}

/// `acc[t] += w[0] * x[t] + w[1] * x[t + 1] + ...` for every `t` of `acc`: the taps of one
/// kernel row in one pass.
#[inline(always)]
fn multiply_add_taps(acc: &mut [f32], x: &[f32], w: &[f32]) {
    match w.len() {
        1 => fused::<1>(acc, x, w),
        2 => fused::<2>(acc, x, w),
        3 => fused::<3>(acc, x, w),
        4 => fused::<4>(acc, x, w),
        5 => fused::<5>(acc, x, w),
        6 => fused::<6>(acc, x, w),
        7 => fused::<7>(acc, x, w),
        _ => fused::<MAX_FUSED>(acc, x, w),
    }
}

/// `acc[t] = max(acc[t], x[t], x[t + 1], ..., x[t + n - 1])` for every `t` of `acc`.
#[inline(always)]
fn max_taps(acc: &mut [f32], x: &[f32], n: usize) {
    match n {
        1 => maxed::<1>(acc, x),
        2 => maxed::<2>(acc, x),
        3 => maxed::<3>(acc, x),
        4 => maxed::<4>(acc, x),
        5 => maxed::<5>(acc, x),
        6 => maxed::<6>(acc, x),
        7 => maxed::<7>(acc, x),
        _ => maxed::<MAX_FUSED>(acc, x),
    }
}

/// [`max_taps`] for `N` taps.
#[inline(always)]
fn maxed<const N: usize>(acc: &mut [f32], x: &[f32]) {
    let shifted: [&[f32]; N] = std::array::from_fn(|m| &x[m..m + acc.len()]);
    for (t, a) in acc.iter_mut().enumerate() {
        let mut v = *a;
        for s in &shifted {
            v = v.max(s[t]);
        }
        *a = v;
    }
}

/// [`multiply_add_taps`] for `N` taps, inlined into each of its versions so the loop is
/// vectorized for that version's target.
#[inline(always)]
fn fused<const N: usize>(acc: &mut [f32], x: &[f32], w: &[f32]) {
    let w: [f32; N] = std::array::from_fn(|m| w[m]);
    let shifted: [&[f32]; N] = std::array::from_fn(|m| &x[m..m + acc.len()]);
    for (t, a) in acc.iter_mut().enumerate() {
        let mut sum = *a;
        for m in 0..N {
            sum += w[m] * shifted[m][t];
        }
        *a = sum;
    }
}

/// Per-thread buffers: the phases of one input plane (or of a block's, interleaved), one
/// accumulated output plane, and a block's taps and weights.
#[derive(Default)]
struct Scratch {
    phases: Vec<f32>,
    acc: Vec<f32>,
    taps: Vec<usize>,
    weights: Vec<[f32; LANES]>,
}

/// A depthwise convolution with constant weights, or an average pool (see the module's
/// documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Depthwise {
    geometry: Geometry,
    /// NCHW, else CHW (one image, its batch axis dropped).
    batched: bool,
    /// `[channels, kh * kw]`, or `[1, kh * kw]` when every channel has the same kernel.
    kernel: Arc<Tensor>,
    /// `[channels]`, or none.
    bias: Option<Arc<Tensor>>,
    /// `[oh * ow]`: what each output position is multiplied by (an average pool's divisor).
    scale: Option<Arc<Tensor>>,
    /// A max pool: the largest of the taps (padding is -inf; no kernel, bias or scale).
    max: bool,
    /// Whether the input goes through a ReLU first (the ReLU that starts each of NASNet's
    /// separable convolutions, taken in so its output is never written).
    relu: bool,
}

impl Depthwise {
    /// The op for `node` when it is a depthwise convolution this op computes: tract's `Conv`
    /// on f32 NCHW with as many groups as channels, OIHW constant weights, no dilation and a
    /// concrete input shape; `None` otherwise (the node stays tract's).
    fn from_conv(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<Self>> {
        let c = conv.group;
        let spec = &conv.pool_spec;
        if conv.q_params.is_some()
            || c < 2
            || spec.input_channels != c
            || spec.output_channels != c
            || conv.kernel_fmt != KernelFormat::OIHW
        {
            return Ok(None);
        }
        let Some((kernel, bias)) = super::constant_weights(model, node)? else {
            return Ok(None);
        };
        let Some((geometry, batched)) = Self::geometry(model, node, spec, c)? else {
            return Ok(None);
        };
        let (kh, kw) = (geometry.kh, geometry.kw);
        if kernel.datum_type() != f32::datum_type()
            || kernel.shape() != [c, 1, kh, kw]
            || bias.datum_type() != f32::datum_type()
            || !(bias.len() == c || bias.len() == 1)
        {
            return Ok(None);
        }
        let kernel = kernel.into_tensor().into_shape(&[c, kh * kw])?;
        let bias = if bias.len() == c {
            bias.into_tensor().into_shape(&[c])?
        } else {
            let b = *bias.try_as_plain_ram()?.to_scalar::<f32>()?;
            Tensor::from_shape(&[c], &vec![b; c])?
        };
        Ok(Some(Self {
            geometry,
            batched,
            kernel: kernel.into_arc_tensor(),
            bias: Some(bias.into_arc_tensor()),
            scale: None,
            relu: false,
            max: false,
        }))
    }

    /// The op for `node` when it is tract's `SumPool` (a sum or an average pool) on f32 NCHW
    /// with a concrete input shape; `None` otherwise.
    fn from_sum_pool(
        model: &TypedModel,
        node: &TypedNode,
        pool: &SumPool,
    ) -> TractResult<Option<Self>> {
        let Some((geometry, batched)) = Self::pool_geometry(model, node, &pool.pool_spec)? else {
            return Ok(None);
        };
        let taps = geometry.kh * geometry.kw;
        let scale = match (pool.normalize, pool.count_include_pad) {
            (false, _) => None,
            (true, true) => Some(vec![1.0 / taps as f32; geometry.oh * geometry.ow]),
            (true, false) => Some(geometry.inside_counts()),
        };
        let scale = scale
            .map(|s| Tensor::from_shape(&[s.len()], &s))
            .transpose()?;
        Ok(Some(Self {
            geometry,
            batched,
            kernel: Tensor::from_shape(&[1, taps], &vec![1.0f32; taps])?.into_arc_tensor(),
            bias: None,
            scale: scale.map(Tensor::into_arc_tensor),
            relu: false,
            max: false,
        }))
    }

    /// The op for `node` when it is tract's `MaxPool` without index outputs on f32 NCHW with
    /// a concrete input shape; `None` otherwise.
    fn from_max_pool(
        model: &TypedModel,
        node: &TypedNode,
        pool: &MaxPool,
    ) -> TractResult<Option<Self>> {
        if pool.with_index_outputs.is_some() {
            return Ok(None);
        }
        let Some((geometry, batched)) = Self::pool_geometry(model, node, &pool.pool_spec)? else {
            return Ok(None);
        };
        let taps = geometry.kh * geometry.kw;
        Ok(Some(Self {
            geometry,
            batched,
            kernel: Tensor::from_shape(&[1, taps], &vec![1.0f32; taps])?.into_arc_tensor(),
            bias: None,
            scale: None,
            relu: false,
            max: true,
        }))
    }

    /// The geometry of a pool, its channels read from its input.
    fn pool_geometry(
        model: &TypedModel,
        node: &TypedNode,
        spec: &PoolSpec,
    ) -> TractResult<Option<(Geometry, bool)>> {
        let input = model.outlet_fact(node.inputs[0])?;
        let Some(&channels) = input
            .shape
            .as_concrete()
            .and_then(|s| s.get(spec.data_format.has_n() as usize))
        else {
            return Ok(None);
        };
        Self::geometry(model, node, spec, channels)
    }

    /// The geometry of `node` on its concrete f32 input, checked against its output shape.
    fn geometry(
        model: &TypedModel,
        node: &TypedNode,
        spec: &PoolSpec,
        channels: usize,
    ) -> TractResult<Option<(Geometry, bool)>> {
        let input = model.outlet_fact(node.inputs[0])?;
        let Some(shape) = input.shape.as_concrete() else {
            return Ok(None);
        };
        if input.datum_type != f32::datum_type() {
            return Ok(None);
        }
        let Some((g, batched)) = Geometry::of(spec, shape, channels) else {
            return Ok(None);
        };
        let expected = g.output_shape(batched.then_some(shape[0]));
        let out = &model.outlet_fact(node.id.into())?.shape;
        Ok((out.as_concrete() == Some(&expected[..])).then_some((g, batched)))
    }
}

impl Op for Depthwise {
    fn name(&self) -> StaticName {
        "NasnetDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geometry;
        let what = match (self.max, self.bias.is_some()) {
            (true, _) => "max pool",
            (false, true) => "convolution",
            (false, false) => "pool",
        };
        let relu = if self.relu { "ReLU then " } else { "" };
        Ok(vec![format!(
            "{relu}{}x{} {what}, stride {}x{}, {} channels",
            g.kh, g.kw, g.sh, g.sw, g.channels
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let g = self.geometry;
        let x = x.try_as_plain_ram()?.as_slice::<f32>()?;
        let in_plane = g.h * g.w;
        let planes = x.len() / in_plane.max(1);
        let plane = g.oh * g.ow;
        let taps = g.kh * g.kw;
        fn slice(t: &Option<Arc<Tensor>>) -> TractResult<Option<&[f32]>> {
            t.as_ref()
                .map(|t| t.try_as_plain_ram()?.as_slice::<f32>())
                .transpose()
        }
        let weights = Weights {
            kernel: self.kernel.try_as_plain_ram()?.as_slice::<f32>()?,
            bias: slice(&self.bias)?,
            scale: slice(&self.scale)?,
        };
        let mut output =
            Tensor::zero::<f32>(&g.output_shape(self.batched.then_some(planes / g.channels)))?;
        if plane > 0 && in_plane > 0 {
            let mut view = output.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            let lanes = if g.blocked() { LANES } else { 1 };
            par_chunks_mut(out, lanes * plane, planes * plane * taps, |first, chunk| {
                run_chunk(self, x, &weights, first, chunk);
                Ok(())
            })?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Depthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let g = &self.geometry;
        ensure!(inputs.len() == 1 && inputs[0].rank() == 3 + self.batched as usize);
        let shape: TVec<TDim> = self
            .batched
            .then(|| inputs[0].shape[0].clone())
            .into_iter()
            .chain([g.channels.into(), g.oh.into(), g.ow.into()])
            .collect();
        Ok(tvec!(f32::fact(shape)))
    }

    as_op!();
}

/// When `outlet` is a ReLU (tract's `max(x, 0)`), its input `x`.
fn relu_input(model: &TypedModel, outlet: OutletId) -> TractResult<Option<OutletId>> {
    let node = &model.nodes[outlet.node];
    let is_max = node
        .op_as::<TypedBinOp>()
        .is_some_and(|op| op.0.is::<tract_nnef::tract_core::ops::math::Max>());
    if !is_max || node.inputs.len() != 2 {
        return Ok(None);
    }
    for (data, zero) in [(0, 1), (1, 0)] {
        let fact = model.outlet_fact(node.inputs[zero])?;
        let zeros = fact.konst.as_ref().is_some_and(|k| {
            k.len() == 1
                && k.try_as_plain_ram()
                    .and_then(|k| k.as_slice::<f32>().map(|v| v[0] == 0.0))
                    .unwrap_or(false)
        });
        let data_fact = model.outlet_fact(node.inputs[data])?;
        if zeros && data_fact.shape == model.outlet_fact(outlet)?.shape {
            return Ok(Some(node.inputs[data]));
        }
    }
    Ok(None)
}

/// The replacement of a decluttered model's node by [`Depthwise`], when it computes it: a
/// depthwise convolution, a sum, average or max pool, taking in the ReLU before it.
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<super::Replacement>> {
    let op = if let Some(conv) = node.op_as::<Conv>() {
        Depthwise::from_conv(model, node, conv)?
    } else if let Some(pool) = node.op_as::<SumPool>() {
        Depthwise::from_sum_pool(model, node, pool)?
    } else if let Some(pool) = node.op_as::<MaxPool>() {
        Depthwise::from_max_pool(model, node, pool)?
    } else {
        None
    };
    let Some(mut op) = op else {
        return Ok(None);
    };
    let mut input = node.inputs[0];
    if let Some(x) = relu_input(model, input)? {
        op.relu = true;
        input = x;
    }
    Ok(Some((Box::new(op), input)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_nnef::tract_core::ops::cnn::{PaddingSpec, PoolSpec};

    /// Every node [`replacement`] replaces, replaced; how many.
    fn replace_depthwise(model: &mut TypedModel) -> TractResult<usize> {
        super::super::replace_ops(model, replacement)
    }

    /// `len` deterministic pseudo-random values in [-0.5, 0.5).
    fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// A one-node model: tract's depthwise `Conv` with random weights and bias.
    fn conv_model(
        n: usize,
        c: usize,
        hw: (usize, usize),
        k: (usize, usize),
        stride: usize,
        padding: PaddingSpec,
        seed: u64,
    ) -> TractResult<TypedModel> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([n, c, hw.0, hw.1]))?;
        let w = noise(c * k.0 * k.1, seed);
        let b = noise(c, seed + 1000);
        let w = model.add_const("w", Tensor::from_shape(&[c, 1, k.0, k.1], &w)?)?;
        let b = model.add_const("b", Tensor::from_shape(&[c], &b)?)?;
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(k.0, k.1),
                padding,
                dilations: None,
                strides: Some(tvec!(stride, stride)),
                input_channels: c,
                output_channels: c,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: c,
            q_params: None,
        };
        let y = model.wire_node("conv", conv, &[x, w, b])?;
        model.select_output_outlets(&y)?;
        Ok(model)
    }

    /// Runs tract's plan and ours on the same random input; returns the largest difference.
    fn compare(model: TypedModel, seed: u64) -> TractResult<f32> {
        let shape: Vec<usize> = model
            .outlet_fact(model.input_outlets()?[0])?
            .shape
            .as_concrete()
            .unwrap()
            .to_vec();
        let x: Vec<f32> = noise(shape.iter().product(), seed)
            .into_iter()
            .map(|v| v * 4.0)
            .collect();
        let x = Tensor::from_shape(&shape, &x)?;
        let theirs = model.clone().into_optimized()?.into_runnable()?;
        let mut ours = model.into_decluttered()?;
        assert_eq!(
            replace_depthwise(&mut ours)?,
            1,
            "the convolution is replaced"
        );
        let ours = ours.into_optimized()?;
        assert!(
            ours.nodes().iter().any(|n| n.op_is::<Depthwise>()),
            "our op survives tract's optimization"
        );
        let ours = ours.into_runnable()?;
        let a = theirs.run(tvec!(x.clone().into()))?;
        let b = ours.run(tvec!(x.into()))?;
        assert_eq!(a[0].shape(), b[0].shape());
        let (a, b) = (
            a[0].try_as_plain_ram()?.as_slice::<f32>()?,
            b[0].try_as_plain_ram()?.as_slice::<f32>()?,
        );
        Ok(a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max))
    }

    #[test]
    fn matches_tracts_depthwise_convolution() -> TractResult<()> {
        let explicit = |p: usize| PaddingSpec::Explicit(tvec!(p, p), tvec!(p, p));
        let cases = [
            // (batch, channels, input, kernel, stride, padding)
            (1, 8, (14, 14), (3, 3), 1, explicit(1)),
            // A wide kernel at stride 2: 18 taps a phase column reads, in runs of MAX_FUSED.
            (
                1,
                3,
                (6, 40),
                (3, 35),
                2,
                PaddingSpec::Explicit(tvec!(1, 17), tvec!(1, 17)),
            ),
            // Small planes of whole blocks of channels: the blocked path.
            (1, 16, (7, 7), (3, 3), 1, explicit(1)),
            (2, 8, (13, 13), (7, 7), 2, explicit(3)),
            (2, 5, (9, 11), (5, 5), 1, explicit(2)),
            (1, 4, (7, 7), (7, 7), 1, explicit(3)),
            (1, 6, (15, 15), (5, 5), 2, explicit(2)),
            (1, 3, (16, 13), (7, 7), 2, explicit(3)),
            (
                1,
                3,
                (16, 16),
                (3, 3),
                2,
                PaddingSpec::Explicit(tvec!(0, 0), tvec!(1, 1)),
            ),
            (1, 4, (10, 10), (3, 3), 2, PaddingSpec::SameUpper),
            (1, 4, (11, 11), (5, 5), 2, PaddingSpec::SameLower),
            (1, 2, (8, 8), (3, 3), 1, PaddingSpec::Valid),
        ];
        for (i, (n, c, hw, k, s, p)) in cases.into_iter().enumerate() {
            let what = format!("{n}x{c}x{hw:?} kernel {k:?} stride {s} padding {p:?}");
            let diff = compare(conv_model(n, c, hw, k, s, p, i as u64)?, 100 + i as u64)?;
            assert!(diff < 1e-5, "{what}: differs from tract by {diff}");
        }
        Ok(())
    }

    #[test]
    fn takes_in_the_relu_before_it() -> TractResult<()> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 6, 10, 10]))?;
        let zero = model.add_const("zero", Tensor::zero::<f32>(&[1, 1, 1, 1])?)?;
        let relu = model.wire_node(
            "relu",
            TypedBinOp(Box::new(tract_nnef::tract_core::ops::math::Max), None),
            &[x, zero],
        )?[0];
        let conv = conv_model(1, 6, (10, 10), (3, 3), 1, PaddingSpec::SameUpper, 9)?;
        let node = &conv.nodes()[conv.output_outlets()?[0].node];
        let w = model.add_const(
            "w",
            conv.outlet_fact(node.inputs[1])?.konst.clone().unwrap(),
        )?;
        let b = model.add_const(
            "b",
            conv.outlet_fact(node.inputs[2])?.konst.clone().unwrap(),
        )?;
        let y = model.wire_node("conv", node.op_as::<Conv>().unwrap().clone(), &[relu, w, b])?;
        model.select_output_outlets(&y)?;
        let mut ours = model.clone().into_decluttered()?;
        replace_depthwise(&mut ours)?;
        let fused = ours
            .nodes()
            .iter()
            .any(|n| n.op_as::<Depthwise>().is_some_and(|d| d.relu));
        assert!(fused, "the ReLU is taken in");
        assert!(
            !ours.nodes().iter().any(|n| n.op_is::<TypedBinOp>()),
            "the ReLU is gone: {ours}"
        );
        let diff = compare(model, 10)?;
        assert!(diff < 1e-5, "differs from tract by {diff}");
        Ok(())
    }

    #[test]
    fn the_channel_blocks_give_the_per_channel_bits() {
        let explicit = |p: usize| (p, p);
        for (i, (hw, k, s, pad, relu, max, scaled)) in [
            ((7, 7), 3, 1, explicit(1), true, false, false),
            ((7, 7), 5, 1, explicit(2), true, false, false),
            ((8, 6), 3, 1, explicit(1), false, true, false),
            ((14, 13), 7, 2, explicit(3), false, false, false),
            ((7, 7), 3, 1, explicit(1), false, false, true),
            ((9, 9), 3, 2, (0, 0), false, true, false),
        ]
        .into_iter()
        .enumerate()
        {
            let (oh, ow) = (
                (hw.0 + 2 * pad.0 - k) / s + 1,
                (hw.1 + 2 * pad.1 - k) / s + 1,
            );
            let g = Geometry {
                channels: LANES,
                h: hw.0,
                w: hw.1,
                kh: k,
                kw: k,
                sh: s,
                sw: s,
                top: pad.0,
                left: pad.1,
                oh,
                ow,
            };
            assert!(g.blocked());
            let x: Vec<f32> = noise(LANES * hw.0 * hw.1, i as u64)
                .into_iter()
                .map(|v| v * 4.0)
                .collect();
            let kernel = noise(LANES * k * k, 50 + i as u64);
            let bias = noise(LANES, 60 + i as u64);
            let scale = noise(oh * ow, 70 + i as u64);
            let ch: [Channel; LANES] = std::array::from_fn(|l| Channel {
                kernel: &kernel[l * k * k..][..k * k],
                bias: bias[l],
                scale: scaled.then_some(&scale[..]),
                relu,
                max,
            });
            let (plane, in_plane) = (oh * ow, hw.0 * hw.1);
            let mut one = vec![0.0; LANES * plane];
            let mut scratch = Scratch::default();
            for (l, out) in one.chunks_exact_mut(plane).enumerate() {
                g.channel(&x[l * in_plane..][..in_plane], &ch[l], out, &mut scratch);
            }
            let mut blocked = vec![0.0; LANES * plane];
            g.block(&x, &ch, &mut blocked, &mut Scratch::default());
            assert_eq!(one, blocked, "case {i}");
        }
    }

    #[test]
    fn matches_tracts_average_and_sum_pools() -> TractResult<()> {
        let cases = [
            // (channels, input, kernel, stride, padding, count the padding, normalize)
            (
                6,
                (14, 14),
                3,
                1,
                PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)),
                false,
                true,
            ),
            (
                4,
                (15, 15),
                3,
                2,
                PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)),
                false,
                true,
            ),
            (4, (9, 12), 3, 2, PaddingSpec::SameUpper, true, true),
            (3, (8, 8), 3, 1, PaddingSpec::Valid, false, false),
            // Whole blocks of channels on a small plane: the blocked path.
            (16, (7, 7), 3, 1, PaddingSpec::SameUpper, false, true),
        ];
        for (i, (c, hw, k, s, padding, include, normalize)) in cases.into_iter().enumerate() {
            let what = format!("{c}x{hw:?} pool {k} stride {s} padding {padding:?}");
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, c, hw.0, hw.1]))?;
            let pool = SumPool {
                pool_spec: PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: tvec!(k, k),
                    padding,
                    dilations: None,
                    strides: Some(tvec!(s, s)),
                    input_channels: c,
                    output_channels: c,
                },
                count_include_pad: include,
                normalize,
            };
            let y = model.wire_node("pool", pool, &[x])?;
            model.select_output_outlets(&y)?;
            let diff = compare(model, 200 + i as u64)?;
            assert!(diff < 1e-5, "{what}: differs from tract by {diff}");
        }
        Ok(())
    }

    #[test]
    fn matches_tracts_max_pool() -> TractResult<()> {
        for (i, (k, s, padding)) in [
            (3, 2, PaddingSpec::SameUpper),
            (3, 1, PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1))),
            (3, 2, PaddingSpec::Explicit(tvec!(0, 0), tvec!(1, 1))),
            (2, 2, PaddingSpec::Valid),
        ]
        .into_iter()
        .enumerate()
        {
            let what = format!("pool {k} stride {s} padding {padding:?}");
            let mut model = TypedModel::default();
            let x = model.add_source("x", f32::fact([1, 5, 13, 11]))?;
            let pool = MaxPool {
                pool_spec: PoolSpec {
                    data_format: DataFormat::NCHW,
                    kernel_shape: tvec!(k, k),
                    padding,
                    dilations: None,
                    strides: Some(tvec!(s, s)),
                    input_channels: 5,
                    output_channels: 5,
                },
                with_index_outputs: None,
            };
            let y = model.wire_node("pool", pool, &[x])?;
            model.select_output_outlets(&y)?;
            let diff = compare(model, 300 + i as u64)?;
            assert!(diff == 0.0, "{what}: differs from tract by {diff}");
        }
        Ok(())
    }

    #[test]
    fn runs_on_a_thread_pool_as_on_one_thread() -> TractResult<()> {
        let model = conv_model(2, 64, (28, 28), (5, 5), 1, PaddingSpec::SameUpper, 7)?;
        let mut ours = model.into_decluttered()?;
        replace_depthwise(&mut ours)?;
        let plan = ours.into_optimized()?.into_runnable()?;
        let x = Tensor::from_shape(&[2, 64, 28, 28], &noise(2 * 64 * 28 * 28, 8))?;
        let one = plan.run(tvec!(x.clone().into()))?;
        let pool = tract_linalg::multithread::Executor::multithread(2);
        let two =
            tract_linalg::multithread::multithread_tract_scope(pool, || plan.run(tvec!(x.into())))?;
        assert_eq!(
            one[0].try_as_plain_ram()?.as_slice::<f32>()?,
            two[0].try_as_plain_ram()?.as_slice::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn leaves_ordinary_convolutions_to_tract() -> TractResult<()> {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, 4, 8, 8]))?;
        let w = model.add_const("w", Tensor::zero::<f32>(&[4, 2, 3, 3])?)?;
        let b = model.add_const("b", Tensor::zero::<f32>(&[4])?)?;
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(3, 3),
                padding: PaddingSpec::Valid,
                dilations: None,
                strides: None,
                input_channels: 4,
                output_channels: 4,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 2,
            q_params: None,
        };
        let y = model.wire_node("grouped", conv, &[x, w, b])?;
        model.select_output_outlets(&y)?;
        let mut model = model.into_decluttered()?;
        assert_eq!(replace_depthwise(&mut model)?, 0);
        Ok(())
    }
}
