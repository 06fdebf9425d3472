//! Keras's BatchNormalization over features, with masked statistics for padded sequences.

use candle_core::{DType, Device, Tensor, Var};

use crate::error::Result;
use crate::nn::lstm::StepMask;

/// Keras BatchNormalization's epsilon.
pub const BN_EPSILON: f64 = 1e-3;

#[derive(Debug, Clone)]
pub struct BatchNorm {
    pub gamma: Var,
    pub beta: Var,
    pub moving_mean: Var,
    pub moving_variance: Var,
    pub momentum: f64,
}

impl BatchNorm {
    pub fn new(features: usize, momentum: f64, device: &Device) -> Result<Self> {
        let ones = Tensor::ones(features, DType::F32, device)?;
        let zeros = Tensor::zeros(features, DType::F32, device)?;
        Ok(Self {
            gamma: Var::from_tensor(&ones)?,
            beta: Var::from_tensor(&zeros)?,
            moving_mean: Var::from_tensor(&zeros)?,
            moving_variance: Var::from_tensor(&ones)?,
            momentum,
        })
    }

    /// Normalises each `[batch, F]` step. In training the statistics come from the real
    /// (unmasked) entries only and the moving averages are updated; otherwise the moving
    /// averages are used. Padded entries stay zero.
    pub fn apply(
        &self,
        steps: &[Tensor],
        masks: Option<&[StepMask]>,
        train: bool,
    ) -> Result<Vec<Tensor>> {
        let (mean, var) = if train {
            let stacked = Tensor::stack(steps, 0)?; // [T, B, F]
            let (mask, count) = match masks {
                Some(m) => {
                    // Counted on the host: reading a device sum back would wait on every step.
                    let count: usize = m.iter().map(|s| s.real).sum();
                    let mask =
                        Tensor::stack(&m.iter().map(|s| s.tensor.clone()).collect::<Vec<_>>(), 0)?;
                    (Some(mask), count as f64)
                }
                None => (None, (steps.len() * steps[0].dim(0)?) as f64),
            };
            self.batch_statistics(&stacked, mask.as_ref(), count)?
        } else {
            self.moving_statistics()
        };
        let (mean, scale, shift) = self.affine(mean, var)?;
        steps
            .iter()
            .enumerate()
            .map(|(t, x)| {
                let y = x
                    .broadcast_sub(&mean)?
                    .broadcast_mul(&scale)?
                    .broadcast_add(&shift)?;
                match masks {
                    Some(m) if !m[t].all_real => Ok(y.broadcast_mul(&m[t].tensor)?),
                    _ => Ok(y),
                }
            })
            .collect()
    }

    /// [`BatchNorm::apply`] for a whole `[T, B, F]` sequence with its `[T, B, 1]` mask and
    /// count of real entries (`None`: every entry is real).
    pub fn apply_sequence(
        &self,
        x: &Tensor,
        mask: Option<(&Tensor, usize)>,
        train: bool,
    ) -> Result<Tensor> {
        let (mean, var) = if train {
            let count = match mask {
                Some((_, count)) => count,
                None => x.dim(0)? * x.dim(1)?,
            };
            self.batch_statistics(x, mask.map(|m| m.0), count as f64)?
        } else {
            self.moving_statistics()
        };
        let (mean, scale, shift) = self.affine(mean, var)?;
        let y = x
            .broadcast_sub(&mean)?
            .broadcast_mul(&scale)?
            .broadcast_add(&shift)?;
        match mask {
            Some((m, count)) if count < m.elem_count() => Ok(y.broadcast_mul(m)?),
            _ => Ok(y),
        }
    }

    /// Mean and variance over the real entries of `[T, B, F]` (padded entries are zero, so a
    /// plain sum is the masked sum), with the moving averages updated.
    fn batch_statistics(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        count: f64,
    ) -> Result<(Tensor, Tensor)> {
        let count = count.max(1.0);
        let mean = (x.sum((0, 1))? / count)?;
        let centered = x.broadcast_sub(&mean)?;
        let centered = match mask {
            Some(mask) => centered.broadcast_mul(mask)?,
            None => centered,
        };
        let var = (centered.sqr()?.sum((0, 1))? / count)?;
        let m = self.momentum;
        self.moving_mean
            .set(&((self.moving_mean.as_tensor() * m)? + (mean.detach() * (1.0 - m))?)?)?;
        self.moving_variance
            .set(&((self.moving_variance.as_tensor() * m)? + (var.detach() * (1.0 - m))?)?)?;
        Ok((mean, var))
    }

    fn moving_statistics(&self) -> (Tensor, Tensor) {
        (
            self.moving_mean.as_tensor().clone(),
            self.moving_variance.as_tensor().clone(),
        )
    }

    /// `(mean, gamma/√(var+ε), beta)`, each `[1, F]`, broadcastable over a step.
    fn affine(&self, mean: Tensor, var: Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let scale = self
            .gamma
            .as_tensor()
            .div(&(var + BN_EPSILON)?.sqrt()?)?
            .unsqueeze(0)?;
        let shift = self.beta.as_tensor().unsqueeze(0)?;
        Ok((mean.unsqueeze(0)?, scale, shift))
    }
}
