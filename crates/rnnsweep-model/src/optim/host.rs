//! The update rules of [`super`] on host memory, one pass per variable: each element's
//! gradient, slots and weight are read once and written once, in place.
//!
//! On tensors every rule is a chain of element-wise ops (Adam: eleven), each reading and
//! writing a whole variable-sized temporary; in the trainer's profile they were 7.5 % of a
//! batch. This is the same arithmetic in the same order, in f32 as candle's f32 ops do it,
//! applied by an in-place op on the variable's own storage ([`HostUpdate`]) with the slots
//! kept as plain vectors beside it.

use std::sync::Mutex;

use candle_core::{CpuStorage, InplaceOp2, Layout};

use super::{OptimizerName, Settings, StepConstants};

/// One step's coefficients for one rule, as f32 (candle turns a tensor's f64 scalars into the
/// tensor's type the same way).
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    name: OptimizerName,
    lr: f32,
    decay: f32,
    momentum: f32,
    nesterov: bool,
    one_minus_beta_1: f32,
    one_minus_beta_2: f32,
    beta_2: f32,
    epsilon: f32,
    rho: f32,
    one_minus_rho: f32,
    centered: bool,
    /// Adam's `lr·√(1−β₂ᵗ)/(1−β₁ᵗ)`, Adamax's `lr/(1−β₁ᵗ)`.
    alpha: f32,
    /// Nadam's coefficients of `m` and `g` in `m̂`, and `1/(1−β₂ᵗ)`.
    m_coefficient: f32,
    g_coefficient: f32,
    v_scale: f32,
}

impl Rule {
    pub(super) fn new(s: &Settings, c: &StepConstants) -> Self {
        let lr = s.learning_rate;
        let step = c.step;
        let alpha = match s.name {
            OptimizerName::Adamax => lr / (1.0 - s.beta_1.powf(step)),
            _ => lr * (1.0 - s.beta_2.powf(step)).sqrt() / (1.0 - s.beta_1.powf(step)),
        };
        Self {
            name: s.name,
            lr: lr as f32,
            decay: (s.weight_decay * lr) as f32,
            momentum: s.momentum as f32,
            nesterov: s.nesterov,
            one_minus_beta_1: (1.0 - s.beta_1) as f32,
            one_minus_beta_2: (1.0 - s.beta_2) as f32,
            beta_2: s.beta_2 as f32,
            epsilon: s.epsilon as f32,
            rho: s.rho as f32,
            one_minus_rho: (1.0 - s.rho) as f32,
            centered: s.centered,
            alpha: alpha as f32,
            m_coefficient: (c.u_t1 / (1.0 - c.u_prod_t1)) as f32,
            g_coefficient: ((1.0 - c.u_t) / (1.0 - c.u_prod_t)) as f32,
            v_scale: (1.0 / (1.0 - s.beta_2.powf(step))) as f32,
        }
    }

    /// Applies the rule to `w` with gradient `g` and the variable's `slots` (in the order
    /// [`super::slot_count`] counts them), all of one length.
    pub(super) fn apply(&self, w: &mut [f32], g: &[f32], slots: &mut [&mut [f32]]) {
        let n = w.len();
        assert!(g.len() == n && slots.iter().all(|s| s.len() == n));
        if self.decay > 0.0 {
            for w in w.iter_mut() {
                *w -= *w * self.decay;
            }
        }
        let r = *self;
        match (self.name, slots) {
            (OptimizerName::Sgd, []) => {
                for (w, &g) in w.iter_mut().zip(g) {
                    *w -= g * r.lr;
                }
            }
            (OptimizerName::Sgd, [m]) => {
                for ((w, &g), m) in w.iter_mut().zip(g).zip(m.iter_mut()) {
                    *m = *m * r.momentum - g * r.lr;
                    *w += if r.nesterov {
                        *m * r.momentum - g * r.lr
                    } else {
                        *m
                    };
                }
            }
            (OptimizerName::Adam | OptimizerName::Adamw, [m, v]) => {
                for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *m += (g - *m) * r.one_minus_beta_1;
                    *v += (g * g - *v) * r.one_minus_beta_2;
                    *w -= (*m * r.alpha) / (v.sqrt() + r.epsilon);
                }
            }
            (OptimizerName::Adamax, [m, u]) => {
                for (((w, &g), m), u) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(u.iter_mut()) {
                    *m += (g - *m) * r.one_minus_beta_1;
                    *u = (*u * r.beta_2).max(g.abs());
                    *w -= (*m * r.alpha) / (*u + r.epsilon);
                }
            }
            (OptimizerName::Nadam, [m, v]) => {
                for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *m += (g - *m) * r.one_minus_beta_1;
                    *v += (g * g - *v) * r.one_minus_beta_2;
                    let m_hat = *m * r.m_coefficient + g * r.g_coefficient;
                    let v_hat = *v * r.v_scale;
                    *w -= (m_hat * r.lr) / (v_hat.sqrt() + r.epsilon);
                }
            }
            (OptimizerName::Rmsprop, slots) => {
                let (velocity, rest) = slots.split_first_mut().expect("RMSprop's velocity slot");
                let (mut momentum, mut average) = match rest {
                    [] => (None, None),
                    [one] if r.centered => (None, Some(one)),
                    [one] => (Some(one), None),
                    [m, a, ..] => (Some(m), Some(a)),
                };
                for i in 0..n {
                    let g = g[i];
                    let vel = velocity[i] * r.rho + g * g * r.one_minus_rho;
                    velocity[i] = vel;
                    let denominator = match average.as_deref_mut() {
                        Some(average) => {
                            let avg = average[i] * r.rho + g * r.one_minus_rho;
                            average[i] = avg;
                            (vel - avg * avg) + r.epsilon
                        }
                        None => vel + r.epsilon,
                    };
                    let increment = (g * r.lr) / denominator.sqrt();
                    match momentum.as_deref_mut() {
                        Some(m) => {
                            m[i] = m[i] * r.momentum + increment;
                            w[i] -= m[i];
                        }
                        None => w[i] -= increment,
                    }
                }
            }
            (OptimizerName::Adagrad, [acc]) => {
                for ((w, &g), acc) in w.iter_mut().zip(g).zip(acc.iter_mut()) {
                    *acc += g * g;
                    *w -= (g * r.lr) / (*acc + r.epsilon).sqrt();
                }
            }
            (OptimizerName::Adadelta, [acc_grad, acc_delta]) => {
                for (((w, &g), ag), ad) in w
                    .iter_mut()
                    .zip(g)
                    .zip(acc_grad.iter_mut())
                    .zip(acc_delta.iter_mut())
                {
                    *ag = *ag * r.rho + g * g * r.one_minus_rho;
                    let delta = (*ad + r.epsilon).sqrt() * g / (*ag + r.epsilon).sqrt();
                    *ad = *ad * r.rho + delta * delta * r.one_minus_rho;
                    *w -= delta * r.lr;
                }
            }
            (name, slots) => unreachable!("{name:?} with {} slots", slots.len()),
        }
    }
}

