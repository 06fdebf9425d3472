//! `rnnsweep train` and `rnnsweep predict`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rnnsweep_model::artifact::TrainedModel;
use rnnsweep_model::data::{load_csv, Columns, Labels};
use rnnsweep_model::train::{fit, prepare, Control, EpochReport, FitOptions};
use rnnsweep_model::ModelConfig;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Labelled CSV (`id,label,tweet`).
    #[arg(long)]
    pub data: PathBuf,
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

#[derive(clap::Args)]
pub struct PredictArgs {
    /// A model directory written by `train`.
    #[arg(long)]
    pub model: PathBuf,
    /// CSV to score; the label column is optional.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write `id,probability,label`.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f32,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print the N rows most likely to be hateful, with their text.
    #[arg(long, value_name = "N")]
    pub show_flagged: Option<usize>,
}

pub const HISTORY_HEADER: &str = "epoch,train_loss,train_accuracy,val_loss,val_accuracy,val_precision,val_recall,val_f1,val_specificity,val_roc_auc,val_pr_auc,tn,fp,fn,tp,seconds";

pub fn history_line(r: &EpochReport) -> String {
    let [tn, fp, fneg, tp] = r.confusion;
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{tn},{fp},{fneg},{tp},{:.3}",
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
        r.val_pr_auc,
        r.seconds
    )
}

fn load_config(args: &TrainArgs) -> anyhow::Result<ModelConfig> {
    let base = match &args.config {
        Some(p) => ModelConfig::load(p)?,
        None => ModelConfig::default(),
    };
    Ok(base.with_overrides(&args.overrides)?)
}

pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let cfg = load_config(args)?;
    let device = rnnsweep_model::device(&args.device)?;
    let table = load_csv(&args.data, &Columns::default(), Labels::Required)?;
    let data = prepare(&table, &cfg)?;
    println!(
        "{} rows: {} train / {} validation, sequence length {}, vocabulary {} ids, class weights {:.3}/{:.3}",
        table.rows.len(),
        data.train.labels.len(),
        data.validation.labels.len(),
        data.sequence_length,
        data.tokenizer.id_limit() - 1,
        data.class_weights[0],
        data.class_weights[1]
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
        task: Some(rnnsweep_model::train::task_fingerprint(&args.data)),
    };
    if let Some(dir) = &options.checkpoint_dir {
        if let Some(w) =
            rnnsweep_model::train::discard_foreign_checkpoint(dir, &cfg, options.task.as_ref())?
        {
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
    let model = TrainedModel::from_training(cfg, data, outcome.net);
    model.save(&args.out)?;
    write_history(&args.out.join("history.csv"), &outcome.history)?;
    let best = &outcome.history[outcome
        .best_epoch
        .saturating_sub(1)
        .min(outcome.history.len() - 1)];
    println!(
        "stopped: {:?}; kept epoch {} (val_loss {:.4}, val_f1 {:.4}); model written to {}",
        outcome.stop,
        outcome.best_epoch,
        best.val_loss,
        best.val_f1,
        args.out.display()
    );
    Ok(())
}

pub fn write_history(path: &Path, history: &[EpochReport]) -> anyhow::Result<()> {
    let mut text = String::from(HISTORY_HEADER);
    text.push('\n');
    for r in history {
        text.push_str(&history_line(r));
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))
}

pub fn predict(args: &PredictArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.threshold) {
        anyhow::bail!("--threshold {}: must be between 0 and 1", args.threshold);
    }
    let device = rnnsweep_model::device(&args.device)?;
    let model = TrainedModel::load(&args.model, &device)?;
    let table = load_csv(&args.input, &Columns::default(), Labels::Optional)?;
    let probs = model.predict(&table)?;
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
    w.write_record(["id", "probability", "label"])?;
    let mut flagged = 0;
    for (row, p) in table.rows.iter().zip(&probs) {
        let label = u8::from(*p >= args.threshold);
        flagged += usize::from(label);
        w.write_record([row.id.as_str(), &format!("{p:.6}"), &label.to_string()])?;
    }
    w.flush()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} rows scored, {} labelled 1; written to {}",
        probs.len(),
        flagged,
        args.out.display()
    )?;
    if let Some(n) = args.show_flagged {
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        writeln!(
            out,
            "\n{:>4}  {:>10}  {:>11}  tweet",
            "rank", "id", "probability"
        )?;
        for (rank, &i) in order.iter().take(n).enumerate() {
            let text: String = table.rows[i]
                .text
                .chars()
                .take(100)
                .collect::<String>()
                .replace(['\n', '\r'], " ");
            writeln!(
                out,
                "{:>4}  {:>10}  {:>11.4}  {text}",
                rank + 1,
                table.rows[i].id,
                probs[i]
            )?;
        }
        writeln!(out)?;
    }
    if table.labelled {
        let c = rnnsweep_model::metrics::classify(&probs, &table.labels(), args.threshold);
        writeln!(
            out,
            "accuracy {:.4}  precision {:.4}  recall {:.4}  f1 {:.4}  specificity {:.4}  roc_auc {:.4}",
            c.accuracy, c.precision, c.recall, c.f1, c.specificity, c.roc_auc
        )?;
    }
    Ok(())
}
