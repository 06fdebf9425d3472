//! Keras's optimizers (Keras 3 update rules and defaults) as `candle_nn::Optimizer`s.
//! candle-nn has only SGD and AdamW, so all eight are written here on tensor ops; they run on
//! any device. An f32 variable on the CPU takes the same rules in one fused pass over host
//! memory instead ([`host`]). Weight decay, where set, is decoupled as in Keras:
//! `w -= w · wd · lr` first.

mod host;

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    Sgd,
    #[default]
    Adam,
    Adamw,
    Adamax,
    Nadam,
    Rmsprop,
    Adagrad,
    Adadelta,
}

impl OptimizerName {
    /// Every optimizer, in the order Keras documents them.
    pub const ALL: [OptimizerName; 8] = [
        OptimizerName::Sgd,
        OptimizerName::Adam,
        OptimizerName::Adamw,
        OptimizerName::Adamax,
        OptimizerName::Nadam,
        OptimizerName::Rmsprop,
        OptimizerName::Adagrad,
        OptimizerName::Adadelta,
    ];
}

/// An optimizer and its settings; unset settings take Keras's defaults for that optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    pub name: OptimizerName,
    pub learning_rate: Option<f64>,
    pub momentum: Option<f64>,
    pub nesterov: Option<bool>,
    pub beta_1: Option<f64>,
    pub beta_2: Option<f64>,
    pub epsilon: Option<f64>,
    pub rho: Option<f64>,
    pub centered: Option<bool>,
    pub initial_accumulator_value: Option<f64>,
    pub weight_decay: Option<f64>,
}

/// Settings with Keras's defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub name: OptimizerName,
    pub learning_rate: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub beta_1: f64,
    pub beta_2: f64,
    pub epsilon: f64,
    pub rho: f64,
    pub centered: bool,
    pub initial_accumulator_value: f64,
    pub weight_decay: f64,
}

/// Which optional settings each optimizer accepts.
fn accepted(name: OptimizerName) -> &'static [&'static str] {
    use OptimizerName::*;
    match name {
        Sgd => &["momentum", "nesterov", "weight_decay"],
        Adam | Adamax | Nadam | Adamw => &["beta_1", "beta_2", "epsilon", "weight_decay"],
        Rmsprop => &["rho", "momentum", "epsilon", "centered", "weight_decay"],
        Adagrad => &["initial_accumulator_value", "epsilon", "weight_decay"],
        Adadelta => &["rho", "epsilon", "weight_decay"],
    }
}

pub fn validate(cfg: &OptimizerConfig) -> Result<()> {
    let set: [(&str, bool); 9] = [
        ("momentum", cfg.momentum.is_some()),
        ("nesterov", cfg.nesterov.is_some()),
        ("beta_1", cfg.beta_1.is_some()),
        ("beta_2", cfg.beta_2.is_some()),
        ("epsilon", cfg.epsilon.is_some()),
        ("rho", cfg.rho.is_some()),
        ("centered", cfg.centered.is_some()),
        (
            "initial_accumulator_value",
            cfg.initial_accumulator_value.is_some(),
        ),
        ("weight_decay", cfg.weight_decay.is_some()),
    ];
    let ok = accepted(cfg.name);
    if let Some((field, _)) = set.iter().find(|(f, is_set)| *is_set && !ok.contains(f)) {
        return Err(ModelError::Config {
            at: format!("optimizer.{field}"),
            message: format!(
                "{:?} has no `{field}` setting (it takes: learning_rate, {})",
                cfg.name,
                ok.join(", ")
            )
            .to_lowercase(),
        });
    }
    let s = settings(cfg);
    let positive = [("learning_rate", s.learning_rate), ("epsilon", s.epsilon)];
    for (field, v) in positive {
        if !(v > 0.0 && v.is_finite()) {
            return Err(ModelError::Config {
                at: format!("optimizer.{field}"),
                message: format!("{v} must be > 0"),
            });
        }
    }
    let unit = [
        ("momentum", s.momentum),
        ("beta_1", s.beta_1),
        ("beta_2", s.beta_2),
        ("rho", s.rho),
    ];
    for (field, v) in unit {
        if !(0.0..1.0).contains(&v) {
            return Err(ModelError::Config {
                at: format!("optimizer.{field}"),
                message: format!("{v} is not in [0, 1)"),
            });
        }
    }
    if s.initial_accumulator_value < 0.0 || s.weight_decay < 0.0 {
        return Err(ModelError::Config {
            at: "optimizer".into(),
            message: "initial_accumulator_value and weight_decay must be ≥ 0".into(),
        });
    }
    Ok(())
}

