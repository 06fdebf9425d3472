//! What each epoch reports and the history file people read.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::metrics::{ClassScores, Metric};

/// What one epoch reports (also the worker protocol's per-epoch object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_loss: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_accuracy: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_loss: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_accuracy: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_precision: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_recall: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_f1: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_specificity: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_roc_auc: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_pr_auc: f64,
    /// F1 at 0.5, whatever the threshold (absent in reports from before thresholds).
    #[serde(
        default = "nan",
        rename = "val_f1_at_0.5",
        deserialize_with = "f64_or_nan"
    )]
    pub val_f1_at_half: f64,
    /// The decision threshold the validation metrics above were computed at: the
    /// configuration's fixed value, or the one chosen on the calibration rows after this epoch.
    #[serde(default = "half", deserialize_with = "f64_or_nan")]
    pub threshold: f64,
    /// `[tn, fp, fn, tp]` on the validation set at `threshold` (zeros for K classes).
    pub confusion: [u64; 4],
    pub seconds: f64,
    /// Mean F1 over the classes (both classes of a binary task).
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub val_macro_f1: f64,
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub val_weighted_f1: f64,
    /// Mean negative log-probability of the true class (no class weights, no L2).
    #[serde(default = "nan", deserialize_with = "f64_or_nan")]
    pub val_log_loss: f64,
    /// Per-class precision, recall and F1 on the validation rows (K > 2 classes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_per_class: Vec<ClassScores>,
    /// `[true][predicted]` counts on the validation rows (K > 2 classes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_confusion_matrix: Vec<Vec<u64>>,
}

impl EpochReport {
    pub fn metric(&self, name: &str) -> Option<f64> {
        Metric::from_name(name).map(|m| self.get(m))
    }

    pub fn get(&self, metric: Metric) -> f64 {
        match metric {
            Metric::TrainLoss => self.train_loss,
            Metric::TrainAccuracy => self.train_accuracy,
            Metric::ValLoss => self.val_loss,
            Metric::ValAccuracy => self.val_accuracy,
            Metric::ValPrecision => self.val_precision,
            Metric::ValRecall => self.val_recall,
            Metric::ValF1 => self.val_f1,
            Metric::ValSpecificity => self.val_specificity,
            Metric::ValRocAuc => self.val_roc_auc,
            Metric::ValPrAuc => self.val_pr_auc,
            Metric::ValF1AtHalf => self.val_f1_at_half,
            Metric::ValMacroF1 => self.val_macro_f1,
            Metric::ValWeightedF1 => self.val_weighted_f1,
            Metric::ValLogLoss => self.val_log_loss,
        }
    }
}

/// NaN travels as JSON `null` (a metric with no validation rows, or one a K-class task does
/// not have); read back, it is NaN again, so checkpoints with such epochs resume.
fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn nan() -> f64 {
    f64::NAN
}

fn half() -> f64 {
    0.5
}

/// Writes a run's per-epoch history as CSV (`history.csv` in a model folder).
pub fn write_history(path: &Path, history: &[EpochReport]) -> Result<()> {
    let io = |e: std::io::Error| ModelError::Artifact {
        path: path.display().to_string(),
        message: format!("cannot write: {e}"),
    };
    let mut w = csv::Writer::from_path(path).map_err(|e| ModelError::Artifact {
        path: path.display().to_string(),
        message: format!("cannot write: {e}"),
    })?;
    let mut header: Vec<&str> = vec!["epoch"];
    header.extend(Metric::ALL.map(Metric::name));
    header.extend(["threshold", "tn", "fp", "fn", "tp", "seconds"]);
    w.write_record(&header).map_err(|e| io(e.into()))?;
    for r in history {
        let mut row = vec![r.epoch.to_string()];
        row.extend(Metric::ALL.map(|m| r.get(m).to_string()));
        row.push(r.threshold.to_string());
        row.extend(r.confusion.map(|c| c.to_string()));
        row.push(format!("{:.3}", r.seconds));
        w.write_record(&row).map_err(|e| io(e.into()))?;
    }
    w.flush().map_err(io)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An epoch whose validation metrics are all NaN but `val_loss` and `val_f1`.
    pub(crate) fn report(epoch: usize, val_loss: f64, val_f1: f64) -> EpochReport {
        let mut r: EpochReport = serde_json::from_value(serde_json::json!({
            "epoch": epoch, "train_loss": 0.5, "train_accuracy": 0.75, "val_loss": null,
            "val_accuracy": null, "val_precision": null, "val_recall": null, "val_f1": null,
            "val_specificity": null, "val_roc_auc": null, "val_pr_auc": null,
            "confusion": [1, 2, 3, 4], "seconds": 1.23456,
        }))
        .unwrap();
        r.val_loss = val_loss;
        r.val_f1 = val_f1;
        r
    }

    #[test]
    fn nan_travels_as_null_and_reads_back_as_nan() {
        let r = report(2, 0.25, f64::NAN);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["val_f1"], serde_json::Value::Null);
        assert_eq!(json["val_loss"], serde_json::json!(0.25));
        let back: EpochReport = serde_json::from_value(json).unwrap();
        assert!(back.val_f1.is_nan() && back.val_precision.is_nan());
        assert_eq!((back.threshold, back.val_loss), (0.5, 0.25));
        assert_eq!(back.metric("val_loss"), Some(0.25));
        assert_eq!(back.metric("no_such_metric"), None);
    }

    #[test]
    fn the_history_file_has_a_header_and_one_row_per_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.csv");
        write_history(&path, &[report(1, 0.5, 0.25), report(2, 0.25, 0.5)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let header: Vec<&str> = lines[0].split(',').collect();
        assert_eq!(header[..3], ["epoch", "train_loss", "train_accuracy"]);
        assert_eq!(
            header[header.len() - 6..],
            ["threshold", "tn", "fp", "fn", "tp", "seconds"]
        );
        let row: Vec<&str> = lines[2].split(',').collect();
        let at = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
        assert_eq!(
            (at("epoch"), at("val_loss"), at("val_f1")),
            ("2", "0.25", "0.5")
        );
        assert_eq!(
            (at("val_precision"), at("tp"), at("seconds")),
            ("NaN", "4", "1.235")
        );
    }
}
