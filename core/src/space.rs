//! The NASNet search space as data: operations, blocks, cells and genotypes.
//!
//! A cell has `B` blocks. Each block picks two hidden states, applies one operation to each and
//! combines the results. Hidden state `0` is the current input (after its 1x1 projection), `1` is
//! the previous input, and `2 + b` is the output of block `b`. This is the convention of the
//! official TF-slim release (`nasnet_utils.py`), so the published cells read exactly as released.

use serde::{Deserialize, Serialize};

/// The paper's 13 operations (Zoph et al. 2018, §3), in the order of its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Identity (`none` in the official code). With a stride or a channel change it becomes
    /// ReLU, 1x1 convolution, batch norm.
    Identity,
    /// 1x3 then 3x1 convolution.
    #[serde(rename = "conv_1x3_3x1")]
    Conv1x3And3x1,
    /// 1x7 then 7x1 convolution.
    #[serde(rename = "conv_1x7_7x1")]
    Conv1x7And7x1,
    /// 3x3 convolution with dilation 2.
    #[serde(rename = "dil_conv_3x3")]
    DilConv3x3,
    /// 3x3 average pooling.
    #[serde(rename = "avg_pool_3x3")]
    AvgPool3x3,
    /// 3x3 max pooling.
    #[serde(rename = "max_pool_3x3")]
    MaxPool3x3,
    /// 5x5 max pooling.
    #[serde(rename = "max_pool_5x5")]
    MaxPool5x5,
    /// 7x7 max pooling.
    #[serde(rename = "max_pool_7x7")]
    MaxPool7x7,
    /// 1x1 convolution.
    #[serde(rename = "conv_1x1")]
    Conv1x1,
    /// 3x3 convolution.
    #[serde(rename = "conv_3x3")]
    Conv3x3,
    /// Depthwise-separable 3x3 convolution, applied twice (`separable_3x3_2`).
    #[serde(rename = "sep_conv_3x3")]
    SepConv3x3,
    /// Depthwise-separable 5x5 convolution, applied twice (`separable_5x5_2`).
    #[serde(rename = "sep_conv_5x5")]
    SepConv5x5,
    /// Depthwise-separable 7x7 convolution, applied twice (`separable_7x7_2`).
    #[serde(rename = "sep_conv_7x7")]
    SepConv7x7,
}

impl Op {
    /// All operations, in the paper's order.
    pub const ALL: [Op; 13] = [
        Op::Identity,
        Op::Conv1x3And3x1,
        Op::Conv1x7And7x1,
        Op::DilConv3x3,
        Op::AvgPool3x3,
        Op::MaxPool3x3,
        Op::MaxPool5x5,
        Op::MaxPool7x7,
        Op::Conv1x1,
        Op::Conv3x3,
        Op::SepConv3x3,
        Op::SepConv5x5,
        Op::SepConv7x7,
    ];

    /// The name used in JSON and in the official code's operation lists.
    pub fn name(self) -> &'static str {
        match self {
            Op::Identity => "identity",
            Op::Conv1x3And3x1 => "conv_1x3_3x1",
            Op::Conv1x7And7x1 => "conv_1x7_7x1",
            Op::DilConv3x3 => "dil_conv_3x3",
            Op::AvgPool3x3 => "avg_pool_3x3",
            Op::MaxPool3x3 => "max_pool_3x3",
            Op::MaxPool5x5 => "max_pool_5x5",
            Op::MaxPool7x7 => "max_pool_7x7",
            Op::Conv1x1 => "conv_1x1",
            Op::Conv3x3 => "conv_3x3",
            Op::SepConv3x3 => "sep_conv_3x3",
            Op::SepConv5x5 => "sep_conv_5x5",
            Op::SepConv7x7 => "sep_conv_7x7",
        }
    }

    /// Whether the operation has trainable parameters on a path whose channels already match.
    pub fn is_parametric(self) -> bool {
        !matches!(
            self,
            Op::Identity | Op::AvgPool3x3 | Op::MaxPool3x3 | Op::MaxPool5x5 | Op::MaxPool7x7
        )
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a block merges its two branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Element-wise addition (the only combiner NASNet-A uses).
    #[default]
    Add,
    /// Concatenation along channels; the block output has twice the cell's filters.
    Concat,
}

