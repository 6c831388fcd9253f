//! Strided subsampling and slicing of one axis, for tract.
//!
//! NASNet's factorized reductions keep every other row and column of the cell's input, on
//! one path as is and on the other after a one-pixel shift; tract turns them into
//! `Downsample` and `Slice` nodes and computes both through a generic strided array copy,
//! element by element. On NASNet-A Mobile those sixteen nodes cost as much as all the other
//! data movement together. This op copies whole contiguous runs instead.

use tract_nnef::prelude::*;
use tract_nnef::tract_core::internal::*;
use tract_nnef::tract_core::ops::Downsample;
use tract_nnef::tract_core::ops::array::Slice;

/// `output[.., k, ..] = input[.., modulo + k * stride, ..]` along `axis` for `k < count`, for
/// f32 tensors of a concrete shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subsample {
    /// The input's shape.
    shape: TVec<usize>,
    axis: usize,
    stride: usize,
    modulo: usize,
    count: usize,
}

impl Subsample {
    /// The op for a node of tract's `Downsample` with a positive stride on a concrete f32
    /// input; `None` otherwise.
    fn from_downsample(
        model: &TypedModel,
        node: &TypedNode,
        op: &Downsample,
    ) -> TractResult<Option<Self>> {
        let input = model.outlet_fact(node.inputs[0])?;
        let Some(shape) = input.shape.as_concrete() else {
            return Ok(None);
        };
        if input.datum_type != f32::datum_type()
            || op.stride <= 0
            || op.axis >= shape.len()
            || op.modulo >= shape[op.axis]
        {
            return Ok(None);
        }
        Ok(Some(Self {
            shape: shape.into(),
            axis: op.axis,
            stride: op.stride as usize,
            modulo: op.modulo,
            count: (shape[op.axis] - op.modulo).div_ceil(op.stride as usize),
        }))
    }

    /// The op for a node of tract's `Slice` with concrete bounds on a concrete f32 input;
    /// `None` otherwise.
    fn from_slice(model: &TypedModel, node: &TypedNode, op: &Slice) -> TractResult<Option<Self>> {
        let input = model.outlet_fact(node.inputs[0])?;
        let (Some(shape), Ok(start), Ok(end)) = (
            input.shape.as_concrete(),
            op.start.to_usize(),
            op.end.to_usize(),
        ) else {
            return Ok(None);
        };
        if input.datum_type != f32::datum_type()
            || op.axis >= shape.len()
            || start >= end
            || end > shape[op.axis]
        {
            return Ok(None);
        }
        Ok(Some(Self {
            shape: shape.into(),
            axis: op.axis,
            stride: 1,
            modulo: start,
            count: end - start,
        }))
    }

    fn output_shape(&self) -> TVec<usize> {
        let mut s = self.shape.clone();
        s[self.axis] = self.count;
        s
    }
}

impl Op for Subsample {
    fn name(&self) -> StaticName {
        "NasnetSubsample".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "axis {}: {} from {} by {}",
            self.axis, self.count, self.modulo, self.stride
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Subsample {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let x = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let shape = self.output_shape();
        let inner: usize = self.shape[self.axis + 1..].iter().product();
        let len = self.shape[self.axis];
        let kept = shape[self.axis];
        let mut output = Tensor::zero::<f32>(&shape)?;
        let mut view = output.try_as_plain_ram_mut()?;
        let out = view.as_slice_mut::<f32>()?;
        if inner == 0 || kept == 0 {
            return Ok(tvec!(output.into_tvalue()));
        }
        for (src, dst) in x
            .chunks_exact(len * inner)
            .zip(out.chunks_exact_mut(kept * inner))
        {
            if self.stride == 1 {
                let from = self.modulo * inner;
                dst.copy_from_slice(&src[from..from + kept * inner]);
            } else if inner == 1 {
                for (d, s) in dst
                    .iter_mut()
                    .zip(src[self.modulo..].iter().step_by(self.stride))
                {
                    *d = *s;
                }
            } else {
                for (k, d) in dst.chunks_exact_mut(inner).enumerate() {
                    let from = (self.modulo + k * self.stride) * inner;
                    d.copy_from_slice(&src[from..from + inner]);
                }
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Subsample {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].shape.as_concrete() == Some(&self.shape[..]));
        Ok(tvec!(f32::fact(self.output_shape())))
    }

    as_op!();
}

/// The replacement of a decluttered model's node by [`Subsample`], when it is a `Downsample`
/// or a `Slice` it computes.
pub(super) fn replacement(
    model: &TypedModel,
    node: &TypedNode,
) -> TractResult<Option<super::Replacement>> {
    let op = if let Some(op) = node.op_as::<Downsample>() {
        Subsample::from_downsample(model, node, op)?
    } else if let Some(op) = node.op_as::<Slice>() {
        Subsample::from_slice(model, node, op)?
    } else {
        None
    };
    Ok(op.map(|op| (Box::new(op) as Box<dyn TypedOp>, node.inputs[0])))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs tract's `op` on a `[1, 3, 9, 8]` ramp, then the model with the op replaced by
    /// [`Subsample`]: the same shape and the same values.
    fn matches_tracts(op: impl Into<Box<dyn TypedOp>>, what: &str) -> TractResult<()> {
        let shape = [1usize, 3, 9, 8];
        let x: Vec<f32> = (0..shape.iter().product()).map(|i| i as f32).collect();
        let x = Tensor::from_shape(&shape, &x)?;
        let mut model = TypedModel::default();
        let s = model.add_source("x", f32::fact(shape))?;
        let y = model.wire_node("op", op, &[s])?;
        model.select_output_outlets(&y)?;
        let theirs = model
            .clone()
            .into_runnable()?
            .run(tvec!(x.clone().into()))?;
        assert_eq!(super::super::replace_ops(&mut model, replacement)?, 1);
        let ours = model.into_runnable()?.run(tvec!(x.into()))?;
        assert_eq!(theirs[0].shape(), ours[0].shape(), "{what}");
        assert_eq!(
            theirs[0].try_as_plain_ram()?.as_slice::<f32>()?,
            ours[0].try_as_plain_ram()?.as_slice::<f32>()?,
            "{what}"
        );
        Ok(())
    }

    #[test]
    fn matches_tracts_downsample() -> TractResult<()> {
        for (axis, stride, modulo) in [(3, 2, 0), (3, 2, 1), (2, 2, 1), (2, 3, 0), (1, 2, 1)] {
            let op = Downsample {
                axis,
                stride,
                modulo,
            };
            matches_tracts(op, &format!("axis {axis} by {stride} from {modulo}"))?;
        }
        Ok(())
    }

    #[test]
    fn matches_tracts_slice() -> TractResult<()> {
        for (axis, start, end) in [(2, 1, 9), (3, 1, 8), (3, 0, 5), (2, 3, 4), (1, 1, 3)] {
            let op = Slice::new(axis, start, end);
            matches_tracts(op, &format!("axis {axis} from {start} to {end}"))?;
        }
        Ok(())
    }
}
