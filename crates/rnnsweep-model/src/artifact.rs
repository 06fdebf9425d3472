//! A trained model on disk: `config.json` (with the sequence length resolved),
//! `tokenizer.json`, `model.safetensors` (weights and BatchNorm moving statistics) and
//! `threshold.json` (the decision threshold, fixed or chosen on the calibration rows) and
//! `task.json` (the class names, and the columns the model reads).

use std::path::Path;

use candle_core::Device;

use crate::config::ModelConfig;
use crate::data::{Columns, LabelRule, Table};
use crate::encoder::{tokenizer_file, TextEncoder};
use crate::error::{ModelError, Result};
use crate::nn::Net;
use crate::tokenizer::Tokenizer;
use crate::train::predict::predict_padded;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const THRESHOLD_FILE: &str = "threshold.json";
pub const TASK_FILE: &str = "task.json";
/// Present in an ensemble's folder instead of the single-model files.
pub const ENSEMBLE_FILE: &str = "ensemble.json";

/// `threshold.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredThreshold {
    /// Probabilities at or above it are labelled 1 (binary models).
    pub value: f64,
    pub mode: crate::threshold::ThresholdMode,
    /// Training rows it was chosen on (0 for a fixed threshold).
    pub calibration_rows: usize,
    /// A K-class model's per-class offsets to the log-probabilities before the argmax
    /// (`max_macro_f1`); empty: plain argmax.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<f64>,
    /// A multi-label model's threshold per label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_thresholds: Vec<f64>,
}

impl StoredThreshold {
    /// The offsets to decide K classes with (`None`: plain argmax).
    pub fn class_offsets(&self) -> Option<&[f64]> {
        (!self.offsets.is_empty()).then_some(self.offsets.as_slice())
    }
}

/// `task.json`: what the model's outputs mean and which columns it reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredTask {
    /// Class names by class index: two for a binary model (its probability is the second's),
    /// K for a K-class one.
    pub classes: Vec<String>,
    /// The columns of the files it was trained on (`None`: the tweets' `id,label,tweet`).
    #[serde(default)]
    pub columns: Option<Columns>,
    /// How its label column was read (for scoring a labelled file the same way).
    #[serde(default)]
    pub labels: LabelRule,
    /// `classes` are independent 0/1 labels (one sigmoid each).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multi_label: bool,
}

impl StoredTask {
    /// Models saved before tasks: the tweets' binary task.
    pub fn tweets() -> Self {
        Self {
            classes: vec!["0".into(), "1".into()],
            columns: None,
            labels: LabelRule::binary(),
            multi_label: false,
        }
    }

    pub fn outputs(&self) -> usize {
        crate::dataset::outputs_of(self.classes.len(), self.multi_label)
    }

    /// See [`crate::dataset::normalised_width`].
    pub fn normalised_width(&self) -> usize {
        crate::dataset::normalised_width(self.outputs(), self.multi_label)
    }

    /// The columns to read, the tweets' by default.
    pub fn columns(&self) -> Columns {
        self.columns.clone().unwrap_or_default()
    }
}

pub struct TrainedModel {
    /// `sequence_length` is always `Some` here.
    pub config: ModelConfig,
    /// The tokenizer (or one per view) and sequence lengths it was trained with.
    pub encoder: TextEncoder,
    pub net: Net,
    pub threshold: StoredThreshold,
    pub task: StoredTask,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl TrainedModel {
    /// The model a training run produced, with the sequence length it was trained at.
    pub fn from_training(
        config: ModelConfig,
        data: crate::dataset::Prepared,
        net: Net,
        threshold: f64,
    ) -> Self {
        Self {
            task: StoredTask {
                classes: data.classes.clone(),
                columns: Some(data.columns.clone()),
                labels: data.label_rule.clone(),
                multi_label: data.multi_label,
            },
            threshold: StoredThreshold {
                value: threshold,
                mode: config.threshold.mode,
                calibration_rows: data.calibration.ids.rows,
                offsets: Vec::new(),
                label_thresholds: Vec::new(),
            },
            config: data.encoder.record_lengths(config),
            encoder: data.encoder,
            net,
        }
    }

    /// The first view's tokenizer: a one-view model's only one.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.encoder.first().tokenizer
    }

    /// With a K-class model's per-class offsets (from [`crate::train::FitOutcome`]).
    pub fn with_offsets(mut self, offsets: Vec<f64>) -> Self {
        self.threshold.offsets = offsets;
        self
    }

