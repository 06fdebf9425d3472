//! `rnnsweep show`: one trial with its parameters, attributes and per-epoch history.

use anyhow::Context;
use rnnsweep_model::metrics::Metric;
use rnnsweep_search::results::study::Study;
use rnnsweep_search::store::{StorageLocation, TrialState};

#[derive(clap::Args)]
pub struct ShowArgs {
    pub db: StorageLocation,
    /// Trial number.
    pub trial: i64,
    #[arg(long)]
    pub study: Option<String>,
}

pub fn run(args: &ShowArgs) -> anyhow::Result<()> {
    let study = Study::open(&args.db, args.study.as_deref())?;
    let name = &study.name;
    let trials = study.trials()?;
    let t = trials
        .iter()
        .find(|t| t.number == args.trial)
        .with_context(|| format!("{}: study `{name}` has no trial {}", args.db, args.trial))?;
    println!("study {name}, trial {} — {}", t.number, t.state.as_str());
    if let Some(v) = t.value {
        println!("objective       {v}");
    }
    println!(
        "started         {}",
        t.datetime_start.as_deref().unwrap_or("-")
    );
    println!(
        "completed       {}",
        t.datetime_complete.as_deref().unwrap_or("-")
    );
    if let Some(r) = t
        .system_attrs
        .get(rnnsweep_search::store::keys::FAIL_REASON)
    {
        println!("fail reason     {}", r.as_str().unwrap_or_default());
    }
    println!("parameters:");
    for (k, p) in &t.params {
        println!("  {k:<22} {}", p.value());
    }
    println!("attributes:");
    for (k, v) in &t.user_attrs {
        println!("  {k:<22} {v}");
    }
    let epochs = study.epochs(t.trial_id)?;
    if !epochs.is_empty() {
        let cols: Vec<&str> = [
            Metric::TrainLoss,
            Metric::ValLoss,
            Metric::ValAccuracy,
            Metric::ValPrecision,
            Metric::ValRecall,
            Metric::ValF1,
            Metric::ValRocAuc,
            Metric::ValPrAuc,
        ]
        .map(Metric::name)
        .into_iter()
        .chain(["seconds"])
        .collect();
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        let mut header = vec!["epoch".to_string()];
        header.extend(cols.iter().map(|c| c.to_string()));
        table.set_header(header);
        for (e, m) in epochs {
            let mut row = vec![e.to_string()];
            row.extend(cols.iter().map(|c| {
                m.get(*c)
                    .and_then(|v| v.as_f64())
                    .map_or("-".into(), |v| format!("{v:.4}"))
            }));
            table.add_row(row);
        }
        println!("{table}");
    }
    if t.state == TrialState::Running {
        println!("(still running)");
    }
    Ok(())
}
