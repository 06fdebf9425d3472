//! `rnnsweep export`: every trial (or every epoch) as CSV or JSON.

use std::path::PathBuf;

use anyhow::Context;
use rnnsweep_search::results::export;
use rnnsweep_search::results::study::Study;
use rnnsweep_search::store::StorageLocation;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    pub db: StorageLocation,
    #[arg(long)]
    pub study: Option<String>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ExportFormat,
    /// Write here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The per-epoch history: one row per trial and epoch (CSV), or a `history` list (JSON).
    #[arg(long)]
    pub epochs: bool,
}

pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let study = Study::open(&args.db, args.study.as_deref())?;
    let (metric, trials) = (study.objective()?, study.trials_with_epochs()?);
    let text = match args.format {
        ExportFormat::Csv => export::export_csv(&trials, &metric, args.epochs),
        ExportFormat::Json => {
            serde_json::to_string_pretty(&export::export_rows(&trials, &metric, args.epochs))?
                + "\n"
        }
    };
    match &args.out {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("{}: cannot write", p.display()))?
        }
        None => {
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
    }
    Ok(())
}
