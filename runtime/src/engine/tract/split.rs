//! A decluttered model cut in two where the fewest values cross: tract's optimization of a
//! graph grows faster than its size (each rewrite scans the whole graph), so two halves
//! optimize in well under half the time, and on two threads at once. The halves run one after
//! the other, the first's outputs being the second's inputs, and compute what the whole does.

use std::collections::HashMap;

use tract_nnef::prelude::*;
use tract_nnef::tract_core::internal::{ensure, format_err};
use tract_nnef::tract_core::ops::konst::Const;

/// Below this many nodes a model is not cut: there is little to gain.
const MIN_NODES: usize = 64;

/// `model` cut in two (or whole when small), each part a model of its own: the first reads
/// the model's inputs, the last gives its outputs, and each other part's inputs are the
/// previous part's outputs, in order.
pub(super) fn split(model: TypedModel) -> TractResult<Vec<TypedModel>> {
    // The inputs first (an evaluation order may read one late), so that each stays in the
    // first part and a later part reads it as a value crossing the cut.
    let inputs: Vec<usize> = model.input_outlets()?.iter().map(|o| o.node).collect();
    let order: Vec<usize> = inputs
        .iter()
        .copied()
        .chain(
            model
                .eval_order()?
                .into_iter()
                .filter(|id| !inputs.contains(id)),
        )
        .collect();
    let n = order.len();
    if n < MIN_NODES {
        return Ok(vec![model]);
    }
    let position: HashMap<usize, usize> =
        order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let outputs = model.output_outlets()?.to_vec();
    // Each value (constants aside: each part gets its own copy) is live from the position of
    // its node to that of its last reader; the model's outputs to the end.
    let mut values = vec![]; // (outlet, made at, last read at)
    for (p, &id) in order.iter().enumerate() {
        let node = model.node(id);
        if node.op_is::<Const>() {
            continue;
        }
        for (slot, out) in node.outputs.iter().enumerate() {
            let outlet = OutletId::new(id, slot);
            let last = if outputs.contains(&outlet) {
                n
            } else {
                out.successors
                    .iter()
                    .filter_map(|s| position.get(&s.node).copied())
                    .max()
                    .unwrap_or(p)
            };
            if last > p {
                values.push((outlet, p, last));
            }
        }
    }
    // The cut after position c crosses the values made at or before c and read after it.
    let crosses = |v: &&(OutletId, usize, usize), c: usize| v.1 <= c && v.2 > c;
    let crossing = |c: usize| values.iter().filter(|v| crosses(v, c)).count();
    // Looked for in the middle fifth of the evaluation order, nearest the middle among equals.
    let Some(cut) = (n * 2 / 5..n * 3 / 5).min_by_key(|&c| (crossing(c), c.abs_diff(n / 2))) else {
        return Ok(vec![model]);
    };
    let frontier: Vec<OutletId> = values
        .iter()
        .filter(|v| crosses(v, cut))
        .map(|v| v.0)
        .collect();

    // The second part: a source per value crossing, then every node after the cut, each
    // constant it reads copied in.
    let mut second = TypedModel::default();
    let mut map: HashMap<OutletId, OutletId> = HashMap::new();
    for (i, &o) in frontier.iter().enumerate() {
        let fact = model.outlet_fact(o)?.without_value();
        map.insert(o, second.add_source(format!("nasnet_cut_{i}"), fact)?);
    }
    for &id in &order[cut + 1..] {
        let node = model.node(id);
        let mut inputs: TVec<OutletId> = tvec![];
        for input in &node.inputs {
            let wired = match map.get(input) {
                Some(&o) => o,
                None => {
                    let konst = model.node(input.node);
                    ensure!(
                        konst.op_is::<Const>(),
                        "{} reads {} across the cut",
                        node.name,
                        konst.name
                    );
                    let o = second.wire_node(&konst.name, konst.op.clone(), &[])?[0];
                    map.insert(*input, o);
                    o
                }
            };
            inputs.push(wired);
        }
        if node.op_is::<Const>() {
            continue; // wired where it is read
        }
        copy_node(&mut second, node.name.clone(), id, node, &inputs, &mut map)?;
    }
    second.select_output_outlets(&wired(&map, &outputs)?)?;
    second.properties = model.properties.clone();

    // The first part: the model up to the cut, giving the values that cross it.
    let mut first = model;
    first.select_output_outlets(&frontier)?;
    let first = first.into_compact()?;
    Ok(vec![first, second.into_compact()?])
}

#[cfg(feature = "tract")]
/// `model` cut into `parts` parts at most (halves of halves, each cut where the fewest values
/// cross; a part too small to cut stays whole).
pub(super) fn split_into(model: TypedModel, parts: usize) -> TractResult<Vec<TypedModel>> {
    if parts < 2 {
        return Ok(vec![model]);
    }
    let halves = split(model)?;
    if halves.len() < 2 {
        return Ok(halves);
    }
    let mut out = vec![];
    for half in halves {
        out.extend(split_into(half, parts / 2)?);
    }
    Ok(out)
}