    /// With a multi-label model's per-label thresholds.
    pub fn with_label_thresholds(mut self, thresholds: Vec<f64>) -> Self {
        self.threshold.label_thresholds = thresholds;
        self
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let config =
            serde_json::to_string_pretty(&self.config).map_err(|e| ModelError::Artifact {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
        let config_path = dir.join(CONFIG_FILE);
        std::fs::write(&config_path, config).map_err(io(&config_path))?;
        for k in 0..self.encoder.views.len() {
            self.encoder.views[k]
                .tokenizer
                .save(&dir.join(self.encoder.tokenizer_file(k)))?;
        }
        let threshold_path = dir.join(THRESHOLD_FILE);
        let threshold =
            serde_json::to_string_pretty(&self.threshold).map_err(|e| ModelError::Artifact {
                path: threshold_path.display().to_string(),
                message: e.to_string(),
            })?;
        std::fs::write(&threshold_path, threshold).map_err(io(&threshold_path))?;
        let task_path = dir.join(TASK_FILE);
        let task = serde_json::to_string_pretty(&self.task).map_err(|e| ModelError::Artifact {
            path: task_path.display().to_string(),
            message: e.to_string(),
        })?;
        std::fs::write(&task_path, task).map_err(io(&task_path))?;
        let state = self
            .net
            .state()?
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_device(&Device::Cpu)?)))
            .collect::<Result<std::collections::HashMap<_, _>>>()?;
        candle_core::safetensors::save(&state, dir.join(WEIGHTS_FILE))?;
        Ok(())
    }

    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(io(&config_path))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Artifact {
                path: config_path.display().to_string(),
                message: e.to_string(),
            })?;
        let config = ModelConfig::from_value(value, &config_path.display().to_string())?;
        let tokenizers = config
            .inputs
            .views(&config.tokenizer)
            .into_iter()
            .enumerate()
            .map(|(k, input)| Tokenizer::load(&dir.join(tokenizer_file(k, input))))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let encoder = TextEncoder::from_saved(&config, tokenizers).map_err(|message| {
            ModelError::Artifact {
                path: config_path.display().to_string(),
                message,
            }
        })?;
        let task_path = dir.join(TASK_FILE);
        // Models saved before tasks were the tweets' binary ones.
        let task: StoredTask = match std::fs::read_to_string(&task_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| ModelError::Artifact {
                path: task_path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoredTask::tweets(),
            Err(e) => return Err(io(&task_path)(e)),
        };
        if task.classes.len() < 2 {
            return Err(ModelError::Artifact {
                path: task_path.display().to_string(),
                message: "a model needs at least two classes".into(),
            });
        }
        let net = Net::for_views(
            &config,
            &encoder.shapes(),
            task.outputs(),
            task.multi_label,
            device,
        )?;
        let weights = dir.join(WEIGHTS_FILE);
        let shown = weights.display().to_string();
        let state =
            candle_core::safetensors::load(&weights, device).map_err(|e| ModelError::Artifact {
                path: shown.clone(),
                message: format!("unreadable weights: {e}"),
            })?;
        net.load_state(&state, &shown)?;
        let threshold_path = dir.join(THRESHOLD_FILE);
        // Models saved before thresholds were chosen have no file: their fixed value holds.
        let threshold = match std::fs::read_to_string(&threshold_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| ModelError::Artifact {
                path: threshold_path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoredThreshold {
                value: config.threshold.value,
                mode: config.threshold.mode,
                calibration_rows: 0,
                offsets: Vec::new(),
                label_thresholds: Vec::new(),
            },
            Err(e) => return Err(io(&threshold_path)(e)),
        };
        Ok(Self {
            config,
            encoder,
            net,
            threshold,
            task,
        })
    }

    /// Probability of class 1 for every row of a table (labelled or not); for K classes,
    /// row-major `[rows, K]` probabilities.
    pub fn predict(&self, table: &Table) -> Result<Vec<f32>> {
        let padded = self.encoder.encode(&table.texts());
        predict_padded(&self.net, &padded, self.config.batch_size)
    }
}

/// How an ensemble makes one probability of its members'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The mean probability (auto-sklearn's, and soft voting's).
    #[default]
    Probability,
    /// The probability of the mean log-odds. Members trained with and without class weights
    /// differ in scale by a constant in log-odds (their own thresholds on the tweets ranged
    /// from 0.16 to 0.89), and a mean of probabilities lets whichever sits nearer 0.5 decide
    /// the order; in log-odds each member's confidence counts the same way.
    Logit,
}

