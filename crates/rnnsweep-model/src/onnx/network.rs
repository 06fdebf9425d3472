//! One trained model as ONNX nodes: from token ids (padding anywhere; one input per view of the
//! text, each prepared and read by its own tower) to its probabilities, computing what
//! [`crate::nn::Net`] computes at inference.
//!
//! The graph does the model's own preparation of the ids, so that members of an ensemble with
//! different vocabulary limits and sequence lengths can share one input: ids at or past the
//! limit become the OOV token (or are dropped), the real ids are moved to the front of the
//! row (a masked network's output does not depend on where the padding was: masked steps keep
//! the state), and the row is cut to the sequence length as Keras's `truncating` says. Ids
//! already limited and padded the model's way pass through unchanged.

use candle_core::Var;
use onnx_protobuf::tensor_proto::DataType;

use super::graph::{Attr, GraphBuilder};
use crate::artifact::TrainedModel;
use crate::config::{Activation, Cell, Pooling, Truncating};
use crate::error::Result;
use crate::nn::batch_norm::{BatchNorm, BN_EPSILON};
use crate::nn::lstm::LstmWeights;
use crate::nn::Tower;
use crate::tokenizer::Tokenizer;

fn values(var: &Var) -> Result<Vec<f32>> {
    Ok(var.as_tensor().flatten_all()?.to_vec1::<f32>()?)
}

/// Adds `model`'s nodes reading `inputs` (`int64 [batch, time]`, one per view of the text, in
/// its row's order: words, characters, n-grams); returns its probabilities, `[batch,
/// K]` (`K` = 1 for a binary model).
pub fn probabilities(
    g: &mut GraphBuilder,
    inputs: &[&str],
    model: &TrainedModel,
) -> Result<String> {
    let net = &model.net;
    let mut pooled = Vec::with_capacity(net.towers.len());
    for ((view, tower), ids) in model.encoder.views.iter().zip(&net.towers).zip(inputs) {
        let prepared = prepare_ids(
            g,
            ids,
            &view.tokenizer,
            view.sequence_length,
            model.config.truncating,
        );
        pooled.push(tower_features(g, &prepared, tower, model)?);
    }
    let mut x = if pooled.len() == 1 {
        pooled.remove(0)
    } else {
        let refs: Vec<&str> = pooled.iter().map(String::as_str).collect();
        g.op("Concat", &refs, &[("axis", Attr::Int(1))])
    };
    for d in &net.dense {
        x = dense(g, &x, &d.kernel, &d.bias, d.activation)?;
    }
    let logits = dense(
        g,
        &x,
        &net.output.kernel,
        &net.output.bias,
        Activation::Linear,
    )?;
    Ok(if net.outputs > 1 && !net.multi_label {
        g.op("Softmax", &[&logits], &[("axis", Attr::Int(-1))])
    } else {
        g.op("Sigmoid", &[&logits], &[])
    })
}

/// One tower's pooled features `[batch, F]`, as [`crate::nn::Net`]'s tower computes them.
fn tower_features(
    g: &mut GraphBuilder,
    prepared: &Prepared,
    tower: &Tower,
    model: &TrainedModel,
) -> Result<String> {
    let net = &model.net;
    let table = tower.embedding.as_tensor();
    let (vocab, width) = table.dims2()?;
    let table = g.f32s("embedding", &[vocab, width], &values(&tower.embedding)?);
    let embedded = g.op(
        "Gather",
        &[&table, &prepared.ids],
        &[("axis", Attr::Int(0))],
    );
    let mut x = g.op(
        "Transpose",
        &[&embedded],
        &[("perm", Attr::Ints(&[1, 0, 2]))],
    );
    if tower.recurrent.is_empty() {
        // A bag tower: the mean of its real tokens' embeddings.
        return pool(g, &x, prepared, Pooling::Mean, None, width);
    }
    let layers = tower.recurrent.len();
    let pooled = net.pooling.needs_sequence();
    let mut features = 0;
    for (k, (layer, bn)) in tower.recurrent.iter().enumerate() {
        let last = k + 1 == layers;
        let units = layer.forward.recurrent.as_tensor().dim(0)?;
        let input = layer.forward.kernel.as_tensor().dim(0)?;
        let (sequence, final_state) = recurrent_layer(
            g,
            &x,
            prepared,
            model.config.cell,
            [&layer.forward, &layer.backward],
            input,
            units,
        )?;
        features = 2 * units;
        x = if last && !pooled {
            // The final states: a row without real steps keeps its zero state.
            let state = g.op("Mul", &[&final_state, &prepared.has_steps], &[]);
            batch_norm(g, &state, bn.as_ref(), false)?
        } else {
            batch_norm(g, &sequence, bn.as_ref(), true)?
        };
    }
    if pooled {
        x = pool(
            g,
            &x,
            prepared,
            net.pooling,
            tower.attention.as_ref(),
            features,
        )?;
    }
    Ok(x)
}

