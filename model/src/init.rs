//! Deterministic synthetic weights, and the list of parameters a configuration needs.
//!
//! The synthetic generator is specified in `docs/synthetic-weights.md` and implemented
//! identically in `scripts/reference/synthetic.py`, so that the reference implementations and
//! this crate build bit-identical networks without exchanging weight files.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use nasnet_core::NetworkConfig;
use nasnet_core::rng::{GOLDEN, mix};

use crate::Result;
use crate::model::NasNet;

fn fnv1a64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `n` uniform numbers in `[-1, 1)` derived from `key` (exact multiples of 2^-23).
pub fn uniform(key: &str, n: usize) -> Vec<f64> {
    let seed = fnv1a64(key);
    (0..n as u64)
        .map(|i| {
            let z = mix(seed.wrapping_add((i + 1).wrapping_mul(GOLDEN)));
            (z >> 40) as f64 / (1u64 << 23) as f64 - 1.0
        })
        .collect()
}

/// The synthetic value of parameter `name` with `shape`.
pub fn synthetic(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let u = uniform(name, n);
    let map = |f: &dyn Fn(f64) -> f64| u.iter().map(|&v| f(v) as f32).collect();
    if name.ends_with("running_mean") {
        map(&|v| 0.1 * v)
    } else if name.ends_with("running_var") {
        map(&|v| 1.0 + 0.5 * v)
    } else if shape.len() >= 2 {
        let fan_in: usize = shape[1..].iter().product();
        let scale = (3.0 / fan_in as f64).sqrt();
        map(&|v| v * scale)
    } else if name.ends_with("weight") {
        map(&|v| 1.0 + 0.25 * v)
    } else {
        map(&|v| 0.1 * v)
    }
}

/// A synthetic input batch `[n, 3, size, size]` with values in `[-1, 1)`.
pub fn synthetic_input(n: usize, size: usize) -> Result<Tensor> {
    let v: Vec<f32> = uniform("input", n * 3 * size * size)
        .into_iter()
        .map(|x| x as f32)
        .collect();
    Ok(Tensor::from_vec(v, (n, 3, size, size), &Device::Cpu)?)
}

/// A weight source producing [`synthetic`] values for whatever the network asks for, except
/// the tensors given in `overrides` (e.g. calibrated batch-norm statistics).
#[derive(Debug, Default)]
pub struct SyntheticWeights {
    /// Tensors returned instead of synthetic values, by state-dict name.
    pub overrides: HashMap<String, Tensor>,
}

impl SimpleBackend for SyntheticWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some(t) = self.overrides.get(name) {
            if t.shape() != &s {
                candle_core::bail!("override {name} has shape {:?}, expected {s:?}", t.shape());
            }
            return t.to_dtype(dtype)?.to_device(dev);
        }
        Tensor::from_vec(synthetic(name, s.dims()), s, dev)?.to_dtype(dtype)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("synthetic weights need a shape for {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Records the name and shape of every parameter requested, without allocating them.
#[derive(Debug, Default)]
struct Recorder(std::sync::Arc<Mutex<Shapes>>);

/// Parameter names and shapes.
type Shapes = Vec<(String, Vec<usize>)>;

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut v) = self.0.lock() {
            v.push((name.to_owned(), s.dims().to_vec()));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no shape for {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Every tensor the network reads (parameters and batch-norm statistics), in build order.
pub fn parameter_shapes(config: &NetworkConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let shapes = std::sync::Arc::new(Mutex::new(vec![]));
    let backend: Box<dyn SimpleBackend> = Box::new(Recorder(shapes.clone()));
    NasNet::new(
        config,
        VarBuilder::from_backend(backend, DType::F32, Device::Cpu),
    )?;
    let shapes = shapes.lock().map(|v| v.clone()).unwrap_or_default();
    Ok(shapes)
}

/// Whether a tensor is a batch-norm running statistic (not trained by gradient descent).
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// The number of trainable parameters.
pub fn count_parameters(config: &NetworkConfig) -> Result<usize> {
    Ok(parameter_shapes(config)?
        .iter()
        .filter(|(n, _)| !is_buffer(n))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum())
}

/// A network with synthetic weights.
pub fn synthetic_network(config: &NetworkConfig) -> Result<NasNet> {
    synthetic_network_with(config, HashMap::new())
}

/// A network with synthetic weights, except `overrides`.
pub fn synthetic_network_with(
    config: &NetworkConfig,
    overrides: HashMap<String, Tensor>,
) -> Result<NasNet> {
    let backend: Box<dyn SimpleBackend> = Box::new(SyntheticWeights { overrides });
    NasNet::new(
        config,
        VarBuilder::from_backend(backend, DType::F32, Device::Cpu),
    )
}

/// Every tensor of a network with synthetic weights (except `overrides`), by canonical name.
pub fn synthetic_state_dict(
    config: &NetworkConfig,
    overrides: &HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, shape) in parameter_shapes(config)? {
        let t = match overrides.get(&name) {
            Some(t) => t.clone(),
            None => Tensor::from_vec(synthetic(&name, &shape), shape, &Device::Cpu)?,
        };
        out.insert(name, t);
    }
    Ok(out)
}
