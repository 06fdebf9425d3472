//! How a trial ended, decided in one place from what its worker left behind: a pure function
//! the dispatcher calls once per trial and writes with one store call.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::run::protocol::{metric, WorkerMessage};
use crate::store::keys;

/// What is known about a trial whose worker's output has ended.
#[derive(Debug, Clone, Default)]
pub struct Ended {
    /// The epoch at which the pruner stopped it (or the dispatcher, see `cut_for_final_model`).
    pub pruned_at: Option<i64>,
    /// The dispatcher stopped it at its last epoch because the rest of `max_duration` is the
    /// final model's.
    pub cut_for_final_model: bool,
    /// The objective at the last epoch reported.
    pub last_value: Option<f64>,
    pub final_message: Option<WorkerMessage>,
    /// A worker's `{"type":"error"}` message.
    pub error: Option<String>,
    /// How the process ended: `exited with status 3`, `was killed (signal: 9)`.
    pub exit: Option<String>,
    pub stderr: String,
    /// The signal that ended the process, if one did.
    pub signal: Option<i32>,
    /// Set when rnnsweep stopped the trial for running too long or too quietly: the reason.
    pub timed_out: Option<String>,
    pub epochs_seen: i64,
    /// Out of memory here may be retried once elsewhere: the trial ran on a GPU, was not
    /// retried before, and another slot exists.
    pub oom_retry_allowed: bool,
    /// A SIGKILL rnnsweep did not send may be retried once (with one fewer trial at once on
    /// that device): the trial was not retried for it before.
    pub kill_retry_allowed: bool,
}

/// The reason stored for a trial killed by a SIGKILL rnnsweep did not send.
pub const KILLED_FROM_OUTSIDE: &str = "killed by signal 9 (probably out of memory)";

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
    /// Killed by a SIGKILL from outside (the kernel's out-of-memory killer, most likely):
    /// fail this attempt and queue the values again, with one fewer trial at once there.
    KilledFromOutside,
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
        let mut user_attrs = BTreeMap::from([(keys::EPOCHS.to_string(), json!(epoch))]);
        if e.cut_for_final_model {
            user_attrs.insert(keys::STOPPED_BY.to_string(), json!("max_duration"));
        }
        return Outcome::Pruned {
            epoch,
            value: e.last_value.filter(|v| v.is_finite()),
            user_attrs,
        };
    }
    if let Some(reason) = &e.timed_out {
        return Outcome::Fail {
            reason: reason.clone(),
        };
    }
    let no_result =
        e.error.is_none() && !matches!(e.final_message, Some(WorkerMessage::Final { .. }));
    if no_result && e.signal == Some(libc::SIGKILL) {
        return if e.kill_retry_allowed {
            Outcome::KilledFromOutside
        } else {
            Outcome::Fail {
                reason: KILLED_FROM_OUTSIDE.into(),
            }
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
    let oom = out_of_memory(&failure) || out_of_memory(&e.stderr);
    if oom && e.oom_retry_allowed {
        Outcome::OutOfMemory { reason: failure }
    } else {
        Outcome::Fail { reason: failure }
    }
}

/// A GPU out of memory in CUDA's, cuBLAS's, cuDNN's or PyTorch's words.
fn out_of_memory(text: &str) -> bool {
    const MARKS: [&str; 5] = [
        "out of memory",
        "cublas_status_alloc_failed",
        "cudnn_status_alloc_failed",
        "cudaerrormemoryallocation",
        "cuda_error_out_of_memory",
    ];
    let lower = text.to_lowercase();
    MARKS.iter().any(|m| lower.contains(m))
}

/// A fault of the machine rather than of the trial, recognised in an error text (Rust's,
/// Python's or the C library's wording): the sweep stops instead of failing trial after trial.
pub fn environment_fault(text: &str) -> Option<&'static str> {
    const FAULTS: [(&[&str], &str); 5] = [
        (
            &[
                "no space left on device",
                "os error 28",
                "errno 28",
                "enospc",
            ],
            "no space left on device",
        ),
        (
            &["disk quota exceeded", "os error 122", "errno 122"],
            "disk quota exceeded",
        ),
        (
            &["read-only file system", "os error 30", "errno 30", "erofs"],
            "read-only file system",
        ),
        (
            &["permission denied", "os error 13", "errno 13"],
            "permission denied",
        ),
        (
            &["too many open files", "os error 24", "errno 24", "emfile"],
            "too many open files",
        ),
    ];
    let lower = text.to_lowercase();
    FAULTS
        .iter()
        .find(|(marks, _)| marks.iter().any(|m| lower.contains(m)))
        .map(|(_, fault)| *fault)
}

/// The path the fault in an error text is about: the first absolute path on the line (or
/// ` | `-joined part) that names the fault (`'/data/x.csv'`, `/tmp/run: No space…`), never
/// one from elsewhere in a traceback.
pub fn path_in(text: &str) -> Option<String> {
    let line = text
        .split(['\n', '|'])
        .find(|line| environment_fault(line).is_some())?;
    line.split(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | ',' | '(' | ')'))
        .map(|w| w.trim_end_matches([':', '.', ';']))
        .find(|w| w.len() > 1 && w.starts_with('/'))
        .map(str::to_string)
}

