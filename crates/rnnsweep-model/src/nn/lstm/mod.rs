//! The masked bidirectional recurrent layer, of LSTM or GRU cells.
//!
//! Sequences travel between layers as time-major lists of `[batch, features]` tensors rather
//! than one `[batch, time, features]` tensor: slicing a step out of a big tensor with `narrow`
//! costs a full-size zero tensor per step in candle's backward pass (O(T²)), while `cat` of the
//! steps back-propagates as cheap slices of the gradient.
//!
//! Masking follows Keras (`mask_zero=True`): on a padded step a row keeps its state and emits
//! zeros. With post padding the backward direction therefore starts each row at its last real
//! token, i.e. it reads the row's real tokens in reverse, and the forward direction's final
//! state is the state after the last real token.
//!
//! Weight layout is Keras's: `kernel [in, 4U]`, `recurrent_kernel [U, 4U]`, `bias [4U]`, gate
//! order input, forget, cell, output. A GRU (Keras `GRU(reset_after=True)`) has `kernel
//! [in, 3U]`, `recurrent_kernel [U, 3U]` and `bias [2, 3U]` (input bias, recurrent bias), gate
//! order update, reset, candidate.
//!
//! Two implementations share that layout, so a model trained with one loads into the other:
//! the reference layer below, built from candle ops (any device; the oracle), and the fused
//! kernel in [`fused`], which takes a whole `[time, batch, features]` sequence at once: on the
//! CPU its own step loop, on a CUDA device ([`cuda`], feature `cuda`) one cuBLAS multiply and
//! one gate kernel per step.

#[cfg(feature = "cuda")]
mod cuda;
mod fused;
pub mod gates;
pub mod isa;
pub mod kernel;
mod split;

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::config::Cell;
use crate::error::Result;
use crate::init;

/// One step's padding mask, with host-side facts that let the layer skip work.
#[derive(Debug, Clone)]
pub struct StepMask {
    /// `[batch, 1]`, 1 for real tokens, 0 for padding.
    pub tensor: Tensor,
    pub all_real: bool,
    pub all_padding: bool,
    /// How many rows are real, kept on the host so no statistic waits for the device.
    pub real: usize,
}

