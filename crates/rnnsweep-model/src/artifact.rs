//! A trained model on disk: `config.json` (with the sequence length resolved),
//! `tokenizer.json`, `model.safetensors` (weights and BatchNorm moving statistics) and
//! `threshold.json` (the decision threshold, fixed or chosen on the calibration rows).

use std::path::Path;

use candle_core::Device;

use crate::config::ModelConfig;
use crate::data::Table;
use crate::dataset::pad_sequences;
use crate::error::{ModelError, Result};
use crate::net::Net;
use crate::tokenizer::Tokenizer;
use crate::train::predict_padded;

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const THRESHOLD_FILE: &str = "threshold.json";
/// Present in an ensemble's folder instead of the single-model files.
pub const ENSEMBLE_FILE: &str = "ensemble.json";

/// `threshold.json`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredThreshold {
    /// Probabilities at or above it are labelled 1.
    pub value: f64,
    pub mode: crate::threshold::ThresholdMode,
    /// Training rows it was chosen on (0 for a fixed threshold).
    pub calibration_rows: usize,
}

pub struct TrainedModel {
    /// `sequence_length` is always `Some` here.
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub net: Net,
    pub threshold: StoredThreshold,
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
            threshold: StoredThreshold {
                value: threshold,
                mode: config.threshold.mode,
                calibration_rows: data.calibration.ids.rows,
            },
            config: ModelConfig {
                sequence_length: Some(data.sequence_length),
                ..config
            },
            tokenizer: data.tokenizer,
            net,
        }
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
        self.tokenizer.save(&dir.join(TOKENIZER_FILE))?;
        let threshold_path = dir.join(THRESHOLD_FILE);
        let threshold =
            serde_json::to_string_pretty(&self.threshold).map_err(|e| ModelError::Artifact {
                path: threshold_path.display().to_string(),
                message: e.to_string(),
            })?;
        std::fs::write(&threshold_path, threshold).map_err(io(&threshold_path))?;
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
        if config.sequence_length.is_none() {
            return Err(ModelError::Artifact {
                path: config_path.display().to_string(),
                message: "sequence_length is missing (a saved model always has one)".into(),
            });
        }
        let tokenizer = Tokenizer::load(&dir.join(TOKENIZER_FILE))?;
        let net = Net::new(&config, tokenizer.id_limit(), device)?;
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
            },
            Err(e) => return Err(io(&threshold_path)(e)),
        };
        Ok(Self {
            config,
            tokenizer,
            net,
            threshold,
        })
    }

    /// Probability of class 1 for every row of a table (labelled or not).
    pub fn predict(&self, table: &Table) -> Result<Vec<f32>> {
        let sequences = self.tokenizer.texts_to_sequences(table.texts());
        let len = self.config.sequence_length.unwrap_or(1);
        let padded = pad_sequences(&sequences, len, self.config.padding, self.config.truncating);
        predict_padded(&self.net, &padded, self.config.batch_size)
    }
}

/// Several trained models whose probabilities are averaged, with one threshold chosen on the
/// averaged probabilities of calibration rows none of them trained on. On disk: one folder per
/// member (`member-1`, …) and `ensemble.json`.
pub struct Ensemble {
    pub members: Vec<TrainedModel>,
    pub threshold: StoredThreshold,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct EnsembleFile {
    members: Vec<String>,
    threshold: StoredThreshold,
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
            threshold: self.threshold,
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
        let members = file
            .members
            .iter()
            .map(|m| TrainedModel::load(&dir.join(m), device))
            .collect::<Result<_>>()?;
        Ok(Self {
            members,
            threshold: file.threshold,
        })
    }

    /// The members' mean probability of class 1 for every row.
    pub fn predict(&self, table: &Table) -> Result<Vec<f32>> {
        let mut total = vec![0f32; table.rows.len()];
        for member in &self.members {
            for (t, p) in total.iter_mut().zip(member.predict(table)?) {
                *t += p;
            }
        }
        let n = self.members.len() as f32;
        Ok(total.into_iter().map(|t| t / n).collect())
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

    pub fn threshold(&self) -> StoredThreshold {
        match self {
            Self::Single(m) => m.threshold,
            Self::Ensemble(e) => e.threshold,
        }
    }
}
