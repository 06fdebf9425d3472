//! The trial protocol between the driver and a worker process.
//!
//! The driver writes a [`TrialTask`] as JSON and starts the worker with the file's path in
//! `RNNSWEEP_TRIAL`. The worker prints one JSON object per line on stdout: an `epoch` object
//! after every epoch, then one `final` object, or an `error` object on failure. Anything else
//! on stdout is ignored, stderr is kept in the trial's folder. The built-in BiLSTM worker
//! (`rnnsweep worker`) and a user's own command speak the same protocol.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rnnsweep_model::data::Columns;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const TRIAL_ENV: &str = "RNNSWEEP_TRIAL";

/// What a worker is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialTask {
    pub study: String,
    pub number: i64,
    /// The sampled values, by parameter name.
    pub params: BTreeMap<String, Value>,
    /// The full model configuration (absent for a user's command or a synthetic function).
    pub config: Option<rnnsweep_model::config::ModelConfig>,
    pub train_file: PathBuf,
    /// Validation rows from their own file (`data.validation`).
    #[serde(default)]
    pub validation_file: Option<PathBuf>,
    pub columns: Columns,
    /// How label values become classes (`data.labels`, `data.positive`).
    #[serde(default)]
    pub labels: rnnsweep_model::data::LabelRule,
    /// Where to keep (and resume from) the per-epoch checkpoint.
    pub checkpoint_dir: PathBuf,
    /// The trial's own folder (model, logs).
    pub trial_dir: PathBuf,
    /// The metric the study optimises.
    pub metric: String,
    /// `cpu` or `cuda:N` as the worker sees it.
    pub device: String,
    /// Set for synthetic trials: evaluate this function instead of training a model.
    #[serde(default)]
    pub function: Option<crate::spec::FunctionTrial>,
}

/// One line of worker output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// `metrics` holds every metric of that epoch (numbers; NaN travels as null).
    Epoch {
        epoch: i64,
        metrics: BTreeMap<String, Value>,
    },
    /// The metrics of the epoch whose weights were kept.
    Final {
        metrics: BTreeMap<String, Value>,
        #[serde(default)]
        best_epoch: Option<i64>,
        #[serde(default)]
        epochs: Option<i64>,
        #[serde(default)]
        stop: Option<String>,
    },
    Error {
        message: String,
    },
    /// Something the user should know that does not fail the trial (a discarded checkpoint).
    Warning {
        message: String,
    },
}

impl WorkerMessage {
    /// Parses a stdout line; `None` for lines that are not protocol objects.
    pub fn parse(line: &str) -> Option<Self> {
        let trimmed = line.trim();
        if !trimmed.starts_with('{') {
            return None;
        }
        serde_json::from_str(trimmed).ok()
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A metric as a float (null = NaN).
pub fn metric(metrics: &BTreeMap<String, Value>, name: &str) -> Option<f64> {
    match metrics.get(name)? {
        Value::Null => Some(f64::NAN),
        v => v.as_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn protocol_lines_round_trip_and_other_output_is_ignored() {
        let m = WorkerMessage::Epoch {
            epoch: 3,
            metrics: BTreeMap::from([
                ("val_f1".to_string(), json!(0.5)),
                ("val_roc_auc".to_string(), Value::Null),
            ]),
        };
        let line = m.to_line();
        assert_eq!(
            line,
            r#"{"type":"epoch","epoch":3,"metrics":{"val_f1":0.5,"val_roc_auc":null}}"#
        );
        assert_eq!(WorkerMessage::parse(&line), Some(m.clone()));
        assert_eq!(WorkerMessage::parse("Epoch 3/10 ...."), None);
        assert_eq!(
            WorkerMessage::parse(r#"{"type":"final","metrics":{"val_f1":0.7}}"#),
            Some(WorkerMessage::Final {
                metrics: BTreeMap::from([("val_f1".to_string(), json!(0.7))]),
                best_epoch: None,
                epochs: None,
                stop: None
            })
        );
        if let WorkerMessage::Epoch { metrics, .. } = m {
            assert!(metric(&metrics, "val_roc_auc").unwrap().is_nan());
            assert_eq!(metric(&metrics, "val_f1"), Some(0.5));
            assert_eq!(metric(&metrics, "nope"), None);
        }
    }

    /// Whatever a worker prints, the driver reads it without panicking: protocol objects are
    /// taken, anything else is ignored, and metric reads never fail.
    mod hostile {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                "[a-z_]{0,8}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::btree_map(
                        proptest::sample::select(vec![
                            "type",
                            "epoch",
                            "metrics",
                            "message",
                            "val_f1",
                            "best_epoch",
                            "epochs",
                            "stop",
                            "x"
                        ])
                        .prop_map(str::to_string),
                        inner,
                        0..5
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                json_value().prop_map(|v| v.to_string()),
                (
                    proptest::sample::select(vec!["epoch", "final", "error", "warning", "other"]),
                    json_value(),
                    json_value()
                )
                    .prop_map(|(t, a, b)| format!(
                        r#"{{"type":"{t}","epoch":{a},"metrics":{b},"message":{b}}}"#
                    )),
                json_value().prop_map(|v| {
                    let text = v.to_string();
                    let cut = text.len() / 2;
                    text.chars().take(cut).collect()
                }),
            ]
        }

        #[test]
        fn any_line_is_parsed_or_ignored_without_panic() {
            let parsed = std::cell::Cell::new(0usize);
            rnnsweep_model::fuzz::run(100_000, line(), |text| {
                if let Some(m) = WorkerMessage::parse(&text) {
                    parsed.set(parsed.get() + 1);
                    // What was taken reads back the same.
                    prop_assert_eq!(WorkerMessage::parse(&m.to_line()), Some(m.clone()));
                    if let WorkerMessage::Epoch { metrics, .. }
                    | WorkerMessage::Final { metrics, .. } = &m
                    {
                        let _ = metric(metrics, "val_f1");
                    }
                }
                Ok(())
            });
            // Both sides reached: lines taken (and round-tripped) and lines ignored.
            eprintln!("parsed {} of 100000", parsed.get());
            assert!(parsed.get() > 1_000, "only {} lines parsed", parsed.get());
            assert!(
                parsed.get() < 99_000,
                "only {} lines ignored",
                100_000 - parsed.get()
            );
        }
    }
}