pub fn settings(cfg: &OptimizerConfig) -> Settings {
    use OptimizerName::*;
    let default_lr = if cfg.name == Sgd { 0.01 } else { 0.001 };
    let default_rho = if cfg.name == Adadelta { 0.95 } else { 0.9 };
    let default_wd = if cfg.name == Adamw { 0.004 } else { 0.0 };
    Settings {
        name: cfg.name,
        learning_rate: cfg.learning_rate.unwrap_or(default_lr),
        momentum: cfg.momentum.unwrap_or(0.0),
        nesterov: cfg.nesterov.unwrap_or(false),
        beta_1: cfg.beta_1.unwrap_or(0.9),
        beta_2: cfg.beta_2.unwrap_or(0.999),
        epsilon: cfg.epsilon.unwrap_or(1e-7),
        rho: cfg.rho.unwrap_or(default_rho),
        centered: cfg.centered.unwrap_or(false),
        initial_accumulator_value: cfg.initial_accumulator_value.unwrap_or(0.1),
        weight_decay: cfg.weight_decay.unwrap_or(default_wd),
    }
}

/// One optimizer over a fixed list of variables, with per-variable slot tensors.
pub struct KerasOptimizer {
    settings: Settings,
    vars: Vec<Var>,
    /// `slots[i]` holds variable i's state (momentum, velocity, …), in a fixed order per kind.
    slots: Vec<VarSlots>,
    /// Completed steps (Keras `iterations`).
    iterations: u64,
    /// Nadam's running product of momentum schedule values.
    u_product: f64,
}

/// Where one variable's optimizer state lives.
enum VarSlots {
    /// Tensors beside the variable, updated by tensor ops (any device, any float type).
    Tensors(Vec<Tensor>),
    /// Plain vectors, for an f32 variable on the CPU, updated in one fused pass.
    Host(Vec<Vec<f32>>),
}

fn slot_count(s: &Settings) -> usize {
    use OptimizerName::*;
    match s.name {
        Sgd => usize::from(s.momentum != 0.0),
        Adam | Adamw | Adamax | Nadam | Adadelta => 2,
        Rmsprop => 1 + usize::from(s.momentum > 0.0) + usize::from(s.centered),
        Adagrad => 1,
    }
}

impl candle_nn::Optimizer for KerasOptimizer {
    type Config = OptimizerConfig;

    fn new(vars: Vec<Var>, config: OptimizerConfig) -> candle_core::Result<Self> {
        let settings = settings(&config);
        let initial = |k: usize| {
            if settings.name == OptimizerName::Adagrad && k == 0 {
                settings.initial_accumulator_value
            } else {
                0.0
            }
        };
        let slots = vars
            .iter()
            .map(|v| {
                let t = v.as_tensor();
                if t.device().is_cpu() && t.dtype() == DType::F32 {
                    let n = t.elem_count();
                    return Ok(VarSlots::Host(
                        (0..slot_count(&settings))
                            .map(|k| vec![initial(k) as f32; n])
                            .collect(),
                    ));
                }
                (0..slot_count(&settings))
                    .map(|k| t.ones_like()? * initial(k))
                    .collect::<candle_core::Result<Vec<_>>>()
                    .map(VarSlots::Tensors)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            settings,
            vars,
            slots,
            iterations: 0,
            u_product: 1.0,
        })
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step_with_rows(grads, &[])
    }

    fn learning_rate(&self) -> f64 {
        self.settings.learning_rate
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.settings.learning_rate = lr;
    }
}