/// The model's view of the input ids.
struct Prepared {
    /// `int64 [batch, S]`, real ids first.
    ids: String,
    /// `int32 [batch]`: real steps per row, at least 1 (ONNX Runtime's recurrent kernels want
    /// one; [`Prepared::has_steps`] zeroes what an empty row's extra step computed).
    lengths: String,
    /// `float [S, batch, 1]`: 1 on real steps.
    step_mask: String,
    /// `float [batch, 1]`: 1 where the row has a real step.
    has_steps: String,
}

fn prepare_ids(
    g: &mut GraphBuilder,
    ids: &str,
    tokenizer: &Tokenizer,
    sequence_length: usize,
    truncating: Truncating,
) -> Prepared {
    let zero = g.int("zero", 0);
    let one = g.int("one", 1);
    // Ids at or past the vocabulary limit: the OOV token's id, or dropped (0) without one.
    let limit = g.int("vocabulary_limit", tokenizer.id_limit() as i64);
    let oov = tokenizer.oov_id().map_or(0, i64::from);
    let oov = g.int("oov_id", oov);
    let past = g.op("GreaterOrEqual", &[ids, &limit], &[]);
    let limited = g.op("Where", &[&past, &oov, ids], &[]);
    // Real ids to the front, in order: sort positions by `position + time · is_padding`.
    let shape = g.op("Shape", &[&limited], &[]);
    let (from, to) = (g.i64s("from", &[1], &[1]), g.i64s("to", &[1], &[2]));
    let time_1 = g.op("Slice", &[&shape, &from, &to], &[]);
    let time = g.op("Squeeze", &[&time_1], &[]);
    let positions = g.op("Range", &[&zero, &time, &one], &[]);
    let padding = g.op("Equal", &[&limited, &zero], &[]);
    let padding = g.op(
        "Cast",
        &[&padding],
        &[("to", Attr::Int(DataType::INT64 as i64))],
    );
    let key = g.op("Mul", &[&padding, &time], &[]);
    let key = g.op("Add", &[&key, &positions], &[]);
    let order = g.op_n(
        "TopK",
        &[&key, &time_1],
        &[
            ("axis", Attr::Int(1)),
            ("largest", Attr::Int(0)),
            ("sorted", Attr::Int(1)),
        ],
        2,
    );
    let front = g.op(
        "GatherElements",
        &[&limited, &order[1]],
        &[("axis", Attr::Int(1))],
    );
    let real = g.op("Sub", &[&one, &padding], &[]);
    let axis_1 = g.i64s("axis", &[1], &[1]);
    let count = g.op(
        "ReduceSum",
        &[&real, &axis_1],
        &[("keepdims", Attr::Int(1))],
    );
    // Cut to the sequence length: the first S real ids, or (truncating `pre`) the last S.
    let s = sequence_length.max(1);
    let steps = g.i64s("steps", &[s], &(0..s as i64).collect::<Vec<_>>());
    let s_const = g.int("sequence_length", s as i64);
    let start = match truncating {
        Truncating::Post => g.op("Mul", &[&count, &zero], &[]),
        Truncating::Pre => {
            let over = g.op("Sub", &[&count, &s_const], &[]);
            g.op("Max", &[&over, &zero], &[])
        }
    };
    let index = g.op("Add", &[&start, &steps], &[]);
    let valid = g.op("Less", &[&index, &count], &[]);
    let last_column = g.op("Sub", &[&time, &one], &[]);
    let clamped = g.op("Min", &[&index, &last_column], &[]);
    let gathered = g.op(
        "GatherElements",
        &[&front, &clamped],
        &[("axis", Attr::Int(1))],
    );
    let kept = g.op("Where", &[&valid, &gathered, &zero], &[]);
    let lengths = g.op("Min", &[&count, &s_const], &[]);
    let has_steps = g.op("Min", &[&lengths, &one], &[]);
    let at_least_one = g.op("Max", &[&lengths, &one], &[]);
    let flat = g.i64s("flat", &[1], &[-1]);
    let lengths = g.op("Reshape", &[&at_least_one, &flat], &[]);
    let lengths = g.op(
        "Cast",
        &[&lengths],
        &[("to", Attr::Int(DataType::INT32 as i64))],
    );
    let has_steps = g.op(
        "Cast",
        &[&has_steps],
        &[("to", Attr::Int(DataType::FLOAT as i64))],
    );
    let mask = g.op(
        "Cast",
        &[&valid],
        &[("to", Attr::Int(DataType::FLOAT as i64))],
    );
    let mask = g.op("Transpose", &[&mask], &[("perm", Attr::Ints(&[1, 0]))]);
    let axis_2 = g.i64s("axis", &[1], &[2]);
    let step_mask = g.op("Unsqueeze", &[&mask, &axis_2], &[]);
    Prepared {
        ids: kept,
        lengths,
        step_mask,
        has_steps,
    }
}

