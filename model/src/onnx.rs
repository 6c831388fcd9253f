//! ONNX export: records the network through the same [`Graph`] trait the Candle evaluation uses,
//! so the exported graph is wired by the one network description.
//!
//! The graph is built for inference: each batch norm is folded into the convolution before it
//! (a bias and scaled weights, as ONNX Runtime does when it loads a model; tract leaves a
//! multiply and an add once a 1x1 convolution is a matrix product, and a smaller graph opens
//! faster), TF "SAME" padding (the asymmetric
//! even-size case included) becomes the `pads` attribute of `Conv` / `MaxPool` /
//! `AveragePool` (no `Pad` node, so no negative pads and nothing for ONNX Runtime 1.30/1.31's
//! Pad-fusion bug to reject), the border rule of average pools is `count_include_pad`, and
//! the factorized reduction's one-pixel shift is a `Slice` feeding a strided 1x1 `Conv` with
//! one pixel of end padding. Opset 17, dynamic batch; input `image` `[N, 3, S, S]`, outputs
//! `logits` `[N, classes]` and `features` `[N, 24 F]`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
// The ONNX protobuf types tract generates for its own reader, encoded with prost.
use prost::Message;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};

use crate::graph::Graph;
use crate::model::NasNet;
use crate::ops::{BatchNorm, ConvSpec, Pool, PoolKind, output_size};
use crate::{Error, Result};

/// The ONNX opset the exporter targets.
pub const OPSET: i64 = 17;
pub use nasnet_core::meta::{
    ONNX_FEATURES as FEATURES, ONNX_INPUT as INPUT, ONNX_LOGITS as LOGITS,
};

/// A value in the graph being recorded: its name and, for 4-D values, `[C, H, W]`.
#[derive(Debug, Clone)]
pub struct Value {
    /// The ONNX value name (a node output, an initializer or the graph input).
    pub name: String,
    /// `[C, H, W]` of a 4-D value; `None` after global pooling.
    pub chw: Option<[usize; 3]>,
}

/// Records the network's operations as ONNX nodes.
#[derive(Debug, Default)]
pub struct OnnxGraph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    count: usize,
}

pub(crate) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

fn pads_attr(p: [usize; 4]) -> AttributeProto {
    // ONNX order: x1_begin, x2_begin, x1_end, x2_end = top, left, bottom, right.
    attr_ints("pads", &p.map(|v| v as i64))
}

fn tensor_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v as i64),
                None => dimension::Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type: DataType::Float as i32,
        shape: Some(TensorShapeProto { dim }),
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl OnnxGraph {
    fn fresh(&mut self, prefix: &str) -> String {
        self.count += 1;
        format!("{prefix}_{}", self.count)
    }

    fn initializer(&mut self, prefix: &str, t: &Tensor) -> Result<String> {
        let name = self.fresh(prefix);
        let t = t.to_dtype(DType::F32)?;
        let data: Vec<f32> = t.flatten_all()?.to_vec1()?;
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: t.dims().iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: raw(data),
            ..Default::default()
        });
        Ok(name)
    }

    fn int_initializer(&mut self, prefix: &str, v: &[i64]) -> String {
        let name = self.fresh(prefix);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![v.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    fn node(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        attrs: Vec<AttributeProto>,
        chw: Option<[usize; 3]>,
    ) -> Value {
        let out = self.fresh(&op.to_lowercase());
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: out.clone(),
            input: inputs,
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        Value { name: out, chw }
    }

    fn shape(x: &Value) -> Result<[usize; 3]> {
        x.chw
            .ok_or_else(|| Error::Build(format!("{} is not a feature map", x.name)))
    }

    /// Wraps the recorded nodes into a model, with each batch norm that can be folded into
    /// the convolution before it folded when `fold`.
    fn into_model(mut self, net: &NasNet, out: Output, fold: bool) -> ModelProto {
        let mut nodes = if fold {
            fold_batch_norms(self.nodes, &mut self.initializers)
        } else {
            self.nodes
        };
        for (name, v) in [(LOGITS, &out.logits), (FEATURES, &out.features)] {
            nodes.push(NodeProto {
                op_type: "Identity".into(),
                name: name.into(),
                input: vec![v.name.clone()],
                output: vec![name.into()],
                ..Default::default()
            });
        }
        let s = net.config.image_size;
        let graph = GraphProto {
            name: "nasnet".into(),
            node: nodes,
            initializer: self.initializers,
            input: vec![tensor_info(INPUT, &[None, Some(3), Some(s), Some(s)])],
            output: vec![
                tensor_info(LOGITS, &[None, Some(net.config.num_classes)]),
                tensor_info(FEATURES, &[None, Some(net.num_features())]),
            ],
            ..Default::default()
        };
        let meta = |k: &str, v: String| StringStringEntryProto {
            key: k.into(),
            value: v,
        };
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "nasnet".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(graph),
            metadata_props: vec![meta(
                "nasnet.architecture",
                serde_json::to_string(&net.config).unwrap_or_default(),
            )],
            ..Default::default()
        }
    }
}