impl KerasOptimizer {
    /// One step: every variable with a gradient in `grads` is updated whole; each of `rows`
    /// is a sparse gradient for some rows of one variable (an embedding table), and only those
    /// rows and their optimizer state change.
    pub fn step_with_rows(
        &mut self,
        grads: &GradStore,
        rows: &[(&Var, &[u32], &Tensor)],
    ) -> candle_core::Result<()> {
        let s = self.settings;
        let step = (self.iterations + 1) as f64;
        // Nadam's momentum schedule, advanced once per step for all variables.
        let constants = {
            let u_t = s.beta_1 * (1.0 - 0.5 * 0.96f64.powf(step * 0.004));
            let u_t1 = s.beta_1 * (1.0 - 0.5 * 0.96f64.powf((step + 1.0) * 0.004));
            let u_prod_t = self.u_product * u_t;
            StepConstants {
                step,
                u_t,
                u_t1,
                u_prod_t,
                u_prod_t1: u_prod_t * u_t1,
            }
        };
        let rule = host::Rule::new(&s, &constants);
        // Variables are independent: on a pool of two threads each core takes some.
        self.vars
            .par_iter()
            .zip(self.slots.par_iter_mut())
            .try_for_each(|(var, slots)| -> candle_core::Result<()> {
                let sparse = rows
                    .iter()
                    .find(|(table, ..)| table.as_tensor().id() == var.as_tensor().id());
                let (g, ids) = match sparse {
                    Some(&(_, ids, g)) => (g, Some(ids)),
                    None => match grads.get(var.as_tensor()) {
                        Some(g) => (g, None),
                        None => return Ok(()),
                    },
                };
                match slots {
                    VarSlots::Host(slots) => {
                        let g = g.detach().contiguous()?;
                        let update = host::HostUpdate {
                            rule,
                            slots: Mutex::new(&mut slots[..]),
                            rows: ids,
                        };
                        var.as_tensor().inplace_op2(&g, &update)
                    }
                    VarSlots::Tensors(slots) => match ids {
                        Some(ids) => update_rows(&s, &constants, var, ids, &g.detach(), slots),
                        None => {
                            // Updates must not record ops: slots built from tracked tensors
                            // would keep every step's whole graph alive (gigabytes per epoch).
                            let new_w = update(
                                &s,
                                &constants,
                                var.as_tensor().detach(),
                                &g.detach(),
                                slots,
                            )?;
                            var.set(&new_w)?;
                            for slot in slots.iter_mut() {
                                *slot = slot.detach();
                            }
                            Ok(())
                        }
                    },
                }
            })?;
        self.iterations += 1;
        self.u_product = constants.u_prod_t;
        Ok(())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// The optimizer's state for a checkpoint: slot tensors keyed `slot.<var>.<k>`, and the
    /// scalars that are not tensors.
    pub fn state(&self) -> Result<(HashMap<String, Tensor>, OptimizerScalars)> {
        let mut tensors = HashMap::new();
        for (i, (slots, var)) in self.slots.iter().zip(&self.vars).enumerate() {
            match slots {
                VarSlots::Tensors(slots) => {
                    for (k, t) in slots.iter().enumerate() {
                        tensors.insert(format!("slot.{i}.{k}"), t.copy()?);
                    }
                }
                VarSlots::Host(slots) => {
                    for (k, v) in slots.iter().enumerate() {
                        let t = Tensor::from_slice(v, var.shape(), &Device::Cpu)?;
                        tensors.insert(format!("slot.{i}.{k}"), t);
                    }
                }
            }
        }
        Ok((
            tensors,
            OptimizerScalars {
                iterations: self.iterations,
                u_product: self.u_product,
            },
        ))
    }

    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        scalars: OptimizerScalars,
        source: &str,
    ) -> Result<()> {
        for (i, slots) in self.slots.iter_mut().enumerate() {
            let saved = |k: usize| {
                let key = format!("slot.{i}.{k}");
                tensors.get(&key).ok_or_else(|| ModelError::Artifact {
                    path: source.to_string(),
                    message: format!("missing optimizer tensor `{key}`"),
                })
            };
            match slots {
                VarSlots::Tensors(slots) => {
                    for (k, slot) in slots.iter_mut().enumerate() {
                        *slot = saved(k)?.to_device(slot.device())?;
                    }
                }
                VarSlots::Host(slots) => {
                    for (k, slot) in slots.iter_mut().enumerate() {
                        let values: Vec<f32> =
                            saved(k)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                        if values.len() != slot.len() {
                            return Err(ModelError::Artifact {
                                path: source.to_string(),
                                message: format!(
                                    "optimizer tensor `slot.{i}.{k}` has {} values, the variable {}",
                                    values.len(),
                                    slot.len()
                                ),
                            });
                        }
                        *slot = values;
                    }
                }
            }
        }
        self.iterations = scalars.iterations;
        self.u_product = scalars.u_product;
        Ok(())
    }
}

