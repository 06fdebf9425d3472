//! `ModelConfig`: everything that defines one trainable configuration, with the 2021 report's
//! model as the default. Loads from JSON or YAML; `key=value` overrides use dotted paths.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::optim::OptimizerConfig;
use crate::threshold::Threshold;
use crate::tokenizer::TokenizerOptions;

/// Keras `pad_sequences` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    Pre,
    #[default]
    Post,
}

/// Which end of a too-long sequence is cut. Keras's default is `pre` (drop the beginning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Truncating {
    #[default]
    Pre,
    Post,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Keras `num_words`: word ids below this are kept.
    pub max_words: usize,
    pub embedding_dim: usize,
    /// Units of each stacked bidirectional LSTM layer (per direction).
    pub lstm_units: Vec<usize>,
    /// Dropout on each LSTM layer's inputs, one mask per sequence.
    pub lstm_dropout: f64,
    pub batch_norm: bool,
    /// Keras's default 0.99 needs a few hundred batches before the moving statistics used at
    /// evaluation settle; small data sets want a lower value such as 0.9.
    pub batch_norm_momentum: f64,
    pub dense: Vec<DenseConfig>,
    /// Dropout between consecutive dense layers.
    pub dense_dropout: f64,
    pub optimizer: OptimizerConfig,
    pub batch_size: usize,
    pub epochs: usize,
    pub early_stopping: EarlyStopping,
    /// `None` = the longest tokenized training sequence.
    pub sequence_length: Option<usize>,
    pub padding: Padding,
    pub truncating: Truncating,
    pub validation_split: f64,
    pub class_weighting: bool,
    pub seed: u64,
    /// Which LSTM implementation to run.
    pub lstm_impl: LstmImpl,
    /// The recurrent cell of every layer (left out of the stored form at its default, `lstm`,
    /// so older studies keep their fingerprint).
    #[serde(skip_serializing_if = "Cell::is_default")]
    pub cell: Cell,
    /// How rows are grouped into batches (left out of the stored form when it is the
    /// default, so studies made before it existed keep their fingerprint).
    #[serde(skip_serializing_if = "Batching::is_default")]
    pub batching: Batching,
    // The keys below are left out of the stored form at their defaults for the same reason.
    /// How the last LSTM layer's outputs become one vector per row.
    #[serde(skip_serializing_if = "Pooling::is_default")]
    pub pooling: Pooling,
    /// Drops a token's whole embedding vector with this probability in training (the rest
    /// are scaled by 1/(1−p)); the step still counts as a real one.
    #[serde(skip_serializing_if = "is_zero")]
    pub embedding_dropout: f64,
    /// How the embedding table is updated each step (see [`EmbeddingUpdate`]).
    #[serde(skip_serializing_if = "EmbeddingUpdate::is_default")]
    pub embedding_update: EmbeddingUpdate,
    /// Keras `Tokenizer` options besides `num_words` (which is `max_words`).
    #[serde(skip_serializing_if = "TokenizerOptions::is_default")]
    pub tokenizer: TokenizerOptions,
    /// Which views of a text the network reads: its words, its characters, or both in one
    /// network (`word+char`: two towers, each its own embedding and recurrent stack, pooled
    /// and concatenated before the dense head), and its words' character n-grams (`ngram`: a
    /// bag tower, the mean of the n-grams' embeddings, as fastText reads a text). Left out,
    /// the one view `tokenizer.char_level` names.
    #[serde(skip_serializing_if = "Inputs::is_default")]
    pub inputs: Inputs,
    /// With several views, the probability that a training row keeps only one tower's pooled
    /// features (chosen uniformly; the others zeroed, what is kept rescaled so each tower's
    /// expected contribution is unchanged): modality dropout (Neverova et al. 2015), so the
    /// tower that learns fastest cannot carry every row alone. Unused with one view.
    #[serde(skip_serializing_if = "is_zero")]
    pub view_dropout: f64,
    /// The character view's sequence length when `inputs` has both views (`sequence_length`
    /// is then the word view's); `None` = its longest row. Unused with one view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub char_sequence_length: Option<usize>,
    /// The n-gram view's sequence length (n-grams kept per text); `None` = its longest row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ngram_sequence_length: Option<usize>,
    /// How probabilities become labels, in validation metrics and in `predict`.
    #[serde(skip_serializing_if = "Threshold::is_default")]
    pub threshold: Threshold,
    /// Share of the training rows (stratified) held out to choose the threshold, when the
    /// threshold mode chooses one. Never taken from the validation rows.
    #[serde(skip_serializing_if = "is_default_calibration_split")]
    pub calibration_split: f64,
}