/// Failure reasons grouped (reasons that differ only in the trial they name are one), each with
/// the trials that gave it, most frequent first; ties keep the order they came in.
pub fn group_reasons<'a>(
    failures: impl IntoIterator<Item = (&'a str, i64)>,
) -> Vec<(String, Vec<i64>)> {
    let mut groups: Vec<(String, Vec<i64>)> = Vec::new();
    for (reason, number) in failures {
        match groups.iter_mut().find(|(r, _)| same_reason(r, reason)) {
            Some((_, numbers)) => numbers.push(number),
            None => groups.push((reason.to_string(), vec![number])),
        }
    }
    groups.sort_by_key(|(_, numbers)| std::cmp::Reverse(numbers.len()));
    groups
}

/// Two failure reasons that differ only in the trial they name (its folder, its number).
pub fn same_reason(a: &str, b: &str) -> bool {
    fn key(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("trial") {
            let (head, tail) = rest.split_at(i + "trial".len());
            out.push_str(head);
            let sep = tail.chars().next().filter(|c| *c == '-' || *c == ' ');
            let after = sep.map_or(tail, |c| &tail[c.len_utf8()..]);
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if let (Some(c), true) = (sep, digits > 0) {
                out.push(c);
                out.push('N');
                rest = &after[digits..];
            } else {
                rest = tail;
            }
        }
        out.push_str(rest);
        out
    }
    key(a) == key(b)
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
        for words in [
            "cuBLAS error: CUBLAS_STATUS_ALLOC_FAILED",
            "CUDNN_STATUS_ALLOC_FAILED",
            "cudaErrorMemoryAllocation",
        ] {
            let e = Ended {
                error: Some(words.into()),
                oom_retry_allowed: true,
                ..Ended::default()
            };
            assert!(
                matches!(classify(&e, "val_f1"), Outcome::OutOfMemory { .. }),
                "{words}"
            );
        }
    }

    #[test]
    fn a_sigkill_nobody_asked_for_is_retried_once_then_fails_with_its_cause() {
        let killed = |allowed| Ended {
            exit: Some("was killed (signal: 9 (SIGKILL))".into()),
            signal: Some(libc::SIGKILL),
            kill_retry_allowed: allowed,
            ..Ended::default()
        };
        assert_eq!(
            classify(&killed(true), "val_f1"),
            Outcome::KilledFromOutside
        );
        assert_eq!(
            classify(&killed(false), "val_f1"),
            Outcome::Fail {
                reason: "killed by signal 9 (probably out of memory)".into()
            }
        );
        // A worker that reported its error before it died failed for that error.
        let said = Ended {
            error: Some("bad x".into()),
            ..killed(true)
        };
        assert_eq!(
            classify(&said, "val_f1"),
            Outcome::Fail {
                reason: "bad x".into()
            }
        );
    }

    #[test]
    fn a_timed_out_trial_fails_with_the_time_limit_whatever_it_said() {
        let e = Ended {
            timed_out: Some("timed out after 2s".into()),
            signal: Some(libc::SIGKILL),
            kill_retry_allowed: true,
            final_message: Some(final_with(json!({"val_f1": 0.8}), None)),
            ..Ended::default()
        };
        assert_eq!(
            classify(&e, "val_f1"),
            Outcome::Fail {
                reason: "timed out after 2s".into()
            }
        );
    }

    #[test]
    fn machine_faults_are_told_from_trial_faults_in_rust_python_and_c_wording() {
        for (text, fault) in [
            (
                "/r/t-6/out: No space left on device (os error 28)",
                "no space left on device",
            ),
            (
                "OSError: [Errno 28] No space left on device: '/r/x'",
                "no space left on device",
            ),
            (
                "PermissionError: [Errno 13] Permission denied: '/d.csv'",
                "permission denied",
            ),
            (
                "/r: Read-only file system (os error 30)",
                "read-only file system",
            ),
            (
                "OSError: [Errno 24] Too many open files",
                "too many open files",
            ),
        ] {
            assert_eq!(environment_fault(text), Some(fault), "{text}");
        }
        assert_eq!(environment_fault("ValueError: x must be positive"), None);
        assert_eq!(
            path_in("OSError: [Errno 28] No space left on device: '/r/x'").as_deref(),
            Some("/r/x")
        );
        assert_eq!(
            path_in("/r/t-6/out: No space left on device (os error 28)").as_deref(),
            Some("/r/t-6/out")
        );
        assert_eq!(path_in("Too many open files"), None);
        // A traceback's file lines are not what the fault is about.
        assert_eq!(
            path_in("Traceback: | File \"/x/trial.py\", line 12 | OSError: [Errno 28] No space left on device"),
            None
        );
    }

    #[test]
    fn reasons_that_differ_only_in_the_trial_they_name_are_the_same() {
        assert!(same_reason(
            "boom in /r/s/ab12/trial-3/x",
            "boom in /r/s/ab12/trial-14/x"
        ));
        assert!(same_reason("trial 3 lost", "trial 12 lost"));
        assert!(!same_reason("x=2 is not allowed", "y=2 is not allowed"));
        assert!(!same_reason("exited with status 1", "exited with status 2"));
    }
}