/// What one step shares across variables: its number and Nadam's momentum schedule.
#[derive(Debug, Clone, Copy)]
struct StepConstants {
    step: f64,
    u_t: f64,
    u_t1: f64,
    u_prod_t: f64,
    u_prod_t1: f64,
}

/// One variable's update (or some rows of it, with their rows of the slots): Keras's rule
/// for `s.name`, decoupled weight decay first. Returns the new weights; `slots` are advanced.
fn update(
    s: &Settings,
    c: &StepConstants,
    w: Tensor,
    g: &Tensor,
    slots: &mut [Tensor],
) -> candle_core::Result<Tensor> {
    let lr = s.learning_rate;
    let StepConstants {
        step,
        u_t,
        u_t1,
        u_prod_t,
        u_prod_t1,
    } = *c;
    let mut w = w;
    if s.weight_decay > 0.0 {
        w = (&w - (&w * (s.weight_decay * lr))?)?;
    }
    Ok(match s.name {
        OptimizerName::Sgd => {
            if s.momentum != 0.0 {
                let m = ((&slots[0] * s.momentum)? - (g * lr)?)?;
                let w = if s.nesterov {
                    (&w + ((&m * s.momentum)? - (g * lr)?)?)?
                } else {
                    (&w + &m)?
                };
                slots[0] = m;
                w
            } else {
                (&w - (g * lr)?)?
            }
        }
        OptimizerName::Adam | OptimizerName::Adamw => {
            let alpha = lr * (1.0 - s.beta_2.powf(step)).sqrt() / (1.0 - s.beta_1.powf(step));
            let m = (&slots[0] + ((g - &slots[0])? * (1.0 - s.beta_1))?)?;
            let v = (&slots[1] + ((g.sqr()? - &slots[1])? * (1.0 - s.beta_2))?)?;
            let w = (&w - ((&m * alpha)? / (v.sqrt()? + s.epsilon)?)?)?;
            slots[0] = m;
            slots[1] = v;
            w
        }
        OptimizerName::Adamax => {
            let m = (&slots[0] + ((g - &slots[0])? * (1.0 - s.beta_1))?)?;
            let u = (&slots[1] * s.beta_2)?.maximum(&g.abs()?)?;
            let w = (&w - ((&m * (lr / (1.0 - s.beta_1.powf(step))))? / (&u + s.epsilon)?)?)?;
            slots[0] = m;
            slots[1] = u;
            w
        }
        OptimizerName::Nadam => {
            let m = (&slots[0] + ((g - &slots[0])? * (1.0 - s.beta_1))?)?;
            let v = (&slots[1] + ((g.sqr()? - &slots[1])? * (1.0 - s.beta_2))?)?;
            let m_hat =
                ((&m * (u_t1 / (1.0 - u_prod_t1)))? + (g * ((1.0 - u_t) / (1.0 - u_prod_t)))?)?;
            let v_hat = (&v / (1.0 - s.beta_2.powf(step)))?;
            let w = (&w - ((m_hat * lr)? / (v_hat.sqrt()? + s.epsilon)?)?)?;
            slots[0] = m;
            slots[1] = v;
            w
        }
        OptimizerName::Rmsprop => {
            // Slots: velocity, then momentum (if momentum > 0), then the mean gradient
            // (if centered).
            let velocity = ((&slots[0] * s.rho)? + (g.sqr()? * (1.0 - s.rho))?)?;
            let denominator = if s.centered {
                let k = 1 + usize::from(s.momentum > 0.0);
                let avg = ((&slots[k] * s.rho)? + (g * (1.0 - s.rho))?)?;
                let d = ((&velocity - avg.sqr()?)? + s.epsilon)?;
                slots[k] = avg;
                d
            } else {
                (&velocity + s.epsilon)?
            };
            let increment = ((g * lr)? / denominator.sqrt()?)?;
            slots[0] = velocity;
            if s.momentum > 0.0 {
                let m = ((&slots[1] * s.momentum)? + increment)?;
                let w = (&w - &m)?;
                slots[1] = m;
                w
            } else {
                (&w - increment)?
            }
        }
        OptimizerName::Adagrad => {
            let acc = (&slots[0] + g.sqr()?)?;
            let w = (&w - ((g * lr)? / (&acc + s.epsilon)?.sqrt()?)?)?;
            slots[0] = acc;
            w
        }
        OptimizerName::Adadelta => {
            let acc_grad = ((&slots[0] * s.rho)? + (g.sqr()? * (1.0 - s.rho))?)?;
            let delta =
                ((&slots[1] + s.epsilon)?.sqrt()? * g)?.div(&(&acc_grad + s.epsilon)?.sqrt()?)?;
            let acc_delta = ((&slots[1] * s.rho)? + (delta.sqr()? * (1.0 - s.rho))?)?;
            let w = (&w - (delta * lr)?)?;
            slots[0] = acc_grad;
            slots[1] = acc_delta;
            w
        }
    })
}

