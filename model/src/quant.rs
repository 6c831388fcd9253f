//! Post-training quantization: the network's ONNX graph with int8 weights, and for static
//! quantization with uint8 activations whose ranges were measured on calibration images.
//!
//! - [`calibrate`] runs the network with Candle and the ONNX exporter side by side
//!   ([`Twin`]), so that every value the exported graph names gets the range it took on the
//!   calibration images: its extremes ([`Calibrator::MinMax`]), or the range that holds all
//!   but a sliver of its values ([`Calibrator::Percentile`], from a histogram over the
//!   extremes, a second pass).
//! - [`qdq_model`] writes the static form as an ONNX QDQ graph, the layout ONNX Runtime turns
//!   into its integer kernels (`QLinearConv`, `QLinearAdd`, ...): each weight an int8
//!   initializer (symmetric, one scale per output channel) behind a `DequantizeLinear`, each
//!   bias an int32 one at the scale of input times weight, and each activation a
//!   `QuantizeLinear` / `DequantizeLinear` pair (uint8, asymmetric).
//! - [`weights_only_model`] writes int8 or float16 weights and nothing else quantized: a
//!   quarter or half the file, and fp32 compute once the weights are widened.

use std::collections::{HashMap, HashSet};

use candle_core::Tensor;
use nasnet_core::meta::Precision;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto, TensorProto};

use crate::graph::Graph;
use crate::model::NasNet;
use crate::onnx::{self, OnnxGraph, Value};
use crate::ops::{BatchNorm, ConvSpec, Pool};
use crate::{CandleGraph, Error, Result};

/// How the range of an activation is chosen from the values it took on calibration images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Calibrator {
    /// The smallest and largest value seen.
    MinMax,
    /// The range that holds all but [`PERCENTILE_TAIL`] of the values on each side, from a
    /// histogram of [`HISTOGRAM_BINS`] bins over the extremes.
    Percentile,
}

/// The share of values a percentile range leaves out on each side.
pub const PERCENTILE_TAIL: f64 = 1e-4;
/// The largest magnitude of a quantized weight: 7 bits in int8. x86 processors without VNNI
/// multiply uint8 activations by int8 weights in pairs summed into int16 (`vpmaddubsw`,
/// which ONNX Runtime's kernels use there), and `2 * 255 * 127` overflows it where
/// `2 * 255 * 63` does not: full-range weights cost the Fashion-MNIST model a point of top-1
/// on such a processor (docs/benchmarks.md).
pub const WEIGHT_MAX: f32 = 63.0;
/// Bins of the histogram the percentile calibrator reads its range from.
pub const HISTOGRAM_BINS: usize = 2048;

impl Calibrator {
    /// Every calibrator.
    pub const ALL: [Calibrator; 2] = [Calibrator::MinMax, Calibrator::Percentile];

    /// `minmax` or `percentile`.
    pub fn name(self) -> &'static str {
        match self {
            Calibrator::MinMax => "minmax",
            Calibrator::Percentile => "percentile",
        }
    }
}

impl std::fmt::Display for Calibrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Calibrator {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Calibrator::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown calibrator {s:?} (expected minmax or percentile)"))
    }
}

/// The range `[low, high]` each named value of the exported graph takes (`low <= 0 <= high`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranges(pub HashMap<String, (f32, f32)>);

/// What is known of one value: its extremes and, in the second pass, its histogram.
#[derive(Debug, Clone)]
struct Observed {
    min: f32,
    max: f32,
    bins: Vec<u64>,
}