/// One block: `combine(op_a(state[input_a]), op_b(state[input_b]))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Block {
    /// Hidden-state indices of the two branches (`left`, `right`).
    pub inputs: [usize; 2],
    /// Operations of the two branches (`left`, `right`).
    pub ops: [Op; 2],
    /// How the two branches merge (addition when absent from JSON).
    #[serde(default)]
    pub combine: Combine,
}

/// Which hidden states form the cell's output (concatenated along channels).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Concat {
    /// An explicit list of states, as the official release writes it (`used_hiddenstates`).
    States(Vec<usize>),
    /// The paper's strict rule: every state that no block consumes.
    Rule(ConcatRule),
}

/// A rule choosing a cell's output states from its blocks (JSON: a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConcatRule {
    /// Every state that no block consumes (`"unused"`).
    Unused,
}

/// A cell genotype: its blocks and its output rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CellGenotype {
    /// The blocks in order; block `b`'s output is hidden state `2 + b`.
    pub blocks: Vec<Block>,
    /// The hidden states concatenated into the cell's output.
    pub concat: Concat,
}

/// A normal and a reduction cell: a point of the search space.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Genotype {
    /// The cell that keeps the resolution.
    pub normal: CellGenotype,
    /// The cell that halves the resolution (stride 2 on the ops reading the cell's inputs).
    pub reduction: CellGenotype,
}

/// A genotype that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenotypeError {
    /// A cell without blocks.
    #[error("{cell} cell has no blocks")]
    Empty {
        /// `normal` or `reduction`.
        cell: &'static str,
    },
    /// A block reads its own output, a later block's, or a state past the last.
    #[error(
        "{cell} cell, block {block}: input {input} refers to a state that does not exist yet (valid: 0..={max})"
    )]
    BadInput {
        /// `normal` or `reduction`.
        cell: &'static str,
        /// Index of the block.
        block: usize,
        /// The state index it reads.
        input: usize,
        /// The largest state index the block may read (`block + 1`).
        max: usize,
    },
    /// The output lists a state past the last.
    #[error("{cell} cell: output state {state} does not exist (valid: 0..={max})")]
    BadConcat {
        /// `normal` or `reduction`.
        cell: &'static str,
        /// The listed state index.
        state: usize,
        /// The last state index (`blocks + 1`).
        max: usize,
    },
    /// The output selects no state.
    #[error("{cell} cell: the output concatenates no state")]
    EmptyConcat {
        /// `normal` or `reduction`.
        cell: &'static str,
    },
}

impl CellGenotype {
    /// The number of hidden states: two inputs plus one per block.
    pub fn num_states(&self) -> usize {
        self.blocks.len() + 2
    }

    /// The states that some block consumes.
    pub fn consumed(&self) -> Vec<bool> {
        let mut used = vec![false; self.num_states()];
        for b in &self.blocks {
            for &i in &b.inputs {
                if let Some(u) = used.get_mut(i) {
                    *u = true;
                }
            }
        }
        used
    }

    /// The states concatenated into the cell output, in order.
    pub fn output_states(&self) -> Vec<usize> {
        match &self.concat {
            Concat::States(s) => s.clone(),
            Concat::Rule(ConcatRule::Unused) => {
                let used = self.consumed();
                (0..self.num_states()).filter(|&i| !used[i]).collect()
            }
        }
    }

    /// The same cell under the paper's strict "unused states only" output rule.
    pub fn with_strict_concat(&self) -> Self {
        Self {
            blocks: self.blocks.clone(),
            concat: Concat::Rule(ConcatRule::Unused),
        }
    }