/// One bidirectional layer as ONNX's `LSTM` or `GRU`: its steps `[S, batch, 2U]` (forward
/// then backward features, as Keras concatenates them) and final states `[batch, 2U]`.
fn recurrent_layer(
    g: &mut GraphBuilder,
    x: &str,
    prepared: &Prepared,
    cell: Cell,
    directions: [&LstmWeights; 2],
    input: usize,
    units: usize,
) -> Result<(String, String)> {
    // Keras's gate blocks are i, f, c, o (LSTM) and z, r, h (GRU); ONNX's i, o, f, c and z, r, h.
    let order: &[usize] = match cell {
        Cell::Lstm => &[0, 3, 1, 2],
        Cell::Gru => &[0, 1, 2],
    };
    let gates = order.len();
    let width = gates * units;
    let mut w = Vec::with_capacity(2 * width * input);
    let mut r = Vec::with_capacity(2 * width * units);
    let mut b = Vec::with_capacity(4 * width);
    for weights in directions {
        let kernel = values(&weights.kernel)?; // [input, G·U]
        let recurrent = values(&weights.recurrent)?; // [U, G·U]
        let bias = values(&weights.bias)?; // LSTM [G·U]; GRU [2, G·U]
        let reorder = |row: &[f32], out: &mut Vec<f32>| {
            for &gate in order {
                out.extend_from_slice(&row[gate * units..(gate + 1) * units]);
            }
        };
        // ONNX wants `[G·U, input]`: the transposed kernel, gate blocks reordered.
        for &gate in order {
            for u in 0..units {
                let column = gate * units + u;
                w.extend((0..input).map(|i| kernel[i * width + column]));
            }
        }
        for &gate in order {
            for u in 0..units {
                let column = gate * units + u;
                r.extend((0..units).map(|h| recurrent[h * width + column]));
            }
        }
        match cell {
            Cell::Lstm => {
                reorder(&bias, &mut b);
                b.extend(std::iter::repeat_n(0.0, width));
            }
            Cell::Gru => {
                reorder(&bias[..width], &mut b);
                reorder(&bias[width..], &mut b);
            }
        }
    }
    let w = g.f32s("W", &[2, width, input], &w);
    let r = g.f32s("R", &[2, width, units], &r);
    let b = g.f32s("B", &[2, 2 * width], &b);
    let hidden = units as i64;
    let outputs = match cell {
        Cell::Lstm => g.op_n(
            "LSTM",
            &[x, &w, &r, &b, &prepared.lengths],
            &[
                ("direction", Attr::Text("bidirectional")),
                ("hidden_size", Attr::Int(hidden)),
            ],
            3,
        ),
        Cell::Gru => g.op_n(
            "GRU",
            &[x, &w, &r, &b, &prepared.lengths],
            &[
                ("direction", Attr::Text("bidirectional")),
                ("hidden_size", Attr::Int(hidden)),
                ("linear_before_reset", Attr::Int(1)),
            ],
            2,
        ),
    };
    // Y `[S, 2, batch, U]` → `[S, batch, 2U]`; Y_h `[2, batch, U]` → `[batch, 2U]`.
    let y = g.op(
        "Transpose",
        &[&outputs[0]],
        &[("perm", Attr::Ints(&[0, 2, 1, 3]))],
    );
    let steps_shape = g.i64s("shape", &[3], &[0, 0, -1]);
    let sequence = g.op("Reshape", &[&y, &steps_shape], &[]);
    let h = g.op(
        "Transpose",
        &[&outputs[1]],
        &[("perm", Attr::Ints(&[1, 0, 2]))],
    );
    let state_shape = g.i64s("shape", &[2], &[0, -1]);
    let final_state = g.op("Reshape", &[&h, &state_shape], &[]);
    Ok((sequence, final_state))
}