impl Combine {
    /// One member's addend to the running sum ([`Combine::finish`] makes the result).
    pub fn term(self, probability: f32) -> f32 {
        match self {
            Self::Probability => probability,
            Self::Logit => {
                // Certain members (a probability of exactly 0 or 1) count as ±16.1, not ±∞;
                // in f64 so that both ends are the same distance from 0.
                let p = f64::from(probability).clamp(1e-7, 1.0 - 1e-7);
                (p / (1.0 - p)).ln() as f32
            }
        }
    }

    /// The ensemble's probability from the sum of `members` terms.
    pub fn finish(self, sum: f32, members: usize) -> f32 {
        let mean = sum / members as f32;
        match self {
            Self::Probability => mean,
            Self::Logit => 1.0 / (1.0 + (-mean).exp()),
        }
    }

    /// [`Combine::combine`] for `outputs` probabilities per row: one (binary) as that, K
    /// classes by the mean probability or, for `logit`, the normalised geometric mean (the
    /// softmax of the mean log-probabilities, the K-class form of mean log-odds).
    pub fn combine_outputs(self, members: &[&[f32]], outputs: usize) -> Vec<f32> {
        if outputs <= 1 {
            return self.combine(members);
        }
        let len = members.first().map_or(0, |m| m.len());
        let mut sum = vec![0f64; len];
        for member in members {
            for (s, &p) in sum.iter_mut().zip(*member) {
                *s += match self {
                    Self::Probability => f64::from(p),
                    Self::Logit => f64::from(p).clamp(1e-7, 1.0).ln(),
                };
            }
        }
        let n = members.len().max(1) as f64;
        let mut out = Vec::with_capacity(len);
        for row in sum.chunks(outputs) {
            match self {
                Self::Probability => out.extend(row.iter().map(|s| (s / n) as f32)),
                Self::Logit => {
                    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max) / n;
                    let exp: Vec<f64> = row.iter().map(|s| (s / n - max).exp()).collect();
                    let total: f64 = exp.iter().sum();
                    out.extend(exp.iter().map(|e| (e / total) as f32));
                }
            }
        }
        out
    }

    /// The ensemble's probability per row of the members' probabilities (one slice each).
    pub fn combine(self, members: &[&[f32]]) -> Vec<f32> {
        let rows = members.first().map_or(0, |m| m.len());
        let mut sum = vec![0f32; rows];
        for member in members {
            for (s, &p) in sum.iter_mut().zip(*member) {
                *s += self.term(p);
            }
        }
        sum.into_iter()
            .map(|s| self.finish(s, members.len()))
            .collect()
    }
}