const DEFAULT_CALIBRATION_SPLIT: f64 = 0.1;

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn is_default_calibration_split(x: &f64) -> bool {
    *x == DEFAULT_CALIBRATION_SPLIT
}

/// How the embedding table learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingUpdate {
    /// The whole table's gradient (zero for words not in the batch) goes through the
    /// optimizer every step, as Keras does: momentum keeps moving rows not in the batch.
    #[default]
    Dense,
    /// Only the rows of words in the batch get a gradient and an optimizer update; their
    /// optimizer state advances only then (TensorFlow Addons' `LazyAdam`, PyTorch's
    /// `SparseAdam`). A step then costs the batch's words, not the vocabulary. Equal to
    /// `dense` for plain SGD; with momentum-style optimizers rows absent from a batch keep
    /// their weights (and weight decay, if set, touches only the batch's rows).
    Sparse,
}

impl EmbeddingUpdate {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How an epoch's rows are grouped into batches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Batching {
    pub mode: BatchingMode,
    /// `bucket`: how many batches' worth of shuffled rows are sorted by length together.
    pub bucket_size: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            mode: BatchingMode::Shuffle,
            bucket_size: 50,
        }
    }
}

impl Batching {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BatchingMode {
    /// Rows in a seeded random order, cut into batches (Keras's `shuffle=True`).
    #[default]
    Shuffle,
    /// Length bucketing: rows of similar length batched together (each batch is then padded
    /// only to its own longest row), the batches in a seeded random order. Changes which rows
    /// share a batch, so results differ from `shuffle`, as in Keras or PyTorch.
    Bucket,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            max_words: 5000,
            embedding_dim: 88,
            lstm_units: vec![512, 512],
            lstm_dropout: 0.3,
            batch_norm: true,
            batch_norm_momentum: 0.99,
            dense: vec![
                DenseConfig {
                    units: 512,
                    activation: Activation::Sigmoid,
                    l2: 0.02,
                },
                DenseConfig {
                    units: 128,
                    activation: Activation::Relu,
                    l2: 0.01,
                },
            ],
            dense_dropout: 0.5,
            optimizer: OptimizerConfig::default(),
            batch_size: 256,
            epochs: 80,
            early_stopping: EarlyStopping::default(),
            sequence_length: None,
            padding: Padding::Post,
            truncating: Truncating::Pre,
            validation_split: 0.1,
            class_weighting: true,
            seed: 6464,
            lstm_impl: LstmImpl::Auto,
            cell: Cell::Lstm,
            batching: Batching::default(),
            pooling: Pooling::Last,
            embedding_dropout: 0.0,
            embedding_update: EmbeddingUpdate::Dense,
            tokenizer: TokenizerOptions::default(),
            inputs: Inputs::default(),
            view_dropout: 0.0,
            char_sequence_length: None,
            ngram_sequence_length: None,
            threshold: Threshold::default(),
            calibration_split: DEFAULT_CALIBRATION_SPLIT,
        }
    }
}

/// One view of a text: the tokens one tower of the network reads; in the order their ids sit
/// in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputView {
    Word,
    Char,
    /// Each word's character n-grams, read as a bag (no recurrent layer).
    Ngram,
}

