//! Keras application weights (`NASNet-mobile.h5`, `NASNet-large.h5`): the legacy Keras HDF5
//! layout — one group per layer, datasets `<scope>/<layer>/<weight>[:0]` — read in pure Rust
//! and mapped to the canonical keys: HWIO kernels to OIHW, depthwise `[k, k, C, 1]` to
//! `[C, 1, k, k]`, dense `(in, out)` to `(out, in)`, batch norm gamma/beta/moving statistics.
//!
//! Keras names its blocks after `keras/src/applications/nasnet.py`: `stem_1`, `stem_2`,
//! normal blocks `0..N-1`, `reduce_N`, `N+1..2N`, `reduce_2N`, `2N+1..3N`; separable branches
//! `normal_left1` ... `reduction_left4` (the fifth reduction block is `left4`), and
//! `adjust_bn_<id>` is the factorized reduction's batch norm in cells that have
//! `adjust_conv_1_<id>`, the previous-input projection's otherwise.

use nasnet_core::space::{Genotype, Op};
use std::collections::HashSet;

use candle_core::{Device, Tensor};

/// HDF5 files start with this signature.
pub const HDF5_MAGIC: &[u8] = b"\x89HDF\r\n\x1a\n";

/// A problem with a Keras file's content (the caller adds the file name).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KerasError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, KerasError> {
    Err(KerasError(msg.into()))
}

/// One dataset of a Keras file: its layer (top-level group), its path below the layer, shape
/// and values.
struct Weight {
    layer: String,
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// How deep Keras weight groups may nest under a layer (Keras writes two levels).
const MAX_GROUP_DEPTH: usize = 8;
/// How many groups a weight file may hold (NASNet-A Large's has a few thousand).
const MAX_GROUPS: usize = 100_000;

/// Every dataset of the file.
fn datasets(bytes: Vec<u8>) -> Result<Vec<Weight>, KerasError> {
    let file = hdf5_pure::File::from_bytes(bytes)
        .map_err(|e| KerasError(format!("corrupt HDF5 file: {e}")))?;
    let root = file.root();
    let e = |e: hdf5_pure::Error| KerasError(format!("corrupt HDF5 file: {e}"));
    let mut out = vec![];
    // Links may form cycles (a group holding itself): bound the walk by depth and size.
    let mut groups_seen = 0usize;
    for layer in root.groups().map_err(e)? {
        let g = root.group(&layer).map_err(e)?;
        // Weights sit one or more groups down (`<scope>/<layer>/kernel:0`).
        let mut stack = vec![(g, String::new(), 0usize)];
        while let Some((g, prefix, depth)) = stack.pop() {
            groups_seen += 1;
            if depth > MAX_GROUP_DEPTH || groups_seen > MAX_GROUPS {
                return err(format!(
                    "the groups under {layer} nest deeper than {MAX_GROUP_DEPTH} levels or \
                     number more than {MAX_GROUPS} (a cycle of links?); not Keras weights"
                ));
            }
            for d in g.datasets().map_err(e)? {
                let ds = g.dataset(&d).map_err(e)?;
                let shape = ds
                    .shape()
                    .map_err(e)?
                    .into_iter()
                    .map(|v| v as usize)
                    .collect();
                let values = ds.read_f32().map_err(e)?;
                out.push(Weight {
                    layer: layer.clone(),
                    name: format!("{prefix}{d}"),
                    shape,
                    values,
                });
            }
            for sub in g.groups().map_err(e)? {
                let child = g.group(&sub).map_err(e)?;
                stack.push((child, format!("{prefix}{sub}/"), depth + 1));
            }
        }
    }
    Ok(out)
}

fn bn(w: &str) -> Result<&'static str, KerasError> {
    Ok(match w {
        "gamma" => "weight",
        "beta" => "bias",
        "moving_mean" => "running_mean",
        "moving_variance" => "running_var",
        _ => return err(format!("unexpected batch-norm weight {w}")),
    })
}