pub(crate) fn floats(t: &TensorProto) -> Vec<f32> {
    t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn raw(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// Folds every `BatchNormalization` that directly follows the `Conv` whose output only it reads
/// into that convolution: per output channel `s = gamma / sqrt(var + eps)`, weights `W * s`,
/// bias `beta - mean * s` (in f64, rounded once). The batch norm's `beta` initializer becomes
/// the bias; what nothing reads any more is dropped.
fn fold_batch_norms(nodes: Vec<NodeProto>, inits: &mut Vec<TensorProto>) -> Vec<NodeProto> {
    let mut uses: HashMap<String, usize> = HashMap::new();
    for name in nodes.iter().flat_map(|n| &n.input) {
        *uses.entry(name.clone()).or_default() += 1;
    }
    let index: HashMap<String, usize> = inits
        .iter()
        .enumerate()
        .filter(|(_, t)| t.data_type == DataType::Float as i32)
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    let sole = |name: &str| uses.get(name) == Some(&1);
    let mut out: Vec<NodeProto> = Vec::with_capacity(nodes.len());
    for bn in nodes {
        let folded = match out.last_mut() {
            Some(conv)
                if bn.op_type == "BatchNormalization"
                    && bn.input.len() == 5
                    && conv.op_type == "Conv"
                    && conv.input.len() == 2
                    && conv.output.len() == 1
                    && conv.output[0] == bn.input[0]
                    && sole(&bn.input[0])
                    && sole(&conv.input[1])
                    && sole(&bn.input[2]) =>
            {
                fold_into(conv, &bn, inits, &index)
            }
            _ => false,
        };
        if !folded {
            out.push(bn);
        }
    }
    let read: std::collections::HashSet<&str> = out
        .iter()
        .flat_map(|n| &n.input)
        .map(String::as_str)
        .collect();
    inits.retain(|t| read.contains(t.name.as_str()));
    out
}

/// One fold of [`fold_batch_norms`]; false (nothing changed) unless every tensor is there with
/// one value per output channel.
fn fold_into(
    conv: &mut NodeProto,
    bn: &NodeProto,
    inits: &mut [TensorProto],
    index: &HashMap<String, usize>,
) -> bool {
    let ids: Option<Vec<usize>> = [1, 2, 3, 4]
        .iter()
        .map(|&k| &bn.input[k])
        .chain([&conv.input[1]])
        .map(|name| index.get(name).copied())
        .collect();
    let Some(&[gamma, beta, mean, var, w]) = ids.as_deref() else {
        return false;
    };
    let [gamma, beta_v, mean, var] = [gamma, beta, mean, var].map(|i| floats(&inits[i]));
    let weights = floats(&inits[w]);
    let n = gamma.len();
    if n == 0 || !weights.len().is_multiple_of(n) || [beta_v.len(), mean.len(), var.len()] != [n; 3]
    {
        return false;
    }
    let eps = bn
        .attribute
        .iter()
        .find(|a| a.name == "epsilon")
        .map_or(1e-5, |a| a.f) as f64;
    let s: Vec<f64> = gamma
        .iter()
        .zip(&var)
        .map(|(&g, &v)| g as f64 / (v as f64 + eps).sqrt())
        .collect();
    let per = weights.len() / n;
    inits[w].raw_data = raw(weights
        .iter()
        .enumerate()
        .map(|(i, &x)| (x as f64 * s[i / per]) as f32));
    inits[beta].raw_data = raw((0..n).map(|o| (beta_v[o] as f64 - mean[o] as f64 * s[o]) as f32));
    conv.input.push(bn.input[2].clone());
    conv.output[0] = bn.output[0].clone();
    true
}

type Output = crate::model::Output<Value>;

impl Graph for OnnxGraph {
    type Value = Value;

    fn chw(&self, x: &Value) -> Result<[usize; 3]> {
        Self::shape(x)
    }

    fn conv2d(&mut self, x: &Value, weight: &Tensor, spec: ConvSpec) -> Result<Value> {
        let [_, h, w] = Self::shape(x)?;
        let (out, _, kh, kw) = weight.dims4()?;
        let [pt, pl, pb, pr] = spec.pads;
        let d = spec.dilation;
        let oh = output_size(h, pt, pb, d * (kh - 1) + 1, spec.stride);
        let ow = output_size(w, pl, pr, d * (kw - 1) + 1, spec.stride);
        let wname = self.initializer("w", weight)?;
        let attrs = vec![
            attr_ints("kernel_shape", &[kh as i64, kw as i64]),
            attr_ints("strides", &[spec.stride as i64; 2]),
            attr_ints("dilations", &[d as i64; 2]),
            attr_int("group", spec.groups as i64),
            pads_attr(spec.pads),
        ];
        Ok(self.node(
            "Conv",
            vec![x.name.clone(), wname],
            attrs,
            Some([out, oh, ow]),
        ))
    }

    fn batch_norm(&mut self, x: &Value, bn: &BatchNorm) -> Result<Value> {
        let inputs = vec![
            x.name.clone(),
            self.initializer("bn_scale", &bn.weight)?,
            self.initializer("bn_bias", &bn.bias)?,
            self.initializer("bn_mean", &bn.running_mean)?,
            self.initializer("bn_var", &bn.running_var)?,
        ];
        let attrs = vec![attr_float("epsilon", bn.eps as f32)];
        Ok(self.node("BatchNormalization", inputs, attrs, x.chw))
    }

    fn relu(&mut self, x: &Value) -> Result<Value> {
        Ok(self.node("Relu", vec![x.name.clone()], vec![], x.chw))
    }

    fn add(&mut self, a: &Value, b: &Value) -> Result<Value> {
        if a.chw != b.chw {
            return Err(Error::Build(format!("adding {:?} to {:?}", a.chw, b.chw)));
        }
        Ok(self.node("Add", vec![a.name.clone(), b.name.clone()], vec![], a.chw))
    }

    fn concat(&mut self, xs: &[Value]) -> Result<Value> {
        let mut chw = Self::shape(&xs[0])?;
        chw[0] = xs
            .iter()
            .map(|x| Self::shape(x).map(|s| s[0]))
            .sum::<Result<usize>>()?;
        let inputs = xs.iter().map(|x| x.name.clone()).collect();
        Ok(self.node("Concat", inputs, vec![attr_int("axis", 1)], Some(chw)))
    }

    fn pool(&mut self, x: &Value, op: Pool) -> Result<Value> {
        let [c, h, w] = Self::shape(x)?;
        let [pt, pl, pb, pr] = op.pads;
        let chw = [
            c,
            output_size(h, pt, pb, op.kernel, op.stride),
            output_size(w, pl, pr, op.kernel, op.stride),
        ];
        let mut attrs = vec![
            attr_ints("kernel_shape", &[op.kernel as i64; 2]),
            attr_ints("strides", &[op.stride as i64; 2]),
            pads_attr(op.pads),
        ];
        let kind = match op.kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Avg => {
                attrs.push(attr_int("count_include_pad", op.count_include_pad as i64));
                "AveragePool"
            }
        };
        Ok(self.node(kind, vec![x.name.clone()], attrs, Some(chw)))
    }

    fn crop_top_left(&mut self, x: &Value) -> Result<Value> {
        let [c, h, w] = Self::shape(x)?;
        let starts = self.int_initializer("starts", &[1, 1]);
        let ends = self.int_initializer("ends", &[h as i64, w as i64]);
        let axes = self.int_initializer("axes", &[2, 3]);
        let inputs = vec![x.name.clone(), starts, ends, axes];
        Ok(self.node("Slice", inputs, vec![], Some([c, h - 1, w - 1])))
    }

    fn global_avg_pool(&mut self, x: &Value) -> Result<Value> {
        let pooled = self.node("GlobalAveragePool", vec![x.name.clone()], vec![], x.chw);
        Ok(self.node(
            "Flatten",
            vec![pooled.name],
            vec![attr_int("axis", 1)],
            None,
        ))
    }

    fn linear(&mut self, x: &Value, weight: &Tensor, bias: &Tensor) -> Result<Value> {
        let inputs = vec![
            x.name.clone(),
            self.initializer("fc_w", weight)?,
            self.initializer("fc_b", bias)?,
        ];
        Ok(self.node("Gemm", inputs, vec![attr_int("transB", 1)], None))
    }

    fn dropout(&mut self, x: &Value, _p: f64) -> Result<Value> {
        Ok(x.clone())
    }

    fn drop_path(&mut self, x: &Value, _keep: f64) -> Result<Value> {
        Ok(x.clone())
    }
}

/// The network as an ONNX model.
pub fn to_onnx(net: &NasNet) -> Result<ModelProto> {
    record(net, true)
}

/// The network recorded as an ONNX model, its batch norms folded when `fold`.
fn record(net: &NasNet, fold: bool) -> Result<ModelProto> {
    let mut g = OnnxGraph::default();
    let s = net.config.image_size;
    let input = Value {
        name: INPUT.into(),
        chw: Some([3, s, s]),
    };
    let out = net.forward_graph(&mut g, &input)?;
    let out = Output {
        logits: out.logits,
        features: out.features,
        aux_logits: None,
    };
    Ok(g.into_model(net, out, fold))
}

/// Serialized ONNX bytes.
pub fn to_onnx_bytes(net: &NasNet) -> Result<Vec<u8>> {
    Ok(to_onnx(net)?.encode_to_vec())
}

/// Node counts by operator, for inspection and tests.
pub fn op_histogram(model: &ModelProto) -> HashMap<String, usize> {
    let mut h = HashMap::new();
    for n in model.graph.iter().flat_map(|g| &g.node) {
        *h.entry(n.op_type.clone()).or_default() += 1;
    }
    h
}

/// Writes the ONNX model to `path` (through a temporary file and a rename).
pub fn write_onnx(net: &NasNet, path: &Path) -> Result<()> {
    write_bytes(path, &to_onnx_bytes(net)?)
}

/// Writes the ONNX model to `path` with its weights read from `weights`, the safetensors file
/// of the same network in the same directory (a model directory's `model.onnx`), so that the
/// directory holds its weights once: each initializer whose bytes the file holds is ONNX
/// external data (the file's name, an offset and a length), which ONNX Runtime and tract read
/// from the file. The batch norms stay (their parameters are in the file); ONNX Runtime folds
/// them when it loads the model, and so does the runtime's tract backend.
pub fn write_onnx_sharing(net: &NasNet, path: &Path, weights: &Path) -> Result<()> {
    let mut model = record(net, false)?;
    let io = |source| Error::Io {
        path: weights.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(weights).map_err(io)?;
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Weights {
        path: weights.to_path_buf(),
        problem: "not a readable safetensors file",
        source: Box::new(Error::Candle(e.into())),
    })?;
    // Each tensor's bytes and where they are in the file (equal tensors are interchangeable).
    let stored: HashMap<&[u8], (usize, usize)> = file
        .tensors()
        .into_iter()
        .map(|(_, view)| {
            let data = view.data();
            (
                data,
                (data.as_ptr() as usize - bytes.as_ptr() as usize, data.len()),
            )
        })
        .collect();
    let location = weights
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let inits = model.graph.iter_mut().flat_map(|g| &mut g.initializer);
    for init in inits.filter(|t| t.data_type == DataType::Float as i32) {
        let Some(&(offset, length)) = stored.get(&init.raw_data[..]) else {
            continue;
        };
        let entry = |key: &str, value: String| StringStringEntryProto {
            key: key.into(),
            value,
        };
        init.external_data = vec![
            entry("location", location.clone()),
            entry("offset", offset.to_string()),
            entry("length", length.to_string()),
        ];
        init.data_location = Some(DataLocation::External as i32);
        init.raw_data = vec![];
    }
    write_bytes(path, &model.encode_to_vec())
}

/// `bytes` written to `path` through a temporary file and a rename.
fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    nasnet_core::fsutil::write_file_atomically(path, |tmp| -> Result<()> {
        std::fs::write(tmp, bytes).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use candle_nn::VarBuilder;

    use super::*;

    fn bn(gamma: f32, beta: f32, mean: f32, var: f32) -> BatchNorm {
        let t = |v: f32| Tensor::new(&[v], &Device::Cpu).unwrap();
        let map = [
            ("weight", t(gamma)),
            ("bias", t(beta)),
            ("running_mean", t(mean)),
            ("running_var", t(var)),
        ]
        .map(|(k, v)| (k.to_string(), v));
        let vb = VarBuilder::from_tensors(map.into(), DType::F32, &Device::Cpu);
        BatchNorm::new(&vb, 1, 1.0).unwrap()
    }

    fn conv_bn(g: &mut OnnxGraph) -> (Value, Value) {
        let x = Value {
            name: INPUT.into(),
            chw: Some([1, 4, 4]),
        };
        let w = Tensor::new(&[[[[2f32]]]], &Device::Cpu).unwrap();
        let spec = ConvSpec {
            stride: 1,
            dilation: 1,
            pads: [0; 4],
            groups: 1,
        };
        let y = g.conv2d(&x, &w, spec).unwrap();
        // s = 3 / sqrt(3 + 1) = 1.5: weight 2 * 1.5, bias 1 - 0.5 * 1.5.
        let z = g.batch_norm(&y, &bn(3.0, 1.0, 0.5, 3.0)).unwrap();
        (y, z)
    }

    #[test]
    fn a_batch_norm_folds_into_its_convolution() {
        let mut g = OnnxGraph::default();
        let (_, z) = conv_bn(&mut g);
        let nodes = fold_batch_norms(g.nodes, &mut g.initializers);
        assert_eq!(nodes.len(), 1);
        let conv = &nodes[0];
        assert_eq!((conv.op_type.as_str(), &conv.output[0]), ("Conv", &z.name));
        let value = |name: &str| {
            let t = g.initializers.iter().find(|t| t.name == name).unwrap();
            floats(t)
        };
        assert_eq!(value(&conv.input[1]), [3.0]);
        assert_eq!(value(&conv.input[2]), [0.25]);
        assert_eq!(g.initializers.len(), 2, "gamma, mean and var are dropped");
    }

    #[test]
    fn a_convolution_read_twice_keeps_its_batch_norm() {
        let mut g = OnnxGraph::default();
        let (y, _) = conv_bn(&mut g);
        g.relu(&y).unwrap();
        let nodes = fold_batch_norms(g.nodes, &mut g.initializers);
        let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Conv", "BatchNormalization", "Relu"]);
        assert_eq!(g.initializers.len(), 5);
    }

    /// A model directory's graph keeps its batch norms and reads its weights from the
    /// safetensors file beside it: each float initializer the file holds is external data whose
    /// bytes, at the offset and length it names, are the initializer's own, and what stays
    /// inline is a small part.
    #[test]
    fn a_directory_graph_reads_its_weights_from_the_safetensors_file() {
        let mut config = nasnet_core::Preset::Cifar.config();
        config.cells = 1;
        config.filters = 8;
        let tensors = crate::init::synthetic_state_dict(&config, &HashMap::new()).unwrap();
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
        let net = NasNet::new(&config, vb).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("model.safetensors");
        crate::dir::save_weights(&tensors, &weights).unwrap();
        let onnx = dir.path().join("model.onnx");
        write_onnx_sharing(&net, &onnx, &weights).unwrap();

        let file = std::fs::read(&weights).unwrap();
        let model = ModelProto::decode(&std::fs::read(&onnx).unwrap()[..]).unwrap();
        let inline = record(&net, false).unwrap();
        let inline: HashMap<_, _> = inline
            .graph
            .iter()
            .flat_map(|g| &g.initializer)
            .map(|t| (t.name.clone(), t.raw_data.clone()))
            .collect();
        let graph = model.graph.unwrap();
        assert!(graph.node.iter().any(|n| n.op_type == "BatchNormalization"));
        let floats: Vec<_> = graph
            .initializer
            .iter()
            .filter(|t| t.data_type == DataType::Float as i32)
            .collect();
        assert!(!floats.is_empty());
        // A batch norm over part of a concatenation reads part of a tensor: it stays inline.
        let mut inline_bytes = 0;
        for t in floats {
            let field = |k: &str| {
                t.external_data
                    .iter()
                    .find(|e| e.key == k)
                    .map(|e| e.value.clone())
            };
            let Some(location) = field("location") else {
                inline_bytes += t.raw_data.len();
                continue;
            };
            assert_eq!(location, "model.safetensors");
            assert_eq!(t.data_location, Some(DataLocation::External as i32));
            assert!(t.raw_data.is_empty());
            let offset: usize = field("offset").unwrap().parse().unwrap();
            let length: usize = field("length").unwrap().parse().unwrap();
            assert_eq!(
                &file[offset..offset + length],
                &inline[&t.name][..],
                "{}",
                t.name
            );
        }
        assert!(
            inline_bytes * 50 < file.len(),
            "{inline_bytes} bytes inline"
        );
    }

    /// Weights that are no safetensors file are an error naming the file, and no graph is
    /// written.
    #[test]
    fn a_directory_graph_refuses_weights_it_cannot_read() {
        let mut config = nasnet_core::Preset::Cifar.config();
        config.cells = 1;
        config.filters = 8;
        let net = crate::init::synthetic_network(&config).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("model.safetensors");
        std::fs::write(&weights, b"not a safetensors file").unwrap();
        let onnx = dir.path().join("model.onnx");
        let e = write_onnx_sharing(&net, &onnx, &weights)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("not a readable safetensors file"),
            "{e}"
        );
        assert!(!onnx.exists());
        let missing = dir.path().join("gone.safetensors");
        let e = write_onnx_sharing(&net, &onnx, &missing)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gone.safetensors"), "{e}");
    }
}