impl InputView {
    pub fn name(self) -> &'static str {
        match self {
            InputView::Word => "word",
            InputView::Char => "char",
            InputView::Ngram => "ngram",
        }
    }

    /// What a sentence calls its tokens.
    pub fn plural(self) -> &'static str {
        match self {
            InputView::Word => "words",
            InputView::Char => "characters",
            InputView::Ngram => "n-grams",
        }
    }

    /// Whether its tower is a bag (the mean of its embeddings) rather than a recurrent stack.
    pub fn is_bag(self) -> bool {
        self == InputView::Ngram
    }
}

/// The `inputs` key: `word`, `char`, `ngram`, or several joined by `+` (`word+char`,
/// `word+ngram`, `word+char+ngram`; also a YAML list, `[word, char]`). Stored
/// as the `+`-joined string, so a search can offer it as one categorical value. Empty (the
/// default) means the one view `tokenizer.char_level` names, as before the key existed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inputs(Vec<InputView>);

impl Inputs {
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }

    /// Both views in one network.
    pub fn word_and_char() -> Self {
        Self(vec![InputView::Word, InputView::Char])
    }

    /// The views the network reads, in the order their ids sit in a row (words, characters,
    /// n-grams).
    pub fn views(&self, tokenizer: &TokenizerOptions) -> Vec<InputView> {
        if self.0.is_empty() {
            vec![if tokenizer.char_level {
                InputView::Char
            } else {
                InputView::Word
            }]
        } else {
            self.0.clone()
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut views = Vec::new();
        for part in text.split('+').map(str::trim) {
            let view = match part {
                "word" => InputView::Word,
                "char" => InputView::Char,
                "ngram" => InputView::Ngram,
                other => {
                    return Err(format!(
                        "`{other}` is not an input view (word, char, ngram, or several joined \
                         by +, e.g. word+char)"
                    ))
                }
            };
            if views.contains(&view) {
                return Err(format!("`{part}` is named twice in `{text}`"));
            }
            views.push(view);
        }
        // One layout for a row's ids whichever way the user wrote it: words, characters,
        // n-grams.
        views.sort();
        Ok(Self(views))
    }
}

impl std::str::FromStr for Inputs {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

impl std::fmt::Display for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|v| v.name()).collect();
        f.write_str(&names.join("+"))
    }
}

impl Serialize for Inputs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Inputs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<String>),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(t) => t,
            Raw::List(items) => items.join("+"),
        };
        Inputs::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LstmImpl {
    /// The fastest implementation available on the device: the fused op, whose CPU kernel or
    /// (in a `cuda` build) CUDA kernels run on the CPU or a GPU; the reference layer elsewhere.
    #[default]
    Auto,
    /// Built from candle ops: runs on any device; the oracle for faster kernels.
    Reference,
    /// The fused CPU kernel (one op per layer, hand-written backward through time).
    Fused,
}

/// The recurrent cell: Keras's `LSTM` or `GRU` (`reset_after=True`, the Keras 2+/cuDNN form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Cell {
    #[default]
    Lstm,
    Gru,
}

