//! `rnnsweep leaderboard`: a study's trials ranked, as a table, CSV or JSON.

use anyhow::bail;
use rnnsweep_model::metrics::{direction_of, Metric};
use rnnsweep_search::results::confirm::{confirmed_ranking, render_confirmed};
use rnnsweep_search::results::leaderboard::{
    failure_summary, rank, render_csv, render_json, render_table,
};
use rnnsweep_search::results::study::Study;
use rnnsweep_search::store::StorageLocation;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

#[derive(clap::Args)]
pub struct LeaderboardArgs {
    /// The study: a file, `sqlite:///file.db` or `postgresql://…`.
    pub db: StorageLocation,
    #[arg(long)]
    pub study: Option<String>,
    /// Show the best N trials (default: all).
    #[arg(long)]
    pub top: Option<usize>,
    /// Rank by this metric instead of the study's objective.
    #[arg(long)]
    pub metric: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Table columns, comma-separated (default: the objective, three metrics and the
    /// parameters that vary; CSV and JSON always carry every column).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Rank configurations by the mean objective over their runs with different seeds
    /// (`rnnsweep confirm`), with ± sd.
    #[arg(long)]
    pub confirmed: bool,
}

pub fn run(args: &LeaderboardArgs) -> anyhow::Result<()> {
    let study = Study::open(&args.db, args.study.as_deref())?;
    let objective = study.objective()?;
    if let Some(m) = &args.metric {
        if m != &objective && direction_of(m).is_none() {
            bail!(
                "--metric {m}: not a reported metric (one of: {})",
                Metric::names()
            );
        }
    }
    let trials = study.trials()?;
    if args.confirmed {
        let mut ranked = confirmed_ranking(&trials, study.direction);
        if ranked.is_empty() {
            bail!(
                "study `{}` has no confirmed configurations yet: run `rnnsweep confirm {} --top K --repeats R`",
                study.name,
                args.db
            );
        }
        if let Some(n) = args.top {
            ranked.truncate(n);
        }
        let text = match args.format {
            Format::Table => render_confirmed(&ranked, &objective) + "\n",
            Format::Csv | Format::Json => {
                let rows: Vec<serde_json::Value> = ranked
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        serde_json::json!({
                            "rank": i + 1, "trial": c.trial, "mean": c.mean, "sd": c.sd,
                            "runs": c.values.len(), "values": c.values, "params": c.params,
                        })
                    })
                    .collect();
                if matches!(args.format, Format::Json) {
                    serde_json::to_string_pretty(&rows)? + "\n"
                } else {
                    let mut w = csv::Writer::from_writer(Vec::new());
                    w.write_record(["rank", "trial", "mean", "sd", "runs"])?;
                    for (i, c) in ranked.iter().enumerate() {
                        w.write_record([
                            (i + 1).to_string(),
                            c.trial.to_string(),
                            c.mean.to_string(),
                            c.sd.to_string(),
                            c.values.len().to_string(),
                        ])?;
                    }
                    String::from_utf8(w.into_inner()?)?
                }
            }
        };
        print!("{text}");
        return Ok(());
    }
    if let (Format::Table, Some(failures)) = (args.format, failure_summary(&trials)) {
        print!("{failures}");
        return Ok(());
    }
    let mut rows = rank(&trials, &objective, study.direction, args.metric.as_deref());
    if let Some(n) = args.top {
        rows.truncate(n);
    }
    let label = args.metric.clone().unwrap_or(objective);
    let text = match args.format {
        Format::Table => {
            render_table(&rows, &label, Some(&args.columns), None)
                .map_err(|m| anyhow::anyhow!(m))?
                + "\n"
        }
        Format::Csv => render_csv(&rows, &label),
        Format::Json => render_json(&rows, &label) + "\n",
    };
    print!("{text}");
    Ok(())
}
