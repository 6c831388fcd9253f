//! A NASNet cell built from a genotype (TF-slim `NasNetABaseCell`).

use candle_nn::VarBuilder;
use nasnet_core::{CellGenotype, Combine, PoolingRule};

use crate::graph::Graph;
use crate::layers::{Branch, ConvBn, FactorizedReduction};
use crate::{Error, Result};

/// Channels, height, width of a hidden state.
pub type Chw = [usize; 3];

/// How the previous cell's output is brought to this cell's width and resolution.
#[derive(Debug, Clone)]
pub enum PrevInput {
    /// Used as is (same shape, or no previous cell).
    Raw,
    /// ReLU, 1x1 conv, BN (`conv_prev_1x1`).
    Project(ConvBn),
    /// ReLU, factorized reduction (`path_1`, `path_2`, `final_path_bn`).
    Reduce(FactorizedReduction),
}

/// Brings a concatenated state to the cell's output shape (TF `_combine_unused_states`).
#[derive(Debug, Clone)]
pub enum StateFix {
    /// Channels differ: 1x1 conv and BN, no ReLU (`reduction_{i}.conv`, `reduction_{i}.bn`).
    Project(ConvBn),
    /// Resolution differs: factorized reduction of the raw state, no ReLU
    /// (`reduction_{i}.path_1`, `reduction_{i}.path_2`, `reduction_{i}.final_path_bn`).
    Reduce(FactorizedReduction),
}

/// One block: two branches and how they combine.
#[derive(Debug, Clone)]
pub struct CellBlock {
    /// Hidden-state indices the left and right branches read.
    pub inputs: [usize; 2],
    /// The left operation (`comb_iter_{b}_left`).
    pub left: Branch,
    /// The right operation (`comb_iter_{b}_right`).
    pub right: Branch,
    /// Addition, or concatenation along channels.
    pub combine: Combine,
}

/// A normal or reduction cell, with the modules `conv_1x1`, `conv_prev_1x1` or the factorized
/// reduction, and `comb_iter_{b}_{left,right}`.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The cell's state-dict prefix (`cell_stem_0`, `reduction_cell_1`, `cell_5`, ...).
    pub name: String,
    /// ReLU, 1x1 conv, BN on the current input: hidden state 0.
    pub conv_1x1: ConvBn,
    /// How the previous input becomes hidden state 1.
    pub prev: PrevInput,
    /// The blocks in order; block `b` produces hidden state `2 + b`.
    pub blocks: Vec<CellBlock>,
    /// The states concatenated into the output, in order, each with the fix that brings it to
    /// the last block's shape, if it needs one.
    pub outputs: Vec<(usize, Option<StateFix>)>,
    /// Final drop-path keep probability at this depth (before the time schedule).
    pub drop_path_keep: f64,
    /// Shape of the cell's output.
    pub out_shape: Chw,
}

/// What a cell is built from, besides its weights.
#[derive(Debug, Clone, Copy)]
pub struct CellSpec<'a> {
    /// The blocks and output rule.
    pub genotype: &'a CellGenotype,
    /// Whether ops reading the cell's inputs use stride 2.
    pub reduction: bool,
    /// The cell's width F: channels of every hidden state (twice that for concatenating
    /// blocks).
    pub filters: usize,
    /// Shape of the current input.
    pub input: Chw,
    /// Shape of the previous input; `None` when there is none (the current input is reused).
    pub prev: Option<Chw>,
    /// Border rule of stride-2 average pools.
    pub pooling: PoolingRule,
    /// Batch-norm epsilon.
    pub eps: f64,
    /// Final drop-path keep probability at this depth (before the time schedule).
    pub drop_path_keep: f64,
}