impl Observed {
    fn extremes(&mut self, v: &[f32]) {
        for &x in v.iter().filter(|x| x.is_finite()) {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
    }

    fn count(&mut self, v: &[f32]) {
        let (lo, hi) = (self.min, self.max);
        if self.bins.is_empty() {
            self.bins = vec![0; HISTOGRAM_BINS];
        }
        let width = (hi - lo) / HISTOGRAM_BINS as f32;
        for &x in v.iter().filter(|x| x.is_finite()) {
            let i = if width > 0.0 {
                (((x - lo) / width) as usize).min(HISTOGRAM_BINS - 1)
            } else {
                0
            };
            self.bins[i] += 1;
        }
    }

    /// The range by `calibrator`, widened to hold zero (which must be exact in uint8).
    fn range(&self, calibrator: Calibrator) -> (f32, f32) {
        let (lo, hi) = match calibrator {
            Calibrator::MinMax => (self.min, self.max),
            Calibrator::Percentile => self.percentile_range(),
        };
        (lo.min(0.0), hi.max(0.0))
    }

    fn percentile_range(&self) -> (f32, f32) {
        let total: u64 = self.bins.iter().sum();
        if total == 0 {
            return (self.min, self.max);
        }
        let width = (self.max - self.min) / HISTOGRAM_BINS as f32;
        let cut = (total as f64 * PERCENTILE_TAIL).floor() as u64;
        // The first bin whose running count passes the cut, from either end.
        let edge = |bins: &mut dyn Iterator<Item = (usize, &u64)>| {
            let mut seen = 0;
            for (i, &n) in bins {
                seen += n;
                if seen > cut {
                    return i;
                }
            }
            0
        };
        let first = edge(&mut self.bins.iter().enumerate());
        let last = edge(&mut self.bins.iter().enumerate().rev());
        let lo = self.min + first as f32 * width;
        let hi = self.min + (last + 1) as f32 * width;
        (lo.max(self.min), hi.min(self.max))
    }
}

/// The network computed with Candle and recorded by the ONNX exporter at once: each value is
/// a tensor and the name the exported graph gives it, and every computed value is observed
/// under that name.
struct Twin<'a> {
    candle: CandleGraph,
    onnx: OnnxGraph,
    seen: &'a mut HashMap<String, Observed>,
    histograms: bool,
}

type Pair = (Tensor, Value);

impl Twin<'_> {
    fn observe(&mut self, t: Tensor, v: Value) -> Result<Pair> {
        let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
        let o = self.seen.entry(v.name.clone()).or_insert_with(|| Observed {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            bins: vec![],
        });
        if self.histograms {
            o.count(&values);
        } else {
            o.extremes(&values);
        }
        Ok((t, v))
    }
}

impl Graph for Twin<'_> {
    type Value = Pair;

    fn chw(&self, x: &Pair) -> Result<[usize; 3]> {
        self.candle.chw(&x.0)
    }

    fn conv2d(&mut self, x: &Pair, weight: &Tensor, spec: ConvSpec) -> Result<Pair> {
        let t = self.candle.conv2d(&x.0, weight, spec)?;
        let v = self.onnx.conv2d(&x.1, weight, spec)?;
        self.observe(t, v)
    }

    fn batch_norm(&mut self, x: &Pair, bn: &BatchNorm) -> Result<Pair> {
        let t = self.candle.batch_norm(&x.0, bn)?;
        let v = self.onnx.batch_norm(&x.1, bn)?;
        self.observe(t, v)
    }

    fn relu(&mut self, x: &Pair) -> Result<Pair> {
        let t = self.candle.relu(&x.0)?;
        let v = self.onnx.relu(&x.1)?;
        self.observe(t, v)
    }

    fn add(&mut self, a: &Pair, b: &Pair) -> Result<Pair> {
        let t = self.candle.add(&a.0, &b.0)?;
        let v = self.onnx.add(&a.1, &b.1)?;
        self.observe(t, v)
    }

    fn concat(&mut self, xs: &[Pair]) -> Result<Pair> {
        let ts: Vec<Tensor> = xs.iter().map(|x| x.0.clone()).collect();
        let vs: Vec<Value> = xs.iter().map(|x| x.1.clone()).collect();
        let t = self.candle.concat(&ts)?;
        let v = self.onnx.concat(&vs)?;
        self.observe(t, v)
    }

    fn pool(&mut self, x: &Pair, op: Pool) -> Result<Pair> {
        let t = self.candle.pool(&x.0, op)?;
        let v = self.onnx.pool(&x.1, op)?;
        self.observe(t, v)
    }

    fn crop_top_left(&mut self, x: &Pair) -> Result<Pair> {
        let t = self.candle.crop_top_left(&x.0)?;
        let v = self.onnx.crop_top_left(&x.1)?;
        self.observe(t, v)
    }

    fn global_avg_pool(&mut self, x: &Pair) -> Result<Pair> {
        let t = self.candle.global_avg_pool(&x.0)?;
        let v = self.onnx.global_avg_pool(&x.1)?;
        self.observe(t, v)
    }

    fn linear(&mut self, x: &Pair, weight: &Tensor, bias: &Tensor) -> Result<Pair> {
        let t = self.candle.linear(&x.0, weight, bias)?;
        let v = self.onnx.linear(&x.1, weight, bias)?;
        self.observe(t, v)
    }

    fn dropout(&mut self, x: &Pair, _p: f64) -> Result<Pair> {
        Ok(x.clone())
    }

    fn drop_path(&mut self, x: &Pair, _keep: f64) -> Result<Pair> {
        Ok(x.clone())
    }
}