/// ONNX's `BatchNormalization` (inference: the moving statistics, Keras's epsilon) over the
/// last axis of `[batch, F]` or `[S, batch, F]` (ONNX normalises axis 1, so a sequence goes
/// through as `[S·batch, F]`).
fn batch_norm(
    g: &mut GraphBuilder,
    x: &str,
    bn: Option<&BatchNorm>,
    sequence: bool,
) -> Result<String> {
    let Some(bn) = bn else {
        return Ok(x.to_string());
    };
    let n = bn.gamma.as_tensor().dim(0)?;
    let gamma = g.f32s("bn_gamma", &[n], &values(&bn.gamma)?);
    let beta = g.f32s("bn_beta", &[n], &values(&bn.beta)?);
    let mean = g.f32s("bn_moving_mean", &[n], &values(&bn.moving_mean)?);
    let variance = g.f32s("bn_moving_variance", &[n], &values(&bn.moving_variance)?);
    let attrs = [("epsilon", Attr::Float(BN_EPSILON as f32))];
    if !sequence {
        return Ok(g.op(
            "BatchNormalization",
            &[x, &gamma, &beta, &mean, &variance],
            &attrs,
        ));
    }
    let shape = g.op("Shape", &[x], &[]);
    let rows = g.i64s("shape", &[2], &[-1, n as i64]);
    let flat = g.op("Reshape", &[x, &rows], &[]);
    let normalised = g.op(
        "BatchNormalization",
        &[&flat, &gamma, &beta, &mean, &variance],
        &attrs,
    );
    Ok(g.op("Reshape", &[&normalised, &shape], &[]))
}

/// `[S, batch, F]` → `[batch, F']` over the real steps, as [`crate::nn::pooling::pool`].
fn pool(
    g: &mut GraphBuilder,
    sequence: &str,
    prepared: &Prepared,
    pooling: Pooling,
    attention: Option<&crate::nn::pooling::Attention>,
    features: usize,
) -> Result<String> {
    let mask = &prepared.step_mask;
    let axis_0 = g.i64s("axis", &[1], &[0]);
    let no_keep = [("keepdims", Attr::Int(0))];
    let shift = {
        let big = g.scalar("masked", crate::nn::pooling::MASKED as f32);
        let scaled = g.op("Mul", &[mask, &big], &[]);
        g.op("Sub", &[&scaled, &big], &[])
    };
    let mean = |g: &mut GraphBuilder| {
        let masked = g.op("Mul", &[sequence, mask], &[]);
        let total = g.op("ReduceSum", &[&masked, &axis_0], &no_keep);
        let count = g.op("ReduceSum", &[mask, &axis_0], &no_keep);
        let one = g.scalar("one", 1.0);
        let count = g.op("Max", &[&count, &one], &[]);
        g.op("Div", &[&total, &count], &[])
    };
    let max = |g: &mut GraphBuilder| {
        let shifted = g.op("Add", &[sequence, &shift], &[]);
        let top = g.op("ReduceMax", &[&shifted, &axis_0], &no_keep);
        g.op("Mul", &[&top, &prepared.has_steps], &[])
    };
    Ok(match pooling {
        Pooling::Last => sequence.to_string(),
        Pooling::Mean => mean(g),
        Pooling::Max => max(g),
        Pooling::MaxMean => {
            let (m, a) = (max(g), mean(g));
            g.op("Concat", &[&m, &a], &[("axis", Attr::Int(1))])
        }
        Pooling::Attention => {
            let weights = attention.ok_or_else(|| crate::error::ModelError::Config {
                at: "pooling".into(),
                message: "attention pooling without attention weights".into(),
            })?;
            let a = crate::config::attention_units(features);
            let kernel = g.f32s(
                "attention_kernel",
                &[features, a],
                &values(&weights.kernel)?,
            );
            let bias = g.f32s("attention_bias", &[a], &values(&weights.bias)?);
            let context = g.f32s("attention_context", &[a, 1], &values(&weights.context)?);
            let hidden = g.op("MatMul", &[sequence, &kernel], &[]);
            let hidden = g.op("Add", &[&hidden, &bias], &[]);
            let hidden = g.op("Tanh", &[&hidden], &[]);
            let scores = g.op("MatMul", &[&hidden, &context], &[]);
            let scores = g.op("Add", &[&scores, &shift], &[]);
            let keep = [("keepdims", Attr::Int(1))];
            let top = g.op("ReduceMax", &[&scores, &axis_0], &keep);
            let centred = g.op("Sub", &[&scores, &top], &[]);
            let e = g.op("Exp", &[&centred], &[]);
            let e = g.op("Mul", &[&e, mask], &[]);
            let total = g.op("ReduceSum", &[&e, &axis_0], &keep);
            // An all-padding row: weights 0 / 1 instead of 0 / 0.
            let one = g.scalar("one", 1.0);
            let empty = g.op("Sub", &[&one, &prepared.has_steps], &[]);
            let total = g.op("Add", &[&total, &empty], &[]);
            let alpha = g.op("Div", &[&e, &total], &[]);
            let weighted = g.op("Mul", &[sequence, &alpha], &[]);
            g.op("ReduceSum", &[&weighted, &axis_0], &no_keep)
        }
    })
}