impl Cell {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Gate blocks of `U` columns in the kernels: 4 for an LSTM, 3 for a GRU.
    pub fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// Bias rows: an LSTM has one, a GRU an input and a recurrent one.
    pub fn bias_rows(self) -> usize {
        match self {
            Cell::Lstm => 1,
            Cell::Gru => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseConfig {
    pub units: usize,
    #[serde(default)]
    pub activation: Activation,
    /// Keras `kernel_regularizer=l2(x)`: adds `x · Σ w²` to the loss.
    #[serde(default)]
    pub l2: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Relu,
    Sigmoid,
    Tanh,
    Linear,
    Elu,
    Selu,
    Softplus,
    Softsign,
    HardSigmoid,
    Gelu,
    Swish,
}

impl Activation {
    pub const ALL: [Activation; 11] = [
        Activation::Relu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Linear,
        Activation::Elu,
        Activation::Selu,
        Activation::Softplus,
        Activation::Softsign,
        Activation::HardSigmoid,
        Activation::Gelu,
        Activation::Swish,
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarlyStopping {
    /// `val_loss` (minimised) or any reported validation metric such as `val_f1` (maximised).
    pub monitor: String,
    pub patience: usize,
    pub min_delta: f64,
    pub restore_best: bool,
    pub enabled: bool,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self {
            monitor: "val_loss".into(),
            patience: 5,
            min_delta: 0.0,
            restore_best: true,
            enabled: true,
        }
    }
}

/// What one configuration costs, before anything runs (`rnnsweep run --dry-run`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// Weights and BatchNorm statistics, as Keras's "Total params" counts them.
    pub parameters: usize,
    /// Multiply-adds × 2 of one forward pass over one full-length row.
    pub forward_flops_per_row: f64,
}

impl Cost {
    /// An epoch: forward and backward (≈ 3× forward) over the training rows, and a forward
    /// pass over the validation rows.
    pub fn flops_per_epoch(&self, train_rows: usize, validation_rows: usize) -> f64 {
        self.forward_flops_per_row * (3.0 * train_rows as f64 + validation_rows as f64)
    }
}

impl ModelConfig {
    /// The model's size and work for a vocabulary of `vocab` ids (the tokenizer's id limit)
    /// and rows of `sequence_length` steps.
    pub fn cost(&self, vocab: usize, sequence_length: usize) -> Cost {
        let view = self.inputs.views(&self.tokenizer)[0];
        self.cost_of_views(&[(view, vocab, sequence_length)])
    }

    /// [`ModelConfig::cost`] for a network with one tower per view, each `(vocabulary,
    /// sequence length)`.
    pub fn cost_of_views(&self, views: &[(InputView, usize, usize)]) -> Cost {
        let mut parameters = 0;
        let mut flops = 0.0;
        let gates = self.cell.gates();
        // A GRU has a recurrent bias besides the input one.
        let bias_rows = self.cell.bias_rows();
        let mut pooled = 0;
        for &(view, vocab, sequence_length) in views {
            parameters += vocab * self.embedding_dim;
            if view.is_bag() {
                // The mean of its embeddings: one add per token and feature.
                flops += (sequence_length * self.embedding_dim) as f64;
                pooled += self.embedding_dim;
                continue;
            }
            let mut input = self.embedding_dim;
            for &units in &self.lstm_units {
                // Two directions, each: kernel in×GU, recurrent U×GU, bias GU (G gates).
                parameters += 2 * (gates * units * (input + units) + bias_rows * gates * units);
                flops += 2.0
                    * 2.0
                    * gates as f64
                    * units as f64
                    * (input + units) as f64
                    * sequence_length as f64;
                if self.batch_norm {
                    parameters += 4 * 2 * units;
                }
                input = 2 * units;
            }
            parameters += self.pooling.parameters(input);
            flops += self.pooling.flops_per_step(input) * sequence_length as f64;
            pooled += self.pooling.output_features(input);
        }
        let mut input = pooled;
        for d in &self.dense {
            parameters += input * d.units + d.units;
            flops += 2.0 * (input * d.units) as f64;
            input = d.units;
        }
        parameters += input + 1;
        flops += 2.0 * input as f64;
        Cost {
            parameters,
            forward_flops_per_row: flops,
        }
    }

    /// Reads JSON (`.json`) or YAML (anything else).
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let config: Self = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| ModelError::Config {
                at: format!("{}:{}:{}", path.display(), e.line(), e.column()),
                message: e.to_string(),
            })?
        } else {
            serde_yaml::from_str(&text).map_err(|e| ModelError::Config {
                at: match e.location() {
                    Some(l) => format!("{}:{}:{}", path.display(), l.line(), l.column()),
                    None => path.display().to_string(),
                },
                message: e.to_string(),
            })?
        };
        config.validate()?;
        Ok(config)
    }

    /// Splits `key=value` and reads the value as YAML (`adam`, `0.002`, `[64, 64]`).
    pub fn parse_assignment(item: &str) -> Result<(String, serde_json::Value), ModelError> {
        let (key, raw) = item.split_once('=').ok_or_else(|| ModelError::Config {
            at: format!("--set {item}"),
            message: "expected key=value".into(),
        })?;
        let parsed: serde_json::Value =
            serde_yaml::from_str(raw).map_err(|e| ModelError::Config {
                at: format!("--set {item}"),
                message: e.to_string(),
            })?;
        Ok((key.trim().to_string(), parsed))
    }