/// Measures the range of every value of `net`'s exported graph on `batches` batches of
/// preprocessed images (`batch(i)` gives the `i`-th, `[N, 3, S, S]`; the percentile
/// calibrator asks for each twice).
pub fn calibrate(
    net: &NasNet,
    calibrator: Calibrator,
    batches: usize,
    mut batch: impl FnMut(usize) -> Result<Tensor>,
) -> Result<Ranges> {
    if batches == 0 {
        return Err(Error::Build("calibration needs at least one image".into()));
    }
    let mut seen = HashMap::new();
    let passes: &[bool] = match calibrator {
        Calibrator::MinMax => &[false],
        Calibrator::Percentile => &[false, true],
    };
    for &histograms in passes {
        for i in 0..batches {
            let x = batch(i)?;
            let s = net.config.image_size;
            let input = Value {
                name: onnx::INPUT.into(),
                chw: Some([3, s, s]),
            };
            let mut twin = Twin {
                candle: CandleGraph::eval(),
                onnx: OnnxGraph::default(),
                seen: &mut seen,
                histograms,
            };
            let (x, input) = twin.observe(x, input)?;
            net.forward_graph(&mut twin, &(x, input))?;
        }
    }
    Ok(Ranges(
        seen.into_iter()
            .filter(|(_, o)| o.min <= o.max)
            .map(|(name, o)| (name, o.range(calibrator)))
            .collect(),
    ))
}

/// uint8 scale and zero point for an activation in `[low, high]` (`low <= 0 <= high`), as
/// ONNX's `QuantizeLinear` reads them: `q = clamp(round(x / scale) + zero_point, 0, 255)`.
pub fn activation_params(low: f32, high: f32) -> (f32, u8) {
    let (low, high) = (low.min(0.0), high.max(0.0));
    let scale = (high - low) / 255.0;
    if scale <= 0.0 || !scale.is_finite() {
        return (1.0, 0);
    }
    let zero = (-low / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zero)
}

/// Symmetric int8 quantization of `weights`, one scale per output channel (the first axis):
/// `scale = max |w| / WEIGHT_MAX`, `q = round(w / scale)` in `[-WEIGHT_MAX, WEIGHT_MAX]`,
/// zero point 0.
pub fn quantize_per_channel(weights: &[f32], channels: usize) -> (Vec<i8>, Vec<f32>) {
    let per = weights.len() / channels.max(1);
    let scales: Vec<f32> = weights
        .chunks(per.max(1))
        .map(|c| {
            let m = c.iter().fold(0f32, |m, x| m.max(x.abs()));
            if m > 0.0 { m / WEIGHT_MAX } else { 1.0 }
        })
        .collect();
    let q = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            (w / scales[i / per.max(1)])
                .round()
                .clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8
        })
        .collect();
    (q, scales)
}

