//! The whole NASNet network: stem, cells, heads (TF-slim `nasnet.py` `_build_nasnet_base`).
//!
//! Paper: Zoph, Vasudevan, Shlens, Le, "Learning Transferable Architectures for Scalable Image
//! Recognition", CVPR 2018, <https://arxiv.org/abs/1707.07012>. Reference implementations:
//! tensorflow/models `research/slim/nets/nasnet` (the official release), timm
//! `timm/models/nasnet.py` and Cadene `pretrainedmodels/models/nasnet{,_mobile}.py`, whose
//! state-dict keys this module reproduces (cells numbered `cell_0 .. cell_{3N-1}`).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use nasnet_core::{NetworkConfig, Stem};

use crate::candle_graph::CandleGraph;
use crate::cell::{Cell, CellSpec, Chw};
use crate::graph::Graph;
use crate::layers::{Conv2d, ConvBn, Linear, Padding};
use crate::ops::{Pool, PoolKind};
use crate::{Error, Result};

/// A cell and where its two inputs come from (indices into the list of states, where state 0
/// is the stem convolution's output and state `i + 1` is node `i`'s output).
#[derive(Debug, Clone)]
pub struct Node {
    /// The cell.
    pub cell: Cell,
    /// State index of the cell's current input.
    pub input: usize,
    /// `None`: the cell has no previous input and uses its current input.
    pub prev: Option<usize>,
    /// Endpoint name in the official code (`Cell_3`, `Reduction_Cell_0`), if any.
    pub endpoint: Option<String>,
}

/// The cells of a network as they are stacked: their shapes and TF's `cell_outputs` (the
/// last two states, `None` standing for "no previous input").
struct Stack<'a, 'v> {
    config: &'a NetworkConfig,
    vb: &'a VarBuilder<'v>,
    /// Shapes of the states: the stem convolution's, then each node's.
    shapes: Vec<Chw>,
    history: Vec<Option<usize>>,
    nodes: Vec<Node>,
    /// Cells in the network, for the drop-path schedule.
    total: f64,
}

impl Stack<'_, '_> {
    /// The state before the current one (the next cell's previous input).
    fn prev(&self) -> Option<usize> {
        self.history[self.history.len() - 2]
    }

    /// The current state (the next cell's input).
    fn current(&self) -> Option<usize> {
        self.history.last().copied().flatten()
    }

    /// Adds cell `name` (normal or reduction) at filter `scaling`, reading the current state
    /// and `prev`.
    fn push(
        &mut self,
        name: String,
        reduction: bool,
        scaling: f64,
        prev: Option<usize>,
        endpoint: Option<String>,
    ) -> Result<()> {
        let config = self.config;
        let input = self
            .current()
            .ok_or_else(|| Error::Build(format!("{name} has no input")))?;
        let genotype = if reduction {
            &config.genotype.reduction
        } else {
            &config.genotype.normal
        };
        let index = self.nodes.len() as f64;
        let spec = CellSpec {
            genotype,
            reduction,
            filters: config.scaled_filters(scaling),
            input: self.shapes[input],
            prev: prev.map(|p| self.shapes[p]),
            pooling: config.pooling,
            eps: config.bn_eps,
            drop_path_keep: 1.0 - (index + 1.0) / self.total * (1.0 - config.drop_path_keep_prob),
        };
        if spec.filters == 0 {
            return Err(Error::Build(format!("{name} would have no filters")));
        }
        let cell = Cell::new(&self.vb.pp(&name), name, spec)?;
        self.shapes.push(cell.out_shape);
        self.nodes.push(Node {
            cell,
            input,
            prev,
            endpoint,
        });
        self.history.push(Some(self.shapes.len() - 1));
        Ok(())
    }
}

/// The auxiliary classifier at two thirds of the depth (training only): ReLU, 5x5 stride-3
/// average pool, 1x1 conv to 128 + BN, ReLU, conv to 768 over the remaining map + BN, ReLU,
/// linear.
#[derive(Debug, Clone)]
pub struct AuxHead {
    /// Index of the state that feeds the head (state `i + 1` is node `i`'s output).
    pub after: usize,
    /// 1x1 conv to 128 channels and BN, after the pool (`aux_head.conv_1`).
    pub conv_1: ConvBn,
    /// ReLU, conv to 768 channels over the whole remaining map (VALID) and BN
    /// (`aux_head.conv_2`).
    pub conv_2: ConvBn,
    /// The auxiliary classifier, 768 to `classes` (`aux_head.last_linear`).
    pub last_linear: Linear,
}