impl StepMask {
    /// Masks for each time step of a `[batch, time]` id matrix given in row-major order.
    pub fn from_ids(
        ids: &[u32],
        batch: usize,
        time: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Vec<StepMask>> {
        (0..time)
            .map(|t| {
                let column: Vec<f32> = (0..batch)
                    .map(|r| f32::from(u8::from(ids[r * time + t] != 0)))
                    .collect();
                let real = column.iter().filter(|&&m| m > 0.0).count();
                Ok(StepMask {
                    tensor: Tensor::from_vec(column, (batch, 1), device)?.to_dtype(dtype)?,
                    all_real: real == batch,
                    all_padding: real == 0,
                    real,
                })
            })
            .collect()
    }
}

/// The time-major `[time, batch]` mask of a row-major `[batch, time]` id matrix: 1 for a real
/// token, 0 for padding.
pub fn time_major_mask(ids: &[u32], batch: usize, time: usize) -> Vec<u8> {
    (0..time)
        .flat_map(|t| (0..batch).map(move |r| u8::from(ids[r * time + t] != 0)))
        .collect()
}

/// The weights of one direction.
#[derive(Debug, Clone)]
pub struct LstmWeights {
    pub kernel: Var,
    pub recurrent: Var,
    pub bias: Var,
    pub units: usize,
    pub cell: Cell,
}

impl LstmWeights {
    /// Keras's initialisers: glorot-uniform kernel, orthogonal recurrent kernel, zero bias
    /// except 1 on the forget gate (`unit_forget_bias=True`).
    pub fn new(rng: &mut ChaCha8Rng, input: usize, units: usize, device: &Device) -> Result<Self> {
        let kernel = init::glorot_uniform(rng, input, 4 * units, device)?;
        let recurrent = init::orthogonal(rng, units, 4 * units, device)?;
        let bias: Vec<f32> = (0..4 * units)
            .map(|i| {
                if (units..2 * units).contains(&i) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Self {
            kernel: Var::from_tensor(&kernel)?,
            recurrent: Var::from_tensor(&recurrent)?,
            bias: Var::from_tensor(&Tensor::from_vec(bias, 4 * units, device)?)?,
            units,
            cell: Cell::Lstm,
        })
    }

    /// A GRU direction with Keras's initialisers: glorot-uniform kernel, orthogonal recurrent
    /// kernel, zero biases.
    pub fn gru(rng: &mut ChaCha8Rng, input: usize, units: usize, device: &Device) -> Result<Self> {
        let kernel = init::glorot_uniform(rng, input, 3 * units, device)?;
        let recurrent = init::orthogonal(rng, units, 3 * units, device)?;
        Ok(Self {
            kernel: Var::from_tensor(&kernel)?,
            recurrent: Var::from_tensor(&recurrent)?,
            bias: Var::from_tensor(&Tensor::zeros((2, 3 * units), DType::F32, device)?)?,
            units,
            cell: Cell::Gru,
        })
    }

    pub fn vars(&self) -> [(&'static str, &Var); 3] {
        [
            ("kernel", &self.kernel),
            ("recurrent_kernel", &self.recurrent),
            ("bias", &self.bias),
        ]
    }
}

/// Runs one direction over the steps. Returns the per-step outputs in time order (zeros on
/// padded steps) and the final hidden state.
pub fn run_direction(
    w: &LstmWeights,
    steps: &[Tensor],
    masks: &[StepMask],
    reverse: bool,
    input_dropout: Option<&Tensor>,
) -> Result<(Vec<Tensor>, Tensor)> {
    if w.cell == Cell::Gru {
        return run_gru_direction(w, steps, masks, reverse, input_dropout);
    }
    let (batch, _) = steps[0].dims2()?;
    let u = w.units;
    let zeros = Tensor::zeros((batch, u), steps[0].dtype(), steps[0].device())?;
    let mut h = zeros.clone();
    let mut c = zeros.clone();
    let mut outputs = vec![zeros; steps.len()];
    let order: Vec<usize> = if reverse {
        (0..steps.len()).rev().collect()
    } else {
        (0..steps.len()).collect()
    };
    let bias = w.bias.as_tensor().unsqueeze(0)?;
    for t in order {
        let mask = &masks[t];
        if mask.all_padding {
            continue;
        }
        let x = match input_dropout {
            Some(keep) => steps[t].mul(keep)?,
            None => steps[t].clone(),
        };
        let z = x
            .matmul(w.kernel.as_tensor())?
            .add(&h.matmul(w.recurrent.as_tensor())?)?
            .broadcast_add(&bias)?;
        let i = candle_nn::ops::sigmoid(&z.narrow(1, 0, u)?)?;
        let f = candle_nn::ops::sigmoid(&z.narrow(1, u, u)?)?;
        let g = z.narrow(1, 2 * u, u)?.tanh()?;
        let o = candle_nn::ops::sigmoid(&z.narrow(1, 3 * u, u)?)?;
        let c_new = f.mul(&c)?.add(&i.mul(&g)?)?;
        let h_new = o.mul(&c_new.tanh()?)?;
        if mask.all_real {
            c = c_new;
            h = h_new;
            outputs[t] = h.clone();
        } else {
            c = c.add(&c_new.sub(&c)?.broadcast_mul(&mask.tensor)?)?;
            h = h.add(&h_new.sub(&h)?.broadcast_mul(&mask.tensor)?)?;
            outputs[t] = h.broadcast_mul(&mask.tensor)?;
        }
    }
    Ok((outputs, h))
}

/// [`run_direction`] for a GRU cell, as Keras computes `GRU(reset_after=True)`:
/// `z = σ(x·W_z + b_z + h·R_z + b'_z)`, `r` likewise, `ĥ = tanh(x·W_h + b_h + r ⊙ (h·R_h + b'_h))`,
/// `h' = z ⊙ h + (1 − z) ⊙ ĥ`; padded steps keep the state and emit zeros.
fn run_gru_direction(
    w: &LstmWeights,
    steps: &[Tensor],
    masks: &[StepMask],
    reverse: bool,
    input_dropout: Option<&Tensor>,
) -> Result<(Vec<Tensor>, Tensor)> {
    let (batch, _) = steps[0].dims2()?;
    let u = w.units;
    let zeros = Tensor::zeros((batch, u), steps[0].dtype(), steps[0].device())?;
    let mut h = zeros.clone();
    let mut outputs = vec![zeros; steps.len()];
    let order: Vec<usize> = if reverse {
        (0..steps.len()).rev().collect()
    } else {
        (0..steps.len()).collect()
    };
    let input_bias = w.bias.as_tensor().get(0)?.unsqueeze(0)?;
    let recurrent_bias = w.bias.as_tensor().get(1)?.unsqueeze(0)?;
    for t in order {
        let mask = &masks[t];
        if mask.all_padding {
            continue;
        }
        let x = match input_dropout {
            Some(keep) => steps[t].mul(keep)?,
            None => steps[t].clone(),
        };
        let zx = x.matmul(w.kernel.as_tensor())?.broadcast_add(&input_bias)?;
        let zh = h
            .matmul(w.recurrent.as_tensor())?
            .broadcast_add(&recurrent_bias)?;
        let update = candle_nn::ops::sigmoid(&zx.narrow(1, 0, u)?.add(&zh.narrow(1, 0, u)?)?)?;
        let reset = candle_nn::ops::sigmoid(&zx.narrow(1, u, u)?.add(&zh.narrow(1, u, u)?)?)?;
        let candidate = zx
            .narrow(1, 2 * u, u)?
            .add(&reset.mul(&zh.narrow(1, 2 * u, u)?)?)?
            .tanh()?;
        // z ⊙ h + (1 − z) ⊙ ĥ = ĥ + z ⊙ (h − ĥ)
        let h_new = candidate.add(&update.mul(&h.sub(&candidate)?)?)?;
        if mask.all_real {
            h = h_new;
            outputs[t] = h.clone();
        } else {
            h = h.add(&h_new.sub(&h)?.broadcast_mul(&mask.tensor)?)?;
            outputs[t] = h.broadcast_mul(&mask.tensor)?;
        }
    }
    Ok((outputs, h))
}

/// A bidirectional layer (Keras `Bidirectional(LSTM(...), merge_mode="concat")`, or of a GRU).
#[derive(Debug, Clone)]
pub struct BiLstm {
    pub forward: LstmWeights,
    pub backward: LstmWeights,
}

/// What a bidirectional layer returns.
pub enum BiOutput {
    /// Per-step `[batch, 2U]`, zeros on padded steps.
    Sequence(Vec<Tensor>),
    /// `[batch, 2U]`: forward state after the last real token, backward state after the first.
    Last(Tensor),
}

impl BiLstm {
    pub fn new(rng: &mut ChaCha8Rng, input: usize, units: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            forward: LstmWeights::new(rng, input, units, device)?,
            backward: LstmWeights::new(rng, input, units, device)?,
        })
    }

