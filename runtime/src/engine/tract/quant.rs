//! Quantized ONNX graphs on tract. A static int8 model (`nasnet quantize`) is a QDQ graph: int8
//! weights behind `DequantizeLinear` nodes, which tract folds into fp32 constants when it
//! simplifies the graph, and a `QuantizeLinear` / `DequantizeLinear` pair on every activation,
//! which tract would run as two more element-wise passes per activation, in fp32 (it has no
//! rewrite that turns the pairs around a convolution into an integer one). Without the pairs
//! the model runs at fp32 speed with the int8 weights, the activations unrounded
//! (docs/benchmarks.md has both speeds).

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::ModelProto;

/// Removes each `QuantizeLinear` → `DequantizeLinear` pair on an activation (a value no
/// initializer holds), so that whatever read the pair's output reads the activation itself;
/// returns how many pairs went.
pub(super) fn drop_activation_pairs(model: &mut ModelProto) -> usize {
    let Some(g) = model.graph.as_mut() else {
        return 0;
    };
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let first = |n: &tract_onnx::pb::NodeProto| n.input.first().cloned().unwrap_or_default();
    // A quantized activation, by the name of its quantized form.
    let quantized: HashMap<String, String> = g
        .node
        .iter()
        .filter(|n| n.op_type == "QuantizeLinear" && !inits.contains(first(n).as_str()))
        .filter_map(|n| Some((n.output.first()?.clone(), first(n))))
        .collect();
    // What each pair's `DequantizeLinear` output stands for.
    let replaced: HashMap<String, String> = g
        .node
        .iter()
        .filter(|n| n.op_type == "DequantizeLinear")
        .filter_map(|n| Some((n.output.first()?.clone(), quantized.get(&first(n))?.clone())))
        .collect();
    if replaced.is_empty() {
        return 0;
    }
    for input in g.node.iter_mut().flat_map(|n| n.input.iter_mut()) {
        if let Some(x) = replaced.get(input.as_str()) {
            *input = x.clone();
        }
    }
    let is_pair_dq = |n: &tract_onnx::pb::NodeProto| {
        n.op_type == "DequantizeLinear"
            && n.output.first().is_some_and(|o| replaced.contains_key(o))
    };
    g.node.retain(|n| !is_pair_dq(n));
    let read: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(g.output.iter().map(|o| o.name.clone()))
        .collect();
    g.node
        .retain(|n| n.op_type != "QuantizeLinear" || n.output.iter().any(|o| read.contains(o)));
    replaced.len()
}