/// The canonical cell of a Keras block id, for `cells` normal blocks per stage.
fn cell(block: &str, cells: usize) -> Result<String, KerasError> {
    Ok(match block {
        "stem_1" => "cell_stem_0".into(),
        "stem_2" => "cell_stem_1".into(),
        b => match b.strip_prefix("reduce_") {
            Some(k) => {
                let k: usize = k
                    .parse()
                    .map_err(|_| KerasError(format!("unknown block {b}")))?;
                if k == 0 || !k.is_multiple_of(cells) || k / cells > 2 {
                    return err(format!("block {b} does not fit {cells} blocks per stage"));
                }
                format!("reduction_cell_{}", k / cells - 1)
            }
            None => {
                let k: usize = b
                    .parse()
                    .map_err(|_| KerasError(format!("unknown block {b}")))?;
                // Stage 0: 0..N-1; then the reduce block takes id N, so stage s > 0 holds
                // s*N+1 ..= (s+1)*N.
                let stage = if k < cells {
                    0
                } else if k <= 2 * cells {
                    1
                } else {
                    2
                };
                let offset = stage * cells + usize::from(stage > 0);
                let j = k.checked_sub(offset).filter(|&j| j < cells);
                let j = j.ok_or_else(|| {
                    KerasError(format!("block {b} does not fit {cells} blocks per stage"))
                })?;
                format!("cell_{}", stage * cells + j)
            }
        },
    })
}

/// The branch (`comb_iter_B_SIDE`) a Keras separable-convolution name (`normal_left1`,
/// `reduction_right3`, ...) belongs to, derived from NASNet-A's one description
/// ([`Genotype::nasnet_a`]): Keras names block `B`'s branches `{kind}_{side}{B + 1}`, except
/// that its reduction cell calls block 4's `left4` (it has no `left5`).
fn branch(name: &str) -> Option<String> {
    let g = Genotype::nasnet_a();
    for (kind, cell) in [("normal", &g.normal), ("reduction", &g.reduction)] {
        for (b, block) in cell.blocks.iter().enumerate() {
            for (side, op) in ["left", "right"].into_iter().zip(block.ops) {
                if !matches!(op, Op::SepConv3x3 | Op::SepConv5x5 | Op::SepConv7x7) {
                    continue;
                }
                let k = if kind == "reduction" && b == 4 {
                    4
                } else {
                    b + 1
                };
                if name == format!("{kind}_{side}{k}") {
                    return Some(format!("comb_iter_{b}_{side}"));
                }
            }
        }
    }
    None
}

/// The canonical key of a Keras weight.
fn canonical(
    layer: &str,
    weight: &str,
    cells: usize,
    fr: &HashSet<String>,
) -> Result<String, KerasError> {
    let w = weight.rsplit('/').next().unwrap_or(weight);
    let w = w.split(':').next().unwrap_or(w);
    let unknown = || KerasError(format!("unknown layer {layer} (weight {weight})"));
    if layer == "stem_conv1" {
        return Ok("conv0.conv.weight".into());
    }
    if layer == "stem_bn1" {
        return Ok(format!("conv0.bn.{}", bn(w)?));
    }
    if layer == "predictions" {
        return Ok(format!(
            "last_linear.{}",
            if w == "kernel" { "weight" } else { "bias" }
        ));
    }
    if let Some(rest) = layer.strip_prefix("separable_conv_") {
        // separable_conv_{1,2}[_bn]_{normal,reduction}_{left,right}{k}_{block}
        let (i, rest) = rest.split_once('_').ok_or_else(unknown)?;
        let (is_bn, rest) = match rest.strip_prefix("bn_") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let mut parts = rest.splitn(3, '_');
        let (kind, side, block) = (parts.next(), parts.next(), parts.next());
        let (Some(kind), Some(side), Some(block)) = (kind, side, block) else {
            return Err(unknown());
        };
        let base = format!(
            "{}.{}",
            cell(block, cells)?,
            branch(&format!("{kind}_{side}")).ok_or_else(unknown)?
        );
        return Ok(if is_bn {
            format!("{base}.bn_sep_{i}.{}", bn(w)?)
        } else {
            let part = if w == "depthwise_kernel" {
                "depthwise_conv2d"
            } else {
                "pointwise_conv2d"
            };
            format!("{base}.separable_{i}.{part}.weight")
        });
    }
    for kind in ["normal", "reduction"] {
        if let Some(block) = layer.strip_prefix(&format!("{kind}_conv_1_")) {
            return Ok(format!("{}.conv_1x1.conv.weight", cell(block, cells)?));
        }
        if let Some(block) = layer.strip_prefix(&format!("{kind}_bn_1_")) {
            return Ok(format!("{}.conv_1x1.bn.{}", cell(block, cells)?, bn(w)?));
        }
    }
    if let Some(block) = layer.strip_prefix("adjust_conv_projection_") {
        return Ok(format!("{}.conv_prev_1x1.conv.weight", cell(block, cells)?));
    }
    for i in ["1", "2"] {
        if let Some(block) = layer.strip_prefix(&format!("adjust_conv_{i}_")) {
            return Ok(format!("{}.path_{i}.conv.weight", cell(block, cells)?));
        }
    }
    if let Some(block) = layer.strip_prefix("adjust_bn_") {
        let c = cell(block, cells)?;
        let owner = if fr.contains(&c) {
            "final_path_bn"
        } else {
            "conv_prev_1x1.bn"
        };
        return Ok(format!("{c}.{owner}.{}", bn(w)?));
    }
    Err(unknown())
}