/// Names made in the rewrite of one graph, and the initializers and nodes it adds.
#[derive(Default)]
struct Rewrite {
    inits: Vec<TensorProto>,
    nodes: Vec<NodeProto>,
}

impl Rewrite {
    fn tensor(
        &mut self,
        name: String,
        dims: Vec<i64>,
        data_type: DataType,
        raw: Vec<u8>,
    ) -> String {
        self.inits.push(TensorProto {
            name: name.clone(),
            dims,
            data_type: data_type as i32,
            raw_data: raw,
            ..Default::default()
        });
        name
    }

    fn node(&mut self, op: &str, name: String, inputs: Vec<String>, attrs: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: name.clone(),
            input: inputs,
            output: vec![name],
            attribute: attrs,
            ..Default::default()
        });
    }

    /// `weight` quantized per output channel: the names of its int8 initializer and of its
    /// scales (shaped `[channels]`, or `[channels, 1, ...]` to broadcast against the weight
    /// when `broadcast`), and the scales.
    fn int8_data(&mut self, w: &TensorProto, broadcast: bool) -> (String, String, Vec<f32>) {
        let channels = w.dims.first().copied().unwrap_or(1).max(1) as usize;
        let (q, scales) = quantize_per_channel(&onnx::floats(w), channels);
        let data = self.tensor(
            format!("{}_i8", w.name),
            w.dims.clone(),
            DataType::Int8,
            q.iter().map(|&v| v as u8).collect(),
        );
        let mut dims = vec![1; if broadcast { w.dims.len().max(1) } else { 1 }];
        dims[0] = channels as i64;
        let scale = self.tensor(
            format!("{}_scale", w.name),
            dims,
            DataType::Float,
            scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
        );
        (data, scale, scales)
    }

    /// `weight` as int8 per output channel behind a `DequantizeLinear`; returns the
    /// dequantized value's name and the scales.
    fn int8_weight(&mut self, w: &TensorProto) -> (String, Vec<f32>) {
        let (data, scale, scales) = self.int8_data(w, false);
        let zero = self.tensor(
            format!("{}_zero", w.name),
            vec![scales.len() as i64],
            DataType::Int8,
            vec![0; scales.len()],
        );
        let out = format!("{}_dq", w.name);
        let axis = vec![onnx::attr_int("axis", 0)];
        let inputs = vec![data, scale, zero];
        self.node("DequantizeLinear", out.clone(), inputs, axis);
        (out, scales)
    }

    /// `weight` as int8 per output channel, widened by a `Cast` and a `Mul` by the channel
    /// scales: constants all, which ONNX Runtime and tract fold into fp32 weights when they
    /// load the graph (ONNX Runtime keeps a `DequantizeLinear` of weights, for its QDQ
    /// fusions, and runs it at every inference).
    fn int8_weight_cast(&mut self, w: &TensorProto) -> String {
        let (data, scale, _) = self.int8_data(w, true);
        let wide = format!("{}_f32", w.name);
        let to = vec![onnx::attr_int("to", DataType::Float as i64)];
        self.node("Cast", wide.clone(), vec![data], to);
        let out = format!("{}_scaled", w.name);
        self.node("Mul", out.clone(), vec![wide, scale], vec![]);
        out
    }

    /// `bias` as int32 at scale `input_scale * weight_scales[c]` behind a `DequantizeLinear`.
    fn int32_bias(&mut self, b: &TensorProto, input_scale: f32, weight_scales: &[f32]) -> String {
        let scales: Vec<f32> = weight_scales.iter().map(|s| s * input_scale).collect();
        let q: Vec<i32> = onnx::floats(b)
            .iter()
            .zip(&scales)
            .map(|(&v, &s)| (v / s).round().clamp(i32::MIN as f32, i32::MAX as f32) as i32)
            .collect();
        let n = vec![q.len() as i64];
        let data = self.tensor(
            format!("{}_i32", b.name),
            n.clone(),
            DataType::Int32,
            q.iter().flat_map(|v| v.to_le_bytes()).collect(),
        );
        let scale = self.tensor(
            format!("{}_scale", b.name),
            n.clone(),
            DataType::Float,
            scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
        );
        let zero = self.tensor(
            format!("{}_zero", b.name),
            n,
            DataType::Int32,
            vec![0; 4 * q.len()],
        );
        let out = format!("{}_dq", b.name);
        let axis = vec![onnx::attr_int("axis", 0)];
        self.node(
            "DequantizeLinear",
            out.clone(),
            vec![data, scale, zero],
            axis,
        );
        out
    }

    /// A `QuantizeLinear` / `DequantizeLinear` pair on activation `name`; returns the
    /// dequantized value's name and the scale.
    fn fake_quant(&mut self, name: &str, (low, high): (f32, f32)) -> (String, f32) {
        let (scale, zero) = activation_params(low, high);
        let s = self.tensor(
            format!("{name}_scale"),
            vec![],
            DataType::Float,
            scale.to_le_bytes().to_vec(),
        );
        let z = self.tensor(format!("{name}_zero"), vec![], DataType::Uint8, vec![zero]);
        let q = format!("{name}_q");
        self.node(
            "QuantizeLinear",
            q.clone(),
            vec![name.into(), s.clone(), z.clone()],
            vec![],
        );
        let dq = format!("{name}_dq");
        self.node("DequantizeLinear", dq.clone(), vec![q, s, z], vec![]);
        (dq, scale)
    }
}

