//! `rnnsweep train`: one configuration, trained and saved as a model folder.

use std::path::PathBuf;

use rnnsweep_model::artifact::TrainedModel;
use rnnsweep_model::config::ModelConfig;
use rnnsweep_model::data::load_labelled;
use rnnsweep_model::dataset::prepare_with;
use rnnsweep_model::train::checkpoint::{data_fingerprint, discard_foreign_checkpoint};
use rnnsweep_model::train::history::write_history;
use rnnsweep_model::train::{fit, Control, FitOptions};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Labelled CSV (`id,label,tweet` by default; see the column and label flags).
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub read: crate::data_args::DataArgs,
    /// Validation rows from this file (same columns) instead of `validation_split`.
    #[arg(long)]
    pub validation: Option<PathBuf>,
    /// Model configuration (YAML or JSON); defaults to the report's model.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a setting, e.g. `--set lstm_units=[64,64] --set optimizer.name=rmsprop`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Model directory to write (config, tokenizer, weights, history.csv).
    #[arg(long)]
    pub out: PathBuf,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Keep a checkpoint after each epoch in OUT/checkpoint and resume from it if present.
    #[arg(long)]
    pub checkpoint: bool,
}

fn load_config(args: &TrainArgs) -> anyhow::Result<ModelConfig> {
    let base = match &args.config {
        Some(p) => ModelConfig::load(p)?,
        None => ModelConfig::default(),
    };
    Ok(base.with_overrides(&args.overrides)?)
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    // A process that trains keeps freed memory for the next step; the sweep driver does not,
    // since every worker it forks copies its page tables.
    rnnsweep_model::alloc::keep_freed_memory();
    let cfg = load_config(args)?;
    let device = rnnsweep_model::device::open(&args.device)?;
    let (table, validation) = load_labelled(
        &args.data,
        args.validation.as_deref(),
        &args.read.columns(),
        &args.read.rule(),
    )?;
    let data = prepare_with(&table, validation.as_ref(), &cfg)?;
    println!(
        "{} rows: {} train / {} validation, {}, class weights {}",
        table.rows.len(),
        data.train.labels.len(),
        data.validation.labels.len(),
        data.encoder
            .views
            .iter()
            .map(|v| format!(
                "{} view: sequence length {}, vocabulary {} ids",
                v.input.name(),
                v.sequence_length,
                v.tokenizer.id_limit() - 1
            ))
            .collect::<Vec<_>>()
            .join("; "),
        data.class_weights
            .iter()
            .map(|w| format!("{w:.3}"))
            .collect::<Vec<_>>()
            .join("/")
    );
    println!(
        "{:>5}  {:>10}  {:>9}  {:>8}  {:>7}  {:>9}  {:>6}  {:>6}  {:>7}  {:>7}  {:>7}",
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "precision",
        "recall",
        "f1",
        "spec",
        "roc_auc",
        "seconds"
    );
    let options = FitOptions {
        checkpoint_dir: args.checkpoint.then(|| args.out.join("checkpoint")),
        replay_history: true,
        task: Some(data_fingerprint(&args.data, args.validation.as_deref())),
        distill: None,
    };
    if let Some(dir) = &options.checkpoint_dir {
        if let Some(w) = discard_foreign_checkpoint(dir, &cfg, options.task.as_ref())? {
            eprintln!("warning: {w}");
        }
    }
    let outcome = fit(&cfg, &data, &device, &options, |r| {
        println!(
            "{:>5}  {:>10.4}  {:>9.4}  {:>8.4}  {:>7.4}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7.4}  {:>7.4}  {:>7.1}",
            r.epoch,
            r.train_loss,
            r.train_accuracy,
            r.val_loss,
            r.val_accuracy,
            r.val_precision,
            r.val_recall,
            r.val_f1,
            r.val_specificity,
            r.val_roc_auc,
            r.seconds
        );
        Control::Continue
    })?;
    let model = TrainedModel::from_training(cfg, data, outcome.net, outcome.threshold)
        .with_offsets(outcome.offsets)
        .with_label_thresholds(outcome.label_thresholds);
    model.save(&args.out)?;
    write_history(&args.out.join("history.csv"), &outcome.history)?;
    let best = &outcome.history[outcome
        .best_epoch
        .saturating_sub(1)
        .min(outcome.history.len() - 1)];
    println!(
        "stopped: {:?}; kept epoch {} (val_loss {:.4}, val_f1 {:.4} at threshold {:.4}); model written to {}",
        outcome.stop,
        outcome.best_epoch,
        best.val_loss,
        best.val_f1,
        outcome.threshold,
        args.out.display()
    );
    Ok(())
}