/// [`update`] on the rows `ids` of `var` and of its slots, written back in place: the cost is
/// the rows', not the table's.
fn update_rows(
    s: &Settings,
    c: &StepConstants,
    var: &Var,
    ids: &[u32],
    g: &Tensor,
    slots: &mut [Tensor],
) -> candle_core::Result<()> {
    let table = var.as_tensor();
    let device = table.device();
    let (k, e) = g.dims2()?;
    let pick = Tensor::from_vec(ids.to_vec(), k, device)?;
    let w = table.detach().index_select(&pick, 0)?;
    let mut slot_rows: Vec<Tensor> = slots
        .iter()
        .map(|slot| slot.index_select(&pick, 0))
        .collect::<candle_core::Result<_>>()?;
    let new_w = update(s, c, w, g, &mut slot_rows)?;
    // `scatter_set` along rows wants the row index repeated across each row's columns.
    let at = pick.unsqueeze(1)?.broadcast_as((k, e))?.contiguous()?;
    table.scatter_set(&at, &new_w.contiguous()?, 0)?;
    for (slot, rows) in slots.iter_mut().zip(slot_rows) {
        slot.scatter_set(&at, &rows.detach().contiguous()?, 0)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimizerScalars {
    pub iterations: u64,
    pub u_product: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::Optimizer;

    /// Runs `steps` updates on a single weight starting at 1.0 with the loss `w · g` (constant
    /// gradient g = 0.5), then one more with the loss `w²/2` (gradient w), in f64.
    fn run(cfg: OptimizerConfig) -> Vec<f64> {
        let w = Var::from_tensor(&Tensor::new(&[1.0f64], &Device::Cpu).unwrap()).unwrap();
        let mut opt = KerasOptimizer::new(vec![w.clone()], cfg).unwrap();
        let mut seen = Vec::new();
        for k in 0..3 {
            let loss = if k < 2 {
                (w.as_tensor() * 0.5).unwrap().sum_all().unwrap()
            } else {
                (w.as_tensor().sqr().unwrap() * 0.5)
                    .unwrap()
                    .sum_all()
                    .unwrap()
            };
            opt.backward_step(&loss).unwrap();
            seen.push(
                w.as_tensor()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()[0],
            );
        }
        seen
    }

    fn cfg(name: OptimizerName) -> OptimizerConfig {
        OptimizerConfig {
            name,
            ..Default::default()
        }
    }

    fn assert_close(got: Vec<f64>, want: [f64; 3]) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "got {got:?}, want {want:?}");
        }
    }

    // Expected values below were worked out by hand from Keras 3's update rules
    // (keras/src/optimizers/*.py), gradient 0.5, 0.5, then w.
    #[test]
    fn sgd_plain_momentum_and_nesterov() {
        // w1 = 1 − 0.01·0.5 = 0.995; w2 = 0.99; w3 = 0.99 − 0.01·0.99 = 0.9801
        assert_close(run(cfg(OptimizerName::Sgd)), [0.995, 0.99, 0.9801]);
        let mut c = cfg(OptimizerName::Sgd);
        c.momentum = Some(0.9);
        // m1 = −0.005, w1 = 0.995; m2 = −0.0045 − 0.005 = −0.0095, w2 = 0.9855;
        // m3 = −0.00855 − 0.009855 = −0.018405, w3 = 0.967095
        assert_close(run(c.clone()), [0.995, 0.9855, 0.967095]);
        c.nesterov = Some(true);
        // w1 = 1 + 0.9·(−0.005) − 0.005 = 0.9905; m2 = −0.0095, w2 = 0.9905 − 0.00855 − 0.005 = 0.97695
        // m3 = 0.9·(−0.0095) − 0.0097695 = −0.0183195; w3 = 0.97695 − 0.01648755 − 0.0097695 = 0.9506930
        assert_close(run(c), [0.9905, 0.97695, 0.950_692_95]);
    }

    #[test]
    fn adam_first_steps() {
        // Step 1: m = 0.05, v = 0.00025, alpha = 0.001·√0.001/0.1, w1 = 1 − alpha·m/(√v + 1e−7).
        let a1 = 0.001 * 0.001f64.sqrt() / 0.1;
        let w1 = 1.0 - a1 * 0.05 / (0.00025f64.sqrt() + 1e-7);
        let (m2, v2): (f64, f64) = (0.05 * 0.9 + 0.05, 0.00025 * 0.999 + 0.25 * 0.001);
        let a2 = 0.001 * (1.0 - 0.999f64.powi(2)).sqrt() / (1.0 - 0.81);
        let w2 = w1 - a2 * m2 / (v2.sqrt() + 1e-7);
        let got = run(cfg(OptimizerName::Adam));
        assert!(
            (got[0] - w1).abs() < 1e-15 && (got[1] - w2).abs() < 1e-15,
            "{got:?}"
        );
        // Both first steps move by (almost exactly) the learning rate.
        assert!(
            (got[0] - 0.999).abs() < 1e-7 && (got[1] - 0.998).abs() < 1e-7,
            "{got:?}"
        );
    }

    #[test]
    fn adamw_decays_weights_before_the_adam_step() {
        let got = run(cfg(OptimizerName::Adamw));
        // w1 = 1 − 1·0.004·0.001 − ≈0.001 = 0.998996
        assert!((got[0] - 0.998_996).abs() < 1e-8, "{got:?}");
    }

    #[test]
    fn adamax_first_step() {
        // m = 0.05, u = max(0, 0.5) = 0.5: w1 = 1 − 0.001/(0.1) · 0.05/(0.5 + 1e−7)
        let got = run(cfg(OptimizerName::Adamax));
        assert!(
            (got[0] - (1.0 - 0.01 * 0.05 / (0.5 + 1e-7))).abs() < 1e-15,
            "{got:?}"
        );
        // Step 2: m = 0.095, u = max(0.4995, 0.5) = 0.5, bias 1 − 0.81
        let w2 = got[0] - 0.001 / 0.19 * 0.095 / (0.5 + 1e-7);
        assert!((got[1] - w2).abs() < 1e-15);
    }

    #[test]
    fn nadam_first_step() {
        let u1 = 0.9 * (1.0 - 0.5 * 0.96f64.powf(0.004));
        let u2 = 0.9 * (1.0 - 0.5 * 0.96f64.powf(0.008));
        let m_hat = u2 * 0.05 / (1.0 - u1 * u2) + (1.0 - u1) * 0.5 / (1.0 - u1);
        let v_hat: f64 = 0.00025 / 0.001;
        let w1 = 1.0 - 0.001 * m_hat / (v_hat.sqrt() + 1e-7);
        let got = run(cfg(OptimizerName::Nadam));
        assert!((got[0] - w1).abs() < 1e-15, "{got:?} vs {w1}");
    }

    #[test]
    fn rmsprop_plain_centered_and_momentum() {
        // v1 = 0.1·0.25 = 0.025: w1 = 1 − 0.001·0.5/√(0.025 + 1e−7)
        let w1 = 1.0 - 0.0005 / (0.025f64 + 1e-7).sqrt();
        let got = run(cfg(OptimizerName::Rmsprop));
        assert!((got[0] - w1).abs() < 1e-15, "{got:?}");
        let mut c = cfg(OptimizerName::Rmsprop);
        c.centered = Some(true);
        // avg = 0.05: denominator = 0.025 − 0.0025 + 1e−7
        let got = run(c.clone());
        assert!(
            (got[0] - (1.0 - 0.0005 / (0.0225f64 + 1e-7).sqrt())).abs() < 1e-15,
            "{got:?}"
        );
        c.momentum = Some(0.5);
        // Step 2: v = 0.0475, avg = 0.095, inc = 0.0005/√(0.0475 − 0.009025 + 1e−7), m2 = 0.5·m1 + inc
        let inc1 = 0.0005 / (0.0225f64 + 1e-7).sqrt();
        let inc2 = 0.0005 / (0.0475 - 0.095f64.powi(2) + 1e-7).sqrt();
        let got = run(c);
        assert!((got[0] - (1.0 - inc1)).abs() < 1e-15);
        assert!(
            (got[1] - (1.0 - inc1 - (0.5 * inc1 + inc2))).abs() < 1e-14,
            "{got:?}"
        );
    }

    #[test]
    fn adagrad_starts_from_its_initial_accumulator() {
        // acc = 0.1 + 0.25 = 0.35: w1 = 1 − 0.0005/√(0.35 + 1e−7); acc2 = 0.6
        let w1 = 1.0 - 0.0005 / (0.35f64 + 1e-7).sqrt();
        let w2 = w1 - 0.0005 / (0.6f64 + 1e-7).sqrt();
        assert_close(
            run(cfg(OptimizerName::Adagrad)),
            [w1, w2, w2 - 0.001 * w2 / (0.6 + w2 * w2 + 1e-7f64).sqrt()],
        );
    }

    #[test]
    fn adadelta_first_step() {
        // acc_grad = 0.05·0.25 = 0.0125; delta = √(1e−7)·0.5/√(0.0125 + 1e−7); w1 = 1 − 0.001·delta
        let delta = (1e-7f64).sqrt() * 0.5 / (0.0125f64 + 1e-7).sqrt();
        let got = run(cfg(OptimizerName::Adadelta));
        assert!((got[0] - (1.0 - 0.001 * delta)).abs() < 1e-15, "{got:?}");
    }

    #[test]
    fn settings_that_do_not_belong_are_rejected() {
        let mut c = cfg(OptimizerName::Adam);
        c.rho = Some(0.5);
        let e = validate(&c).unwrap_err().to_string();
        assert_eq!(e, "optimizer.rho: adam has no `rho` setting (it takes: learning_rate, beta_1, beta_2, epsilon, weight_decay)");
        let mut c = cfg(OptimizerName::Sgd);
        c.learning_rate = Some(-1.0);
        assert_eq!(
            validate(&c).unwrap_err().to_string(),
            "optimizer.learning_rate: -1 must be > 0"
        );
    }

    /// The fused host pass (f32 on the CPU) follows the tensor rules (here in f64) for every
    /// optimizer and setting, over whole variables and over some rows of one, and its slots
    /// round-trip through a checkpoint's state.
    #[test]
    fn the_fused_host_pass_follows_the_tensor_rules() {
        use rand::{Rng, SeedableRng};
        let mut configs: Vec<OptimizerConfig> = OptimizerName::ALL.map(cfg).to_vec();
        let with = |name, f: &dyn Fn(&mut OptimizerConfig)| {
            let mut c = cfg(name);
            f(&mut c);
            c
        };
        configs.push(with(OptimizerName::Sgd, &|c| c.momentum = Some(0.9)));
        configs.push(with(OptimizerName::Sgd, &|c| {
            c.momentum = Some(0.9);
            c.nesterov = Some(true);
        }));
        configs.push(with(OptimizerName::Rmsprop, &|c| c.centered = Some(true)));
        configs.push(with(OptimizerName::Rmsprop, &|c| c.momentum = Some(0.5)));
        configs.push(with(OptimizerName::Rmsprop, &|c| {
            c.momentum = Some(0.5);
            c.centered = Some(true);
        }));
        configs.push(with(OptimizerName::Adam, &|c| c.weight_decay = Some(0.1)));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (rows, width) = (6, 5);
        for config in configs {
            let start: Vec<f64> = (0..rows * width)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let make = |dtype| {
                let t = Tensor::from_vec(start.clone(), (rows, width), &Device::Cpu).unwrap();
                Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
            };
            let (w64, w32) = (make(DType::F64), make(DType::F32));
            let mut opt64 = KerasOptimizer::new(vec![w64.clone()], config.clone()).unwrap();
            let mut opt32 = KerasOptimizer::new(vec![w32.clone()], config.clone()).unwrap();
            assert!(matches!(opt32.slots[0], VarSlots::Host(_)));
            assert!(matches!(opt64.slots[0], VarSlots::Tensors(_)));
            for step in 0..4 {
                let g: Vec<f64> = (0..rows * width)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect();
                let gradient = |dtype, n: usize| {
                    Tensor::from_vec(g[..n * width].to_vec(), (n, width), &Device::Cpu)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap()
                };
                if step % 2 == 0 {
                    let loss = |w: &Var, dtype| {
                        w.as_tensor()
                            .mul(&gradient(dtype, rows))
                            .unwrap()
                            .sum_all()
                            .unwrap()
                    };
                    opt64.backward_step(&loss(&w64, DType::F64)).unwrap();
                    opt32.backward_step(&loss(&w32, DType::F32)).unwrap();
                } else {
                    // Rows 1 and 4 only: the sparse embedding update.
                    let ids = [1u32, 4];
                    // No whole-variable gradient: only the rows move.
                    let empty = Tensor::new(0f32, &Device::Cpu).unwrap().backward().unwrap();
                    let g64 = gradient(DType::F64, 2);
                    let g32 = gradient(DType::F32, 2);
                    opt64.step_with_rows(&empty, &[(&w64, &ids, &g64)]).unwrap();
                    opt32.step_with_rows(&empty, &[(&w32, &ids, &g32)]).unwrap();
                }
                let flat = |w: &Var| -> Vec<f64> {
                    w.as_tensor()
                        .to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap()
                };
                for (a, b) in flat(&w32).iter().zip(flat(&w64)) {
                    assert!(
                        (a - b).abs() <= 2e-5 * (1.0 + b.abs()),
                        "{config:?} step {step}: {a} vs {b}"
                    );
                }
            }
            // The slots survive a checkpoint's state.
            let (tensors, scalars) = opt32.state().unwrap();
            let mut fresh = KerasOptimizer::new(vec![make(DType::F32)], config.clone()).unwrap();
            fresh.load_state(&tensors, scalars, "test").unwrap();
            let (VarSlots::Host(a), VarSlots::Host(b)) = (&opt32.slots[0], &fresh.slots[0]) else {
                panic!("host slots expected");
            };
            assert_eq!(a, b, "{config:?}");
        }
    }
}
