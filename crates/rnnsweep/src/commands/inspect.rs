//! `rnnsweep data inspect`: a data file the way the model will see it.

use anyhow::Context;
use rnnsweep_model::config::{Padding, Truncating};
use rnnsweep_model::data::{load_csv_with, Labels};
use rnnsweep_model::dataset::{class_weights, task_class_weights};
use rnnsweep_model::encoder::{longest, pad_sequences};
use rnnsweep_model::tokenizer::Tokenizer;

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// CSV file with a header (`id,label,tweet` by default; `label` may be absent).
    #[arg(long)]
    pub input: PathBuf,
    /// Keras `num_words`: keep word ids below this.
    #[arg(long, default_value_t = 5000)]
    pub max_words: usize,
    /// Sequence length (default: the longest tokenized row).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Write `id,` and the post-padded id sequence, one line per row.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub data: crate::data_args::DataArgs,
}

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    if args.max_words < 2 {
        anyhow::bail!(
            "--max-words {}: must be at least 2 (ids start at 1)",
            args.max_words
        );
    }
    if args.seq_len == Some(0) {
        anyhow::bail!("--seq-len 0: must be at least 1");
    }
    let (columns, rule) = (args.data.columns(), args.data.rule());
    let table = load_csv_with(&args.input, &columns, Labels::Optional, &rule)?;
    let tokenizer = Tokenizer::fit(Some(args.max_words), table.texts());
    let sequences = tokenizer.texts_to_sequences(table.texts());
    let longest_len = longest(&sequences);
    let len = args.seq_len.unwrap_or(longest_len).max(1);

    println!("file              {}", args.input.display());
    println!("rows              {}", table.rows.len());
    if table.multi_label {
        println!("labels            {} (multi-label)", table.classes.len());
        for (name, rows) in table.classes.iter().zip(table.class_counts()) {
            println!(
                "  {name:<15} {rows} ({:.2} %)",
                100.0 * rows as f64 / table.rows.len() as f64
            );
        }
    } else if table.labelled && table.classes.len() > 2 {
        let counts = table.class_counts();
        let weights = task_class_weights(&table.labels(), table.classes.len());
        println!("classes           {} (multi-class)", table.classes.len());
        for ((name, rows), w) in table.classes.iter().zip(&counts).zip(&weights) {
            println!(
                "  {name:<15} {rows} ({:.2} %), class weight {w:.4}",
                100.0 * *rows as f64 / table.rows.len() as f64
            );
        }
    } else if table.labelled {
        if table.classes != ["0", "1"] {
            println!(
                "classes           {} (0), {} (1)",
                table.classes[0], table.classes[1]
            );
        }
        let positives = table.positives();
        println!(
            "positives         {} ({:.2} %)",
            positives,
            100.0 * positives as f64 / table.rows.len() as f64
        );
        let w = class_weights(&table.labels());
        println!("class weights     0: {:.4}  1: {:.4}", w[0], w[1]);
    } else {
        println!("positives         (unlabelled file)");
    }
    println!("unique tokens     {}", tokenizer.vocabulary.len());
    println!(
        "ids used          {} (max_words {})",
        tokenizer.id_limit() - 1,
        args.max_words
    );
    println!("longest sequence  {longest_len}");
    println!("sequence length   {len}");
    if table.invalid_utf8_fields > 0 {
        println!(
            "invalid UTF-8     {} field(s) repaired, first on line {}",
            table.invalid_utf8_fields,
            table.first_invalid_utf8_line.unwrap_or(0)
        );
    }

    if let Some(out) = &args.out {
        let padded = pad_sequences(&sequences, len, Padding::Post, Truncating::Pre);
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .from_path(out)
            .with_context(|| format!("{}: cannot create", out.display()))?;
        for (r, row) in table.rows.iter().enumerate() {
            let ids: Vec<String> = padded.row(r).iter().map(u32::to_string).collect();
            w.write_record([row.id.as_str(), &ids.join(" ")])?;
        }
        w.flush()
            .with_context(|| format!("{}: cannot write", out.display()))?;
        println!("wrote             {}", out.display());
    }
    Ok(())
}
