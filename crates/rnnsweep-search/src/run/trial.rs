//! The built-in trial, what `rnnsweep worker` runs: train the BiLSTM its task describes (or
//! evaluate a synthetic function), leave the kept model's validation predictions in the trial
//! folder, and report through a callback in the protocol's messages. The binary only reads
//! the task file and prints the messages.

use std::collections::BTreeMap;

use rnnsweep_model::data::load_labelled;
use rnnsweep_model::dataset::prepare_with;
use rnnsweep_model::train::checkpoint::{data_fingerprint, discard_foreign_checkpoint};
use rnnsweep_model::train::evaluate::evaluate_examples;
use rnnsweep_model::train::history::EpochReport;
use rnnsweep_model::train::{fit, Control, FitOptions};
use serde_json::Value;

use crate::predictions::{
    write_class_predictions, write_label_predictions, write_predictions, PredictionsError,
    VAL_PREDICTIONS_FILE,
};
use crate::run::protocol::{TrialTask, WorkerMessage};
use crate::spec::FunctionTrial;

#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error(transparent)]
    Model(#[from] rnnsweep_model::error::ModelError),
    #[error(transparent)]
    Data(#[from] rnnsweep_model::data::DataError),
    #[error(transparent)]
    Predictions(#[from] PredictionsError),
    #[error("{0}")]
    Task(String),
}

/// An epoch's metrics as the protocol carries them (every field but the epoch number).
pub fn metrics_of(report: &EpochReport) -> BTreeMap<String, Value> {
    match serde_json::to_value(report) {
        Ok(Value::Object(m)) => m.into_iter().filter(|(k, _)| k != "epoch").collect(),
        _ => BTreeMap::new(),
    }
}

/// Runs the task to its end; every `epoch`, `warning` and the `final` message go to `emit`.
pub fn run_trial(task: &TrialTask, emit: &mut dyn FnMut(WorkerMessage)) -> Result<(), TrialError> {
    if let Some(f) = &task.function {
        return evaluate_function(task, f, emit);
    }
    let cfg = task
        .config
        .clone()
        .ok_or_else(|| TrialError::Task("the trial task has no model configuration".into()))?;
    cfg.validate()?;
    let device = rnnsweep_model::device::open(&task.device)?;
    let (table, validation) = load_labelled(
        &task.train_file,
        task.validation_file.as_deref(),
        &task.columns,
        &task.labels,
    )?;
    let data = prepare_with(&table, validation.as_ref(), &cfg)?;
    let options = FitOptions {
        checkpoint_dir: Some(task.checkpoint_dir.clone()),
        replay_history: true,
        task: Some(data_fingerprint(
            &task.train_file,
            task.validation_file.as_deref(),
        )),
        distill: None,
    };
    if let Some(message) =
        discard_foreign_checkpoint(&task.checkpoint_dir, &cfg, options.task.as_ref())?
    {
        emit(WorkerMessage::Warning { message });
    }
    let outcome = fit(&cfg, &data, &device, &options, |r| {
        emit(WorkerMessage::Epoch {
            epoch: r.epoch as i64,
            metrics: metrics_of(r),
        });
        Control::Continue
    })?;
    // The kept model's validation predictions, for ensembles, confusion matrices and plots.
    let (probs, _) = evaluate_examples(&outcome.net, &data.validation, cfg.batch_size)?;
    let source = validation.as_ref().unwrap_or(&table);
    let ids: Vec<&str> = data
        .validation
        .source_rows
        .iter()
        .map(|&r| source.rows.get(r).map_or("", |row| row.id.as_str()))
        .collect();
    let file = task.trial_dir.join(VAL_PREDICTIONS_FILE);
    if data.multi_label {
        write_label_predictions(&file, &ids, &probs, &data.validation.targets, &data.classes)?;
    } else if data.outputs() == 1 {
        write_predictions(&file, &ids, &probs, &data.validation.labels)?;
    } else {
        write_class_predictions(&file, &ids, &probs, &data.validation.labels, &data.classes)?;
    }
    let kept = outcome.best_epoch.clamp(1, outcome.history.len().max(1)) - 1;
    let metrics = outcome
        .history
        .get(kept)
        .map(metrics_of)
        .unwrap_or_default();
    emit(WorkerMessage::Final {
        metrics,
        best_epoch: Some(outcome.best_epoch as i64),
        epochs: Some(outcome.history.len() as i64),
        stop: serde_json::to_value(outcome.stop)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string)),
    });
    Ok(())
}

