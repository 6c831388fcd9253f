//! The controller's view of the search space: a genotype is `2 × 5B` categorical decisions
//! (per block: input 1, input 2, operation 1, operation 2, combiner; the normal cell's blocks,
//! then the reduction cell's). Every decision sequence decodes to a valid genotype, and
//! equivalent cells share one canonical form and hash.

use nasnet_core::space::{Block, CellGenotype, Combine, Concat, ConcatRule, Genotype, Op};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Blocks per cell in the paper's search (B).
pub const BLOCKS: usize = 5;

/// What the `k`-th decision of a cell's block chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A hidden state for block `b`: `0..b + 2`.
    Input {
        block: usize,
    },
    Op,
    Combine,
}

impl Decision {
    /// The number of choices.
    pub fn arity(self) -> usize {
        match self {
            Decision::Input { block } => block + 2,
            Decision::Op => Op::ALL.len(),
            Decision::Combine => 2,
        }
    }
}

/// The search space: `blocks` per cell, both cells, and whether the combiner is searched
/// (NASNet-A only adds; the paper's space also allows concatenation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    pub blocks: usize,
    pub search_combine: bool,
}

impl Default for Space {
    fn default() -> Self {
        Self {
            blocks: BLOCKS,
            search_combine: true,
        }
    }
}

impl Space {
    /// The decisions in the order the controller makes them.
    pub fn decisions(&self) -> Vec<Decision> {
        let mut out = vec![];
        for _cell in 0..2 {
            for block in 0..self.blocks {
                out.extend([
                    Decision::Input { block },
                    Decision::Input { block },
                    Decision::Op,
                    Decision::Op,
                    Decision::Combine,
                ]);
            }
        }
        out
    }

    /// Decodes a decision sequence (one index per [`Space::decisions`] entry). Out-of-range
    /// indices are reduced modulo the arity, so any sequence is a valid genotype.
    pub fn decode(&self, choices: &[usize]) -> Genotype {
        let decisions = self.decisions();
        let pick = |k: usize| choices.get(k).copied().unwrap_or(0) % decisions[k].arity();
        let cell = |c: usize| {
            let blocks = (0..self.blocks)
                .map(|b| {
                    let at = (c * self.blocks + b) * 5;
                    Block {
                        inputs: [pick(at), pick(at + 1)],
                        ops: [Op::ALL[pick(at + 2)], Op::ALL[pick(at + 3)]],
                        combine: if self.search_combine && pick(at + 4) == 1 {
                            Combine::Concat
                        } else {
                            Combine::Add
                        },
                    }
                })
                .collect();
            CellGenotype {
                blocks,
                concat: Concat::Rule(ConcatRule::Unused),
            }
        };
        Genotype {
            normal: cell(0),
            reduction: cell(1),
        }
    }

    /// The decisions that produce `g` (which must have this space's shape).
    pub fn encode(&self, g: &Genotype) -> Vec<usize> {
        let mut out = vec![];
        for cell in [&g.normal, &g.reduction] {
            for b in &cell.blocks {
                let op = |o: Op| Op::ALL.iter().position(|x| *x == o).unwrap_or(0);
                out.extend([
                    b.inputs[0],
                    b.inputs[1],
                    op(b.ops[0]),
                    op(b.ops[1]),
                    usize::from(b.combine == Combine::Concat),
                ]);
            }
        }
        out
    }

    /// Uniformly random decisions.
    pub fn random(&self, rng: &mut Rng) -> Vec<usize> {
        self.decisions()
            .iter()
            .map(|d| rng.below(d.arity()))
            .collect()
    }
}

/// `g` with each block's two branches in a fixed order (both combiners are symmetric up to a
/// channel permutation), so that equivalent cells compare equal.
pub fn canonical(g: &Genotype) -> Genotype {
    let cell = |c: &CellGenotype| {
        let mut c = c.clone();
        for b in &mut c.blocks {
            let (l, r) = ((b.inputs[0], b.ops[0]), (b.inputs[1], b.ops[1]));
            if r < l {
                b.inputs = [r.0, l.0];
                b.ops = [r.1, l.1];
            }
        }
        c
    };
    Genotype {
        normal: cell(&g.normal),
        reduction: cell(&g.reduction),
    }
}

/// A stable hash of the canonical form (16 hex digits, FNV-1a over its JSON).
pub fn genotype_hash(g: &Genotype) -> String {
    let json = serde_json::to_string(&canonical(g)).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// AmoebaNet's mutation: with probability `identity` nothing changes; otherwise one cell, one
/// block and one branch are picked and either its input (a hidden-state mutation) or its
/// operation (an op mutation) is replaced by a different valid choice.
pub fn mutate(space: &Space, choices: &[usize], identity: f64, rng: &mut Rng) -> Vec<usize> {
    let mut out = choices.to_vec();
    if (rng.uniform() as f64) < identity {
        return out;
    }
    let decisions = space.decisions();
    let cell = rng.below(2);
    let block = rng.below(space.blocks);
    let branch = rng.below(2);
    let hidden = rng.below(2) == 0;
    let at = (cell * space.blocks + block) * 5 + branch + if hidden { 0 } else { 2 };
    let arity = decisions[at].arity();
    if arity > 1 {
        let current = out[at] % arity;
        out[at] = (current + 1 + rng.below(arity - 1)) % arity;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sequence_decodes_to_a_valid_genotype() {
        let space = Space::default();
        assert_eq!(space.decisions().len(), 2 * 5 * BLOCKS);
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            let d = space.random(&mut rng);
            let g = space.decode(&d);
            g.validate().unwrap();
            assert_eq!(space.encode(&g), d);
            let m = mutate(&space, &d, 0.0, &mut rng);
            assert_eq!(m.iter().zip(&d).filter(|(a, b)| a != b).count(), 1);
            space.decode(&m).validate().unwrap();
        }
        // Garbage is reduced into range.
        space.decode(&[99; 50]).validate().unwrap();
    }

    #[test]
    fn mirrored_blocks_hash_alike() {
        let space = Space::default();
        let mut rng = Rng::new(4);
        let d = space.random(&mut rng);
        let mut swapped = d.clone();
        swapped.swap(0, 1);
        swapped.swap(2, 3);
        let (a, b) = (space.decode(&d), space.decode(&swapped));
        assert_eq!(genotype_hash(&a), genotype_hash(&b));
        let other = mutate(&space, &d, 0.0, &mut rng);
        assert_ne!(genotype_hash(&a), genotype_hash(&space.decode(&other)));
    }
}
