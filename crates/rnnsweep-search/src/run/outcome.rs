//! How a trial ended, decided in one place from what its worker left behind: a pure function
//! the dispatcher calls once per trial and writes with one store call.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::run::protocol::{metric, WorkerMessage};
use crate::store::keys;

/// What is known about a trial whose worker's output has ended.
#[derive(Debug, Clone, Default)]
pub struct Ended {
    /// The epoch at which the pruner stopped it.
    pub pruned_at: Option<i64>,
    /// The objective at the last epoch reported.
    pub last_value: Option<f64>,
    pub final_message: Option<WorkerMessage>,
    /// A worker's `{"type":"error"}` message.
    pub error: Option<String>,
    /// How the process ended: `exited with status 3`, `was killed (signal: 9)`.
    pub exit: Option<String>,
    pub stderr: String,
    pub epochs_seen: i64,
    /// Out of memory here may be retried once elsewhere: the trial ran on a GPU, was not
    /// retried before, and another slot exists.
    pub oom_retry_allowed: bool,
}

/// The verdict, with everything the store records for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Complete {
        value: f64,
        user_attrs: BTreeMap<String, Value>,
    },
    Pruned {
        epoch: i64,
        value: Option<f64>,
        user_attrs: BTreeMap<String, Value>,
    },
    /// Out of memory on a GPU: fail this attempt and queue the values on another device.
    OutOfMemory {
        reason: String,
    },
    Fail {
        reason: String,
    },
}

/// The last `n` lines of a worker's stderr, joined for a one-line reason.
fn tail(stderr: &str, n: usize) -> String {
    let mut lines: Vec<&str> = stderr.lines().rev().take(n).collect();
    lines.reverse();
    lines.join(" | ")
}