/// The exporter's names end in a counter (`w_12`): sorting by it restores their order.
fn order_key(name: &str) -> (usize, String) {
    let n = name.rsplit('_').next().and_then(|n| n.parse().ok());
    (n.unwrap_or(usize::MAX), name.to_owned())
}

/// The nodes whose weights (input 1) and bias (input 2) are quantized.
fn has_weights(n: &NodeProto) -> bool {
    matches!(n.op_type.as_str(), "Conv" | "Gemm") && n.input.len() >= 2
}

/// `net`'s fp32 graph as it is exported (batch norms folded), taken apart for a rewrite: the
/// model with an empty graph, the nodes, and the initializers by name.
struct Parts {
    model: ModelProto,
    nodes: Vec<NodeProto>,
    inits: HashMap<String, TensorProto>,
}

impl Parts {
    fn of(net: &NasNet) -> Result<Self> {
        let mut model = onnx::to_onnx(net)?;
        let graph = model
            .graph
            .as_mut()
            .ok_or_else(|| Error::Build("the exported model has no graph".into()))?;
        let inits = std::mem::take(&mut graph.initializer)
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let nodes = std::mem::take(&mut graph.node);
        Ok(Self {
            model,
            nodes,
            inits,
        })
    }

    /// The graph put together again with what `rw` added: the initializers something reads
    /// (in the exporter's order, as the map's is random, so that the file is reproducible),
    /// the nodes in an order ONNX accepts (see [`order`]), and short names.
    fn join(self, rw: Rewrite) -> ModelProto {
        let Self {
            mut model,
            nodes,
            inits,
        } = self;
        let read: HashSet<&str> = nodes
            .iter()
            .chain(&rw.nodes)
            .flat_map(|n| &n.input)
            .map(String::as_str)
            .collect();
        let mut kept: Vec<TensorProto> = inits
            .into_values()
            .filter(|t| read.contains(t.name.as_str()))
            .collect();
        kept.sort_by_key(|t| order_key(&t.name));
        kept.extend(rw.inits);
        if let Some(graph) = model.graph.as_mut() {
            graph.node = order(rw.nodes, nodes);
            graph.initializer = kept;
        }
        compact_names(&mut model);
        model
    }
}