    /// Applies `key=value` overrides (`optimizer.learning_rate=0.01`, `lstm_units=[64,64]`);
    /// values are parsed as YAML so lists, numbers and strings all work.
    pub fn with_overrides(&self, overrides: &[String]) -> Result<Self, ModelError> {
        let mut value = serde_json::to_value(self).map_err(|e| ModelError::Config {
            at: "config".into(),
            message: e.to_string(),
        })?;
        for item in overrides {
            let (key, parsed) = Self::parse_assignment(item)?;
            set_path(&mut value, &key, parsed).map_err(|message| ModelError::Config {
                at: format!("--set {item}"),
                message,
            })?;
        }
        Self::from_value(value, "--set")
    }

    /// Builds a config from a JSON value (e.g. one assembled by the search driver).
    pub fn from_value(value: serde_json::Value, at: &str) -> Result<Self, ModelError> {
        let config: Self = serde_json::from_value(value).map_err(|e| ModelError::Config {
            at: at.to_string(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |field: &str, message: String| {
            Err(ModelError::Config {
                at: field.to_string(),
                message,
            })
        };
        if self.max_words < 2 {
            return bad("max_words", format!("{} is below 2", self.max_words));
        }
        if self.embedding_dim == 0 {
            return bad("embedding_dim", "must be at least 1".into());
        }
        if self.lstm_units.is_empty() || self.lstm_units.contains(&0) {
            return bad(
                "lstm_units",
                format!(
                    "{:?}: need at least one layer, each with at least 1 unit",
                    self.lstm_units
                ),
            );
        }
        if let Some(i) = self.dense.iter().position(|d| d.units == 0) {
            return bad(&format!("dense[{i}].units"), "must be at least 1".into());
        }
        if let Some(i) = self
            .dense
            .iter()
            .position(|d| !(d.l2 >= 0.0 && d.l2.is_finite()))
        {
            return bad(
                &format!("dense[{i}].l2"),
                format!("{} must be ≥ 0", self.dense[i].l2),
            );
        }
        for (field, p) in [
            ("batch_norm_momentum", self.batch_norm_momentum),
            ("lstm_dropout", self.lstm_dropout),
            ("dense_dropout", self.dense_dropout),
            ("embedding_dropout", self.embedding_dropout),
            ("view_dropout", self.view_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(field, format!("{p} is not in [0, 1)"));
            }
        }
        if !(self.validation_split > 0.0 && self.validation_split < 1.0) {
            return bad(
                "validation_split",
                format!("{} is not in (0, 1)", self.validation_split),
            );
        }
        if !(self.calibration_split > 0.0 && self.calibration_split < 1.0) {
            return bad(
                "calibration_split",
                format!("{} is not in (0, 1)", self.calibration_split),
            );
        }
        self.threshold.validate()?;
        self.tokenizer.validate()?;
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.sequence_length == Some(0) {
            return bad(
                "sequence_length",
                "must be at least 1 (or null for the longest)".into(),
            );
        }
        for (key, length) in [
            ("char_sequence_length", self.char_sequence_length),
            ("ngram_sequence_length", self.ngram_sequence_length),
        ] {
            if length == Some(0) {
                return bad(key, "must be at least 1 (or null for the longest)".into());
            }
        }
        if self.tokenizer.ngrams.is_some() {
            return bad(
                "tokenizer.ngrams",
                "the n-gram view sets it: add `ngram` to `inputs` (e.g. `inputs: word+ngram`)"
                    .into(),
            );
        }
        if !self.inputs.is_default() && self.tokenizer.char_level {
            return bad(
                "tokenizer.char_level",
                format!(
                    "`inputs: {}` names the views; leave tokenizer.char_level out (`inputs: char` \
                     is the character-level model)",
                    self.inputs
                ),
            );
        }
        crate::metrics::direction_of(&self.early_stopping.monitor).ok_or_else(|| {
            ModelError::Config {
                at: "early_stopping.monitor".into(),
                message: format!(
                    "`{}` is not a reported metric (one of: {})",
                    self.early_stopping.monitor,
                    crate::metrics::Metric::names()
                ),
            }
        })?;
        crate::optim::validate(&self.optimizer)
    }
}

/// Sets a dotted path (`optimizer.learning_rate`, `dense.1.units`) inside a JSON value,
/// creating tables on the way.
pub fn set_path(
    value: &mut serde_json::Value,
    key: &str,
    new: serde_json::Value,
) -> Result<(), String> {
    let mut cur = value;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        cur = match cur {
            serde_json::Value::Object(map) => {
                if last {
                    map.insert((*part).to_string(), new);
                    return Ok(());
                }
                map.entry((*part).to_string())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()))
            }
            serde_json::Value::Array(items) => {
                let idx: usize = part
                    .parse()
                    .map_err(|_| format!("`{part}` is not a list index"))?;
                let len = items.len();
                let slot = items
                    .get_mut(idx)
                    .ok_or_else(|| format!("index {idx} is past the end of a list of {len}"))?;
                if last {
                    *slot = new;
                    return Ok(());
                }
                slot
            }
            serde_json::Value::Null => {
                *cur = serde_json::Value::Object(Default::default());
                match cur {
                    serde_json::Value::Object(map) => {
                        if last {
                            map.insert((*part).to_string(), new);
                            return Ok(());
                        }
                        map.entry((*part).to_string())
                            .or_insert_with(|| serde_json::Value::Object(Default::default()))
                    }
                    _ => unreachable!("just set to an object"),
                }
            }
            _ => return Err(format!("`{}` is not a table", parts[..i].join("."))),
        };
    }
    Ok(())
}