/// Decides how a trial ended. `objective` is the study's metric.
pub fn classify(e: &Ended, objective: &str) -> Outcome {
    if let Some(epoch) = e.pruned_at {
        return Outcome::Pruned {
            epoch,
            value: e.last_value.filter(|v| v.is_finite()),
            user_attrs: BTreeMap::from([(keys::EPOCHS.to_string(), json!(epoch))]),
        };
    }
    let failure = match (&e.final_message, &e.error) {
        (_, Some(message)) => message.clone(),
        (
            Some(WorkerMessage::Final {
                metrics,
                best_epoch,
                epochs,
                stop,
            }),
            None,
        ) => match metric(metrics, objective) {
            Some(value) if value.is_finite() => {
                let mut user_attrs: BTreeMap<String, Value> = metrics.clone();
                user_attrs.insert(keys::EPOCHS.into(), json!(epochs.unwrap_or(e.epochs_seen)));
                if let Some(b) = best_epoch {
                    user_attrs.insert(keys::BEST_EPOCH.into(), json!(b));
                }
                if let Some(s) = stop {
                    user_attrs.insert(keys::STOP_REASON.into(), json!(s));
                }
                return Outcome::Complete { value, user_attrs };
            }
            _ => format!("the final result has no finite `{objective}`"),
        },
        _ => {
            let how = e.exit.as_deref().unwrap_or("ended");
            let tail = tail(&e.stderr, 5);
            let tail = if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            };
            format!("the worker {how} without a final result{tail}")
        }
    };
    let oom = failure.to_lowercase().contains("out of memory")
        || e.stderr.to_lowercase().contains("out of memory");
    if oom && e.oom_retry_allowed {
        Outcome::OutOfMemory { reason: failure }
    } else {
        Outcome::Fail { reason: failure }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn final_with(metrics: Value, best: Option<i64>) -> WorkerMessage {
        WorkerMessage::Final {
            metrics: serde_json::from_value(metrics).unwrap(),
            best_epoch: best,
            epochs: Some(4),
            stop: Some("early_stopping".into()),
        }
    }

    #[test]
    fn a_final_result_with_a_finite_objective_completes_with_every_metric() {
        let e = Ended {
            final_message: Some(final_with(json!({"val_f1": 0.8, "val_loss": 0.3}), Some(2))),
            epochs_seen: 4,
            ..Ended::default()
        };
        assert_eq!(
            classify(&e, "val_f1"),
            Outcome::Complete {
                value: 0.8,
                user_attrs: BTreeMap::from([
                    ("best_epoch".into(), json!(2)),
                    ("epochs".into(), json!(4)),
                    ("stop_reason".into(), json!("early_stopping")),
                    ("val_f1".into(), json!(0.8)),
                    ("val_loss".into(), json!(0.3)),
                ])
            }
        );
    }

    #[test]
    fn a_missing_or_nan_objective_fails_naming_the_metric() {
        for metrics in [json!({"val_loss": 0.3}), json!({"val_f1": null})] {
            let e = Ended {
                final_message: Some(final_with(metrics, None)),
                ..Ended::default()
            };
            assert_eq!(
                classify(&e, "val_f1"),
                Outcome::Fail {
                    reason: "the final result has no finite `val_f1`".into()
                }
            );
        }
    }

    #[test]
    fn a_pruned_trial_keeps_its_last_finite_value_whatever_came_after() {
        let e = Ended {
            pruned_at: Some(3),
            last_value: Some(0.4),
            error: Some("killed".into()),
            ..Ended::default()
        };
        assert_eq!(
            classify(&e, "val_f1"),
            Outcome::Pruned {
                epoch: 3,
                value: Some(0.4),
                user_attrs: BTreeMap::from([("epochs".into(), json!(3))])
            }
        );
        let nan = Ended {
            pruned_at: Some(1),
            last_value: Some(f64::NAN),
            ..Ended::default()
        };
        assert!(matches!(
            classify(&nan, "val_f1"),
            Outcome::Pruned { value: None, .. }
        ));
    }

    #[test]
    fn an_error_message_wins_over_a_final_result() {
        let e = Ended {
            final_message: Some(final_with(json!({"val_f1": 0.8}), None)),
            error: Some("x=2 is not allowed".into()),
            ..Ended::default()
        };
        assert_eq!(
            classify(&e, "val_f1"),
            Outcome::Fail {
                reason: "x=2 is not allowed".into()
            }
        );
    }

    #[test]
    fn a_silent_death_says_how_and_quotes_the_last_stderr_lines() {
        let e = Ended {
            exit: Some("was killed (signal: 9 (SIGKILL))".into()),
            stderr: "a\nb\nc\nd\ne\nf\n".into(),
            ..Ended::default()
        };
        assert_eq!(
            classify(&e, "val_f1"),
            Outcome::Fail {
                reason: "the worker was killed (signal: 9 (SIGKILL)) without a final result: b | c | d | e | f".into()
            }
        );
        let quiet = Ended {
            exit: Some("exited with status 0".into()),
            ..Ended::default()
        };
        assert_eq!(
            classify(&quiet, "val_f1"),
            Outcome::Fail {
                reason: "the worker exited with status 0 without a final result".into()
            }
        );
    }

    #[test]
    fn out_of_memory_is_retried_only_where_allowed() {
        let oom = |allowed| Ended {
            error: Some("CUDA_ERROR_OUT_OF_MEMORY: out of memory".into()),
            oom_retry_allowed: allowed,
            ..Ended::default()
        };
        assert_eq!(
            classify(&oom(true), "val_f1"),
            Outcome::OutOfMemory {
                reason: "CUDA_ERROR_OUT_OF_MEMORY: out of memory".into()
            }
        );
        assert!(matches!(
            classify(&oom(false), "val_f1"),
            Outcome::Fail { .. }
        ));
        let in_stderr = Ended {
            exit: Some("exited with status 1".into()),
            stderr: "RuntimeError: CUDA out of memory.".into(),
            oom_retry_allowed: true,
            ..Ended::default()
        };
        assert!(matches!(
            classify(&in_stderr, "val_f1"),
            Outcome::OutOfMemory { .. }
        ));
    }
}
