//! How the last BiLSTM layer's outputs become one vector per row: the final states (the
//! report's model), or a masked max, mean, both, or attention over the real steps. Written on
//! candle ops, so both LSTM paths share it and autograd differentiates it.

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::config::{attention_units, Pooling};
use crate::error::Result;
use crate::init;

/// Padded steps are pushed this far below any real value before a max or softmax.
pub const MASKED: f64 = 1e9;

/// The attention scorer's weights: `W [F, A]`, `b [A]`, `v [A, 1]`.
#[derive(Debug, Clone)]
pub struct Attention {
    pub kernel: Var,
    pub bias: Var,
    pub context: Var,
}

impl Attention {
    pub fn new(rng: &mut ChaCha8Rng, features: usize, device: &Device) -> Result<Self> {
        let a = attention_units(features);
        Ok(Self {
            kernel: Var::from_tensor(&init::glorot_uniform(rng, features, a, device)?)?,
            bias: Var::from_tensor(&Tensor::zeros(a, DType::F32, device)?)?,
            context: Var::from_tensor(&init::glorot_uniform(rng, a, 1, device)?)?,
        })
    }

    pub fn vars(&self) -> [(&'static str, &Var); 3] {
        [
            ("kernel", &self.kernel),
            ("bias", &self.bias),
            ("context", &self.context),
        ]
    }
}

/// Pools `[T, B, F]` outputs whose `[T, B, 1]` mask is 1 on real steps into `[B, F']`. A row
/// without real steps pools to zeros. `Last` is not pooled here (the LSTM returns it).
pub fn pool(
    sequence: &Tensor,
    mask: &Tensor,
    pooling: Pooling,
    attention: Option<&Attention>,
) -> Result<Tensor> {
    let mask = mask.to_dtype(sequence.dtype())?;
    let count = mask.sum(0)?; // [B, 1]
    let has_steps = count.clamp(0.0, 1.0)?;
    let mean = || -> Result<Tensor> {
        let total = sequence.broadcast_mul(&mask)?.sum(0)?;
        Ok(total.broadcast_div(&count.clamp(1.0, f64::MAX)?)?)
    };
    let max = || -> Result<Tensor> {
        // 0 on real steps, −MASKED on padding.
        let shift = mask.affine(MASKED, -MASKED)?;
        let top = sequence.broadcast_add(&shift)?.max(0)?;
        Ok(top.broadcast_mul(&has_steps)?)
    };
    match pooling {
        Pooling::Last => Err(crate::error::ModelError::Config {
            at: "pooling".into(),
            message: "`last` takes the LSTM's final states, not a pooled sequence".into(),
        }),
        Pooling::Mean => mean(),
        Pooling::Max => max(),
        Pooling::MaxMean => Ok(Tensor::cat(&[max()?, mean()?], 1)?),
        Pooling::Attention => {
            let weights = attention.ok_or_else(|| crate::error::ModelError::Config {
                at: "pooling".into(),
                message: "attention pooling without attention weights".into(),
            })?;
            let (t, b, f) = sequence.dims3()?;
            let dtype = sequence.dtype();
            let kernel = weights.kernel.as_tensor().to_dtype(dtype)?;
            let bias = weights.bias.as_tensor().to_dtype(dtype)?;
            let context = weights.context.as_tensor().to_dtype(dtype)?;
            let scores = sequence
                .reshape((t * b, f))?
                .matmul(&kernel)?
                .broadcast_add(&bias)?
                .tanh()?
                .matmul(&context)?
                .reshape((t, b, 1))?
                .add(&mask.affine(MASKED, -MASKED)?)?;
            // A softmax over the real steps of each row; an all-padding row gets all zeros.
            let top = scores.max_keepdim(0)?.detach();
            let e = scores.broadcast_sub(&top)?.exp()?.mul(&mask)?;
            let total = e.sum_keepdim(0)?.add(&(1.0 - has_steps.unsqueeze(0)?)?)?;
            let alpha = e.broadcast_div(&total)?;
            Ok(sequence.broadcast_mul(&alpha)?.sum(0)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn dev() -> Device {
        Device::Cpu
    }

    /// `[T=3, B=2, F=2]` in f64; row 1 has one real step.
    fn sample() -> (Vec<f64>, Tensor) {
        let values = vec![
            1.0, -2.0, /* b1 */ 5.0, 6.0, // t0
            3.0, -1.0, /* b1 */ 0.0, 0.0, // t1
            -4.0, -3.0, /* b1 */ 0.0, 0.0, // t2
        ];
        let mask =
            Tensor::new(&[[[1.0f64], [1.0]], [[1.0], [0.0]], [[1.0], [0.0]]], &dev()).unwrap();
        (values, mask)
    }

    fn tensor(values: &[f64]) -> Tensor {
        Tensor::from_vec(values.to_vec(), (3, 2, 2), &dev()).unwrap()
    }

    #[test]
    fn max_and_mean_cover_only_real_steps() {
        let (v, mask) = sample();
        let x = tensor(&v);
        let got = |p| -> Vec<Vec<f64>> { pool(&x, &mask, p, None).unwrap().to_vec2().unwrap() };
        // Row 0: max (3, −1), mean (0, −2). Row 1: its one step (5, 6) — padding zeros
        // would otherwise win the max of feature 0 only if it were negative, so check mean too.
        assert_eq!(got(Pooling::Max), vec![vec![3.0, -1.0], vec![5.0, 6.0]]);
        assert_eq!(got(Pooling::Mean), vec![vec![0.0, -2.0], vec![5.0, 6.0]]);
        assert_eq!(
            got(Pooling::MaxMean),
            vec![vec![3.0, -1.0, 0.0, -2.0], vec![5.0, 6.0, 5.0, 6.0]]
        );
        // A negative real value must beat padding's zeros.
        let neg: Vec<f64> = v.iter().map(|x| x - 10.0).collect();
        let top: Vec<Vec<f64>> = pool(&tensor(&neg), &mask, Pooling::Max, None)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(top[1], vec![-5.0, -4.0]);
    }

    fn attention(seed: u64) -> Attention {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a = Attention::new(&mut rng, 2, &dev()).unwrap();
        let f64_var =
            |v: &Var| Var::from_tensor(&v.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
        Attention {
            kernel: f64_var(&a.kernel),
            // A non-zero bias, so its place in the formula is checked too.
            bias: Var::from_tensor(&Tensor::new(&[0.25f64], &dev()).unwrap()).unwrap(),
            context: f64_var(&a.context),
        }
    }

    #[test]
    fn attention_is_a_softmax_weighted_mean_of_real_steps() {
        let (v, mask) = sample();
        let a = attention(3);
        let got: Vec<Vec<f64>> = pool(&tensor(&v), &mask, Pooling::Attention, Some(&a))
            .unwrap()
            .to_vec2()
            .unwrap();
        let values = |v: &Var| -> Vec<f64> {
            v.as_tensor()
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (w, b, c) = (values(&a.kernel), values(&a.bias), values(&a.context));
        // One attention unit (F/2 = 1): score = c · tanh(w0·x0 + w1·x1 + b).
        let score = |x: [f64; 2]| c[0] * (w[0] * x[0] + w[1] * x[1] + b[0]).tanh();
        let steps = [[1.0, -2.0], [3.0, -1.0], [-4.0, -3.0]];
        let e: Vec<f64> = steps.iter().map(|&x| score(x).exp()).collect();
        let z: f64 = e.iter().sum();
        for f in 0..2 {
            let want: f64 = steps.iter().zip(&e).map(|(x, e)| x[f] * e / z).sum();
            assert!((got[0][f] - want).abs() < 1e-12, "{got:?} vs {want}");
        }
        // One real step: weight 1.
        assert!((got[1][0] - 5.0).abs() < 1e-12 && (got[1][1] - 6.0).abs() < 1e-12);
    }

    #[test]
    fn a_row_without_real_steps_pools_to_zeros() {
        let x = Tensor::new(&[[[2.0f64, -1.0]], [[3.0, 4.0]]], &dev()).unwrap(); // [2, 1, 2]
        let mask = Tensor::zeros((2, 1, 1), DType::F64, &dev()).unwrap();
        let a = attention(1);
        for p in [
            Pooling::Max,
            Pooling::Mean,
            Pooling::MaxMean,
            Pooling::Attention,
        ] {
            let out: Vec<f64> = pool(&x, &mask, p, Some(&a))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(out.iter().all(|v| *v == 0.0), "{p:?}: {out:?}");
        }
    }

    /// Autograd's gradient of `Σ pooled · r` (r fixed) against central differences in f64.
    #[test]
    fn pooling_gradients_match_finite_differences() {
        let (v, mask) = sample();
        for p in [
            Pooling::Max,
            Pooling::Mean,
            Pooling::MaxMean,
            Pooling::Attention,
        ] {
            let a = attention(7);
            let x = Var::from_tensor(&tensor(&v)).unwrap();
            let loss = |x: &Tensor| -> Tensor {
                let out = pool(x, &mask, p, Some(&a)).unwrap();
                let n = out.elem_count();
                let r: Vec<f64> = (0..n).map(|k| 0.3 + 0.7 * k as f64).collect();
                let r = Tensor::from_vec(r, out.dims(), &dev()).unwrap();
                out.mul(&r).unwrap().sum_all().unwrap()
            };
            let grads = loss(x.as_tensor()).backward().unwrap();
            let analytic: Vec<f64> = grads
                .get(x.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let eps = 1e-6;
            for k in 0..v.len() {
                let mut up = v.clone();
                up[k] += eps;
                let mut down = v.clone();
                down[k] -= eps;
                let f = |vals: &[f64]| loss(&tensor(vals)).to_scalar::<f64>().unwrap();
                let numeric = (f(&up) - f(&down)) / (2.0 * eps);
                assert!(
                    (numeric - analytic[k]).abs() < 1e-6,
                    "{p:?} element {k}: numeric {numeric}, autograd {}",
                    analytic[k]
                );
            }
            if p == Pooling::Attention {
                let g = grads.get(a.kernel.as_tensor()).unwrap();
                assert!(
                    g.abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                        > 0.0
                );
            }
        }
    }
}