#[cfg(feature = "tract")]
/// The parts [`split`] made, one model again: each part's inputs wired to the previous
/// part's outputs, in order.
pub(super) fn join(parts: Vec<TypedModel>) -> TractResult<TypedModel> {
    let mut parts = parts.into_iter();
    let mut whole = parts.next().ok_or_else(|| format_err!("no part to join"))?;
    for part in parts {
        let outputs = whole.output_outlets()?.to_vec();
        let inputs = part.input_outlets()?;
        ensure!(
            inputs.len() == outputs.len(),
            "a part reads {} values, the one before gives {}",
            inputs.len(),
            outputs.len()
        );
        let mut map: HashMap<OutletId, OutletId> = inputs.iter().copied().zip(outputs).collect();
        for id in part.eval_order()? {
            let node = part.node(id);
            if map.contains_key(&OutletId::new(id, 0)) && node.inputs.is_empty() {
                continue; // one of the part's inputs
            }
            let inputs = wired(&map, &node.inputs)?;
            let name = whole.unique_name(&node.name).into_owned();
            copy_node(&mut whole, name, id, node, &inputs, &mut map)?;
        }
        whole.select_output_outlets(&wired(&map, part.output_outlets()?)?)?;
    }
    whole.into_compact()
}

/// A copy of `node` (node `id` of the model being copied) wired into `into` as `name`,
/// reading `inputs`; `map` records where its outputs went.
fn copy_node(
    into: &mut TypedModel,
    name: String,
    id: usize,
    node: &TypedNode,
    inputs: &[OutletId],
    map: &mut HashMap<OutletId, OutletId>,
) -> TractResult<()> {
    for (slot, o) in into
        .wire_node(name, node.op.clone(), inputs)?
        .into_iter()
        .enumerate()
    {
        map.insert(OutletId::new(id, slot), o);
    }
    Ok(())
}

/// Where `outlets` of the model being copied went.
fn wired(map: &HashMap<OutletId, OutletId>, outlets: &[OutletId]) -> TractResult<Vec<OutletId>> {
    outlets
        .iter()
        .map(|o| {
            map.get(o)
                .copied()
                .ok_or_else(|| format_err!("{o:?} not wired"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `n` steps, each adding the value two steps back (as a NASNet cell reads the
    /// two cells before it), with constants read on both sides of any cut.
    fn chain(n: usize) -> TractResult<TypedModel> {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, 4]))?;
        let k = m.add_const("k", tensor2(&[[0.5f32, -1.0, 2.0, 0.25]]))?;
        let (mut prev, mut cur) = (x, x);
        for i in 0..n {
            let a = m.wire_node(
                format!("mul{i}"),
                tract_nnef::tract_core::ops::math::mul(),
                &[cur, k],
            )?[0];
            let b = m.wire_node(
                format!("add{i}"),
                tract_nnef::tract_core::ops::math::add(),
                &[a, prev],
            )?[0];
            (prev, cur) = (cur, b);
        }
        m.select_output_outlets(&[cur, prev])?;
        Ok(m)
    }

    #[test]
    fn the_parts_compute_what_the_whole_does() -> TractResult<()> {
        let m = chain(60)?;
        let x = tensor2(&[[0.1f32, -0.2, 0.3, 0.4]]);
        let whole = m.clone().into_runnable()?.run(tvec!(x.clone().into()))?;
        let parts = split(m)?;
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0].output_outlets()?.len(),
            2,
            "two values cross the cut"
        );
        let mut values: TVec<TValue> = tvec!(x.into());
        for p in parts {
            values = p.into_runnable()?.run(values)?;
        }
        assert_eq!(values.len(), 2);
        for (a, b) in values.iter().zip(&whole) {
            let view = |t: &TValue| -> TractResult<Vec<f32>> {
                Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect())
            };
            assert_eq!(view(a)?, view(b)?);
        }
        Ok(())
    }

    #[test]
    fn a_small_model_stays_whole() -> TractResult<()> {
        assert_eq!(split(chain(5)?)?.len(), 1);
        Ok(())
    }

    #[cfg(feature = "tract")]
    #[test]
    fn parts_decluttered_and_joined_compute_what_the_whole_does() -> TractResult<()> {
        let m = chain(300)?;
        let x = tensor2(&[[0.1f32, -0.2, 0.3, 0.4]]);
        let whole = m.clone().into_runnable()?.run(tvec!(x.clone().into()))?;
        let parts = split_into(m, 8)?;
        assert_eq!(parts.len(), 8);
        let parts = parts
            .into_iter()
            .map(|p| p.into_decluttered())
            .collect::<TractResult<Vec<_>>>()?;
        let joined = join(parts)?;
        assert_eq!(joined.input_outlets()?.len(), 1);
        let got = joined.into_runnable()?.run(tvec!(x.into()))?;
        assert_eq!(got.len(), whole.len());
        for (a, b) in got.iter().zip(&whole) {
            assert_eq!(
                a.to_plain_array_view::<f32>()?,
                b.to_plain_array_view::<f32>()?
            );
        }
        Ok(())
    }
}