/// How the last recurrent layer's outputs become one vector per row (the computation is
/// `nn::pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The forward direction's last real state and the backward direction's first.
    #[default]
    Last,
    /// The largest value of each feature over the real steps.
    Max,
    /// The mean of each feature over the real steps.
    Mean,
    /// `max` and `mean` side by side (twice the features).
    MaxMean,
    /// A learned weighted mean: `softmax_t(v · tanh(W x_t + b))` over the real steps.
    Attention,
}

impl Pooling {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the last LSTM layer must return every step.
    pub fn needs_sequence(self) -> bool {
        self != Pooling::Last
    }

    /// Features per row out of `features` LSTM outputs per step.
    pub fn output_features(self, features: usize) -> usize {
        match self {
            Pooling::MaxMean => 2 * features,
            _ => features,
        }
    }

    /// Multiply-adds × 2 it adds per row and step for `features` inputs (attention's scorer).
    pub fn flops_per_step(self, features: usize) -> f64 {
        match self {
            Pooling::Attention => {
                let a = attention_units(features);
                2.0 * (features * a + a) as f64
            }
            _ => 0.0,
        }
    }

    /// Trainable weights it adds for `features` inputs.
    pub fn parameters(self, features: usize) -> usize {
        match self {
            Pooling::Attention => {
                let a = attention_units(features);
                features * a + a + a
            }
            _ => 0,
        }
    }
}