fn dense(
    g: &mut GraphBuilder,
    x: &str,
    kernel: &Var,
    bias: &Var,
    activation: Activation,
) -> Result<String> {
    let (input, units) = kernel.as_tensor().dims2()?;
    let k = g.f32s("kernel", &[input, units], &values(kernel)?);
    let b = g.f32s("bias", &[units], &values(bias)?);
    let z = g.op("MatMul", &[x, &k], &[]);
    let z = g.op("Add", &[&z, &b], &[]);
    Ok(activate(g, &z, activation))
}

/// Keras's activations (the definitions of [`crate::nn::dense::activate`]).
fn activate(g: &mut GraphBuilder, z: &str, activation: Activation) -> String {
    match activation {
        Activation::Linear => z.to_string(),
        Activation::Relu => g.op("Relu", &[z], &[]),
        Activation::Sigmoid => g.op("Sigmoid", &[z], &[]),
        Activation::Tanh => g.op("Tanh", &[z], &[]),
        Activation::Elu => g.op("Elu", &[z], &[("alpha", Attr::Float(1.0))]),
        Activation::Selu => g.op(
            "Selu",
            &[z],
            &[
                ("alpha", Attr::Float(1.673_263_2)),
                ("gamma", Attr::Float(1.050_701)),
            ],
        ),
        Activation::Softplus => g.op("Softplus", &[z], &[]),
        Activation::Softsign => g.op("Softsign", &[z], &[]),
        // relu6(z + 3) / 6 = clip(z / 6 + 0.5, 0, 1).
        Activation::HardSigmoid => g.op(
            "HardSigmoid",
            &[z],
            &[
                ("alpha", Attr::Float(1.0 / 6.0)),
                ("beta", Attr::Float(0.5)),
            ],
        ),
        Activation::Gelu => {
            // The exact form: z · (1 + erf(z / √2)) / 2.
            let root2 = g.scalar("sqrt2", std::f32::consts::SQRT_2);
            let half = g.scalar("half", 0.5);
            let one = g.scalar("one", 1.0);
            let scaled = g.op("Div", &[z, &root2], &[]);
            let erf = g.op("Erf", &[&scaled], &[]);
            let plus = g.op("Add", &[&erf, &one], &[]);
            let product = g.op("Mul", &[z, &plus], &[]);
            g.op("Mul", &[&product, &half], &[])
        }
        Activation::Swish => {
            let s = g.op("Sigmoid", &[z], &[]);
            g.op("Mul", &[z, &s], &[])
        }
    }
}