/// `net`'s graph with int8 weights and uint8 activations in the ranges `ranges` gives, as an
/// ONNX QDQ graph. Every activation a node reads (the image included) is quantized once,
/// except the logits and the features the graph returns; a value without a range stays
/// fp32.
pub fn qdq_model(net: &NasNet, ranges: &Ranges) -> Result<ModelProto> {
    let mut parts = Parts::of(net)?;
    let Parts { nodes, inits, .. } = &mut parts;
    let outputs: HashSet<&str> = [onnx::LOGITS, onnx::FEATURES].into();
    let mut rw = Rewrite::default();
    // Each activation read by a computing node: its quantized stand-in, and that one's scale.
    let mut stand_in: HashMap<String, String> = HashMap::new();
    let mut scale: HashMap<String, f32> = HashMap::new();
    for n in nodes
        .iter_mut()
        .filter(|n| !outputs.contains(n.output[0].as_str()))
    {
        let reads = if has_weights(n) { 1 } else { n.input.len() };
        for input in n.input.iter_mut().take(reads) {
            let Some(&range) = ranges.0.get(input.as_str()) else {
                continue;
            };
            if inits.contains_key(input.as_str()) {
                continue;
            }
            let dq = stand_in.entry(input.clone()).or_insert_with(|| {
                let (dq, s) = rw.fake_quant(input, range);
                scale.insert(dq.clone(), s);
                dq
            });
            *input = dq.clone();
        }
    }
    for n in nodes.iter_mut().filter(|n| has_weights(n)) {
        let Some(w) = inits.get(&n.input[1]) else {
            continue;
        };
        let (wdq, scales) = rw.int8_weight(w);
        n.input[1] = wdq;
        let bias = n.input.get(2).and_then(|b| inits.get(b));
        if let (Some(b), Some(&sx)) = (bias, scale.get(&n.input[0])) {
            n.input[2] = rw.int32_bias(b, sx, &scales);
        }
    }
    Ok(parts.join(rw))
}

/// `added` and `nodes` in an order where each node comes after the producers of its inputs
/// (the graph's nodes are in order already; each added node goes right after the last
/// producer of what it reads).
fn order(added: Vec<NodeProto>, nodes: Vec<NodeProto>) -> Vec<NodeProto> {
    let mut pending: HashMap<String, Vec<NodeProto>> = HashMap::new();
    let mut ready = vec![];
    let produced: HashSet<String> = nodes
        .iter()
        .chain(&added)
        .flat_map(|n| n.output.clone())
        .collect();
    // An added node waits for the one input of it another node produces.
    for n in added {
        match n.input.iter().find(|i| produced.contains(*i)) {
            Some(i) => pending.entry(i.clone()).or_default().push(n),
            None => ready.push(n),
        }
    }
    let mut out = vec![];
    fn release(
        out: &mut Vec<NodeProto>,
        n: NodeProto,
        pending: &mut HashMap<String, Vec<NodeProto>>,
    ) {
        let outputs = n.output.clone();
        out.push(n);
        for o in outputs {
            for m in pending.remove(&o).unwrap_or_default() {
                release(out, m, pending);
            }
        }
    }
    for n in ready {
        release(&mut out, n, &mut pending);
    }
    for n in nodes {
        release(&mut out, n, &mut pending);
    }
    out
}

/// Gives every value of `model`'s graph but its inputs and outputs a short name (a number in
/// base 36) and its nodes none: in a small network quantized, the names of the quantizing
/// nodes and their parameters would otherwise weigh more than the int8 weights they save.
fn compact_names(model: &mut ModelProto) {
    let Some(graph) = model.graph.as_mut() else {
        return;
    };
    let kept: HashSet<String> = graph
        .input
        .iter()
        .chain(&graph.output)
        .map(|v| v.name.clone())
        .collect();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut rename = |name: &mut String| {
        if name.is_empty() || kept.contains(name.as_str()) {
            return;
        }
        let next = names.len();
        *name = names
            .entry(std::mem::take(name))
            .or_insert_with(|| base36(next))
            .clone();
    };
    for t in &mut graph.initializer {
        rename(&mut t.name);
    }
    for n in &mut graph.node {
        n.name.clear();
        n.input
            .iter_mut()
            .chain(n.output.iter_mut())
            .for_each(&mut rename);
    }
}