/// A synthetic trial: the function's learning curve over the parameters x0, x1, …
fn evaluate_function(
    task: &TrialTask,
    f: &FunctionTrial,
    emit: &mut dyn FnMut(WorkerMessage),
) -> Result<(), TrialError> {
    let x: Vec<f64> = (0..task.params.len())
        .map(|i| {
            task.params
                .get(&format!("x{i}"))
                .and_then(Value::as_f64)
                .ok_or_else(|| {
                    TrialError::Task(format!("parameter x{i} is missing or not a number"))
                })
        })
        .collect::<Result<_, _>>()?;
    let mut value = f64::NAN;
    for epoch in 1..=f.epochs {
        value = f
            .function
            .curve(&x, epoch, f.epochs, f.noise, task.number as u64);
        emit(WorkerMessage::Epoch {
            epoch: epoch as i64,
            metrics: BTreeMap::from([("value".to_string(), Value::from(value))]),
        });
    }
    emit(WorkerMessage::Final {
        metrics: BTreeMap::from([("value".to_string(), Value::from(value))]),
        best_epoch: Some(f.epochs as i64),
        epochs: Some(f.epochs as i64),
        stop: None,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::synthetic::Function;

    fn task(params: BTreeMap<String, Value>, function: Option<FunctionTrial>) -> TrialTask {
        TrialTask {
            study: "s".into(),
            number: 3,
            params,
            config: None,
            train_file: "unused.csv".into(),
            validation_file: None,
            columns: Default::default(),
            labels: Default::default(),
            checkpoint_dir: "unused".into(),
            trial_dir: "unused".into(),
            metric: "value".into(),
            device: "cpu".into(),
            function,
        }
    }

    #[test]
    fn a_function_trial_reports_its_learning_curve_then_its_last_value() {
        let f = FunctionTrial {
            function: Function::Sphere,
            epochs: 3,
            noise: 0.0,
        };
        let params = BTreeMap::from([
            ("x0".to_string(), Value::from(0.5)),
            ("x1".to_string(), Value::from(-1.0)),
        ]);
        let mut seen = Vec::new();
        run_trial(&task(params, Some(f.clone())), &mut |m| seen.push(m)).unwrap();
        assert_eq!(seen.len(), 4);
        let values: Vec<f64> = seen
            .iter()
            .map(|m| match m {
                WorkerMessage::Epoch { metrics, .. } | WorkerMessage::Final { metrics, .. } => {
                    metrics["value"].as_f64().unwrap()
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        for (epoch, v) in values[..3].iter().enumerate() {
            assert_eq!(*v, f.function.curve(&[0.5, -1.0], epoch + 1, 3, 0.0, 3));
        }
        assert_eq!(values[3], values[2]);
        assert!(matches!(
            &seen[3],
            WorkerMessage::Final {
                best_epoch: Some(3),
                epochs: Some(3),
                stop: None,
                ..
            }
        ));
    }

    #[test]
    fn a_task_without_its_parameters_or_a_model_says_what_is_missing() {
        let f = FunctionTrial {
            function: Function::Sphere,
            epochs: 1,
            noise: 0.0,
        };
        let params = BTreeMap::from([("x0".to_string(), Value::from("a"))]);
        let e = run_trial(&task(params, Some(f)), &mut |_| {}).unwrap_err();
        assert_eq!(e.to_string(), "parameter x0 is missing or not a number");
        let e = run_trial(&task(BTreeMap::new(), None), &mut |_| {}).unwrap_err();
        assert_eq!(e.to_string(), "the trial task has no model configuration");
    }
}
