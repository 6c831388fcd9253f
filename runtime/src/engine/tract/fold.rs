//! Batch norms folded into the convolutions before them, in the typed graph of an ONNX model,
//! before tract declutters it.
//!
//! A model directory's `model.onnx` keeps its batch norms (its weights are those of
//! `model.safetensors`, read from that file: see the model crate's external-data export).
//! tract turns a batch norm into a per-channel multiply and add, and folds those into a
//! convolution only while it is a convolution: a 1x1 one becomes a matrix product first, and
//! then the multiply and the add stay, two more passes over every activation. This pass folds
//! them first: weights `W * slope`, bias `bias * slope + intercept`, per output channel.

use tract_nnef::prelude::*;
use tract_nnef::tract_core::internal::*;
use tract_nnef::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_nnef::tract_core::ops::cnn::{Conv, KernelFormat};
use tract_nnef::tract_core::ops::math::{Add, Mul};

/// Folds every per-channel multiply-then-add (a batch norm) that alone reads a float
/// convolution with constant weights into it; returns how many it folded. The graph is edited
/// in place (a patch per fold would check the whole graph each time), and what the folds
/// leave unread goes at the end.
pub(super) fn fold_batch_norms(model: &mut TypedModel) -> TractResult<usize> {
    let mut folded = 0;
    for id in model.eval_order()? {
        let Some(fold) = fold_at(model, id)? else {
            continue;
        };
        apply(model, id, fold)?;
        folded += 1;
    }
    model.compact()?;
    Ok(folded)
}

/// What folding a batch norm into a convolution makes: its new weights and bias, and the node
/// (the add) whose readers now read the convolution.
struct Fold {
    kernel: Tensor,
    bias: Tensor,
    add: usize,
}

/// Gives convolution `conv` the folded weights and bias and its batch norm's readers.
fn apply(model: &mut TypedModel, conv: usize, fold: Fold) -> TractResult<()> {
    let name = model.node(conv).name.clone();
    let kernel = model.add_const(format!("{name}.folded_kernel"), fold.kernel)?;
    let bias = model.add_const(format!("{name}.folded_bias"), fold.bias)?;
    model.add_edge(kernel, InletId::new(conv, 1))?;
    model.add_edge(bias, InletId::new(conv, 2))?;
    let (out, norm) = (OutletId::new(conv, 0), OutletId::new(fold.add, 0));
    for inlet in model.node(fold.add).outputs[0].successors.clone() {
        model.add_edge(out, inlet)?;
    }
    let outputs = model.output_outlets()?.to_vec();
    if outputs.contains(&norm) {
        let outputs: Vec<_> = outputs
            .into_iter()
            .map(|o| if o == norm { out } else { o })
            .collect();
        model.select_output_outlets(&outputs)?;
    }
    Ok(())
}

/// The only reader of `outlet`, and the slot it reads it on, when there is exactly one and
/// `outlet` is no output of the model.
fn sole_reader(model: &TypedModel, outlet: OutletId) -> Option<(&TypedNode, usize)> {
    if model.output_outlets().ok()?.contains(&outlet) {
        return None;
    }
    let [succ] = &*model.node(outlet.node).outputs.get(outlet.slot)?.successors else {
        return None;
    };
    Some((model.node(succ.node), succ.slot))
}

/// The constant a binary node applies to the value at `slot`, when it is `Op`, the other
/// input is constant and holds one value per channel of an NCHW value (`[1, C, 1, 1]`).
fn channel_constant<Op: BinMiniOp>(
    model: &TypedModel,
    node: &TypedNode,
    slot: usize,
    channels: usize,
) -> TractResult<Option<Arc<Tensor>>> {
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if !bin.0.is::<Op>() || node.inputs.len() != 2 {
        return Ok(None);
    }
    let fact = model.outlet_fact(node.inputs[1 - slot])?;
    let Some(k) = fact.konst.clone() else {
        return Ok(None);
    };
    let per_channel = k.datum_type() == f32::datum_type()
        && k.shape().len() == 4
        && k.shape() == [1, channels, 1, 1];
    Ok(per_channel.then_some(k))
}

/// The fold of the batch norm after node `id`, if it is a convolution followed by one.
fn fold_at(model: &TypedModel, id: usize) -> TractResult<Option<Fold>> {
    let conv_node = model.node(id);
    let Some(conv) = conv_node.op_as::<Conv>() else {
        return Ok(None);
    };
    if conv.q_params.is_some()
        || !matches!(conv.kernel_fmt, KernelFormat::OIHW | KernelFormat::OHWI)
    {
        return Ok(None);
    }
    let Some((kernel, bias)) = super::constant_weights(model, conv_node)? else {
        return Ok(None);
    };
    if kernel.datum_type() != f32::datum_type() || bias.datum_type() != f32::datum_type() {
        return Ok(None);
    }
    let channels = conv.output_channels();
    let Some((mul_node, mul_slot)) = sole_reader(model, OutletId::new(id, 0)) else {
        return Ok(None);
    };
    let Some(slope) = channel_constant::<Mul>(model, mul_node, mul_slot, channels)? else {
        return Ok(None);
    };
    let Some((add_node, add_slot)) = sole_reader(model, OutletId::new(mul_node.id, 0)) else {
        return Ok(None);
    };
    let Some(intercept) = channel_constant::<Add>(model, add_node, add_slot, channels)? else {
        return Ok(None);
    };
    let (kernel, bias) = folded(&kernel, &bias, &slope, &intercept, channels)?;
    Ok(Some(Fold {
        kernel,
        bias,
        add: add_node.id,
    }))
}

/// Weights scaled per output channel (the first axis) and the bias made per channel.
fn folded(
    kernel: &Tensor,
    bias: &Tensor,
    slope: &Tensor,
    intercept: &Tensor,
    channels: usize,
) -> TractResult<(Tensor, Tensor)> {
    let slope = slope.try_as_plain_ram()?;
    let slope = slope.as_slice::<f32>()?;
    let intercept = intercept.try_as_plain_ram()?;
    let intercept = intercept.as_slice::<f32>()?;
    let bias = bias.try_as_plain_ram()?;
    let bias = bias.as_slice::<f32>()?;
    ensure!(
        bias.len() == 1 || bias.len() == channels,
        "a bias of {} values for {channels} channels",
        bias.len()
    );
    let mut kernel = kernel.clone();
    {
        let mut view = kernel.try_as_plain_ram_mut()?;
        let w = view.as_slice_mut::<f32>()?;
        let per = w.len() / channels;
        for (o, row) in w.chunks_exact_mut(per).enumerate() {
            row.iter_mut().for_each(|v| *v *= slope[o]);
        }
    }
    let bias: Vec<f32> = (0..channels)
        .map(|o| bias[if bias.len() == 1 { 0 } else { o }] * slope[o] + intercept[o])
        .collect();
    Ok((kernel, tensor1(&bias)))
}