fn base36(mut n: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = vec![];
    loop {
        s.push(DIGITS[n % 36]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// `net`'s graph with int8 (per output channel) or float16 weights and fp32 activations:
/// each weight a narrow initializer behind a `DequantizeLinear` or a `Cast`.
pub fn weights_only_model(net: &NasNet, precision: Precision) -> Result<ModelProto> {
    let mut parts = Parts::of(net)?;
    let Parts { nodes, inits, .. } = &mut parts;
    let mut rw = Rewrite::default();
    for n in nodes.iter_mut().filter(|n| has_weights(n)) {
        let Some(w) = inits.get(&n.input[1]) else {
            continue;
        };
        n.input[1] = match precision {
            Precision::Int8Weights => rw.int8_weight_cast(w),
            Precision::F16Weights => {
                let half = rw.tensor(
                    format!("{}_f16", w.name),
                    w.dims.clone(),
                    DataType::Float16,
                    onnx::floats(w)
                        .iter()
                        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                        .collect(),
                );
                let out = format!("{}_f32", w.name);
                let to = vec![onnx::attr_int("to", DataType::Float as i64)];
                rw.node("Cast", out.clone(), vec![half], to);
                out
            }
            other => {
                return Err(Error::Build(format!(
                    "{other} is not a weights-only precision"
                )));
            }
        };
    }
    Ok(parts.join(rw))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The uint8 parameters of an activation range: zero is exact, the ends map to 0 and 255.
    #[test]
    fn activation_scale_and_zero_point_of_a_known_range() {
        let (s, z) = activation_params(-1.0, 3.0);
        assert!((s - 4.0 / 255.0).abs() < 1e-7, "{s}");
        assert_eq!(z, 64);
        let q = |x: f32| ((x / s).round() + z as f32).clamp(0.0, 255.0);
        assert_eq!((q(-1.0), q(0.0), q(3.0)), (0.0, 64.0, 255.0));
        // After a ReLU the range starts at zero, and so does the zero point.
        assert_eq!(activation_params(0.0, 2.55), (0.01, 0));
        // A value that never moved still quantizes (to its zero point).
        assert_eq!(activation_params(0.0, 0.0), (1.0, 0));
    }

    /// Per-channel symmetric int8: each channel's largest magnitude maps to 63.
    #[test]
    fn weight_scales_are_per_output_channel() {
        let w = [0.63, -0.315, 0.0, 0.25, -1.26, 0.01, 0.0, 0.0];
        let (q, s) = quantize_per_channel(&w, 2);
        assert_eq!(s.len(), 2);
        assert!(
            (s[0] - 0.01).abs() < 1e-8 && (s[1] - 0.02).abs() < 1e-8,
            "{s:?}"
        );
        assert_eq!(q, [63, -32, 0, 25, -63, 1, 0, 0]);
        // An all-zero channel keeps a usable scale.
        assert_eq!(quantize_per_channel(&[0.0; 3], 1).1, [1.0]);
    }

    fn observed(values: &[f32]) -> Observed {
        let mut o = Observed {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            bins: vec![],
        };
        o.extremes(values);
        o.count(values);
        o
    }

    /// The percentile range leaves out a lone outlier that the min-max range keeps.
    #[test]
    fn the_percentile_range_drops_outliers() {
        let mut v: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        v.push(100.0);
        let o = observed(&v);
        assert_eq!(o.range(Calibrator::MinMax), (0.0, 100.0));
        let (lo, hi) = o.range(Calibrator::Percentile);
        assert_eq!(lo, 0.0);
        assert!((0.99..1.1).contains(&hi), "{hi}");
        // Values below zero keep their own tail.
        let o = observed(&[-3.0, -1.0, 0.5, 2.0]);
        assert_eq!(o.range(Calibrator::MinMax), (-3.0, 2.0));
    }
}
