//! The report's network: Embedding(mask_zero) → [BiLSTM → BatchNorm]* → [Dense → Dropout]* →
//! Dense(1) logits, with Keras's initialisers and the loss Keras would compute.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Activation, EmbeddingUpdate, LstmImpl, ModelConfig, Pooling};
use crate::encoder::ViewShape;
use crate::error::{ModelError, Result};
use crate::init;
use crate::seed::mix;
use batch_norm::BatchNorm;
use dense::Dense;
use lookup::lookup;
use lstm::{time_major_mask, BiLstm, BiOutput, StepMask};
use pooling::{pool, Attention};

pub mod batch_norm;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub mod dense;
pub mod lookup;
pub mod loss;
pub mod lstm;
pub mod pooling;

/// A padded id batch on the host.
#[derive(Debug, Clone)]
pub struct IdBatch<'a> {
    /// Row-major `[batch, time]`.
    pub ids: &'a [u32],
    pub batch: usize,
    pub time: usize,
}

/// One view's tower: its embedding, recurrent stack and pooling, ending in `[batch, F]`.
#[derive(Debug, Clone)]
pub struct Tower {
    pub embedding: Var,
    /// Empty for a bag tower (the `ngram` view): its output is the mean of its real tokens'
    /// embeddings.
    pub recurrent: Vec<(BiLstm, Option<BatchNorm>)>,
    /// `Some` for attention pooling.
    pub attention: Option<Attention>,
    /// Columns of a row this tower reads, from `offset`; `None` = the rest of the row.
    pub offset: usize,
    pub width: Option<usize>,
    /// Prefix of its variables' names: empty for the first tower (so one-view models keep
    /// their names), `tower.K.` for tower K.
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct Net {
    /// One per view of the text, their pooled outputs concatenated before the dense head.
    pub towers: Vec<Tower>,
    pub dense: Vec<Dense>,
    pub output: Dense,
    pub pooling: Pooling,
    pub lstm_dropout: f64,
    pub dense_dropout: f64,
    pub embedding_dropout: f64,
    /// See [`ModelConfig::view_dropout`].
    pub view_dropout: f64,
    /// Training steps hand back the batch's embedding rows as their own variable (see
    /// [`EmbeddingRows`]) instead of differentiating the whole table.
    pub sparse_embedding: bool,
    /// Whether the recurrent layers run the fused op (the CPU kernel, or the CUDA kernels on a
    /// GPU; see [`lstm`]) rather than the reference layer.
    pub fused_lstm: bool,
    /// 1 (a sigmoid's logit) for a binary task, K (softmax logits) for K classes.
    pub outputs: usize,
    /// The K outputs are independent sigmoids (a multi-label task), not a softmax.
    pub multi_label: bool,
    pub device: Device,
}

impl Net {
    /// A freshly initialised binary network (one logit); `vocab` is the embedding's input size.
    pub fn new(cfg: &ModelConfig, vocab: usize, device: &Device) -> Result<Self> {
        Self::with_outputs(cfg, vocab, 1, device)
    }

    /// A network for a task: `outputs` logits, independent sigmoids when `multi_label`.
    pub fn for_task(
        cfg: &ModelConfig,
        vocab: usize,
        outputs: usize,
        multi_label: bool,
        device: &Device,
    ) -> Result<Self> {
        let mut net = Self::with_outputs(cfg, vocab, outputs, device)?;
        net.multi_label = multi_label;
        Ok(net)
    }

    /// A freshly initialised one-view network with `outputs` logits (1 for a sigmoid, K for a
    /// softmax).
    pub fn with_outputs(
        cfg: &ModelConfig,
        vocab: usize,
        outputs: usize,
        device: &Device,
    ) -> Result<Self> {
        Self::for_views(
            cfg,
            &[ViewShape {
                vocab,
                width: usize::MAX,
                bag: cfg.inputs.views(&cfg.tokenizer)[0].is_bag(),
            }],
            outputs,
            false,
            device,
        )
    }