impl Cell {
    /// Builds cell `name` from `spec`, reading its weights from `vb` (already under the cell's
    /// prefix); fails when the shapes do not fit together.
    pub fn new(vb: &VarBuilder, name: String, spec: CellSpec) -> Result<Self> {
        let f = spec.filters;
        let eps = spec.eps;
        let [in_c, h, w] = spec.input;
        let conv_1x1 = ConvBn::relu_pointwise(&vb.pp("conv_1x1"), in_c, f, 1, eps)?;
        let (prev, prev_shape) = match spec.prev {
            None => (PrevInput::Raw, spec.input),
            Some([pc, ph, pw]) if (ph, pw) != (h, w) => {
                if (ph.div_ceil(2), pw.div_ceil(2)) != (h, w) {
                    return Err(Error::Build(format!(
                        "{name}: previous input {ph}x{pw} cannot be reduced to {h}x{w}"
                    )));
                }
                check_even(&name, f)?;
                let fr = FactorizedReduction::new(vb, pc, f, eps)?;
                (PrevInput::Reduce(fr), [f, h, w])
            }
            Some([pc, _, _]) if pc != f => {
                let p = ConvBn::relu_pointwise(&vb.pp("conv_prev_1x1"), pc, f, 1, eps)?;
                (PrevInput::Project(p), [f, h, w])
            }
            Some(shape) => (PrevInput::Raw, shape),
        };
        let stride = if spec.reduction { 2 } else { 1 };
        let mut states: Vec<Chw> = vec![[f, h, w], prev_shape];
        let mut blocks = Vec::with_capacity(spec.genotype.blocks.len());
        for (b, block) in spec.genotype.blocks.iter().enumerate() {
            let mut shapes = [[0; 3]; 2];
            let mut branches = vec![];
            for (side, label) in ["left", "right"].into_iter().enumerate() {
                let idx = block.inputs[side];
                let [c, sh, sw] = *states.get(idx).ok_or_else(|| {
                    Error::Build(format!(
                        "{name}: block {b} reads state {idx} before it exists"
                    ))
                })?;
                let s = if idx < 2 { stride } else { 1 };
                let vb = vb.pp(format!("comb_iter_{b}_{label}"));
                branches.push(Branch::new(
                    &vb,
                    block.ops[side],
                    c,
                    f,
                    s,
                    spec.pooling,
                    eps,
                )?);
                shapes[side] = [f, sh.div_ceil(s), sw.div_ceil(s)];
            }
            if shapes[0] != shapes[1] {
                return Err(Error::Build(format!(
                    "{name}: block {b} combines {:?} with {:?}",
                    shapes[0], shapes[1]
                )));
            }
            let [_, bh, bw] = shapes[0];
            let c = match block.combine {
                Combine::Add => f,
                Combine::Concat => 2 * f,
            };
            states.push([c, bh, bw]);
            let right = branches.pop().expect("two branches");
            let left = branches.pop().expect("two branches");
            blocks.push(CellBlock {
                inputs: block.inputs,
                left,
                right,
                combine: block.combine,
            });
        }
        let [final_c, final_h, final_w] = *states.last().expect("at least one block");
        let mut outputs = vec![];
        let mut out_c = 0;
        for idx in spec.genotype.output_states() {
            let [c, sh, sw] = *states.get(idx).ok_or_else(|| {
                Error::Build(format!("{name}: output state {idx} does not exist"))
            })?;
            let vb = vb.pp(format!("reduction_{idx}"));
            let fix = if (sh, sw) != (final_h, final_w) {
                check_even(&name, final_c)?;
                Some(StateFix::Reduce(FactorizedReduction::new(
                    &vb, c, final_c, eps,
                )?))
            } else if c != final_c {
                let conv = crate::layers::Conv2d::pointwise(&vb.pp("conv"), c, final_c, 1)?;
                Some(StateFix::Project(ConvBn::new(&vb, false, conv, eps)?))
            } else {
                None
            };
            out_c += if fix.is_some() { final_c } else { c };
            outputs.push((idx, fix));
        }
        Ok(Self {
            name,
            conv_1x1,
            prev,
            blocks,
            outputs,
            drop_path_keep: spec.drop_path_keep,
            out_shape: [out_c, final_h, final_w],
        })
    }

    /// `x` is the current input, `prev` the previous one (`None`: use `x`).
    pub fn forward<G: Graph>(
        &self,
        g: &mut G,
        x: &G::Value,
        prev: Option<&G::Value>,
    ) -> Result<G::Value> {
        let h = self.conv_1x1.forward(g, x)?;
        let prev = prev.unwrap_or(x);
        let p = match &self.prev {
            PrevInput::Raw => prev.clone(),
            PrevInput::Project(c) => c.forward(g, prev)?,
            PrevInput::Reduce(fr) => {
                let a = g.relu(prev)?;
                fr.forward(g, &a)?
            }
        };
        let mut states = vec![h, p];
        for block in &self.blocks {
            let mut out = vec![];
            for (branch, idx) in [
                (&block.left, block.inputs[0]),
                (&block.right, block.inputs[1]),
            ] {
                let y = branch.forward(g, &states[idx])?;
                let y = if branch.drops_path() {
                    g.drop_path(&y, self.drop_path_keep)?
                } else {
                    y
                };
                out.push(y);
            }
            let y = match block.combine {
                Combine::Add => g.add(&out[0], &out[1])?,
                Combine::Concat => g.concat(&out)?,
            };
            states.push(y);
        }
        let mut parts = Vec::with_capacity(self.outputs.len());
        for (idx, fix) in &self.outputs {
            let s = &states[*idx];
            parts.push(match fix {
                None => s.clone(),
                Some(StateFix::Project(c)) => c.forward(g, s)?,
                Some(StateFix::Reduce(fr)) => fr.forward(g, s)?,
            });
        }
        g.concat(&parts)
    }
}

fn check_even(name: &str, filters: usize) -> Result<()> {
    if !filters.is_multiple_of(2) {
        return Err(Error::Config(nasnet_core::ConfigError::OddReduction {
            cell: name.to_owned(),
            filters,
        }));
    }
    Ok(())
}