    /// A layer of `cell`s (LSTM draws exactly what [`BiLstm::new`] draws).
    pub fn with_cell(
        rng: &mut ChaCha8Rng,
        cell: Cell,
        input: usize,
        units: usize,
        device: &Device,
    ) -> Result<Self> {
        match cell {
            Cell::Lstm => Self::new(rng, input, units, device),
            Cell::Gru => Ok(Self {
                forward: LstmWeights::gru(rng, input, units, device)?,
                backward: LstmWeights::gru(rng, input, units, device)?,
            }),
        }
    }

    /// `dropout` holds one input keep-mask per direction (already scaled by 1/(1-p)).
    pub fn run(
        &self,
        steps: &[Tensor],
        masks: &[StepMask],
        return_sequences: bool,
        dropout: Option<(&Tensor, &Tensor)>,
    ) -> Result<BiOutput> {
        let (fwd, fwd_last) =
            run_direction(&self.forward, steps, masks, false, dropout.map(|d| d.0))?;
        let (bwd, bwd_last) =
            run_direction(&self.backward, steps, masks, true, dropout.map(|d| d.1))?;
        if return_sequences {
            let merged = fwd
                .iter()
                .zip(&bwd)
                .map(|(f, b)| Tensor::cat(&[f, b], 1))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok(BiOutput::Sequence(merged))
        } else {
            Ok(BiOutput::Last(Tensor::cat(&[&fwd_last, &bwd_last], 1)?))
        }
    }

