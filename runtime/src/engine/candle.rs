//! The Candle backend: the network itself from `model.safetensors` (CPU, or CUDA in a build
//! with the `cuda` feature). Unlike the ONNX backends it runs any input size.

use std::path::Path;

use candle_core::{DType, Tensor};
use nasnet_model::NasNet;

use super::RawOutputs;
use crate::{Device, Error, Result};

/// The network on a Candle device.
pub struct CandleEngine {
    net: NasNet,
    device: candle_core::Device,
}

fn candle_err(e: impl Into<crate::error::Cause> + std::fmt::Display) -> Error {
    Error::backend("candle", e.to_string(), e)
}

/// The Candle device for `device`.
pub fn candle_device(device: Device) -> Result<candle_core::Device> {
    match device {
        Device::Cpu => Ok(candle_core::Device::Cpu),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => candle_core::Device::new_cuda(n)
            .map_err(|e| Error::Device(format!("CUDA device {n} is not available to Candle: {e}"))),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(Error::Device(
            "this build has no CUDA support for the candle backend (rebuild with --features cuda, or use --backend ort --device cuda)".into(),
        )),
    }
}

impl CandleEngine {
    pub(crate) fn open(dir: &Path, device: Device) -> Result<Self> {
        let device = candle_device(device)?;
        let (_, net) = nasnet_model::load_model_dir(dir, &device).map_err(|e| match e {
            nasnet_model::Error::Meta(m) => Error::Meta(m),
            e => Error::Model {
                message: e.to_string(),
                source: Some(Box::new(e)),
            },
        })?;
        Ok(Self { net, device })
    }

    pub(crate) fn run(
        &self,
        input: &[f32],
        batch: usize,
        h: usize,
        w: usize,
    ) -> Result<RawOutputs> {
        let x = Tensor::from_slice(input, (batch, 3, h, w), &self.device).map_err(candle_err)?;
        let out = self.net.forward(&x).map_err(candle_err)?;
        let flat = |t: Tensor| -> Result<Vec<f32>> {
            t.to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .map_err(candle_err)
        };
        Ok(RawOutputs {
            logits: flat(out.logits)?,
            features: flat(out.features)?,
        })
    }
}
