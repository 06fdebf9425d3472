//! `rnnsweep best`: the best trial's parameters; with `--retrain`, the final model.

use std::path::PathBuf;

use anyhow::bail;
use rnnsweep_model::train::{write_history, Control};
use rnnsweep_search::leaderboard::sig4;
use rnnsweep_search::store::StorageLocation;
use rnnsweep_search::study::{RetrainOptions, Study};

#[derive(clap::Args)]
pub struct BestArgs {
    pub db: StorageLocation,
    #[arg(long)]
    pub study: Option<String>,
    /// Train the best configuration again and save the model to --out.
    #[arg(long)]
    pub retrain: bool,
    /// Epochs for the retrain on the full file (default: the best trial's kept epoch).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Keep the validation split (and early stopping) instead of training on every row, as
    /// the report did.
    #[arg(long)]
    pub keep_validation: bool,
    /// Model folder to write (with --retrain).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// A study loaded for pictures and exports.
pub fn run(args: &BestArgs) -> anyhow::Result<()> {
    // A process that trains keeps freed memory for the next step; the sweep driver does not,
    // since every worker it forks copies its page tables.
    rnnsweep_model::alloc::keep_freed_memory();
    let study = Study::open(&args.db, args.study.as_deref())?;
    let best = study.best_trial()?;
    println!(
        "best trial {} of study `{}`: {} {}",
        best.number,
        study.name,
        study.objective()?,
        best.value.map_or("-".into(), sig4)
    );
    for (k, p) in &best.params {
        println!("  {k:<22} {}", p.value());
    }
    if !args.retrain {
        return Ok(());
    }
    let Some(out) = &args.out else {
        bail!("--retrain needs --out DIR for the model");
    };
    let options = RetrainOptions {
        epochs: args.epochs,
        keep_validation: args.keep_validation,
        device: args.device.clone(),
    };
    let plan = study.retrain_best(&options)?;
    println!(
        "retraining on {} rows ({}), {} epochs",
        plan.train_rows(),
        if args.keep_validation {
            format!("{} held out for validation", plan.validation_rows())
        } else {
            "every row".into()
        },
        plan.config.epochs
    );
    let (model, history) = plan.train(|r| {
        println!(
            "epoch {:>3}  train_loss {:.4}  train_acc {:.4}  val_loss {:.4}  val_f1 {:.4}  {:.1}s",
            r.epoch, r.train_loss, r.train_accuracy, r.val_loss, r.val_f1, r.seconds
        );
        Control::Continue
    })?;
    model.save(out)?;
    write_history(&out.join("history.csv"), &history)?;
    println!(
        "model written to {} (use `rnnsweep predict --model {}`)",
        out.display(),
        out.display()
    );
    Ok(())
}