    /// The fused kernel (CPU or CUDA) over a whole `[time, batch, in]` f32 sequence with its
    /// [`time_major_mask`]. Returns `[time, batch, 2U]` or, without `return_sequences`, the final
    /// states `[batch, 2U]`, exactly as [`BiLstm::run`] would. `keep_trace` must be true when a
    /// backward pass will follow.
    pub fn run_fused(
        &self,
        x: &Tensor,
        mask: &[u8],
        return_sequences: bool,
        dropout: Option<(&Tensor, &Tensor)>,
        keep_trace: bool,
    ) -> Result<Tensor> {
        let (time, batch, input) = x.dims3()?;
        let (cell, units) = (self.forward.cell, self.forward.units);
        let gate_width = cell.gates() * units;
        // An LSTM's bias `[4U]` is one row, a GRU's `[2, 3U]` two.
        let with_bias_rows = |w: &LstmWeights| {
            let bias = w.bias.as_tensor().reshape((cell.bias_rows(), gate_width))?;
            Tensor::cat(&[w.recurrent.as_tensor(), &bias], 0)
        };
        let recurrent = Tensor::stack(
            &[
                with_bias_rows(&self.forward)?,
                with_bias_rows(&self.backward)?,
            ],
            0,
        )?;
        let op = |projection| {
            fused::FusedBiRnn::new(
                cell,
                projection,
                mask.to_vec(),
                time,
                batch,
                units,
                return_sequences,
                keep_trace,
            )
        };
        if x.device().is_cpu() {
            // The op projects the input itself (see `fused`): it takes the input, both input
            // kernels and the dropout masks as they are.
            let kernels = Tensor::stack(
                &[
                    self.forward.kernel.as_tensor(),
                    self.backward.kernel.as_tensor(),
                ],
                0,
            )?;
            let host = |keep: &Tensor| -> Result<Vec<f32>> {
                Ok(keep.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
            };
            let keep = match dropout {
                Some((f, b)) => Some([host(f)?, host(b)?]),
                None => None,
            };
            let op = op(fused::Projection::Inside { input, keep });
            return Ok(x.contiguous()?.apply_op3(&kernels, &recurrent, op)?);
        }
        // On a device the input projection of all steps is one large multiply per direction
        // (cuBLAS), differentiated by candle without per-step slices.
        let project = |w: &LstmWeights, keep: Option<&Tensor>| -> Result<Tensor> {
            let x = match keep {
                Some(keep) => x.broadcast_mul(&keep.unsqueeze(0)?)?,
                None => x.clone(),
            };
            Ok(x.reshape((time * batch, input))?
                .matmul(w.kernel.as_tensor())?
                .reshape((time, batch, gate_width))?)
        };
        let z_forward = project(&self.forward, dropout.map(|d| d.0))?;
        let z_backward = project(&self.backward, dropout.map(|d| d.1))?;
        Ok(z_forward.apply_op3(&z_backward, &recurrent, op(fused::Projection::Given))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::backprop::GradStore;
    use rand::SeedableRng;

    fn weights_f64(seed: u64, input: usize, units: usize) -> LstmWeights {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let w = LstmWeights::new(&mut rng, input, units, &Device::Cpu).unwrap();
        let to64 =
            |v: &Var| Var::from_tensor(&v.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
        LstmWeights {
            kernel: to64(&w.kernel),
            recurrent: to64(&w.recurrent),
            bias: to64(&w.bias),
            units,
            cell: Cell::Lstm,
        }
    }

    /// A GRU direction in f64 with every weight (biases too) drawn non-zero.
    fn gru_f64(seed: u64, input: usize, units: usize) -> LstmWeights {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut draw = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n).map(|_| rng.random_range(-0.8..0.8)).collect();
            Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
        };
        LstmWeights {
            kernel: draw(&[input, 3 * units]),
            recurrent: draw(&[units, 3 * units]),
            bias: draw(&[2, 3 * units]),
            units,
            cell: Cell::Gru,
        }
    }

    /// The GRU written out with plain loops: one row, f64, Keras's equations.
    fn gru_oracle(w: &LstmWeights, xs: &[Vec<f64>], reverse: bool) -> Vec<Vec<f64>> {
        let u = w.units;
        let k: Vec<Vec<f64>> = w.kernel.as_tensor().to_vec2().unwrap();
        let r: Vec<Vec<f64>> = w.recurrent.as_tensor().to_vec2().unwrap();
        let b: Vec<Vec<f64>> = w.bias.as_tensor().to_vec2().unwrap();
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        let mut h = vec![0.0; u];
        let mut out = vec![vec![0.0; u]; xs.len()];
        let order: Vec<usize> = if reverse {
            (0..xs.len()).rev().collect()
        } else {
            (0..xs.len()).collect()
        };
        for t in order {
            let x = &xs[t];
            let lin = |j: usize| -> (f64, f64) {
                let zx = b[0][j] + (0..x.len()).map(|i| x[i] * k[i][j]).sum::<f64>();
                let zh = b[1][j] + (0..u).map(|i| h[i] * r[i][j]).sum::<f64>();
                (zx, zh)
            };
            let mut next = vec![0.0; u];
            for j in 0..u {
                let (zx, zh) = lin(j);
                let z = sigmoid(zx + zh);
                let (rx, rh) = lin(u + j);
                let reset = sigmoid(rx + rh);
                let (cx, ch) = lin(2 * u + j);
                let candidate = (cx + reset * ch).tanh();
                next[j] = z * h[j] + (1.0 - z) * candidate;
            }
            h = next;
            out[t] = h.clone();
        }
        out
    }

    #[test]
    fn gru_matches_keras_equations_and_masks_like_the_lstm() {
        let w = gru_f64(11, 2, 3);
        let (x, ids) = example();
        for reverse in [false, true] {
            let (outs, last) = run_direction(&w, &x, &masks(&ids, 2, 3), reverse, None).unwrap();
            for row in 0..2 {
                // Row 1 has two real tokens: the oracle sees only those.
                let real = if row == 0 { 3 } else { 2 };
                let xs: Vec<Vec<f64>> = (0..real).map(|t| rows(&x[t])[row].clone()).collect();
                let want = gru_oracle(&w, &xs, reverse);
                for t in 0..real {
                    for (a, b) in rows(&outs[t])[row].iter().zip(&want[t]) {
                        assert!((a - b).abs() < 1e-12, "row {row} step {t}: {a} vs {b}");
                    }
                }
                let final_step = if reverse { 0 } else { real - 1 };
                for (a, b) in rows(&last)[row].iter().zip(&want[final_step]) {
                    assert!((a - b).abs() < 1e-12, "row {row} final state: {a} vs {b}");
                }
            }
            assert_eq!(rows(&outs[2])[1], vec![0.0; 3], "padding emits zeros");
        }
    }

    #[test]
    fn gru_gradients_match_finite_differences() {
        let (x, ids) = example();
        assert_gradients_match_finite_differences(&gru_f64(12, 2, 3), &x, &masks(&ids, 2, 3));
    }

    fn steps(values: &[Vec<Vec<f64>>]) -> Vec<Tensor> {
        // values[t][row][feature]
        values
            .iter()
            .map(|s| Tensor::new(s.clone(), &Device::Cpu).unwrap())
            .collect()
    }

    fn masks(ids: &[u32], batch: usize, time: usize) -> Vec<StepMask> {
        StepMask::from_ids(ids, batch, time, DType::F64, &Device::Cpu).unwrap()
    }

    fn rows(t: &Tensor) -> Vec<Vec<f64>> {
        t.to_vec2().unwrap()
    }

    /// A batch of two: row 0 has 3 real tokens, row 1 has 2 real tokens then padding.
    fn example() -> (Vec<Tensor>, Vec<u32>) {
        let x = steps(&[
            vec![vec![0.5, -1.0], vec![0.3, 0.2]],
            vec![vec![-0.2, 0.8], vec![-0.7, 0.1]],
            vec![vec![1.0, 0.4], vec![9.0, 9.0]], // row 1 is padding here: its value must not matter
        ]);
        (x, vec![1, 2, 3, 4, 5, 0])
    }

    #[test]
    fn extra_padding_does_not_change_the_output() {
        let w = weights_f64(1, 2, 3);
        let (x, ids) = example();
        let (_, last_padded) = run_direction(&w, &x, &masks(&ids, 2, 3), false, None).unwrap();
        // Row 1 alone, without its padding step.
        let x1: Vec<Tensor> = x[..2].iter().map(|s| s.narrow(0, 1, 1).unwrap()).collect();
        let (_, last_alone) = run_direction(&w, &x1, &masks(&[4, 5], 1, 2), false, None).unwrap();
        let a = rows(&last_padded)[1].clone();
        let b = rows(&last_alone)[0].clone();
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn backward_direction_of_a_padded_row_reads_its_real_tokens_in_reverse() {
        let w = weights_f64(2, 2, 3);
        let (x, ids) = example();
        let (out_padded, last_padded) =
            run_direction(&w, &x, &masks(&ids, 2, 3), true, None).unwrap();
        let x1: Vec<Tensor> = x[..2].iter().map(|s| s.narrow(0, 1, 1).unwrap()).collect();
        let (out_alone, last_alone) =
            run_direction(&w, &x1, &masks(&[4, 5], 1, 2), true, None).unwrap();
        assert_eq!(rows(&last_padded)[1], rows(&last_alone)[0]);
        for t in 0..2 {
            assert_eq!(rows(&out_padded[t])[1], rows(&out_alone[t])[0]);
        }
        // The padded step emits zeros.
        assert_eq!(rows(&out_padded[2])[1], vec![0.0; 3]);
    }

    #[test]
    fn an_all_padding_row_gives_zeros_not_nan() {
        let w = weights_f64(3, 2, 3);
        let (x, _) = example();
        let layer = BiLstm {
            forward: w.clone(),
            backward: weights_f64(4, 2, 3),
        };
        let ids = [1, 2, 3, 0, 0, 0];
        match layer.run(&x, &masks(&ids, 2, 3), false, None).unwrap() {
            BiOutput::Last(t) => {
                let r = rows(&t);
                assert_eq!(r[1], vec![0.0; 6]);
                assert!(r[0].iter().all(|v| v.is_finite() && *v != 0.0));
            }
            BiOutput::Sequence(_) => unreachable!(),
        }
    }

    fn loss(w: &LstmWeights, x: &[Tensor], m: &[StepMask]) -> Tensor {
        let (outs, last) = run_direction(w, x, m, false, None).unwrap();
        let (bouts, _) = run_direction(w, x, m, true, None).unwrap();
        // A loss that touches every output with distinct weights.
        let mut total = last.sqr().unwrap().sum_all().unwrap();
        for (k, o) in outs.iter().chain(&bouts).enumerate() {
            let term = o
                .affine(0.1 * (k as f64 + 1.0), 0.0)
                .unwrap()
                .sin()
                .unwrap()
                .sum_all()
                .unwrap();
            total = total.add(&term).unwrap();
        }
        total
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (x, ids) = example();
        assert_gradients_match_finite_differences(&weights_f64(5, 2, 3), &x, &masks(&ids, 2, 3));
    }

    /// Every weight's analytic gradient of [`loss`] against a central difference.
    fn assert_gradients_match_finite_differences(w: &LstmWeights, x: &[Tensor], m: &[StepMask]) {
        let grads: GradStore = loss(w, x, m).backward().unwrap();
        let eps = 1e-6;
        for (name, var) in w.vars() {
            let analytic: Vec<f64> = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let shape = var.as_tensor().shape().clone();
            for k in 0..base.len() {
                let at = |delta: f64| {
                    let mut v = base.clone();
                    v[k] += delta;
                    var.set(&Tensor::from_vec(v, &shape, &Device::Cpu).unwrap())
                        .unwrap();
                    loss(w, x, m).to_scalar::<f64>().unwrap()
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                var.set(&Tensor::from_vec(base.clone(), &shape, &Device::Cpu).unwrap())
                    .unwrap();
                assert!(
                    (numeric - analytic[k]).abs() < 1e-6 * (1.0 + numeric.abs()),
                    "{name}[{k}]: numeric {numeric} vs analytic {}",
                    analytic[k]
                );
            }
        }
    }
}
