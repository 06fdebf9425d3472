//! Inference: logits and probabilities for padded rows, longest rows batched together.

use candle_core::DType;

use crate::encoder::Padded;
use crate::error::Result;
use crate::nn::{IdBatch, Net};

/// Logits in inference mode, `batch_size` rows at a time, in the rows' order (row-major
/// `[rows, K]` for a K-output net). Rows are batched
/// longest first, so each batch (cut to its own longest row) carries little padding.
pub fn predict_logits(net: &Net, ids: &Padded, batch_size: usize) -> Result<Vec<f32>> {
    let lengths = ids.lengths();
    let mut order: Vec<usize> = (0..ids.rows).collect();
    order.sort_by_key(|&r| std::cmp::Reverse(lengths[r]));
    let k = net.outputs;
    let mut logits = vec![0f32; ids.rows * k];
    for rows in order.chunks(batch_size.max(1)) {
        let mut chunk = Vec::with_capacity(rows.len() * ids.len);
        for &r in rows {
            chunk.extend_from_slice(ids.row(r));
        }
        let z = net.forward(
            &IdBatch {
                ids: &chunk,
                batch: rows.len(),
                time: ids.len,
            },
            None,
        )?;
        let z = z.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        for (&r, z) in rows.iter().zip(z.chunks(k)) {
            logits[r * k..(r + 1) * k].copy_from_slice(z);
        }
    }
    Ok(logits)
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Probabilities in inference mode: class 1's for a binary net, row-major `[rows, K]`
/// softmax probabilities for K classes.
pub fn predict_padded(net: &Net, ids: &Padded, batch_size: usize) -> Result<Vec<f32>> {
    let logits = predict_logits(net, ids, batch_size)?;
    Ok(probabilities_of(&logits, head_width(net)))
}

/// The width [`probabilities_of`] normalises over: 1 (each logit its own sigmoid) for binary
/// and multi-label nets, K for a softmax.
pub(crate) fn head_width(net: &Net) -> usize {
    crate::dataset::normalised_width(net.outputs, net.multi_label)
}

/// Logits → probabilities: the sigmoid of each for one output, a softmax per row for K.
pub fn probabilities_of(logits: &[f32], outputs: usize) -> Vec<f32> {
    if outputs == 1 {
        return logits.iter().copied().map(sigmoid).collect();
    }
    let mut probs = Vec::with_capacity(logits.len());
    for row in logits.chunks(outputs) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = row.iter().map(|&z| (z - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        probs.extend(exp.iter().map(|e| e / sum));
    }
    probs
}

/// The log-probability of the true class from one row of logits (stable log-softmax).
pub(crate) fn log_softmax_at(row: &[f32], class: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&z| f64::from(z - max).exp()).sum();
    f64::from(row[class] - max) - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_become_sigmoids_or_row_softmaxes() {
        let one = probabilities_of(&[0.0, 2.0_f32.ln()], 1);
        assert!(
            (one[0] - 0.5).abs() < 1e-7 && (one[1] - 2.0 / 3.0).abs() < 1e-6,
            "{one:?}"
        );
        // ln 1, ln 2, ln 5 → 1/8, 2/8, 5/8; a shift of every logit changes nothing.
        let row = [0.0, 2.0_f32.ln(), 5.0_f32.ln()];
        let shifted = row.map(|z| z + 100.0);
        let p = probabilities_of(&[row, shifted].concat(), 3);
        for (got, want) in p.iter().zip([0.125, 0.25, 0.625, 0.125, 0.25, 0.625]) {
            assert!((got - want).abs() < 1e-6, "{p:?}");
        }
        assert!((log_softmax_at(&row, 2) - (0.625f64).ln()).abs() < 1e-6);
        assert!((sigmoid(-40.0)).abs() < 1e-12 && sigmoid(40.0) == 1.0);
    }
}