/// Reads a Keras NASNet weight file into canonical tensors, for `cells` blocks per stage.
pub fn read_keras(bytes: Vec<u8>, cells: usize) -> Result<Vec<(String, Tensor)>, KerasError> {
    let sets = datasets(bytes)?;
    if sets.is_empty() {
        return err("the HDF5 file holds no weights");
    }
    let fr: HashSet<String> = sets
        .iter()
        .filter_map(|w| w.layer.strip_prefix("adjust_conv_1_"))
        .map(|b| cell(b, cells))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(sets.len());
    for Weight {
        layer,
        name: weight,
        shape,
        values,
    } in sets
    {
        let key = canonical(&layer, &weight, cells, &fr)?;
        let t = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)
            .map_err(|e| KerasError(e.to_string()))?;
        let kind = weight
            .rsplit('/')
            .next()
            .unwrap_or(&weight)
            .split(':')
            .next()
            .unwrap_or("");
        let t = match (kind, shape.len()) {
            ("depthwise_kernel", 4) => t.permute((2, 3, 0, 1)),
            ("kernel" | "pointwise_kernel", 4) => t.permute((3, 2, 0, 1)),
            ("kernel", 2) => t.t(),
            _ => Ok(t),
        }
        .and_then(|t| t.contiguous())
        .map_err(|e| KerasError(e.to_string()))?;
        out.push((key, t));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ids_map_to_cells() {
        for (b, c) in [
            ("0", "cell_0"),
            ("3", "cell_3"),
            ("reduce_4", "reduction_cell_0"),
            ("5", "cell_4"),
            ("8", "cell_7"),
            ("reduce_8", "reduction_cell_1"),
            ("9", "cell_8"),
            ("12", "cell_11"),
            ("stem_2", "cell_stem_1"),
        ] {
            assert_eq!(cell(b, 4).unwrap(), c, "{b}");
        }
        // Large: 6 per stage.
        assert_eq!(cell("7", 6).unwrap(), "cell_6");
        assert_eq!(cell("18", 6).unwrap(), "cell_17");
        assert_eq!(cell("reduce_12", 6).unwrap(), "reduction_cell_1");
        assert!(cell("13", 4).is_err());
        assert!(cell("reduce_5", 4).is_err());
    }

    #[test]
    fn keras_branch_names_follow_the_genotype() {
        for (keras, ours) in [
            ("normal_left1", "comb_iter_0_left"),
            ("normal_right1", "comb_iter_0_right"),
            ("normal_left2", "comb_iter_1_left"),
            ("normal_right2", "comb_iter_1_right"),
            ("normal_left5", "comb_iter_4_left"),
            ("reduction_left1", "comb_iter_0_left"),
            ("reduction_right1", "comb_iter_0_right"),
            ("reduction_right2", "comb_iter_1_right"),
            ("reduction_right3", "comb_iter_2_right"),
            ("reduction_left4", "comb_iter_4_left"),
        ] {
            assert_eq!(branch(keras).as_deref(), Some(ours), "{keras}");
        }
        for unknown in [
            "normal_left3",
            "normal_right5",
            "reduction_left2",
            "reduction_left5",
        ] {
            assert_eq!(branch(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn layer_names_map_to_keys() {
        let fr: HashSet<String> = ["cell_0".to_string()].into();
        let k = |l: &str, w: &str| canonical(l, w, 4, &fr).unwrap();
        assert_eq!(
            k(
                "separable_conv_1_bn_reduction_left4_reduce_4",
                "x/y/gamma:0"
            ),
            "reduction_cell_0.comb_iter_4_left.bn_sep_1.weight"
        );
        assert_eq!(
            k(
                "separable_conv_2_normal_right2_5",
                "separable_conv_2_normal_right2_5/pointwise_kernel:0"
            ),
            "cell_4.comb_iter_1_right.separable_2.pointwise_conv2d.weight"
        );
        assert_eq!(
            k("adjust_bn_0", "moving_variance"),
            "cell_0.final_path_bn.running_var"
        );
        assert_eq!(k("adjust_bn_1", "beta"), "cell_1.conv_prev_1x1.bn.bias");
        assert_eq!(
            k("adjust_conv_2_stem_2", "kernel"),
            "cell_stem_1.path_2.conv.weight"
        );
        assert_eq!(k("predictions", "bias:0"), "last_linear.bias");
        assert!(canonical("dense_7", "kernel", 4, &fr).is_err());
    }
}
