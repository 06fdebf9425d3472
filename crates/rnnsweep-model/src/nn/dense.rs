//! A Keras Dense layer (Glorot-uniform kernel, zero bias, L2 on the kernel) and Keras's
//! activations.

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::config::Activation;
use crate::error::Result;
use crate::init;

#[derive(Debug, Clone)]
pub struct Dense {
    pub kernel: Var,
    pub bias: Var,
    pub activation: Activation,
    pub l2: f64,
}

impl Dense {
    pub fn new(
        rng: &mut ChaCha8Rng,
        input: usize,
        units: usize,
        activation: Activation,
        l2: f64,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            kernel: Var::from_tensor(&init::glorot_uniform(rng, input, units, device)?)?,
            bias: Var::from_tensor(&Tensor::zeros(units, DType::F32, device)?)?,
            activation,
            l2,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let z = x
            .matmul(self.kernel.as_tensor())?
            .broadcast_add(self.bias.as_tensor())?;
        activate(&z, self.activation)
    }
}

/// Keras's activations (Keras 3 definitions: `hard_sigmoid` = relu6(x+3)/6, `gelu` exact).
pub fn activate(z: &Tensor, activation: Activation) -> Result<Tensor> {
    Ok(match activation {
        Activation::Relu => z.relu()?,
        Activation::Sigmoid => candle_nn::ops::sigmoid(z)?,
        Activation::Tanh => z.tanh()?,
        Activation::Linear => z.clone(),
        Activation::Elu => z.elu(1.0)?,
        Activation::Selu => (z.elu(1.673_263_242_354_377_3)? * 1.050_700_987_355_480_5)?,
        // Stable softplus: max(z, 0) + log(1 + e^-|z|).
        Activation::Softplus => z.relu()?.add(&(z.abs()?.neg()?.exp()? + 1.0)?.log()?)?,
        Activation::Softsign => z.div(&(z.abs()? + 1.0)?)?,
        Activation::HardSigmoid => ((z + 3.0)?.clamp(0f32, 6f32)? / 6.0)?,
        Activation::Gelu => z.gelu_erf()?,
        Activation::Swish => z.silu()?,
    })
}
