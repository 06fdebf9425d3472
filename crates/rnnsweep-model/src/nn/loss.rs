//! The losses Keras computes for the three tasks, on logits for numerical stability.

use candle_core::Tensor;

use crate::error::Result;

/// Per-row binary cross-entropy from logits, stable for any logit:
/// `max(z, 0) − z·y + log(1 + e^−|z|)`.
pub fn bce_with_logits(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let softplus_neg_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(logits
        .relu()?
        .sub(&logits.mul(labels)?)?
        .add(&softplus_neg_abs)?)
}

/// Per-row categorical cross-entropy from logits `[batch, K]` against one-hot targets
/// `[batch, K]`: `logsumexp(z) − z_y` (log-softmax, stable for any logit).
pub fn softmax_cross_entropy(logits: &Tensor, one_hot: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, 1)?;
    Ok(log_probs.mul(one_hot)?.sum(1)?.neg()?)
}