    /// A network with one tower per view of the text (see [`crate::encoder`]).
    pub fn for_views(
        cfg: &ModelConfig,
        views: &[ViewShape],
        outputs: usize,
        multi_label: bool,
        device: &Device,
    ) -> Result<Self> {
        let fused_lstm = match cfg.lstm_impl {
            // The fused op runs on the CPU and, in a `cuda` build, on a CUDA device.
            LstmImpl::Auto => device.is_cpu() || device.is_cuda(),
            LstmImpl::Reference => false,
            LstmImpl::Fused if device.is_cpu() => true,
            LstmImpl::Fused => {
                return Err(ModelError::Config {
                    at: "lstm_impl".into(),
                    message: "`fused` is the CPU kernel; on a GPU use `auto` (its CUDA kernels) or `reference`"
                        .into(),
                })
            }
        };
        if views.is_empty() {
            return Err(ModelError::Config {
                at: "inputs".into(),
                message: "the network needs at least one view of the text".into(),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, 0, 0x1417));
        let mut towers = Vec::new();
        let mut offset = 0;
        for (k, view) in views.iter().enumerate() {
            // The first tower draws from the stream one-view networks always drew from, in the
            // same order, so their initial weights are what they were; a second tower has its
            // own stream.
            let mut own = ChaCha8Rng::seed_from_u64(mix(cfg.seed, k as u64, 0x1417));
            let rng = if k == 0 { &mut rng } else { &mut own };
            let embedding = Var::from_tensor(&init::uniform(
                rng,
                (view.vocab, cfg.embedding_dim),
                0.05,
                device,
            )?)?;
            let mut input = cfg.embedding_dim;
            let mut recurrent = Vec::new();
            let units_of_tower: &[usize] = if view.bag { &[] } else { &cfg.lstm_units };
            for &units in units_of_tower {
                let lstm = BiLstm::with_cell(rng, cfg.cell, input, units, device)?;
                let bn = if cfg.batch_norm {
                    Some(BatchNorm::new(2 * units, cfg.batch_norm_momentum, device)?)
                } else {
                    None
                };
                recurrent.push((lstm, bn));
                input = 2 * units;
            }
            let last = k + 1 == views.len();
            towers.push(Tower {
                embedding,
                recurrent,
                attention: None,
                offset,
                width: (!last).then_some(view.width),
                prefix: if k == 0 {
                    String::new()
                } else {
                    format!("tower.{k}.")
                },
            });
            // A one-view net's width is `usize::MAX` (the whole row).
            offset = offset.saturating_add(view.width);
        }
        let last_features = 2 * cfg.lstm_units.last().copied().unwrap_or(0);
        let mut input: usize = towers
            .iter()
            .map(|t| {
                if t.recurrent.is_empty() {
                    cfg.embedding_dim
                } else {
                    cfg.pooling.output_features(last_features)
                }
            })
            .sum();
        let mut dense = Vec::new();
        for d in &cfg.dense {
            dense.push(Dense::new(
                &mut rng,
                input,
                d.units,
                d.activation,
                d.l2,
                device,
            )?);
            input = d.units;
        }
        let output = Dense::new(
            &mut rng,
            input,
            outputs.max(1),
            Activation::Linear,
            0.0,
            device,
        )?;
        // Drawn last, so adding attention leaves every other initial weight as it was.
        if cfg.pooling == Pooling::Attention {
            for (k, tower) in towers.iter_mut().enumerate() {
                if tower.recurrent.is_empty() {
                    continue;
                }
                let mut own = ChaCha8Rng::seed_from_u64(mix(cfg.seed, k as u64, 0xA77E));
                let rng = if k == 0 { &mut rng } else { &mut own };
                tower.attention = Some(Attention::new(rng, last_features, device)?);
            }
        }
        Ok(Self {
            towers,
            dense,
            output,
            pooling: cfg.pooling,
            lstm_dropout: cfg.lstm_dropout,
            dense_dropout: cfg.dense_dropout,
            embedding_dropout: cfg.embedding_dropout,
            view_dropout: cfg.view_dropout,
            sparse_embedding: cfg.embedding_update == EmbeddingUpdate::Sparse,
            fused_lstm,
            outputs: outputs.max(1),
            multi_label,
            device: device.clone(),
        })
    }

    /// Logits `[batch]` (one output) or `[batch, K]`. `dropout_rng` is `Some` in training
    /// (dropout on, batch statistics).
    pub fn forward(&self, batch: &IdBatch, dropout_rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
        Ok(self.forward_rows(batch, dropout_rng)?.0)
    }

    /// [`Net::forward`], also handing back each tower's embedding rows of the batch when the
    /// embedding is updated sparsely in training (their gradient is the table's, row by row).
    pub fn forward_rows(
        &self,
        batch: &IdBatch,
        dropout_rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Vec<EmbeddingRows>)> {
        let mut rng = dropout_rng;
        let (mut x, rows) = self.features_rows(batch, rng.as_deref_mut())?;
        let b = batch.batch;
        for (k, d) in self.dense.iter().enumerate() {
            if k > 0 {
                if let Some(r) = rng.as_deref_mut() {
                    if self.dense_dropout > 0.0 {
                        let (_, n) = x.dims2()?;
                        x = x.mul(&keep_mask(r, b, n, self.dense_dropout, &self.device)?)?;
                    }
                }
            }
            x = d.forward(&x)?;
        }
        let logits = self.output.forward(&x)?;
        let logits = if self.outputs == 1 && !self.multi_label {
            logits.squeeze(1)?
        } else {
            logits
        };
        Ok((logits, rows))
    }

    /// What the dense head reads: each tower's pooled output, concatenated `[batch, Σ F]`
    /// (inference mode when `dropout_rng` is `None`).
    pub fn features(
        &self,
        batch: &IdBatch,
        dropout_rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        Ok(self.features_rows(batch, dropout_rng)?.0)
    }

    fn features_rows(
        &self,
        batch: &IdBatch,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Vec<EmbeddingRows>)> {
        let mut pooled = Vec::with_capacity(self.towers.len());
        let mut all_rows = Vec::new();
        for (k, tower) in self.towers.iter().enumerate() {
            // Columns that are padding in every row change nothing (masked steps keep the
            // state), so they are cut off: with post padding most batches are shorter than
            // the longest row.
            let trimmed = trim_padding_columns(batch, tower.offset, tower.width);
            let (embedded, rows) = self.embed(tower, k, &trimmed, rng.as_deref_mut())?;
            all_rows.extend(rows);
            pooled.push(if tower.recurrent.is_empty() {
                bag_mean(&trimmed, &embedded)?
            } else if self.fused_lstm {
                self.recurrent_fused(tower, &trimmed, embedded, rng.as_deref_mut())?
            } else {
                self.recurrent_reference(tower, &trimmed, embedded, rng.as_deref_mut())?
            });
        }
        if pooled.len() == 1 {
            return Ok((pooled.remove(0), all_rows));
        }
        if let Some(r) = rng {
            if self.view_dropout > 0.0 {
                for (k, keep) in view_keep_masks(r, batch.batch, pooled.len(), self.view_dropout)
                    .into_iter()
                    .enumerate()
                {
                    let keep = Tensor::from_vec(keep, (batch.batch, 1), &self.device)?;
                    pooled[k] = pooled[k].broadcast_mul(&keep)?;
                }
            }
        }
        Ok((Tensor::cat(&pooled, 1)?, all_rows))
    }

    /// The embedded batch, time-major `[time, batch, E]`, with embedding dropout in training.
    fn embed(
        &self,
        tower: &Tower,
        index: usize,
        trimmed: &Trimmed,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Result<(Tensor, Option<EmbeddingRows>)> {
        let (b, t) = (trimmed.batch, trimmed.time);
        let time_major_ids: Vec<u32> = (0..t)
            .flat_map(|s| (0..b).map(move |r| trimmed.ids[r * t + s]))
            .collect();
        let table = tower.embedding.as_tensor();
        let e = table.dim(1)?;
        let (x, rows) = if self.sparse_embedding && rng.is_some() {
            let mut unique = time_major_ids.clone();
            unique.sort_unstable();
            unique.dedup();
            let position: HashMap<u32, u32> = unique
                .iter()
                .enumerate()
                .map(|(k, &id)| (id, k as u32))
                .collect();
            let compact: Vec<u32> = time_major_ids.iter().map(|id| position[id]).collect();
            let gathered = lookup(&table.detach(), unique.clone())?;
            let rows = Var::from_tensor(&gathered)?;
            let x = lookup(rows.as_tensor(), compact)?;
            (
                x,
                Some(EmbeddingRows {
                    tower: index,
                    ids: unique,
                    rows,
                }),
            )
        } else {
            (lookup(table, time_major_ids)?, None)
        };
        let mut x = x.reshape((t, b, e))?;
        if let Some(r) = rng {
            if self.embedding_dropout > 0.0 {
                // One draw per token (batch-major), the same whichever LSTM path runs.
                let keep = keep_mask(r, b, t, self.embedding_dropout, &self.device)?;
                x = x.broadcast_mul(&keep.t()?.unsqueeze(2)?)?;
            }
        }
        Ok((x, rows))
    }

    /// Turns the last layer's `[time, batch, 2U]` outputs into `[batch, F]`.
    fn pool_sequence(&self, tower: &Tower, sequence: &Tensor, mask: &Tensor) -> Result<Tensor> {
        pool(sequence, mask, self.pooling, tower.attention.as_ref())
    }

    /// The LSTM stack with the reference layer, on time-major lists of steps. Returns the
    /// pooled last layer `[batch, F]`.
    fn recurrent_reference(
        &self,
        tower: &Tower,
        trimmed: &Trimmed,
        embedded: Tensor,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let train = rng.is_some();
        let (b, t) = (trimmed.batch, trimmed.time);
        let ids = &trimmed.ids;
        let masks = StepMask::from_ids(ids, b, t, DType::F32, &self.device)?;
        let mut steps: Vec<Tensor> = (0..t)
            .map(|s| embedded.get(s))
            .collect::<candle_core::Result<_>>()?;
        let layers = tower.recurrent.len();
        let pooled = self.pooling.needs_sequence();
        for (k, (lstm, bn)) in tower.recurrent.iter().enumerate() {
            let last = k + 1 == layers;
            let dropout = self.lstm_dropout_masks(rng.as_deref_mut(), b, steps[0].dim(1)?)?;
            let sequences = !last || pooled;
            match lstm.run(
                &steps,
                &masks,
                sequences,
                dropout.as_ref().map(|(f, w)| (f, w)),
            )? {
                BiOutput::Sequence(seq) => {
                    steps = match bn {
                        Some(bn) => bn.apply(&seq, Some(&masks), train)?,
                        None => seq,
                    };
                    if last {
                        let mask = Tensor::stack(
                            &masks.iter().map(|m| m.tensor.clone()).collect::<Vec<_>>(),
                            0,
                        )?;
                        return self.pool_sequence(tower, &Tensor::stack(&steps, 0)?, &mask);
                    }
                }
                BiOutput::Last(x) => {
                    return Ok(match bn {
                        Some(bn) => bn.apply(&[x], None, train)?.remove(0),
                        None => x,
                    });
                }
            }
        }
        Err(no_lstm_layer())
    }

    /// The LSTM stack with the fused CPU kernel, on whole `[time, batch, features]` tensors.
    /// Draws the same dropout masks in the same order as [`Net::recurrent_reference`].
    fn recurrent_fused(
        &self,
        tower: &Tower,
        trimmed: &Trimmed,
        embedded: Tensor,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Result<Tensor> {
        let train = rng.is_some();
        let (b, t) = (trimmed.batch, trimmed.time);
        let ids = &trimmed.ids;
        let mask = time_major_mask(ids, b, t);
        let real = mask.iter().filter(|&&m| m == 1).count();
        let mask_tensor = Tensor::from_vec(
            mask.iter().map(|&m| f32::from(m)).collect::<Vec<_>>(),
            (t, b, 1),
            &self.device,
        )?;
        let mut x = embedded;
        let layers = tower.recurrent.len();
        let pooled = self.pooling.needs_sequence();
        for (k, (lstm, bn)) in tower.recurrent.iter().enumerate() {
            let last = k + 1 == layers;
            let dropout = self.lstm_dropout_masks(rng.as_deref_mut(), b, x.dim(2)?)?;
            let dropout = dropout.as_ref().map(|(f, w)| (f, w));
            let out = lstm.run_fused(&x, &mask, !last || pooled, dropout, train)?;
            if last && !pooled {
                return match bn {
                    Some(bn) => bn
                        .apply_sequence(&out.unsqueeze(0)?, None, train)?
                        .squeeze(0),
                    None => Ok(out),
                }
                .map_err(Into::into);
            }
            x = match bn {
                Some(bn) => bn.apply_sequence(&out, Some((&mask_tensor, real)), train)?,
                None => out,
            };
            if last {
                return self.pool_sequence(tower, &x, &mask_tensor);
            }
        }
        Err(no_lstm_layer())
    }

    /// Keras's LSTM input dropout: one keep mask per direction, the same for every step.
    fn lstm_dropout_masks(
        &self,
        rng: Option<&mut ChaCha8Rng>,
        batch: usize,
        input: usize,
    ) -> Result<Option<(Tensor, Tensor)>> {
        match rng {
            Some(r) if self.lstm_dropout > 0.0 => Ok(Some((
                keep_mask(r, batch, input, self.lstm_dropout, &self.device)?,
                keep_mask(r, batch, input, self.lstm_dropout, &self.device)?,
            ))),
            _ => Ok(None),
        }
    }

    /// `Σ l2 · ‖W‖²` over the dense kernels, as Keras adds it to the loss.
    pub fn l2_penalty(&self) -> Result<Tensor> {
        let mut total = Tensor::zeros((), DType::F32, &self.device)?;
        for d in self.dense.iter().filter(|d| d.l2 > 0.0) {
            total = total.add(&(d.kernel.as_tensor().sqr()?.sum_all()? * d.l2)?)?;
        }
        Ok(total)
    }

    /// Trainable variables with stable names (the safetensors keys).
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for tower in &self.towers {
            let p = &tower.prefix;
            out.push((format!("{p}embedding"), tower.embedding.clone()));
            for (k, (lstm, bn)) in tower.recurrent.iter().enumerate() {
                for (dir, w) in [("forward", &lstm.forward), ("backward", &lstm.backward)] {
                    for (name, v) in w.vars() {
                        out.push((format!("{p}lstm.{k}.{dir}.{name}"), v.clone()));
                    }
                }
                if let Some(bn) = bn {
                    out.push((format!("{p}lstm.{k}.bn.gamma"), bn.gamma.clone()));
                    out.push((format!("{p}lstm.{k}.bn.beta"), bn.beta.clone()));
                }
            }
        }
        for (k, d) in self.dense.iter().enumerate() {
            out.push((format!("dense.{k}.kernel"), d.kernel.clone()));
            out.push((format!("dense.{k}.bias"), d.bias.clone()));
        }
        out.push(("output.kernel".into(), self.output.kernel.clone()));
        out.push(("output.bias".into(), self.output.bias.clone()));
        for tower in &self.towers {
            if let Some(a) = &tower.attention {
                for (name, v) in a.vars() {
                    out.push((format!("{}pool.attention.{name}", tower.prefix), v.clone()));
                }
            }
        }
        out
    }

    /// Non-trainable state saved with the weights (BatchNorm moving statistics).
    pub fn buffers(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for tower in &self.towers {
            let p = &tower.prefix;
            for (k, (_, bn)) in tower.recurrent.iter().enumerate() {
                if let Some(bn) = bn {
                    out.push((
                        format!("{p}lstm.{k}.bn.moving_mean"),
                        bn.moving_mean.clone(),
                    ));
                    out.push((
                        format!("{p}lstm.{k}.bn.moving_variance"),
                        bn.moving_variance.clone(),
                    ));
                }
            }
        }
        out
    }

    /// All weights and buffers as detached copies.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        self.trainable()
            .into_iter()
            .chain(self.buffers())
            .map(|(k, v)| Ok((k, v.as_tensor().copy()?)))
            .collect()
    }

    /// Loads weights and buffers; every variable must be present with the same shape.
    pub fn load_state(&self, state: &HashMap<String, Tensor>, source: &str) -> Result<()> {
        for (name, var) in self.trainable().into_iter().chain(self.buffers()) {
            let t = state.get(&name).ok_or_else(|| ModelError::Artifact {
                path: source.to_string(),
                message: format!("missing tensor `{name}`"),
            })?;
            if t.dims() != var.as_tensor().dims() {
                return Err(ModelError::Artifact {
                    path: source.to_string(),
                    message: format!(
                        "tensor `{name}` has shape {:?}, the model expects {:?}",
                        t.dims(),
                        var.as_tensor().dims()
                    ),
                });
            }
            var.set(&t.to_dtype(DType::F32)?.to_device(&self.device)?)?;
        }
        Ok(())
    }
}

/// The embedding rows of one training batch's words in one tower, as their own variable: the
/// loss's gradient with respect to `rows` is the table's, which is zero everywhere else.
#[derive(Debug, Clone)]
pub struct EmbeddingRows {
    /// Which tower's table (an index into [`Net::towers`]).
    pub tower: usize,
    /// Distinct word ids of the batch, ascending; `rows` row k is word `ids[k]`.
    pub ids: Vec<u32>,
    pub rows: Var,
}

struct Trimmed {
    ids: Vec<u32>,
    batch: usize,
    time: usize,
}

/// A bag tower's output: the mean of each row's real tokens' embeddings `[batch, E]` (zeros for
/// a row without any), the same on both recurrent paths.
fn bag_mean(trimmed: &Trimmed, embedded: &Tensor) -> Result<Tensor> {
    let (b, t) = (trimmed.batch, trimmed.time);
    let mask: Vec<f32> = time_major_mask(&trimmed.ids, b, t)
        .into_iter()
        .map(f32::from)
        .collect();
    let mask = Tensor::from_vec(mask, (t, b, 1), embedded.device())?;
    pool(embedded, &mask, Pooling::Mean, None)
}

fn no_lstm_layer() -> ModelError {
    ModelError::Config {
        at: "lstm_units".into(),
        message: "the network needs at least one LSTM layer".into(),
    }
}

/// One tower's columns of the batch (`width` from `offset`, or the rest of each row), with the
/// columns that are padding in every row cut off at both ends.
fn trim_padding_columns(batch: &IdBatch, offset: usize, width: Option<usize>) -> Trimmed {
    let (b, row) = (batch.batch, batch.time);
    let start = offset.min(row);
    let t = width.map_or(row - start, |w| w.min(row - start));
    let id = |r: usize, c: usize| batch.ids[r * row + start + c];
    let used = |c: usize| (0..b).any(|r| id(r, c) != 0);
    let lo = (0..t).find(|&c| used(c)).unwrap_or(0);
    let hi = (0..t)
        .rev()
        .find(|&c| used(c))
        .map_or(lo + 1, |c| c + 1)
        .min(t.max(1));
    let time = hi.saturating_sub(lo).max(1);
    let mut ids = Vec::with_capacity(b * time);
    for r in 0..b {
        for c in lo..lo + time {
            ids.push(if c < t { id(r, c) } else { 0 });
        }
    }
    Trimmed {
        ids,
        batch: b,
        time,
    }
}

/// Per tower, each row's factor for its pooled features under view dropout: with
/// probability `p` a row keeps one tower (uniformly chosen) and the others are 0; a kept
/// tower's factor is 1 / P(kept) = 1 / (1 − p + p/n), so its expected contribution is as without.
fn view_keep_masks(rng: &mut ChaCha8Rng, rows: usize, towers: usize, p: f64) -> Vec<Vec<f32>> {
    let scale = (1.0 / (1.0 - p + p / towers as f64)) as f32;
    let mut masks = vec![vec![scale; rows]; towers];
    for r in 0..rows {
        if rng.random::<f64>() < p {
            let only = rng.random_range(0..towers);
            for (k, mask) in masks.iter_mut().enumerate() {
                if k != only {
                    mask[r] = 0.0;
                }
            }
        }
    }
    masks
}

/// An inverted-dropout keep mask `[rows, cols]`: 0 with probability p, else 1/(1-p).
fn keep_mask(
    rng: &mut ChaCha8Rng,
    rows: usize,
    cols: usize,
    p: f64,
    device: &Device,
) -> Result<Tensor> {
    let scale = (1.0 / (1.0 - p)) as f32;
    let data: Vec<f32> = (0..rows * cols)
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { scale })
        .collect();
    Ok(Tensor::from_vec(data, (rows, cols), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EmbeddingUpdate, InputView, LstmImpl};
    use crate::nn::dense::activate;
    use crate::nn::loss::{bce_with_logits, softmax_cross_entropy};

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn bce_is_finite_for_huge_logits_and_matches_the_formula() {
        let l: Vec<f32> = bce_with_logits(
            &t(&[0.0, 2.0, -2.0, 1000.0, -1000.0]),
            &t(&[1.0, 1.0, 0.0, 0.0, 1.0]),
        )
        .unwrap()
        .to_vec1()
        .unwrap();
        let ln2 = std::f32::consts::LN_2;
        assert!((l[0] - ln2).abs() < 1e-6);
        assert!((l[1] - (1.0 + (-2.0f32).exp()).ln()).abs() < 1e-6);
        assert!((l[2] - (1.0 + (-2.0f32).exp()).ln()).abs() < 1e-6);
        assert_eq!(l[3], 1000.0);
        assert_eq!(l[4], 1000.0);
    }

    #[test]
    fn class_weighted_softmax_cross_entropy_and_its_gradient_match_the_formula() {
        // Rows z = [1, 2, 0] (class 1, weight 2) and [0, 0, 3] (class 0, weight 0.5):
        // loss_r = logsumexp(z) − z_y; mean of w·loss over the batch, as Keras reduces it.
        let z = Var::from_tensor(
            &Tensor::from_vec(vec![1f32, 2.0, 0.0, 0.0, 0.0, 3.0], (2, 3), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let one_hot =
            Tensor::from_vec(vec![0f32, 1.0, 0.0, 1.0, 0.0, 0.0], (2, 3), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(vec![2f32, 0.5], 2, &Device::Cpu).unwrap();
        let per_row = softmax_cross_entropy(z.as_tensor(), &one_hot).unwrap();
        let loss = (per_row.mul(&w).unwrap().sum_all().unwrap() / 2.0).unwrap();
        let lse = |r: [f64; 3]| r.iter().map(|v| v.exp()).sum::<f64>().ln();
        let (l0, l1) = (lse([1.0, 2.0, 0.0]) - 2.0, lse([0.0, 0.0, 3.0]));
        let want = (2.0 * l0 + 0.5 * l1) / 2.0;
        let got = f64::from(loss.to_scalar::<f32>().unwrap());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // d loss / d z = w_r · (softmax(z_r) − y_r) / batch.
        let grads = loss.backward().unwrap();
        let g: Vec<f32> = grads
            .get(z.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let softmax = |r: [f64; 3]| {
            let t = r.iter().map(|v| v.exp()).sum::<f64>();
            r.map(|v| v.exp() / t)
        };
        let (s0, s1) = (softmax([1.0, 2.0, 0.0]), softmax([0.0, 0.0, 3.0]));
        let want = [
            s0[0],
            s0[1] - 1.0,
            s0[2],
            (s1[0] - 1.0) / 4.0,
            s1[1] / 4.0,
            s1[2] / 4.0,
        ];
        for (i, (g, w)) in g.iter().zip(want).enumerate() {
            assert!((f64::from(*g) - w).abs() < 1e-5, "gradient {i}: {g} vs {w}");
        }
    }

    #[test]
    fn activations_match_keras_values() {
        let z = t(&[-2.0, 0.0, 1.5]);
        let get = |a| activate(&z, a).unwrap().to_vec1::<f32>().unwrap();
        let close = |a: Vec<f32>, b: [f32; 3]| {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
            }
        };
        close(get(Activation::HardSigmoid), [1.0 / 6.0, 0.5, 0.75]);
        close(get(Activation::Softsign), [-2.0 / 3.0, 0.0, 0.6]);
        close(
            get(Activation::Softplus),
            [0.126_928, std::f32::consts::LN_2, 1.701_413],
        );
        close(get(Activation::Selu), [-1.520_166_3, 0.0, 1.576_051_5]);
        close(get(Activation::Elu), [-0.864_664_7, 0.0, 1.5]);
        close(get(Activation::Gelu), [-0.045_500_26, 0.0, 1.399_799]);
        close(get(Activation::Swish), [-0.238_405_84, 0.0, 1.226_361_5]);
    }

    fn small_net(batch_norm: bool) -> Net {
        let cfg = ModelConfig {
            embedding_dim: 4,
            lstm_units: vec![3, 2],
            dense: vec![crate::config::DenseConfig {
                units: 5,
                activation: Activation::Tanh,
                l2: 0.1,
            }],
            batch_norm,
            seed: 9,
            ..ModelConfig::default()
        };
        Net::new(&cfg, 10, &Device::Cpu).unwrap()
    }

    #[test]
    fn predictions_batched_longest_first_come_back_in_row_order() {
        let net = small_net(true);
        // Five rows of lengths 1, 4, 0, 2, 3 (post padding, length 4).
        let ids: Vec<u32> = vec![
            7, 0, 0, 0, //
            1, 2, 3, 4, //
            0, 0, 0, 0, //
            5, 6, 0, 0, //
            8, 9, 1, 0,
        ];
        let padded = crate::encoder::Padded {
            ids: ids.clone(),
            rows: 5,
            len: 4,
        };
        let together = crate::train::predict::predict_logits(&net, &padded, 2).unwrap();
        for r in 0..5 {
            let alone = net
                .forward(
                    &IdBatch {
                        ids: &ids[r * 4..(r + 1) * 4],
                        batch: 1,
                        time: 4,
                    },
                    None,
                )
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[0];
            assert!(
                (together[r] - alone).abs() < 1e-5,
                "row {r}: {} batched, {alone} alone",
                together[r]
            );
        }
    }

    #[test]
    fn padding_more_does_not_change_eval_logits() {
        let net = small_net(true);
        let short = [1u32, 2, 3, 4, 5, 0];
        let long = [1u32, 2, 3, 0, 0, 4, 5, 0, 0, 0];
        let a: Vec<f32> = net
            .forward(
                &IdBatch {
                    ids: &short,
                    batch: 2,
                    time: 3,
                },
                None,
            )
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = net
            .forward(
                &IdBatch {
                    ids: &long,
                    batch: 2,
                    time: 5,
                },
                None,
            )
            .unwrap()
            .to_vec1()
            .unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn empty_row_does_not_produce_nan() {
        let net = small_net(true);
        let ids = [0u32, 0, 0, 1, 2, 3];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let train: Vec<f32> = net
            .forward(
                &IdBatch {
                    ids: &ids,
                    batch: 2,
                    time: 3,
                },
                Some(&mut rng),
            )
            .unwrap()
            .to_vec1()
            .unwrap();
        let eval: Vec<f32> = net
            .forward(
                &IdBatch {
                    ids: &ids,
                    batch: 2,
                    time: 3,
                },
                None,
            )
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            train.iter().chain(&eval).all(|v| v.is_finite()),
            "{train:?} {eval:?}"
        );
    }

    /// Every weight and BatchNorm statistic, as Keras's "Total params" counts them.
    fn weight_count(net: &Net) -> usize {
        net.trainable()
            .iter()
            .chain(net.buffers().iter())
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    #[test]
    fn the_cost_estimate_counts_every_weight_the_net_has() {
        let cfg = ModelConfig {
            embedding_dim: 6,
            lstm_units: vec![5, 3],
            dense: vec![
                crate::config::DenseConfig {
                    units: 4,
                    activation: Default::default(),
                    l2: 0.0,
                },
                crate::config::DenseConfig {
                    units: 2,
                    activation: Default::default(),
                    l2: 0.0,
                },
            ],
            ..ModelConfig::default()
        };
        let net = Net::new(&cfg, 30, &Device::Cpu).unwrap();
        let counted = weight_count(&net);
        // By hand: embedding 30·6 = 180; LSTM 1: 2·(4·5·(6+5) + 20) = 480, BN 40;
        // LSTM 2: 2·(4·3·(10+3) + 12) = 336, BN 24; dense 6·4+4 = 28, 4·2+2 = 10; out 2+1 = 3.
        assert_eq!(cfg.cost(30, 7).parameters, 1101);
        assert_eq!(counted, 1101);
        // Forward FLOPs per row at 7 steps: LSTMs 2·2·4·5·11·7 + 2·2·4·3·13·7, dense 2·(24+8), out 2·2.
        assert_eq!(
            cfg.cost(30, 7).forward_flops_per_row,
            6160.0 + 4368.0 + 64.0 + 4.0
        );
    }

    #[test]
    fn the_cost_estimate_counts_a_grus_three_gates_and_two_biases() {
        let cfg = ModelConfig {
            embedding_dim: 6,
            lstm_units: vec![5, 3],
            cell: crate::config::Cell::Gru,
            dense: vec![crate::config::DenseConfig {
                units: 4,
                activation: Default::default(),
                l2: 0.0,
            }],
            ..ModelConfig::default()
        };
        let net = Net::new(&cfg, 30, &Device::Cpu).unwrap();
        let counted = weight_count(&net);
        // Embedding 180; GRU 1: 2·(3·5·(6+5) + 2·15) = 390, BN 40; GRU 2: 2·(3·3·(10+3) + 2·9)
        // = 270, BN 24; dense 6·4+4 = 28; out 4+1 = 5.
        assert_eq!(cfg.cost(30, 7).parameters, 937);
        assert_eq!(counted, 937);
    }

    #[test]
    fn batch_norm_normalises_real_steps_in_training_and_uses_moving_stats_in_eval() {
        let bn = BatchNorm::new(2, 0.99, &Device::Cpu).unwrap();
        let dev = Device::Cpu;
        // Two steps, batch 2; row 1 is padding at step 1 (its value is zero, as LSTM output is).
        let steps = vec![
            Tensor::new(&[[1.0f32, 10.0], [3.0, 20.0]], &dev).unwrap(),
            Tensor::new(&[[5.0f32, 30.0], [0.0, 0.0]], &dev).unwrap(),
        ];
        let masks = StepMask::from_ids(&[1, 1, 1, 0], 2, 2, DType::F32, &dev).unwrap();
        let out = bn.apply(&steps, Some(&masks), true).unwrap();
        // Real values of feature 0: 1, 3, 5 → mean 3, biased var 8/3.
        let s = (8.0f32 / 3.0 + 1e-3).sqrt();
        let got: Vec<Vec<f32>> = out[0].to_vec2().unwrap();
        assert!((got[0][0] - (1.0 - 3.0) / s).abs() < 1e-5);
        assert!((got[1][0] - 0.0).abs() < 1e-5);
        assert_eq!(out[1].to_vec2::<f32>().unwrap()[1], vec![0.0, 0.0]);
        // Moving mean: 0.99·0 + 0.01·3; moving variance: 0.99·1 + 0.01·8/3.
        let mm: Vec<f32> = bn.moving_mean.as_tensor().to_vec1().unwrap();
        let mv: Vec<f32> = bn.moving_variance.as_tensor().to_vec1().unwrap();
        assert!(
            (mm[0] - 0.03).abs() < 1e-6 && (mm[1] - 0.2).abs() < 1e-6,
            "{mm:?}"
        );
        assert!((mv[0] - (0.99 + 0.01 * 8.0 / 3.0)).abs() < 1e-6, "{mv:?}");
        // Eval uses the moving statistics and changes nothing.
        let eval = bn.apply(&steps, Some(&masks), false).unwrap();
        let e: Vec<Vec<f32>> = eval[0].to_vec2().unwrap();
        assert!((e[0][0] - (1.0 - 0.03) / (mv[0] + 1e-3).sqrt()).abs() < 1e-5);
        assert_eq!(bn.moving_mean.as_tensor().to_vec1::<f32>().unwrap(), mm);
    }

    #[test]
    fn l2_penalty_sums_scaled_squared_kernels() {
        let net = small_net(false);
        let w: Vec<f32> = net.dense[0]
            .kernel
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = 0.1 * w.iter().map(|x| x * x).sum::<f32>();
        let got: f32 = net.l2_penalty().unwrap().to_scalar().unwrap();
        assert!((got - want).abs() < 1e-6);
    }

    fn pooled_net(pooling: Pooling, lstm_impl: LstmImpl, update: EmbeddingUpdate) -> Net {
        pooled_net_of(crate::config::Cell::Lstm, pooling, lstm_impl, update)
    }

    fn pooled_net_of(
        cell: crate::config::Cell,
        pooling: Pooling,
        lstm_impl: LstmImpl,
        update: EmbeddingUpdate,
    ) -> Net {
        Net::new(
            &pooled_cfg(cell, pooling, lstm_impl, update),
            12,
            &Device::Cpu,
        )
        .unwrap()
    }

    fn pooled_cfg(
        cell: crate::config::Cell,
        pooling: Pooling,
        lstm_impl: LstmImpl,
        update: EmbeddingUpdate,
    ) -> ModelConfig {
        ModelConfig {
            cell,
            embedding_dim: 5,
            lstm_units: vec![4, 3],
            dense: vec![crate::config::DenseConfig {
                units: 4,
                activation: Activation::Tanh,
                l2: 0.0,
            }],
            batch_norm: true,
            embedding_dropout: 0.2,
            pooling,
            lstm_impl,
            embedding_update: update,
            seed: 21,
            ..ModelConfig::default()
        }
    }

    /// Rows of lengths 4, 2, 0 and 3 with post padding, plus a pre-padded one.
    const IDS: [u32; 25] = [
        3, 1, 4, 1, 5, //
        9, 2, 0, 0, 0, //
        0, 0, 0, 0, 0, //
        6, 5, 3, 0, 0, //
        0, 0, 11, 7, 8,
    ];

    /// Logits and every weight's gradient of one training forward pass with a fixed seed.
    fn logits_and_grads(net: &Net) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
        logits_and_grads_of(net, &IDS, 5)
    }

    fn logits_and_grads_of(
        net: &Net,
        ids: &[u32],
        time: usize,
    ) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let batch = IdBatch {
            ids,
            batch: 5,
            time,
        };
        let (logits, rows) = net.forward_rows(&batch, Some(&mut rng)).unwrap();
        let weights = Tensor::new(&[0.3f32, -1.1, 0.7, 2.0, -0.4], &Device::Cpu).unwrap();
        let grads = logits
            .mul(&weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        // A sparse tower's row gradient is scattered into a table of zeros: the dense gradient.
        let out: Vec<(String, Vec<f32>)> = net
            .trainable()
            .into_iter()
            .map(|(name, v)| {
                let sparse = rows
                    .iter()
                    .find(|r| name == format!("{}embedding", net.towers[r.tower].prefix));
                let g = match sparse {
                    Some(r) => {
                        let (vocab, e) = v.as_tensor().dims2().unwrap();
                        let g: Vec<f32> = grads
                            .get(r.rows.as_tensor())
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1()
                            .unwrap();
                        let mut table = vec![0f32; vocab * e];
                        for (k, &id) in r.ids.iter().enumerate() {
                            table[id as usize * e..(id as usize + 1) * e]
                                .copy_from_slice(&g[k * e..(k + 1) * e]);
                        }
                        table
                    }
                    None => grads
                        .get(v.as_tensor())
                        .map(|g| g.flatten_all().unwrap().to_vec1().unwrap())
                        .unwrap_or_else(|| vec![0.0; v.elem_count()]),
                };
                (name, g)
            })
            .collect();
        (logits.to_vec1().unwrap(), out)
    }

    fn assert_close(what: &str, a: &[f32], b: &[f32], tolerance: f32) {
        let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tolerance * scale,
                "{what}[{k}]: {x} vs {y} (scale {scale})"
            );
        }
        assert_eq!(a.len(), b.len(), "{what}");
    }

    #[test]
    fn every_pooling_gives_the_same_logits_and_gradients_on_both_lstm_paths() {
        use crate::config::Cell;
        for (cell, pooling) in [
            (Cell::Lstm, Pooling::Last),
            (Cell::Lstm, Pooling::Max),
            (Cell::Lstm, Pooling::Mean),
            (Cell::Lstm, Pooling::MaxMean),
            (Cell::Lstm, Pooling::Attention),
            (Cell::Gru, Pooling::Last),
            (Cell::Gru, Pooling::MaxMean),
        ] {
            let net = |lstm_impl| pooled_net_of(cell, pooling, lstm_impl, EmbeddingUpdate::Dense);
            let (reference, fused) = (net(LstmImpl::Reference), net(LstmImpl::Fused));
            let pooling = format!("{cell:?} {pooling:?}");
            let (lr, gr) = logits_and_grads(&reference);
            let (lf, gf) = logits_and_grads(&fused);
            assert_close(&format!("{pooling} logits"), &lf, &lr, 1e-4);
            for ((name, a), (_, b)) in gf.iter().zip(&gr) {
                assert_close(&format!("{pooling} d{name}"), a, b, 1e-3);
            }
            assert!(
                gr.iter().all(|(_, g)| g.iter().any(|v| *v != 0.0)),
                "{pooling}: every weight gets a gradient"
            );
            let eval = |net: &Net| -> Vec<f32> {
                net.forward(
                    &IdBatch {
                        ids: &IDS,
                        batch: 5,
                        time: 5,
                    },
                    None,
                )
                .unwrap()
                .to_vec1()
                .unwrap()
            };
            assert_close(
                &format!("{pooling} eval"),
                &eval(&fused),
                &eval(&reference),
                1e-4,
            );
            assert!(eval(&fused)[2].is_finite(), "an empty row stays finite");
        }
    }

    #[test]
    fn the_sparse_embedding_gradient_is_the_dense_one_row_by_row() {
        for pooling in [Pooling::Last, Pooling::Attention] {
            let dense = pooled_net(pooling, LstmImpl::Fused, EmbeddingUpdate::Dense);
            let sparse = pooled_net(pooling, LstmImpl::Fused, EmbeddingUpdate::Sparse);
            let (ld, gd) = logits_and_grads(&dense);
            let (ls, gs) = logits_and_grads(&sparse);
            assert_eq!(ld, ls);
            assert_eq!(gd[0].0, "embedding");
            assert_close("embedding gradient", &gs[0].1, &gd[0].1, 1e-6);
        }
    }

    /// Trains two nets, one updating the embedding sparsely, on the same batches.
    fn embeddings_after(
        optimizer: crate::optim::OptimizerName,
        steps: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let tables: Vec<Vec<f32>> = [EmbeddingUpdate::Dense, EmbeddingUpdate::Sparse]
            .into_iter()
            .map(|update| {
                let net = pooled_net(Pooling::Mean, LstmImpl::Fused, update);
                let config = crate::optim::OptimizerConfig {
                    name: optimizer,
                    learning_rate: Some(0.1),
                    ..Default::default()
                };
                let vars = net.trainable().into_iter().map(|(_, v)| v).collect();
                let mut opt =
                    <crate::optim::KerasOptimizer as candle_nn::Optimizer>::new(vars, config)
                        .unwrap();
                for step in 0..steps {
                    // Batches that leave different words out, so lazy and dense could differ.
                    let rows = if step % 2 == 0 { 0..3 } else { 2..5 };
                    let ids = &IDS[rows.start * 5..rows.end * 5];
                    let mut rng = ChaCha8Rng::seed_from_u64(step as u64);
                    crate::train::train_batch(
                        &net,
                        &mut opt,
                        &IdBatch {
                            ids,
                            batch: 3,
                            time: 5,
                        },
                        &[1.0, 0.0, 1.0],
                        &[1.0, 1.0, 2.0],
                        &mut rng,
                    )
                    .unwrap();
                }
                net.towers[0]
                    .embedding
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        (tables[0].clone(), tables[1].clone())
    }

    #[test]
    fn a_sparse_embedding_update_equals_the_dense_one() {
        // Plain SGD: a zero gradient changes nothing, so lazy is exact at every step.
        let (dense, sparse) = embeddings_after(crate::optim::OptimizerName::Sgd, 4);
        assert_close("sgd", &sparse, &dense, 1e-6);
        // Adam's first step: untouched rows have zero moments, so they do not move either.
        let (dense, sparse) = embeddings_after(crate::optim::OptimizerName::Adam, 1);
        assert_close("adam, one step", &sparse, &dense, 1e-6);
        // Later, dense Adam's momentum moves rows absent from the batch; lazy Adam does not.
        let (dense, sparse) = embeddings_after(crate::optim::OptimizerName::Adam, 2);
        let e = 5;
        let moved = |t: &[f32], id: usize, other: &[f32]| {
            t[id * e..(id + 1) * e]
                .iter()
                .zip(&other[id * e..(id + 1) * e])
                .any(|(a, b)| a != b)
        };
        // Word 4 is only in the first batch: after step 2 the tables differ there only.
        assert!(moved(&dense, 4, &sparse));
        // Word 10 is in no batch: neither moved it.
        let (fresh, _) = embeddings_after(crate::optim::OptimizerName::Adam, 0);
        assert!(!moved(&dense, 10, &fresh) && !moved(&sparse, 10, &fresh));
    }

    /// The rows of [`IDS`] (the word view, 5 columns) each followed by a character view of 6
    /// columns: row 2 has characters but no words, row 4 words but no characters.
    fn two_view_ids() -> Vec<u32> {
        let chars: [[u32; 6]; 5] = [
            [1, 2, 3, 4, 5, 6],
            [7, 8, 0, 0, 0, 0],
            [2, 2, 3, 0, 0, 0],
            [8, 1, 4, 6, 2, 0],
            [0, 0, 0, 0, 0, 0],
        ];
        (0..5)
            .flat_map(|r| IDS[r * 5..(r + 1) * 5].iter().chain(&chars[r]).copied())
            .collect()
    }

    fn two_view_cfg(pooling: Pooling, lstm_impl: LstmImpl, update: EmbeddingUpdate) -> ModelConfig {
        pooled_cfg(crate::config::Cell::Lstm, pooling, lstm_impl, update)
    }

    const TWO_VIEWS: [ViewShape; 2] = [
        ViewShape {
            vocab: 12,
            width: 5,
            bag: false,
        },
        ViewShape {
            vocab: 9,
            width: 6,
            bag: false,
        },
    ];

    /// [`TWO_VIEWS`] with the second view read as a bag (the `ngram` view).
    const WORD_AND_BAG: [ViewShape; 2] = [
        TWO_VIEWS[0],
        ViewShape {
            bag: true,
            ..TWO_VIEWS[1]
        },
    ];

    fn batch(ids: &[u32], time: usize) -> IdBatch<'_> {
        IdBatch {
            ids,
            batch: 5,
            time,
        }
    }

    fn columns(ids: &[u32], from: usize, width: usize) -> Vec<u32> {
        ids.chunks(11)
            .flat_map(|row| row[from..from + width].iter().copied())
            .collect()
    }

    #[test]
    fn a_two_tower_net_is_each_views_own_network_side_by_side() {
        for pooling in [Pooling::Last, Pooling::MaxMean, Pooling::Attention] {
            let cfg = two_view_cfg(pooling, LstmImpl::Reference, EmbeddingUpdate::Dense);
            let two = Net::for_views(&cfg, &TWO_VIEWS, 1, false, &Device::Cpu).unwrap();
            let word = Net::new(&cfg, 12, &Device::Cpu).unwrap();
            let char = Net::new(&cfg, 9, &Device::Cpu).unwrap();
            let state = two.state().unwrap();
            // Each one-view network takes its tower's weights from the two-tower one.
            for (one, prefix) in [(&word, ""), (&char, "tower.1.")] {
                for (name, var) in one.trainable().into_iter().chain(one.buffers()) {
                    if !(name.starts_with("dense.") || name.starts_with("output.")) {
                        var.set(&state[&format!("{prefix}{name}")]).unwrap();
                    }
                }
            }
            assert_ne!(
                state["embedding"].to_vec2::<f32>().unwrap()[..9],
                state["tower.1.embedding"].to_vec2::<f32>().unwrap()[..],
                "each tower draws its own initial weights"
            );
            let ids = two_view_ids();
            let (word_ids, char_ids) = (columns(&ids, 0, 5), columns(&ids, 5, 6));
            // Inference, then training (dropout masks and batch statistics): the two towers
            // draw from one stream in order, words first.
            for train in [false, true] {
                let mut rng = ChaCha8Rng::seed_from_u64(5);
                let mut rng2 = ChaCha8Rng::seed_from_u64(5);
                let both = two
                    .features(&batch(&ids, 11), train.then_some(&mut rng))
                    .unwrap();
                let w = word
                    .features(&batch(&word_ids, 5), train.then_some(&mut rng2))
                    .unwrap();
                let c = char
                    .features(&batch(&char_ids, 6), train.then_some(&mut rng2))
                    .unwrap();
                let want = Tensor::cat(&[&w, &c], 1).unwrap();
                assert_close(
                    &format!("{pooling:?} train={train} features"),
                    &both.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    &want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    1e-6,
                );
            }
            // The head reads the concatenation.
            let features = two.features(&batch(&ids, 11), None).unwrap();
            let head = two
                .output
                .forward(&two.dense[0].forward(&features).unwrap())
                .unwrap()
                .squeeze(1)
                .unwrap();
            assert_eq!(
                two.forward(&batch(&ids, 11), None)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                head.to_vec1::<f32>().unwrap()
            );
        }
    }

    #[test]
    fn view_dropout_keeps_one_tower_of_a_dropped_row_and_rescales_the_rest() {
        let ids = two_view_ids();
        let features = |view_dropout: f64, train: bool| -> Vec<Vec<f32>> {
            let cfg = ModelConfig {
                view_dropout,
                ..two_view_cfg(Pooling::MaxMean, LstmImpl::Fused, EmbeddingUpdate::Dense)
            };
            let net = Net::for_views(&cfg, &TWO_VIEWS, 1, false, &Device::Cpu).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            net.features(&batch(&ids, 11), train.then_some(&mut rng))
                .unwrap()
                .to_vec2()
                .unwrap()
        };
        // Inference ignores it.
        assert_eq!(features(0.9, false), features(0.0, false));
        // p = 1: every row keeps one tower, at twice its value (1 / (1 − 1 + 1/2)); the towers'
        // own draws come first, so they are the p = 0 run's.
        let (plain, dropped) = (features(0.0, true), features(1.0, true));
        let half = plain[0].len() / 2;
        let mut kept = [0, 0];
        for (p, d) in plain.iter().zip(&dropped) {
            let word: Vec<f32> = p[..half].iter().map(|v| 2.0 * v).collect();
            let char: Vec<f32> = p[half..].iter().map(|v| 2.0 * v).collect();
            if d[..half] == word[..] && d[half..].iter().all(|v| *v == 0.0) {
                kept[0] += 1;
            } else if d[half..] == char[..] && d[..half].iter().all(|v| *v == 0.0) {
                kept[1] += 1;
            } else {
                panic!("a row kept both towers or neither: {p:?} → {d:?}");
            }
        }
        assert_eq!(kept[0] + kept[1], 5);
        // The factors: 1/(1 − p + p/n) where kept, and each tower's mean factor is 1.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let masks = view_keep_masks(&mut rng, 20_000, 2, 0.5);
        for mask in &masks {
            assert!(mask
                .iter()
                .all(|&f| f == 0.0 || (f - 1.0 / 0.75).abs() < 1e-6));
            let mean = mask.iter().sum::<f32>() / mask.len() as f32;
            assert!((mean - 1.0).abs() < 0.02, "{mean}");
        }
        assert!(
            (0..20_000).all(|r| masks[0][r] > 0.0 || masks[1][r] > 0.0),
            "no row loses every tower"
        );
    }

    #[test]
    fn the_cost_estimate_counts_every_weight_of_both_towers() {
        for pooling in [Pooling::MaxMean, Pooling::Attention] {
            let cfg = two_view_cfg(pooling, LstmImpl::Reference, EmbeddingUpdate::Dense);
            let net = Net::for_views(&cfg, &TWO_VIEWS, 1, false, &Device::Cpu).unwrap();
            let counted = weight_count(&net);
            let one = cfg.cost(12, 5).parameters + cfg.cost(9, 6).parameters;
            // Two towers, one head: the head (its input twice as wide) counted once.
            let head = |input: usize| input * 4 + 4 + 4 + 1;
            let pooled = pooling.output_features(6);
            let two = cfg
                .cost_of_views(&[(InputView::Word, 12, 5), (InputView::Char, 9, 6)])
                .parameters;
            assert_eq!(two, one - 2 * head(pooled) + head(2 * pooled));
            assert_eq!(counted, two, "{pooling:?}");
            // A bag tower is its table: 9 × 5 weights, and 5 features for the head.
            let bag = Net::for_views(&cfg, &WORD_AND_BAG, 1, false, &Device::Cpu).unwrap();
            let word_and_bag = cfg
                .cost_of_views(&[(InputView::Word, 12, 5), (InputView::Ngram, 9, 6)])
                .parameters;
            assert_eq!(
                word_and_bag,
                cfg.cost(12, 5).parameters - head(pooled) + 9 * 5 + head(pooled + 5)
            );
            assert_eq!(weight_count(&bag), word_and_bag, "{pooling:?}");
        }
    }

    #[test]
    fn a_bag_tower_is_the_mean_of_its_real_tokens_embeddings() {
        let ids = two_view_ids();
        let cfg = ModelConfig {
            embedding_dropout: 0.0,
            ..two_view_cfg(Pooling::MaxMean, LstmImpl::Fused, EmbeddingUpdate::Dense)
        };
        let net = Net::for_views(&cfg, &WORD_AND_BAG, 1, false, &Device::Cpu).unwrap();
        assert!(net.towers[1].recurrent.is_empty() && net.towers[1].attention.is_none());
        let table: Vec<Vec<f32>> = net.towers[1].embedding.as_tensor().to_vec2().unwrap();
        let word = Net::new(&cfg, 12, &Device::Cpu).unwrap();
        let state = net.state().unwrap();
        for (name, var) in word.trainable().into_iter().chain(word.buffers()) {
            if !(name.starts_with("dense.") || name.starts_with("output.")) {
                var.set(&state[&name]).unwrap();
            }
        }
        let word_ids = columns(&ids, 0, 5);
        for train in [false, true] {
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            let mut rng2 = ChaCha8Rng::seed_from_u64(5);
            let features: Vec<Vec<f32>> = net
                .features(&batch(&ids, 11), train.then_some(&mut rng))
                .unwrap()
                .to_vec2()
                .unwrap();
            let words: Vec<Vec<f32>> = word
                .features(&batch(&word_ids, 5), train.then_some(&mut rng2))
                .unwrap()
                .to_vec2()
                .unwrap();
            let pooled = Pooling::MaxMean.output_features(6);
            for (r, row) in features.iter().enumerate() {
                assert_close("the word tower", &row[..pooled], &words[r], 1e-6);
                // By hand: the mean of the table's rows for the row's non-zero ids; a row
                // without any (row 4) gives zeros.
                let real: Vec<usize> = ids[r * 11 + 5..(r + 1) * 11]
                    .iter()
                    .filter(|&&id| id != 0)
                    .map(|&id| id as usize)
                    .collect();
                let want: Vec<f32> = (0..5)
                    .map(|j| {
                        let sum: f32 = real.iter().map(|&id| table[id][j]).sum();
                        sum / real.len().max(1) as f32
                    })
                    .collect();
                assert_close(
                    &format!("row {r} train={train}"),
                    &row[pooled..],
                    &want,
                    1e-6,
                );
            }
        }
    }

    #[test]
    fn a_two_tower_net_gives_the_same_logits_and_gradients_on_both_lstm_paths() {
        let ids = two_view_ids();
        for (pooling, update, views) in [
            (Pooling::MaxMean, EmbeddingUpdate::Dense, &TWO_VIEWS),
            (Pooling::Last, EmbeddingUpdate::Sparse, &TWO_VIEWS),
            (Pooling::Attention, EmbeddingUpdate::Sparse, &TWO_VIEWS),
            (Pooling::Last, EmbeddingUpdate::Dense, &WORD_AND_BAG),
            (Pooling::Attention, EmbeddingUpdate::Sparse, &WORD_AND_BAG),
        ] {
            let net = |lstm_impl| {
                let cfg = two_view_cfg(pooling, lstm_impl, update);
                Net::for_views(&cfg, views, 1, false, &Device::Cpu).unwrap()
            };
            let (lr, gr) = logits_and_grads_of(&net(LstmImpl::Reference), &ids, 11);
            let (lf, gf) = logits_and_grads_of(&net(LstmImpl::Fused), &ids, 11);
            let what = format!("{pooling:?} {update:?} bag={}", views[1].bag);
            assert_close(&format!("{what} logits"), &lf, &lr, 1e-4);
            assert!(gr.iter().any(|(name, _)| name == "tower.1.embedding"));
            for ((name, a), (_, b)) in gf.iter().zip(&gr) {
                assert_close(&format!("{what} d{name}"), a, b, 1e-3);
            }
            assert!(
                gr.iter().all(|(_, g)| g.iter().any(|v| *v != 0.0)),
                "{what}: every weight of both towers gets a gradient"
            );
        }
    }
}