/// Several trained models whose probabilities are combined (averaged, by default), with one
/// threshold chosen on the combined probabilities of calibration rows none of them trained on.
/// On disk: one folder per member (`member-1`, …) and `ensemble.json`.
pub struct Ensemble {
    pub members: Vec<TrainedModel>,
    pub threshold: StoredThreshold,
    pub combine: Combine,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EnsembleFile {
    members: Vec<String>,
    threshold: StoredThreshold,
    /// Absent in ensembles written before there was a choice: those averaged probabilities.
    #[serde(default)]
    combine: Combine,
}

impl Ensemble {
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut names = Vec::new();
        for (k, member) in self.members.iter().enumerate() {
            let name = format!("member-{}", k + 1);
            member.save(&dir.join(&name))?;
            names.push(name);
        }
        let path = dir.join(ENSEMBLE_FILE);
        let text = serde_json::to_string_pretty(&EnsembleFile {
            members: names,
            threshold: self.threshold.clone(),
            combine: self.combine,
        })
        .map_err(|e| ModelError::Artifact {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(io(&path))
    }

    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let path = dir.join(ENSEMBLE_FILE);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let file: EnsembleFile = serde_json::from_str(&text).map_err(|e| ModelError::Artifact {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if file.members.is_empty() {
            return Err(ModelError::Artifact {
                path: path.display().to_string(),
                message: "an ensemble needs at least one member".into(),
            });
        }
        let members: Vec<TrainedModel> = file
            .members
            .iter()
            .map(|m| TrainedModel::load(&dir.join(m), device))
            .collect::<Result<_>>()?;
        if members
            .iter()
            .any(|m| m.task.classes != members[0].task.classes)
        {
            return Err(ModelError::Artifact {
                path: path.display().to_string(),
                message: "the members were trained for different classes".into(),
            });
        }
        Ok(Self {
            members,
            threshold: file.threshold,
            combine: file.combine,
        })
    }

    /// The members' combined probability of class 1 for every row.
    pub fn predict(&self, table: &Table) -> Result<Vec<f32>> {
        let each = self
            .members
            .iter()
            .map(|m| m.predict(table))
            .collect::<Result<Vec<_>>>()?;
        let columns: Vec<&[f32]> = each.iter().map(Vec::as_slice).collect();
        // Independent labels combine one by one, as binary probabilities do.
        Ok(self
            .combine
            .combine_outputs(&columns, self.task().normalised_width()))
    }

    /// The members' task (they share it).
    pub fn task(&self) -> &StoredTask {
        &self.members[0].task
    }
}

/// What a model folder holds: one model, or an ensemble.
pub enum Predictor {
    Single(Box<TrainedModel>),
    Ensemble(Ensemble),
}

impl Predictor {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if dir.join(ENSEMBLE_FILE).is_file() {
            Ok(Self::Ensemble(Ensemble::load(dir, device)?))
        } else {
            Ok(Self::Single(Box::new(TrainedModel::load(dir, device)?)))
        }
    }

    pub fn predict(&self, table: &Table) -> Result<Vec<f32>> {
        match self {
            Self::Single(m) => m.predict(table),
            Self::Ensemble(e) => e.predict(table),
        }
    }

    pub fn threshold(&self) -> &StoredThreshold {
        match self {
            Self::Single(m) => &m.threshold,
            Self::Ensemble(e) => &e.threshold,
        }
    }

    pub fn task(&self) -> &StoredTask {
        match self {
            Self::Single(m) => &m.task,
            Self::Ensemble(e) => e.task(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Combine;

    #[test]
    fn k_class_members_combine_by_mean_or_normalised_geometric_mean() {
        let a = [0.5f32, 0.25, 0.25];
        let b = [0.125f32, 0.5, 0.375];
        let mean = Combine::Probability.combine_outputs(&[&a, &b], 3);
        assert_eq!(mean, vec![0.3125, 0.375, 0.3125]);
        // Geometric means √(.5·.125) = .25, √(.25·.5) = .35355, √(.25·.375) = .30619, normalised.
        let g = Combine::Logit.combine_outputs(&[&a, &b], 3);
        let total = 0.25 + 0.353_553_4 + 0.306_186_2;
        for (got, want) in g
            .iter()
            .zip([0.25 / total, 0.353_553_4 / total, 0.306_186_2 / total])
        {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{g:?}");
        }
    }

    #[test]
    fn logit_combination_is_the_probability_of_the_mean_log_odds() {
        // Log-odds ln 9 and 0: mean ln 3, probability 3 / (1 + 3).
        let a = [0.9f32, 0.2];
        let b = [0.5f32, 0.2];
        let logit = Combine::Logit.combine(&[&a, &b]);
        assert!((logit[0] - 0.75).abs() < 1e-6, "{logit:?}");
        assert!((logit[1] - 0.2).abs() < 1e-6, "{logit:?}");
        let mean = Combine::Probability.combine(&[&a, &b]);
        assert!((mean[0] - 0.7).abs() < 1e-6, "{mean:?}");
        // Certain members stay finite: ±16.1 in log-odds, not infinities.
        let sure = Combine::Logit.combine(&[&[1.0, 0.0], &[0.0, 0.0]]);
        assert!((sure[0] - 0.5).abs() < 1e-6, "{sure:?}");
        assert!(sure[1] > 0.0 && sure[1] < 1e-6, "{sure:?}");
    }

    #[test]
    fn the_two_rules_can_order_rows_differently() {
        // A member sure of both rows (wrongly ordered) and one that orders them right: the mean
        // probability follows the second, the mean log-odds the first.
        let sure = [0.99f32, 0.999];
        let right = [0.5f32, 0.1];
        let mean = Combine::Probability.combine(&[&sure, &right]);
        let logit = Combine::Logit.combine(&[&sure, &right]);
        assert!(mean[0] > mean[1], "{mean:?}");
        assert!(logit[0] < logit[1], "{logit:?}");
    }
}
