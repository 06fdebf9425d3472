//! `rnnsweep predict`: a CSV scored with a trained model: `id,probability,label` for a
//! binary model, `id,label,` and one probability column per class for a K-class one.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use rnnsweep_model::artifact::Predictor;
use rnnsweep_model::data::{load_csv_with, Labels, Table};

#[derive(clap::Args)]
pub struct PredictArgs {
    /// A model folder written by `train` or `best --retrain` (one model or an ensemble).
    #[arg(long)]
    pub model: PathBuf,
    /// CSV to score; the label column is optional.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write `id,probability,label`.
    #[arg(long)]
    pub out: PathBuf,
    /// Overrides the model's own threshold (`threshold.json`: fixed, or chosen on its
    /// calibration rows when it was trained).
    #[arg(long)]
    pub threshold: Option<f32>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print the N rows most likely to be hateful (for K classes: most likely to be of each
    /// class), with their text.
    #[arg(long, value_name = "N")]
    pub show_flagged: Option<usize>,
}

pub fn run(args: &PredictArgs) -> anyhow::Result<()> {
    // A process that trains keeps freed memory for the next step; the sweep driver does not,
    // since every worker it forks copies its page tables.
    rnnsweep_model::alloc::keep_freed_memory();
    if let Some(t) = args.threshold.filter(|t| !(0.0..=1.0).contains(t)) {
        anyhow::bail!("--threshold {t}: must be between 0 and 1");
    }
    let device = rnnsweep_model::device::open(&args.device)?;
    let model = Predictor::load(&args.model, &device)?;
    let task = model.task().clone();
    // The file is read with the columns and label rule the model was trained with.
    let table = load_csv_with(&args.input, &task.columns(), Labels::Optional, &task.labels)?;
    let probs = model.predict(&table)?;
    if task.multi_label {
        return write_labels(args, &table, &probs, &task.classes, model.threshold());
    }
    if task.outputs() > 1 {
        if args.threshold.is_some() {
            anyhow::bail!(
                "--threshold: a {}-class model decides by argmax; it has no threshold",
                task.classes.len()
            );
        }
        return write_classes(
            args,
            &table,
            &probs,
            &task.classes,
            model.threshold().class_offsets(),
        );
    }
    let threshold = args.threshold.unwrap_or(model.threshold().value as f32);
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
    w.write_record(["id", "probability", "label"])?;
    let mut flagged = 0;
    for (row, p) in table.rows.iter().zip(&probs) {
        let label = u8::from(*p >= threshold);
        flagged += usize::from(label);
        w.write_record([row.id.as_str(), &format!("{p:.6}"), &label.to_string()])?;
    }
    w.flush()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} rows scored, {} labelled 1 (threshold {threshold:.4}); written to {}",
        probs.len(),
        flagged,
        args.out.display()
    )?;
    if let Some(n) = args.show_flagged {
        writeln!(out)?;
        print_most_likely(&mut out, table.rows.as_slice(), n, "tweet", |r| probs[r])?;
        writeln!(out)?;
    }
    if table.labelled {
        let c = rnnsweep_model::metrics::classify(&probs, &table.labels(), threshold);
        let names = rnnsweep_model::metrics::classify_binary_as_classes(
            &probs,
            &table.labels(),
            threshold,
            &task.classes,
        );
        writeln!(
            out,
            "accuracy {:.4}  precision {:.4}  recall {:.4}  f1 {:.4}  specificity {:.4}  roc_auc {:.4}  average_precision {:.4}",
            c.accuracy, c.precision, c.recall, c.f1, c.specificity, c.roc_auc, c.pr_auc
        )?;
        writeln!(
            out,
            "macro_f1 {:.4}  weighted_f1 {:.4}",
            names.macro_f1, names.weighted_f1
        )?;
    }
    Ok(())
}

/// A multi-label model's predictions: `id,labels,` (the labels at or above their thresholds,
/// joined by `|`) then every label's probability.
fn write_labels(
    args: &PredictArgs,
    table: &Table,
    probs: &[f32],
    names: &[String],
    stored: &rnnsweep_model::artifact::StoredThreshold,
) -> anyhow::Result<()> {
    let k = names.len();
    let thresholds: Vec<f64> = match args.threshold {
        Some(t) => vec![f64::from(t); k],
        None if stored.label_thresholds.len() == k => stored.label_thresholds.clone(),
        None => vec![stored.value; k],
    };
    write_scores(
        args,
        table,
        probs,
        names,
        "labels",
        "rows with each label: ",
        |p| {
            (0..k)
                .filter(|&c| f64::from(p[c]) >= thresholds[c])
                .collect()
        },
    )?;
    let mut out = std::io::stdout().lock();
    if table.labelled {
        let m = rnnsweep_model::metrics::classify_multilabel(
            probs,
            &table.targets(),
            names,
            &thresholds,
        );
        writeln!(
            out,
            "subset_accuracy {:.4}  macro_f1 {:.4}  weighted_f1 {:.4}  mean_column_roc_auc {:.4}  mean_average_precision {:.4}  log_loss {:.4}",
            m.accuracy,
            m.macro_f1,
            m.weighted_f1,
            m.roc_auc,
            m.pr_auc,
            rnnsweep_model::metrics::multilabel_log_loss(probs, &table.targets())
        )?;
        print_class_scores(&mut out, &m.per_class)?;
    }
    Ok(())
}

