//! A trained model (or an ensemble) as one ONNX file that onnxruntime, and anything else that
//! reads ONNX, runs without rnnsweep; its tokenizer beside it in Keras's own format.
//!
//! The graph's input is `ids`, `int64 [batch, time]`: each text's words as their indices in
//! the tokenizer's word index (Keras's `texts_to_sequences`), zeros for padding on either side;
//! a model that reads characters too (`inputs: word+char`) also takes `char_ids`, the same
//! for its character tokenizer, written beside the first.
//! Its output is `probability` `[batch]` for a binary model, `probabilities` `[batch, K]`
//! otherwise. The metadata (`rnnsweep.*` keys) holds what deciding and reading need: the
//! task, the class names, the threshold(s), the columns, the tokenizer's options and the
//! tokenizer file's name.

mod graph;
mod network;

use std::path::{Path, PathBuf};

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{ModelProto, OperatorSetIdProto, StringStringEntryProto};
use protobuf::{Message, MessageField};

use crate::artifact::{Combine, Predictor, StoredTask, StoredThreshold, TrainedModel};
use crate::config::InputView;
use crate::error::{ModelError, Result};
use graph::{Attr, Dim, GraphBuilder};

/// ONNX's operator set the graph is written for (reduce ops take their axes as an input).
pub const OPSET: i64 = 18;
/// The IR version that goes with [`OPSET`].
const IR_VERSION: i64 = 8;

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub model: PathBuf,
    pub tokenizer: PathBuf,
    /// The other inputs (`char_ids`, `ngram_ids`), each with its tokenizer file.
    pub view_tokenizers: Vec<(String, PathBuf)>,
    pub members: usize,
    pub nodes: usize,
}

/// The tokenizer file written beside `model.onnx`: `model.tokenizer.json`.
pub fn tokenizer_path(model: &Path) -> PathBuf {
    beside(model, "tokenizer.json")
}

fn beside(model: &Path, suffix: &str) -> PathBuf {
    let stem = model
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    model.with_file_name(format!("{stem}.{suffix}"))
}

/// The graph input a member's view `index` reads: its first view (a one-view model's only one)
/// `ids`; another view `<view>_ids` (`char_ids`, `ngram_ids`).
fn input_name(index: usize, view: InputView) -> String {
    if index == 0 {
        "ids".into()
    } else {
        format!("{}_ids", view.name())
    }
}

/// One graph input and the members' views that read it (member, view index).
struct Input {
    name: String,
    view: InputView,
    readers: Vec<(usize, usize)>,
}

impl Input {
    /// The tokenizer file beside the model: `model.tokenizer.json` for `ids`,
    /// `model.<view>.tokenizer.json` for the others.
    fn tokenizer_path(&self, model: &Path) -> PathBuf {
        if self.name == "ids" {
            tokenizer_path(model)
        } else {
            beside(model, &format!("{}.tokenizer.json", self.view.name()))
        }
    }

    /// Its tokenizer as the members' share it (the first reader's), and the widest vocabulary
    /// limit among them (each member's own is applied in the graph).
    fn tokenizer<'a>(
        &self,
        members: &[&'a TrainedModel],
    ) -> (&'a crate::tokenizer::Tokenizer, Option<usize>) {
        let tokenizer = |&(k, v): &(usize, usize)| &members[k].encoder.views[v].tokenizer;
        let num_words = self
            .readers
            .iter()
            .map(|r| tokenizer(r).num_words)
            .try_fold(0usize, |acc, n| n.map(|n| acc.max(n)));
        (tokenizer(&self.readers[0]), num_words)
    }
}