    /// Checks that every input and output refers to an existing state.
    pub fn validate(&self, cell: &'static str) -> Result<(), GenotypeError> {
        if self.blocks.is_empty() {
            return Err(GenotypeError::Empty { cell });
        }
        for (b, block) in self.blocks.iter().enumerate() {
            for &input in &block.inputs {
                if input >= b + 2 {
                    return Err(GenotypeError::BadInput {
                        cell,
                        block: b,
                        input,
                        max: b + 1,
                    });
                }
            }
        }
        let out = self.output_states();
        if out.is_empty() {
            return Err(GenotypeError::EmptyConcat { cell });
        }
        for s in out {
            if s >= self.num_states() {
                return Err(GenotypeError::BadConcat {
                    cell,
                    state: s,
                    max: self.num_states() - 1,
                });
            }
        }
        Ok(())
    }

    /// Builds a cell from the official code's flat lists (`operations`, `hiddenstate_indices`,
    /// `used_hiddenstates`).
    pub fn from_official(ops: &[Op], indices: &[usize], used: &[bool]) -> Self {
        let blocks = ops
            .chunks(2)
            .zip(indices.chunks(2))
            .map(|(o, i)| Block {
                inputs: [i[0], i[1]],
                ops: [o[0], o[1]],
                combine: Combine::Add,
            })
            .collect();
        let concat = used
            .iter()
            .enumerate()
            .filter(|(_, u)| !**u)
            .map(|(i, _)| i)
            .collect();
        Self {
            blocks,
            concat: Concat::States(concat),
        }
    }
}

/// State 0 of a NASNet-A cell: `h_i`, the previous cell's output after ReLU-1x1-BN.
pub const H_I: usize = 0;
/// State 1: `h_{i-1}`, the output before it (factorized-reduced when its size differs).
pub const H_PREV: usize = 1;

/// One block as Figure 4 of the paper draws it: the left input and its op, the right input
/// and its op, added. Inputs are [`H_I`], [`H_PREV`], or the state of an earlier block
/// (`2 + block`).
const fn add((left, op_left): (usize, Op), (right, op_right): (usize, Op)) -> Block {
    Block {
        inputs: [left, right],
        ops: [op_left, op_right],
        combine: Combine::Add,
    }
}

impl Genotype {
    /// NASNet-A, the paper's Figure 4, block by block (state `2 + b` is block `b`'s output).
    /// Equal to the official release's flat lists (`NasNetANormalCell`,
    /// `NasNetAReductionCell` in tensorflow/models `research/slim/nets/nasnet/nasnet_utils.py`),
    /// a test checks. Each cell's output concatenates the states the release lists as unused,
    /// which keeps `h_{i-1}` in the normal cell and block 1 in the reduction cell although
    /// blocks consume them.
    #[rustfmt::skip]
    pub fn nasnet_a() -> Self {
        use Op::*;
        let normal = CellGenotype {
            blocks: vec![
                //   left                    right
                add((H_I, SepConv5x5),    (H_PREV, SepConv3x3)),  // state 2
                add((H_PREV, SepConv5x5), (H_PREV, SepConv3x3)),  // state 3
                add((H_I, AvgPool3x3),    (H_PREV, Identity)),    // state 4
                add((H_PREV, AvgPool3x3), (H_PREV, AvgPool3x3)),  // state 5
                add((H_I, SepConv3x3),    (H_I, Identity)),       // state 6
            ],
            concat: Concat::States(vec![H_PREV, 2, 3, 4, 5, 6]),
        };
        let reduction = CellGenotype {
            blocks: vec![
                add((H_I, SepConv5x5),    (H_PREV, SepConv7x7)),  // state 2
                add((H_I, MaxPool3x3),    (H_PREV, SepConv7x7)),  // state 3
                add((H_I, AvgPool3x3),    (H_PREV, SepConv5x5)),  // state 4
                add((3, Identity),        (2, AvgPool3x3)),       // state 5
                add((2, SepConv3x3),      (H_I, MaxPool3x3)),     // state 6
            ],
            concat: Concat::States(vec![3, 4, 5, 6]),
        };
        Self { normal, reduction }
    }

