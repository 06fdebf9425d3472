//! `rnnsweep worker`: the built-in trial worker (hidden). Trains the BiLSTM described by the
//! task file in `RNNSWEEP_TRIAL` and speaks the JSON-lines protocol on stdout.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use rnnsweep_model::data::load_labelled;
use rnnsweep_model::dataset::prepare_with;
use rnnsweep_model::train::{evaluate_examples, fit, Control, EpochReport, FitOptions};
use rnnsweep_search::spec::FunctionTrial;
use rnnsweep_search::worker::{TrialTask, WorkerMessage, TRIAL_ENV, VAL_PREDICTIONS_FILE};
use serde_json::Value;

fn metrics_of(r: &EpochReport) -> BTreeMap<String, Value> {
    match serde_json::to_value(r) {
        Ok(Value::Object(m)) => m.into_iter().filter(|(k, _)| k != "epoch").collect(),
        _ => BTreeMap::new(),
    }
}

fn emit(message: &WorkerMessage) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", message.to_line());
    let _ = out.flush();
}

/// A synthetic trial: the function's learning curve over the parameters x0, x1, …
fn evaluate_function(task: &TrialTask, f: &FunctionTrial) -> anyhow::Result<()> {
    let x: Vec<f64> = (0..task.params.len())
        .map(|i| {
            task.params
                .get(&format!("x{i}"))
                .and_then(Value::as_f64)
                .with_context(|| format!("parameter x{i} is missing or not a number"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut value = f64::NAN;
    for epoch in 1..=f.epochs {
        value = f
            .function
            .curve(&x, epoch, f.epochs, f.noise, task.number as u64);
        emit(&WorkerMessage::Epoch {
            epoch: epoch as i64,
            metrics: BTreeMap::from([("value".to_string(), Value::from(value))]),
        });
    }
    emit(&WorkerMessage::Final {
        metrics: BTreeMap::from([("value".to_string(), Value::from(value))]),
        best_epoch: Some(f.epochs as i64),
        epochs: Some(f.epochs as i64),
        stop: None,
    });
    Ok(())
}

fn train(task: &TrialTask) -> anyhow::Result<()> {
    if let Some(f) = &task.function {
        return evaluate_function(task, f);
    }
    let cfg = task
        .config
        .clone()
        .context("the trial task has no model configuration")?;
    cfg.validate()?;
    let device = rnnsweep_model::device(&task.device)?;
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
        task: Some(rnnsweep_model::train::data_fingerprint(
            &task.train_file,
            task.validation_file.as_deref(),
        )),
    };
    if let Some(w) = rnnsweep_model::train::discard_foreign_checkpoint(
        &task.checkpoint_dir,
        &cfg,
        options.task.as_ref(),
    )? {
        emit(&WorkerMessage::Warning { message: w });
    }
    let outcome = fit(&cfg, &data, &device, &options, |r| {
        emit(&WorkerMessage::Epoch {
            epoch: r.epoch as i64,
            metrics: metrics_of(r),
        });
        Control::Continue
    })?;
    // The kept model's validation predictions, for confusion matrices and ROC/PR plots.
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
        rnnsweep_search::report::write_label_predictions(
            &file,
            &ids,
            &probs,
            &data.validation.targets,
            &data.classes,
        )?;
    } else if data.outputs() == 1 {
        rnnsweep_search::report::write_predictions(&file, &ids, &probs, &data.validation.labels)?;
    } else {
        rnnsweep_search::report::write_class_predictions(
            &file,
            &ids,
            &probs,
            &data.validation.labels,
            &data.classes,
        )?;
    }
    let kept = outcome.best_epoch.clamp(1, outcome.history.len().max(1)) - 1;
    let metrics = outcome
        .history
        .get(kept)
        .map(metrics_of)
        .unwrap_or_default();
    emit(&WorkerMessage::Final {
        metrics,
        best_epoch: Some(outcome.best_epoch as i64),
        epochs: Some(outcome.history.len() as i64),
        stop: serde_json::to_value(outcome.stop)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string)),
    });
    Ok(())
}

pub fn run() -> anyhow::Result<std::process::ExitCode> {
    // A process that trains keeps freed memory for the next step; the sweep driver does not,
    // since every worker it forks copies its page tables.
    rnnsweep_model::alloc::keep_freed_memory();
    let path = std::env::var_os(TRIAL_ENV).with_context(|| {
        format!("{TRIAL_ENV} is not set: `rnnsweep worker` is started by `rnnsweep run`")
    })?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read the trial task", path.to_string_lossy()))?;
    let task: TrialTask = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a trial task", path.to_string_lossy()))?;
    match train(&task) {
        Ok(()) => Ok(std::process::ExitCode::SUCCESS),
        Err(e) => {
            emit(&WorkerMessage::Error {
                message: format!("{e:#}"),
            });
            Ok(std::process::ExitCode::from(crate::exit::ERROR))
        }
    }
}