impl AuxHead {
    fn new(vb: &VarBuilder, after: usize, input: Chw, classes: usize, eps: f64) -> Result<Self> {
        let [c, h, w] = input;
        if h < 5 || w < 5 {
            return Err(Error::Build(format!(
                "the auxiliary head needs a map of at least 5x5, got {h}x{w}"
            )));
        }
        let (ph, pw) = ((h - 5) / 3 + 1, (w - 5) / 3 + 1);
        let conv = Conv2d::pointwise(&vb.pp("conv_1").pp("conv"), c, 128, 1)?;
        let conv_1 = ConvBn::new(&vb.pp("conv_1"), false, conv, eps)?;
        let vb2 = vb.pp("conv_2");
        let conv = Conv2d::new(&vb2.pp("conv"), 128, 768, [ph, pw], 1, 1, 1, Padding::Valid)?;
        let conv_2 = ConvBn::new(&vb2, true, conv, eps)?;
        Ok(Self {
            after,
            conv_1,
            conv_2,
            last_linear: Linear::new(&vb.pp("last_linear"), 768, classes)?,
        })
    }

    /// Auxiliary logits `[N, classes]` from `x`, the state [`after`](Self::after) indexes.
    pub fn forward<G: Graph>(&self, g: &mut G, x: &G::Value) -> Result<G::Value> {
        let x = g.relu(x)?;
        let pool = Pool {
            kind: PoolKind::Avg,
            kernel: 5,
            stride: 3,
            pads: [0; 4],
            count_include_pad: false,
        };
        let x = g.pool(&x, pool)?;
        let x = self.conv_1.forward(g, &x)?;
        let x = self.conv_2.forward(g, &x)?;
        let x = g.relu(&x)?;
        let x = g.global_avg_pool(&x)?;
        self.last_linear.forward(g, &x)
    }
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct Output<V> {
    /// `[N, classes]`.
    pub logits: V,
    /// The pooled penultimate activations, `[N, 24 F]`.
    pub features: V,
    /// The auxiliary head's logits, when the network has one.
    pub aux_logits: Option<V>,
}

/// A NASNet network for any genotype and configuration.
#[derive(Debug, Clone)]
pub struct NasNet {
    /// The configuration the network was built from.
    pub config: NetworkConfig,
    /// Stem convolution and BN (no ReLU).
    pub conv0: ConvBn,
    /// Stem cells and body cells, in execution order.
    pub nodes: Vec<Node>,
    /// The auxiliary head, when the configuration has one.
    pub aux_head: Option<AuxHead>,
    /// The classifier, pooled features (`24 F` for NASNet-A) to `num_classes` (`last_linear`).
    pub last_linear: Linear,
}

impl NasNet {
    /// Builds the network, reading weights from `vb` under their state-dict names.
    pub fn new(config: &NetworkConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let eps = config.bn_eps;
        let size = config.image_size;
        let stem_c = config.stem_filters();
        let (conv0, stem_hw) = match config.stem {
            Stem::Imagenet => {
                let conv = Conv2d::new(
                    &vb.pp("conv0").pp("conv"),
                    3,
                    stem_c,
                    [3, 3],
                    2,
                    1,
                    1,
                    Padding::Valid,
                )?;
                ((conv, eps), (size - 3) / 2 + 1)
            }
            Stem::Cifar => {
                let conv = Conv2d::new(
                    &vb.pp("conv0").pp("conv"),
                    3,
                    stem_c,
                    [3, 3],
                    1,
                    1,
                    1,
                    Padding::Same,
                )?;
                ((conv, eps), size)
            }
        };
        let conv0 = ConvBn::new(&vb.pp("conv0"), false, conv0.0, conv0.1)?;

        let mut stack = Stack {
            config,
            vb: &vb,
            shapes: vec![[stem_c, stem_hw, stem_hw]],
            history: vec![None, Some(0)],
            nodes: vec![],
            total: config.total_num_cells() as f64,
        };
        let rate = config.filter_scaling_rate;
        if config.stem == Stem::Imagenet {
            let mut scaling = 1.0 / (rate * rate);
            for k in 0..2 {
                let prev = stack.prev();
                // The official code's "Stem" endpoint is the second stem cell's output.
                let endpoint = (k == 1).then(|| "Stem".to_owned());
                stack.push(format!("cell_stem_{k}"), true, scaling, prev, endpoint)?;
                scaling *= rate;
            }
        }

        let n = config.cells;
        let reductions = [n, 2 * n];
        let mut scaling = 1.0;
        let mut aux_input = None;
        for i in 0..3 * n {
            let mut prev = stack.prev();
            if let Some(k) = reductions.iter().position(|&r| r == i) {
                scaling *= rate;
                let endpoint = Some(format!("Reduction_Cell_{k}"));
                stack.push(format!("reduction_cell_{k}"), true, scaling, prev, endpoint)?;
                if !config.skip_reduction_layer_input {
                    prev = stack.prev();
                }
            }
            let endpoint = Some(format!("Cell_{i}"));
            stack.push(format!("cell_{i}"), false, scaling, prev, endpoint)?;
            if i + 1 == reductions[1] {
                aux_input = stack.current();
            }
        }
        let Stack { shapes, nodes, .. } = stack;
        let last = *shapes.last().expect("at least one cell");
        let aux_head = match (config.aux_head, aux_input) {
            (true, Some(s)) => Some(AuxHead::new(
                &vb.pp("aux_head"),
                s,
                shapes[s],
                config.num_classes,
                eps,
            )?),
            _ => None,
        };
        let last_linear = Linear::new(&vb.pp("last_linear"), last[0], config.num_classes)?;
        Ok(Self {
            config: config.clone(),
            conv0,
            nodes,
            aux_head,
            last_linear,
        })
    }

