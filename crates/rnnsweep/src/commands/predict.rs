//! `rnnsweep predict`: a CSV scored with a trained model (`id,probability,label`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use rnnsweep_model::artifact::Predictor;
use rnnsweep_model::data::{load_csv, Columns, Labels};

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
    /// Print the N rows most likely to be hateful, with their text.
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
    let device = rnnsweep_model::device(&args.device)?;
    let model = Predictor::load(&args.model, &device)?;
    let threshold = args.threshold.unwrap_or(model.threshold().value as f32);
    let table = load_csv(&args.input, &Columns::default(), Labels::Optional)?;
    let probs = model.predict(&table)?;
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
        let c = rnnsweep_model::metrics::classify(&probs, &table.labels(), threshold);
        writeln!(
            out,
            "accuracy {:.4}  precision {:.4}  recall {:.4}  f1 {:.4}  specificity {:.4}  roc_auc {:.4}  average_precision {:.4}",
            c.accuracy, c.precision, c.recall, c.f1, c.specificity, c.roc_auc, c.pr_auc
        )?;
    }
    Ok(())
}