/// A K-class model's predictions: the decided class's name (the argmax, after the model's
/// per-class offsets when it has them), then every class's probability.
fn write_classes(
    args: &PredictArgs,
    table: &Table,
    probs: &[f32],
    classes: &[String],
    offsets: Option<&[f64]>,
) -> anyhow::Result<()> {
    let k = classes.len();
    write_scores(args, table, probs, classes, "label", "", |p| {
        rnnsweep_model::metrics::argmax_classes(p, k, offsets)
            .into_iter()
            .map(usize::from)
            .collect()
    })?;
    let mut out = std::io::stdout().lock();
    if let Some(n) = args.show_flagged {
        for (c, name) in classes.iter().enumerate() {
            writeln!(out, "\nmost likely `{name}`:")?;
            print_most_likely(&mut out, &table.rows, n, "text", |r| probs[r * k + c])?;
        }
        writeln!(out)?;
    }
    if table.labelled {
        let m =
            rnnsweep_model::metrics::classify_multiclass(probs, &table.labels(), classes, offsets);
        writeln!(
            out,
            "accuracy {:.4}  macro_f1 {:.4}  weighted_f1 {:.4}  macro_roc_auc {:.4}  macro_average_precision {:.4}  log_loss {:.4}",
            m.accuracy,
            m.macro_f1,
            m.weighted_f1,
            m.roc_auc,
            m.pr_auc,
            rnnsweep_model::metrics::log_loss(probs, &table.labels(), k)
        )?;
        print_class_scores(&mut out, &m.per_class)?;
    }
    Ok(())
}

/// One line per class (or label): precision, recall, F1 and its rows.
fn print_class_scores(
    out: &mut impl Write,
    per_class: &[rnnsweep_model::metrics::ClassScores],
) -> std::io::Result<()> {
    for c in per_class {
        writeln!(
            out,
            "  {:<16} precision {:.4}  recall {:.4}  f1 {:.4}  ({} rows)",
            c.class, c.precision, c.recall, c.f1, c.support
        )?;
    }
    Ok(())
}

/// The `n` rows with the highest `score`, with their text (cut to 100 characters).
fn print_most_likely(
    out: &mut impl Write,
    rows: &[rnnsweep_model::data::Row],
    n: usize,
    text_header: &str,
    score: impl Fn(usize) -> f32,
) -> std::io::Result<()> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
    writeln!(
        out,
        "{:>4}  {:>10}  {:>11}  {text_header}",
        "rank", "id", "probability"
    )?;
    for (rank, &i) in order.iter().take(n).enumerate() {
        let text: String = rows[i]
            .text
            .chars()
            .take(100)
            .collect::<String>()
            .replace(['\n', '\r'], " ");
        writeln!(
            out,
            "{:>4}  {:>10}  {:>11.4}  {text}",
            rank + 1,
            rows[i].id,
            score(i)
        )?;
    }
    Ok(())
}

/// Writes `id,<decision_column>,` and one probability column per class (row-major `[rows, K]`
/// `probs`), the decision being the names of the classes `decide` picks for a row joined by
/// `|`, then prints how many rows each class got.
fn write_scores(
    args: &PredictArgs,
    table: &Table,
    probs: &[f32],
    names: &[String],
    decision_column: &str,
    summary: &str,
    decide: impl Fn(&[f32]) -> Vec<usize>,
) -> anyhow::Result<()> {
    let k = names.len();
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let mut w = csv::Writer::from_writer(std::io::BufWriter::new(file));
    let mut header = vec!["id".to_string(), decision_column.to_string()];
    header.extend(names.iter().cloned());
    w.write_record(&header)?;
    let mut counts = vec![0usize; k];
    for (row, p) in table.rows.iter().zip(probs.chunks(k)) {
        let chosen = decide(p);
        for &c in &chosen {
            counts[c] += 1;
        }
        let decided: Vec<&str> = chosen.iter().map(|&c| names[c].as_str()).collect();
        let mut record = vec![row.id.clone(), decided.join("|")];
        record.extend(p.iter().map(|v| format!("{v:.6}")));
        w.write_record(&record)?;
    }
    w.flush()?;
    let shares: Vec<String> = names
        .iter()
        .zip(&counts)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    println!(
        "{} rows scored ({summary}{}); written to {}",
        table.rows.len(),
        shares.join(", "),
        args.out.display()
    );
    Ok(())
}