/// The graph's inputs, `ids` first, then the other views in a row's order; every member's
/// readers of one input must tokenise alike (the vocabulary limits and sequence lengths may
/// differ: the graph applies each member's own).
fn graph_inputs(members: &[&TrainedModel], out: &Path) -> Result<Vec<Input>> {
    let mut inputs: Vec<Input> = Vec::new();
    for (k, m) in members.iter().enumerate() {
        for (v, view) in m.encoder.views.iter().enumerate() {
            let name = input_name(v, view.input);
            match inputs.iter_mut().find(|i| i.name == name) {
                Some(input) => input.readers.push((k, v)),
                None => inputs.push(Input {
                    name,
                    view: view.input,
                    readers: vec![(k, v)],
                }),
            }
        }
    }
    inputs.sort_by_key(|i| (i.name != "ids", i.view));
    for input in &inputs {
        let (first_k, first_v) = input.readers[0];
        let first = &members[first_k].encoder.views[first_v].tokenizer;
        for &(k, v) in &input.readers[1..] {
            let t = &members[k].encoder.views[v].tokenizer;
            if t.vocabulary != first.vocabulary || t.options != first.options {
                return Err(ModelError::Artifact {
                    path: out.display().to_string(),
                    message: format!(
                        "member {} tokenises {}differently from member {} (another vocabulary \
                         or tokenizer options), so the members cannot share one input",
                        k + 1,
                        match input.name.as_str() {
                            "ids" => String::new(),
                            _ => format!("{} ", input.view.plural()),
                        },
                        first_k + 1
                    ),
                });
            }
        }
    }
    Ok(inputs)
}