/// The most slots a rule keeps (centered RMSprop with momentum: three).
const MAX_SLOTS: usize = 3;

/// The in-place update of one f32 variable on the CPU: the whole variable, or (with `rows`)
/// only the rows listed, whose gradient is `[rows.len(), width]`.
pub(super) struct HostUpdate<'a> {
    pub rule: Rule,
    /// The variable's slots, each as long as the variable (behind a lock only because candle's
    /// in-place ops take `&self`).
    pub slots: Mutex<&'a mut [Vec<f32>]>,
    pub rows: Option<&'a [u32]>,
}

fn contiguous<'a>(what: &str, data: &'a [f32], layout: &Layout) -> candle_core::Result<&'a [f32]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("optimizer update: {what} must be contiguous"),
    }
}

impl InplaceOp2 for HostUpdate<'_> {
    fn name(&self) -> &'static str {
        "keras-optimizer-update"
    }

    fn cpu_fwd(
        &self,
        weights: &mut CpuStorage,
        weights_layout: &Layout,
        gradient: &CpuStorage,
        gradient_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(w), CpuStorage::F32(g)) = (weights, gradient) else {
            candle_core::bail!("optimizer update: the host update is for f32 variables");
        };
        let Some((start, end)) = weights_layout.contiguous_offsets() else {
            candle_core::bail!("optimizer update: the variable must be contiguous");
        };
        let w = &mut w[start..end];
        let g = contiguous("the gradient", g, gradient_layout)?;
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| candle_core::Error::Msg("optimizer update: slots poisoned".into()))?;
        let count = slots.len();
        if count > MAX_SLOTS {
            candle_core::bail!("optimizer update: {count} slots, at most {MAX_SLOTS}");
        }
        match self.rows {
            None => {
                let mut views: [&mut [f32]; MAX_SLOTS] = Default::default();
                for (view, slot) in views.iter_mut().zip(slots.iter_mut()) {
                    *view = &mut slot[..];
                }
                self.rule.apply(w, g, &mut views[..count]);
            }
            Some(rows) => {
                let width = if rows.is_empty() {
                    0
                } else {
                    g.len() / rows.len()
                };
                if width * rows.len() != g.len()
                    || rows.iter().any(|&r| (r as usize + 1) * width > w.len())
                {
                    candle_core::bail!("optimizer update: row gradient does not fit the variable");
                }
                for (k, &row) in rows.iter().enumerate() {
                    let at = row as usize * width..(row as usize + 1) * width;
                    // No allocation per row: a batch touches thousands of embedding rows.
                    let mut views: [&mut [f32]; MAX_SLOTS] = Default::default();
                    for (view, slot) in views.iter_mut().zip(slots.iter_mut()) {
                        *view = &mut slot[at.clone()];
                    }
                    let g = &g[k * width..(k + 1) * width];
                    self.rule.apply(&mut w[at], g, &mut views[..count]);
                }
            }
        }
        Ok(())
    }
}