/// The attention scorer's width for `features` inputs.
pub fn attention_units(features: usize) -> usize {
    (features / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::OptimizerName;

    #[test]
    fn defaults_are_the_reports_model() {
        let c = ModelConfig::default();
        assert_eq!(c.embedding_dim, 88);
        assert_eq!(c.dense[0].units, 512);
        assert_eq!(c.dense[0].activation, Activation::Sigmoid);
        assert_eq!(c.dense[1].l2, 0.01);
        assert_eq!(c.early_stopping.patience, 5);
        c.validate().unwrap();
    }

    #[test]
    fn inputs_are_read_as_a_list_or_a_joined_name_and_stored_as_the_name() {
        let read = |yaml: &str| serde_yaml::from_str::<ModelConfig>(yaml).map(|c| c.inputs);
        let both = Inputs::word_and_char();
        assert_eq!(read("inputs: [word, char]").unwrap(), both);
        assert_eq!(read("inputs: word+char").unwrap(), both);
        assert_eq!(
            read("inputs: char + word").unwrap(),
            both,
            "words come first"
        );
        assert_eq!(
            read("inputs: char")
                .unwrap()
                .views(&TokenizerOptions::default()),
            vec![InputView::Char]
        );
        // Left out, the tokenizer's char_level decides, as before the key existed.
        let chars = TokenizerOptions {
            char_level: true,
            ..TokenizerOptions::default()
        };
        assert_eq!(Inputs::default().views(&chars), vec![InputView::Char]);
        assert_eq!(
            serde_json::to_value(ModelConfig {
                inputs: both,
                ..ModelConfig::default()
            })
            .unwrap()["inputs"],
            "word+char"
        );
        assert!(!serde_json::to_value(ModelConfig::default())
            .unwrap()
            .as_object()
            .unwrap()
            .contains_key("inputs"));
        let err = read("inputs: [word, words]").unwrap_err().to_string();
        assert!(
            err.contains("`words` is not an input view (word, char, ngram, or several"),
            "{err}"
        );
        // Three views, in the row's order whichever way they are written.
        let three = read("inputs: ngram+word+char").unwrap();
        assert_eq!(
            three.views(&TokenizerOptions::default()),
            vec![InputView::Word, InputView::Char, InputView::Ngram]
        );
        assert_eq!(three.to_string(), "word+char+ngram");
        let err = ModelConfig::default()
            .with_overrides(&["tokenizer.ngrams={min: 2, max: 3}".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer.ngrams") && err.contains("inputs: word+ngram"),
            "{err}"
        );
        let err = read("inputs: word+word").unwrap_err().to_string();
        assert!(err.contains("`word` is named twice"), "{err}");
        let err = ModelConfig::default()
            .with_overrides(&[
                "inputs=word+char".into(),
                "tokenizer.char_level=true".into(),
            ])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer.char_level") && err.contains("inputs: char"),
            "{err}"
        );
    }

    #[test]
    fn overrides_use_dotted_paths_and_yaml_values() {
        let c = ModelConfig::default()
            .with_overrides(&[
                "lstm_units=[64, 32]".into(),
                "optimizer.name=rmsprop".into(),
                "optimizer.learning_rate=0.01".into(),
                "dense.1.activation=tanh".into(),
                "sequence_length=37".into(),
            ])
            .unwrap();
        assert_eq!(c.lstm_units, vec![64, 32]);
        assert_eq!(c.optimizer.name, OptimizerName::Rmsprop);
        assert_eq!(c.optimizer.learning_rate, Some(0.01));
        assert_eq!(c.dense[1].activation, Activation::Tanh);
        assert_eq!(c.sequence_length, Some(37));
    }

    #[test]
    fn bad_overrides_say_what_is_wrong() {
        let err = |s: &str| {
            ModelConfig::default()
                .with_overrides(&[s.into()])
                .unwrap_err()
                .to_string()
        };
        assert!(err("lstm_units").contains("expected key=value"));
        assert!(
            err("nope=1").contains("unknown field `nope`"),
            "{}",
            err("nope=1")
        );
        assert!(err("lstm_dropout=1.5").contains("lstm_dropout: 1.5 is not in [0, 1)"));
        assert!(err("dense.5.units=3").contains("index 5 is past the end"));
        assert!(
            err("early_stopping.monitor=val_nope").contains("`val_nope` is not a reported metric")
        );
        assert!(
            err("optimizer.rho=0.5").contains("optimizer.rho"),
            "{}",
            err("optimizer.rho=0.5")
        );
    }

    #[test]
    fn yaml_file_with_unknown_key_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "embedding_dim: 32\nlstm_unit: [8]\n").unwrap();
        let e = ModelConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("c.yaml:2:"), "{e}");
        assert!(e.contains("unknown field `lstm_unit`"), "{e}");
    }
}