/// Writes `predictor` as ONNX to `out` and its tokenizers beside it.
pub fn export(predictor: &Predictor, out: &Path) -> Result<Exported> {
    let (members, combine): (Vec<&TrainedModel>, Option<Combine>) = match predictor {
        Predictor::Single(m) => (vec![m.as_ref()], None),
        Predictor::Ensemble(e) => (e.members.iter().collect(), Some(e.combine)),
    };
    let inputs = graph_inputs(&members, out)?;
    let task = predictor.task();
    let mut g = GraphBuilder::default();
    for input in &inputs {
        let time = match input.name.as_str() {
            "ids" => "time".to_string(),
            _ => format!("{}_time", input.view.name()),
        };
        g.input(
            &input.name,
            DataType::INT64,
            &[Dim::Named("batch"), Dim::Named(&time)],
        );
    }
    let each = members
        .iter()
        .map(|m| {
            let names: Vec<String> = m
                .encoder
                .views
                .iter()
                .enumerate()
                .map(|(v, view)| input_name(v, view.input))
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            network::probabilities(&mut g, &names, m)
        })
        .collect::<Result<Vec<_>>>()?;
    let combined = match combine {
        None => each[0].clone(),
        Some(rule) => combine_members(&mut g, &each, rule, task),
    };
    let binary = task.outputs() == 1 && !task.multi_label;
    if binary {
        let flat = g.i64s("flat", &[1], &[-1]);
        let p = g.op("Reshape", &[&combined, &flat], &[]);
        g.identity_as(&p, "probability");
        g.output("probability", DataType::FLOAT, &[Dim::Named("batch")]);
    } else {
        g.identity_as(&combined, "probabilities");
        g.output(
            "probabilities",
            DataType::FLOAT,
            &[Dim::Named("batch"), Dim::Fixed(task.classes.len())],
        );
    }
    let graph = g.finish("rnnsweep");
    let nodes = graph.node.len();
    let mut model = ModelProto::new();
    model.ir_version = IR_VERSION;
    model.producer_name = "rnnsweep".into();
    model.producer_version = env!("CARGO_PKG_VERSION").into();
    model.doc_string = "Input `ids`: int64 [batch, time], each text's word indices (the \
                        tokenizer file's word_index, as Keras's texts_to_sequences gives them), \
                        0 for padding on either side; the model applies its own vocabulary \
                        limit and sequence length. A model that reads characters as well has \
                        the input `char_ids`, int64 [batch, char_time]: the same for the \
                        character tokenizer file; one that reads its words' character n-grams \
                        `ngram_ids`, the same for the n-gram tokenizer file (each word's \
                        n-grams of the lengths its `ngrams` gives, the word bounded by < and \
                        >, in order of length, then position)."
        .into();
    let mut opset = OperatorSetIdProto::new();
    opset.version = OPSET;
    model.opset_import.push(opset);
    model.graph = MessageField::some(graph);
    let threshold = predictor.threshold();
    let file_name = |p: &Path| {
        p.file_name()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
    };
    let files: Vec<(PathBuf, String)> = inputs
        .iter()
        .map(|i| {
            let path = i.tokenizer_path(out);
            let name = file_name(&path);
            (path, name)
        })
        .collect();
    model.metadata_props = metadata(task, threshold, &members, combine, &inputs, &files)
        .into_iter()
        .map(|(key, value)| {
            let mut e = StringStringEntryProto::new();
            e.key = key;
            e.value = value;
            e
        })
        .collect();
    let bytes = model.write_to_bytes().map_err(|e| ModelError::Artifact {
        path: out.display().to_string(),
        message: format!("cannot encode the ONNX model: {e}"),
    })?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    std::fs::write(out, bytes).map_err(|source| ModelError::Io {
        path: out.display().to_string(),
        source,
    })?;
    for (input, (path, _)) in inputs.iter().zip(&files) {
        let (tokenizer, num_words) = input.tokenizer(&members);
        std::fs::write(path, tokenizer.to_keras_json(num_words)).map_err(|source| {
            ModelError::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    let mut files = files.into_iter().map(|(path, _)| path);
    let tokenizer = files.next().unwrap_or_else(|| tokenizer_path(out));
    Ok(Exported {
        model: out.to_path_buf(),
        tokenizer,
        view_tokenizers: inputs
            .iter()
            .skip(1)
            .map(|i| i.name.clone())
            .zip(files)
            .collect(),
        members: members.len(),
        nodes,
    })
}

/// The members' probabilities `[batch, K]` combined as [`Combine::combine_outputs`] does, in
/// f64 where rnnsweep computes in f64 (the log-odds of sure members).
fn combine_members(
    g: &mut GraphBuilder,
    each: &[String],
    rule: Combine,
    task: &StoredTask,
) -> String {
    let n = each.len() as f64;
    let to = |t: DataType| [("to", Attr::Int(t as i64))];
    let refs: Vec<&str> = each.iter().map(String::as_str).collect();
    match rule {
        Combine::Probability => {
            let sum = g.op("Sum", &refs, &[]);
            let count = g.scalar("members", n as f32);
            g.op("Div", &[&sum, &count], &[])
        }
        Combine::Logit => {
            let softmax = task.normalised_width() > 1;
            // As rnnsweep clamps: K classes at [1e-7, 1], a probability's log-odds at 1e-7 from
            // either end.
            let lo = g.f64_scalar("clip_low", 1e-7);
            let hi = g.f64_scalar("clip_high", if softmax { 1.0 } else { 1.0 - 1e-7 });
            let one = g.f64_scalar("one", 1.0);
            let terms: Vec<String> = each
                .iter()
                .map(|p| {
                    let p = g.op("Cast", &[p], &to(DataType::DOUBLE));
                    let c = g.op("Clip", &[&p, &lo, &hi], &[]);
                    if softmax {
                        g.op("Log", &[&c], &[])
                    } else {
                        let rest = g.op("Sub", &[&one, &c], &[]);
                        let odds = g.op("Div", &[&c, &rest], &[]);
                        g.op("Log", &[&odds], &[])
                    }
                })
                .collect();
            let refs: Vec<&str> = terms.iter().map(String::as_str).collect();
            let sum = g.op("Sum", &refs, &[]);
            let count = g.f64_scalar("members", n);
            let mean = g.op("Div", &[&sum, &count], &[]);
            let p = if softmax {
                g.op("Softmax", &[&mean], &[("axis", Attr::Int(-1))])
            } else {
                g.op("Sigmoid", &[&mean], &[])
            };
            g.op("Cast", &[&p], &to(DataType::FLOAT))
        }
    }
}

/// `files`: each input's tokenizer file (path, name), in `inputs`' order.
fn metadata(
    task: &StoredTask,
    threshold: &StoredThreshold,
    members: &[&TrainedModel],
    combine: Option<Combine>,
    inputs: &[Input],
    files: &[(PathBuf, String)],
) -> Vec<(String, String)> {
    let first = members[0];
    let kind = if task.multi_label {
        "multi_label"
    } else if task.outputs() > 1 {
        "multi_class"
    } else {
        "binary"
    };
    let json = |v: serde_json::Value| v.to_string();
    let options_json = |options: &crate::tokenizer::TokenizerOptions| {
        json(serde_json::json!({
            "lower": options.lower,
            "filters": options.filters,
            "split": options.split,
            "char_level": options.char_level,
            "oov_token": options.oov_token,
            "ngrams": options.ngrams.map(|r| [r.min, r.max]),
        }))
    };
    let length_of = |m: &TrainedModel, input: InputView| {
        m.encoder
            .views
            .iter()
            .skip(1)
            .find(|v| v.input == input)
            .map(|v| v.sequence_length)
    };
    let mut out = vec![
        ("rnnsweep.task".to_string(), kind.to_string()),
        (
            "rnnsweep.classes".into(),
            json(serde_json::json!(task.classes)),
        ),
        ("rnnsweep.threshold".into(), threshold.value.to_string()),
        (
            "rnnsweep.columns".into(),
            json(serde_json::to_value(task.columns()).unwrap_or_default()),
        ),
        (
            "rnnsweep.tokenizer".into(),
            options_json(&first.tokenizer().options),
        ),
        (
            "rnnsweep.members".into(),
            json(serde_json::Value::Array(
                members
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "num_words": m.tokenizer().num_words,
                            "sequence_length": m.config.sequence_length,
                            "inputs": m.encoder.views.iter().map(|v| v.input.name()).collect::<Vec<_>>(),
                            "char_sequence_length": length_of(m, InputView::Char),
                            "ngram_sequence_length": length_of(m, InputView::Ngram),
                            "padding": m.config.padding,
                            "truncating": m.config.truncating,
                            "cell": m.config.cell,
                            "lstm_units": m.config.lstm_units,
                            "pooling": m.config.pooling,
                        })
                    })
                    .collect(),
            )),
        ),
    ];
    // `rnnsweep.tokenizer_file` for `ids`; `rnnsweep.char_tokenizer(_file)` and
    // `rnnsweep.ngram_tokenizer(_file)` for the others.
    for (input, (_, file)) in inputs.iter().zip(files) {
        let key = match input.name.as_str() {
            "ids" => "rnnsweep.tokenizer".to_string(),
            _ => format!("rnnsweep.{}_tokenizer", input.view.name()),
        };
        if input.name != "ids" {
            let (tokenizer, _) = input.tokenizer(members);
            out.push((key.clone(), options_json(&tokenizer.options)));
        }
        out.push((format!("{key}_file"), file.clone()));
    }
    if !threshold.offsets.is_empty() {
        out.push((
            "rnnsweep.class_offsets".into(),
            json(serde_json::json!(threshold.offsets)),
        ));
    }
    if !threshold.label_thresholds.is_empty() {
        out.push((
            "rnnsweep.label_thresholds".into(),
            json(serde_json::json!(threshold.label_thresholds)),
        ));
    }
    if let Some(rule) = combine {
        out.push((
            "rnnsweep.combine".into(),
            json(serde_json::to_value(rule).unwrap_or_default()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::{Ensemble, StoredTask, StoredThreshold};
    use crate::config::{Cell, ModelConfig, Pooling};
    use crate::nn::Net;
    use crate::threshold::ThresholdMode;
    use crate::tokenizer::Tokenizer;
    use candle_core::Device;
    use onnx_protobuf::{ModelProto, TensorProto};
    use protobuf::Message;

    fn model(cell: Cell, texts: &[&str]) -> TrainedModel {
        let config = ModelConfig {
            max_words: 100,
            embedding_dim: 3,
            lstm_units: vec![2],
            dense: Vec::new(),
            cell,
            pooling: Pooling::Last,
            sequence_length: Some(5),
            ..ModelConfig::default()
        };
        let tokenizer = Tokenizer::fit(Some(100), texts.iter().copied());
        let net = Net::for_task(&config, tokenizer.id_limit(), 1, false, &Device::Cpu).unwrap();
        TrainedModel {
            encoder: crate::encoder::TextEncoder::from_saved(&config, vec![tokenizer]).unwrap(),
            config,
            net,
            threshold: StoredThreshold {
                value: 0.375,
                mode: ThresholdMode::default(),
                calibration_rows: 0,
                offsets: Vec::new(),
                label_thresholds: Vec::new(),
            },
            task: StoredTask::tweets(),
        }
    }

    /// A two-tower (words, characters) model on `texts`.
    fn two_view_model(texts: &[&str]) -> TrainedModel {
        views_model("word+char", texts)
    }

    /// A model of `inputs` (`word+char`, `word+ngram`, …) on `texts`, the character view's
    /// length 12.
    fn views_model(inputs: &str, texts: &[&str]) -> TrainedModel {
        let config = ModelConfig {
            inputs: inputs.parse().unwrap(),
            char_sequence_length: Some(12),
            ..model(Cell::Lstm, texts).config
        };
        let encoder = crate::encoder::TextEncoder::fit(&config, texts);
        let net = Net::for_views(&config, &encoder.shapes(), 1, false, &Device::Cpu).unwrap();
        TrainedModel {
            config: encoder.record_lengths(config),
            encoder,
            net,
            ..model(Cell::Lstm, texts)
        }
    }

    fn written(predictor: &Predictor) -> (ModelProto, std::path::PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model.onnx");
        export(predictor, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        (ModelProto::parse_from_bytes(&bytes).unwrap(), out, dir)
    }

    fn metadata_of(onnx: &ModelProto) -> std::collections::HashMap<&str, &str> {
        onnx.metadata_props
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect()
    }

    /// A view's tokenizer as the export gives it: the options in the metadata, which names
    /// `model.<view>.tokenizer.json`, and that Keras-format file with its word index.
    fn view_tokenizer(
        onnx: &ModelProto,
        out: &std::path::Path,
        view: &str,
    ) -> (String, serde_json::Value, serde_json::Value) {
        let meta = metadata_of(onnx);
        let file = format!("{view}.tokenizer.json");
        assert_eq!(
            meta[format!("rnnsweep.{view}_tokenizer_file").as_str()],
            format!("model.{file}")
        );
        let keras: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(beside(out, &file)).unwrap()).unwrap();
        let index = serde_json::from_str(keras["config"]["word_index"].as_str().unwrap()).unwrap();
        let options = meta[format!("rnnsweep.{view}_tokenizer").as_str()].to_string();
        (options, keras, index)
    }

    fn floats(t: &TensorProto) -> Vec<f32> {
        t.raw_data
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn initializer<'a>(m: &'a ModelProto, name: &str) -> &'a TensorProto {
        m.graph
            .initializer
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no initializer {name}"))
    }

    #[test]
    fn an_lstm_layer_is_onnx_lstm_with_its_gates_reordered_and_transposed() {
        let m = model(Cell::Lstm, &["a b c", "b c", "c"]);
        let kernel: Vec<Vec<f32>> = m.net.towers[0].recurrent[0]
            .0
            .forward
            .kernel
            .as_tensor()
            .to_vec2()
            .unwrap();
        // Distinct biases, so that every block's place shows.
        let bias: Vec<f32> = (0..8).map(|v| v as f32 + 0.5).collect();
        m.net.towers[0].recurrent[0]
            .0
            .backward
            .bias
            .set(&candle_core::Tensor::new(bias.as_slice(), &Device::Cpu).unwrap())
            .unwrap();
        let (onnx, _, _dir) = written(&Predictor::Single(Box::new(m)));
        let lstm = onnx
            .graph
            .node
            .iter()
            .find(|n| n.op_type == "LSTM")
            .unwrap();
        let direction = lstm
            .attribute
            .iter()
            .find(|a| a.name == "direction")
            .unwrap();
        assert_eq!(direction.s, b"bidirectional");
        let w = floats(initializer(&onnx, &lstm.input[1]));
        let b = floats(initializer(&onnx, &lstm.input[3]));
        // W [2, 4U=8, in=3]: ONNX block 1 (o) is Keras block 3, block 2 (f) Keras block 1.
        let (u, input) = (2, 3);
        assert_eq!(kernel.len(), input);
        let at = |dir: usize, row: usize, col: usize| w[(dir * 4 * u + row) * input + col];
        for (x, row) in kernel.iter().enumerate() {
            for unit in 0..u {
                assert_eq!(at(0, unit, x), row[unit], "i");
                assert_eq!(at(0, u + unit, x), row[3 * u + unit], "o");
                assert_eq!(at(0, 2 * u + unit, x), row[u + unit], "f");
                assert_eq!(at(0, 3 * u + unit, x), row[2 * u + unit], "c");
            }
        }
        // B [2, 8U]: the backward direction's input bias in i, o, f, c order, then zeros for
        // the recurrent bias.
        let backward = &b[8 * u..];
        assert_eq!(
            &backward[..4 * u],
            &[0.5, 1.5, 6.5, 7.5, 2.5, 3.5, 4.5, 5.5]
        );
        assert_eq!(&backward[4 * u..], &[0.0; 8]);
    }

    #[test]
    fn a_gru_layer_keeps_keras_gate_order_and_resets_after_the_multiply() {
        let m = model(Cell::Gru, &["a b c", "b c"]);
        let bias: Vec<Vec<f32>> = m.net.towers[0].recurrent[0]
            .0
            .forward
            .bias
            .as_tensor()
            .to_vec2()
            .unwrap();
        let (onnx, _, _dir) = written(&Predictor::Single(Box::new(m)));
        let gru = onnx.graph.node.iter().find(|n| n.op_type == "GRU").unwrap();
        let reset = gru
            .attribute
            .iter()
            .find(|a| a.name == "linear_before_reset")
            .unwrap();
        assert_eq!(reset.i, 1);
        let b = floats(initializer(&onnx, &gru.input[3]));
        // Forward direction: input bias row, then recurrent bias row, z r h as Keras has them.
        let want: Vec<f32> = bias[0].iter().chain(&bias[1]).copied().collect();
        assert_eq!(&b[..12], want.as_slice());
    }

    #[test]
    fn the_metadata_says_how_to_read_and_decide_and_the_tokenizer_is_keras_s_file() {
        let m = model(Cell::Lstm, &["the cat", "the dog"]);
        let (onnx, out, _dir) = written(&Predictor::Single(Box::new(m)));
        let meta = metadata_of(&onnx);
        assert_eq!(meta["rnnsweep.task"], "binary");
        assert_eq!(meta["rnnsweep.classes"], r#"["0","1"]"#);
        assert_eq!(meta["rnnsweep.threshold"], "0.375");
        assert_eq!(meta["rnnsweep.tokenizer_file"], "model.tokenizer.json");
        assert_eq!(onnx.graph.output[0].name, "probability");
        assert_eq!(onnx.opset_import[0].version, OPSET);
        let keras: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(tokenizer_path(&out)).unwrap()).unwrap();
        let config = &keras["config"];
        assert_eq!(keras["class_name"], "Tokenizer");
        assert_eq!(config["num_words"], 100);
        assert_eq!(config["lower"], true);
        // Keras keeps these three as JSON text inside the JSON.
        let index: serde_json::Value =
            serde_json::from_str(config["word_index"].as_str().unwrap()).unwrap();
        assert_eq!(index, serde_json::json!({"the": 1, "cat": 2, "dog": 3}));
        let counts: serde_json::Value =
            serde_json::from_str(config["word_counts"].as_str().unwrap()).unwrap();
        assert_eq!(counts, serde_json::json!({"the": 2, "cat": 1, "dog": 1}));
    }

    #[test]
    fn a_words_and_characters_model_reads_two_inputs_with_a_tokenizer_file_each() {
        let texts = ["the cat", "the dog"];
        let one = model(Cell::Lstm, &texts);
        let threshold = one.threshold.clone();
        // With a one-view member beside it: both read `ids`; only the two-tower one `char_ids`.
        let ensemble = Predictor::Ensemble(Ensemble {
            members: vec![two_view_model(&texts), one],
            threshold,
            combine: Combine::Logit,
        });
        let (onnx, out, _dir) = written(&ensemble);
        let inputs: Vec<&str> = onnx.graph.input.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(inputs, ["ids", "char_ids"]);
        let gathers: Vec<&str> = onnx
            .graph
            .node
            .iter()
            .filter(|n| n.op_type == "GreaterOrEqual")
            .map(|n| n.input[0].as_str())
            .collect();
        assert_eq!(
            gathers,
            ["ids", "char_ids", "ids"],
            "each view limits its own ids"
        );
        let lstms = onnx
            .graph
            .node
            .iter()
            .filter(|n| n.op_type == "LSTM")
            .count();
        assert_eq!(lstms, 3, "two towers and one");
        assert!(onnx.graph.node.iter().any(|n| n.op_type == "Concat"));
        assert!(metadata_of(&onnx)["rnnsweep.members"].contains(r#""inputs":["word","char"],"#));
        let (options, keras, index) = view_tokenizer(&onnx, &out, "char");
        assert!(options.contains(r#""char_level":true"#));
        assert_eq!(keras["config"]["char_level"], true);
        // Characters by count: t 3; h, e and the space 2 each; then c, a, d, o, g once each.
        assert_eq!(index["t"], 1);
        assert_eq!(index["g"], 9);
        // One-view models keep their single input.
        let (onnx, out, _dir) = written(&Predictor::Single(Box::new(model(Cell::Lstm, &texts))));
        assert_eq!(onnx.graph.input.len(), 1);
        assert!(!beside(&out, "char.tokenizer.json").exists());
    }

    #[test]
    fn an_ngram_view_is_its_own_input_read_as_the_mean_of_its_embeddings() {
        let texts = ["the cat", "the dog"];
        let one = model(Cell::Lstm, &texts);
        let threshold = one.threshold.clone();
        let ensemble = Predictor::Ensemble(Ensemble {
            members: vec![
                views_model("word+ngram", &texts),
                views_model("word+char+ngram", &texts),
                one,
            ],
            threshold,
            combine: Combine::Logit,
        });
        let (onnx, out, _dir) = written(&ensemble);
        let inputs: Vec<&str> = onnx.graph.input.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(inputs, ["ids", "char_ids", "ngram_ids"]);
        let count = |op: &str| onnx.graph.node.iter().filter(|n| n.op_type == op).count();
        // Recurrent towers only: two word towers, a character tower and the one-view model.
        assert_eq!(count("LSTM"), 4);
        assert_eq!(count("Gather"), 6, "every tower looks its ids up");
        assert!(metadata_of(&onnx)["rnnsweep.members"].contains(r#""inputs":["word","ngram"],"#));
        let (options, keras, index) = view_tokenizer(&onnx, &out, "ngram");
        assert!(options.contains(r#""ngrams":[2,5]"#));
        assert_eq!(keras["config"]["ngrams"], serde_json::json!([2, 5]));
        // "<the>" twice: its ten n-grams come first, "<t" first and "<the>" (whole) last.
        assert_eq!(index["<t"], 1);
        assert_eq!(index["<the>"], 10);
        assert!(index.get("cat>").is_some(), "a word's last n-gram, bounded");
    }

    #[test]
    fn an_ensemble_whose_members_tokenise_differently_is_refused() {
        let a = model(Cell::Lstm, &["the cat", "the dog"]);
        let b = model(Cell::Lstm, &["a fish"]);
        let threshold = a.threshold.clone();
        let ensemble = Predictor::Ensemble(Ensemble {
            members: vec![a, b],
            threshold,
            combine: Combine::Logit,
        });
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("e.onnx");
        let err = export(&ensemble, &out).unwrap_err().to_string();
        assert!(err.contains("member 2 tokenises differently"), "{err}");
        assert!(!out.exists());
    }
}