    /// The same genotype with both cells under the paper's strict "unused only" output rule.
    pub fn with_strict_concat(&self) -> Self {
        Self {
            normal: self.normal.with_strict_concat(),
            reduction: self.reduction.with_strict_concat(),
        }
    }

    /// Checks both cells (see [`CellGenotype::validate`]).
    pub fn validate(&self) -> Result<(), GenotypeError> {
        self.normal.validate("normal")?;
        self.reduction.validate("reduction")
    }

    /// The genotype as pretty-printed JSON (operations by [`Op::name`]).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a genotype always serializes")
    }

    /// Parses a genotype written by [`to_json`](Self::to_json) (no validation).
    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nasnet_a_matches_the_official_lists() {
        // The official release's flat lists, as the oracle of the named rows.
        use Op::*;
        let normal = CellGenotype::from_official(
            &[
                SepConv5x5, SepConv3x3, SepConv5x5, SepConv3x3, AvgPool3x3, Identity, AvgPool3x3,
                AvgPool3x3, SepConv3x3, Identity,
            ],
            &[0, 1, 1, 1, 0, 1, 1, 1, 0, 0],
            &[true, false, false, false, false, false, false],
        );
        let reduction = CellGenotype::from_official(
            &[
                SepConv5x5, SepConv7x7, MaxPool3x3, SepConv7x7, AvgPool3x3, SepConv5x5, Identity,
                AvgPool3x3, SepConv3x3, MaxPool3x3,
            ],
            &[0, 1, 0, 1, 0, 1, 3, 2, 2, 0],
            &[true, true, true, false, false, false, false],
        );
        let g = Genotype::nasnet_a();
        assert_eq!(g.normal, normal);
        assert_eq!(g.reduction, reduction);
        g.validate().unwrap();
        assert_eq!(g.normal.output_states(), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(g.reduction.output_states(), vec![3, 4, 5, 6]);
        // Reduction block 3: identity of state 3 (block 1) + avg pool of state 2 (block 0).
        let b = g.reduction.blocks[3];
        assert_eq!(b.inputs, [3, 2]);
        assert_eq!(b.ops, [Op::Identity, Op::AvgPool3x3]);
    }

    #[test]
    fn strict_rule_drops_consumed_states() {
        let g = Genotype::nasnet_a().with_strict_concat();
        assert_eq!(g.normal.output_states(), vec![2, 3, 4, 5, 6]);
        assert_eq!(g.reduction.output_states(), vec![4, 5, 6]);
    }

    #[test]
    fn json_round_trip() {
        for g in [
            Genotype::nasnet_a(),
            Genotype::nasnet_a().with_strict_concat(),
        ] {
            let back = Genotype::from_json(&g.to_json()).unwrap();
            assert_eq!(back, g);
        }
        let json = Genotype::nasnet_a().to_json();
        assert!(json.contains("\"sep_conv_5x5\""), "{json}");
    }

    #[test]
    fn invalid_genotypes_are_rejected() {
        let mut g = Genotype::nasnet_a();
        g.normal.blocks[0].inputs[0] = 2;
        assert!(matches!(
            g.validate(),
            Err(GenotypeError::BadInput { block: 0, .. })
        ));
        let mut g = Genotype::nasnet_a();
        g.reduction.concat = Concat::States(vec![9]);
        assert!(g.validate().is_err());
    }

    #[test]
    fn all_ops_have_distinct_names() {
        let mut names: Vec<_> = Op::ALL.iter().map(|o| o.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 13);
        for op in Op::ALL {
            let json = serde_json::to_string(&op).unwrap();
            assert_eq!(json, format!("\"{}\"", op.name()));
        }
    }
}