    /// Width of the pooled features (`24 F` for NASNet-A).
    pub fn num_features(&self) -> usize {
        self.last_linear.weight.dims()[1]
    }

    /// Runs the network on `x` (`[N, 3, H, W]`) with any [`Graph`] backend.
    pub fn forward_graph<G: Graph>(&self, g: &mut G, x: &G::Value) -> Result<Output<G::Value>> {
        let mut states = vec![self.conv0.forward(g, x)?];
        if self.config.stem == Stem::Cifar {
            g.endpoint("Stem", &states[0]);
        }
        let mut aux_logits = None;
        for node in &self.nodes {
            let prev = node.prev.map(|p| &states[p]);
            let y = node.cell.forward(g, &states[node.input], prev)?;
            if let Some(e) = &node.endpoint {
                g.endpoint(e, &y);
            }
            states.push(y);
            if let Some(aux) = self
                .aux_head
                .as_ref()
                .filter(|a| a.after == states.len() - 1)
            {
                aux_logits = Some(aux.forward(g, &states[aux.after])?);
            }
        }
        let last = states.last().expect("at least one state");
        let x = g.relu(last)?;
        let features = g.global_avg_pool(&x)?;
        let x = g.dropout(&features, self.config.dropout)?;
        let logits = self.last_linear.forward(g, &x)?;
        Ok(Output {
            logits,
            features,
            aux_logits,
        })
    }

    /// Inference: logits and features.
    pub fn forward(&self, x: &Tensor) -> Result<Output<Tensor>> {
        self.forward_graph(&mut CandleGraph::eval(), x)
    }
}

/// Loads a model directory (`model.json` + `model.safetensors`) onto `device`.
pub fn load_model_dir(
    dir: &std::path::Path,
    device: &candle_core::Device,
) -> Result<(nasnet_core::ModelMeta, NasNet)> {
    use nasnet_core::meta::{ModelMeta, WEIGHTS_FILE};
    let meta = ModelMeta::load(dir)?;
    let weights = dir.join(WEIGHTS_FILE);
    let tensors =
        candle_core::safetensors::load(&weights, device).map_err(|source| Error::Weights {
            path: weights.clone(),
            problem: "cannot read weights",
            source: Box::new(source.into()),
        })?;
    let vb = VarBuilder::from_tensors(tensors, candle_core::DType::F32, device);
    let net = NasNet::new(&meta.architecture, vb).map_err(|source| Error::Weights {
        path: weights.clone(),
        problem: "does not fit model.json",
        source: Box::new(source),
    })?;
    Ok((meta, net))
}
