//! `rnnsweep plot`: PNG and SVG pictures of a study.

use std::path::PathBuf;

use anyhow::{bail, Context};
use rnnsweep_search::predictions::{self, VAL_PREDICTIONS_FILE};
use rnnsweep_search::results::leaderboard::rank;
use rnnsweep_search::results::plots::{self, TrialData};
use rnnsweep_search::results::study::Study;
use rnnsweep_search::store::{keys, StorageLocation};

#[derive(clap::Args)]
pub struct PlotArgs {
    pub db: StorageLocation,
    #[arg(long)]
    pub study: Option<String>,
    /// Folder for the PNG and SVG files (default: next to the study file, `<study>/plots`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How many of the best trials get learning curves.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
}

pub fn run(args: &PlotArgs) -> anyhow::Result<()> {
    let study = Study::open(&args.db, args.study.as_deref())?;
    let (name, direction, metric) = (study.name.clone(), study.direction, study.objective()?);
    let trials = study.trials_with_epochs()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.db.results_dir().join(&name).join("plots"));
    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    let records: Vec<_> = trials.iter().map(|t| t.record.clone()).collect();
    let ranked = rank(&records, &metric, direction, None);
    let top: Vec<&TrialData> = ranked
        .iter()
        .filter(|r| r.rank.is_some())
        .take(args.top)
        .filter_map(|r| trials.iter().find(|t| t.record.number == r.number))
        .collect();
    if top.is_empty() {
        bail!("{}: study `{name}` has no completed trial to plot", args.db);
    }
    let mut files = Vec::new();
    files.extend(plots::optimization_history(
        &out, &trials, &metric, direction,
    )?);
    files.extend(plots::parallel_coordinates(&out, &trials, &metric)?);
    files.extend(plots::learning_curves(&out, &top, &metric)?);
    let best = top[0];
    let dir = best
        .record
        .system_attrs
        .get(keys::TRIAL_DIR)
        .and_then(|v| v.as_str())
        .map(PathBuf::from);
    match dir
        .map(|d| d.join(VAL_PREDICTIONS_FILE))
        .filter(|p| p.exists())
    {
        Some(p) => match predictions::read_predictions(&p) {
            Ok((probs, labels)) => {
                files.extend(plots::confusion_matrix(
                    &out,
                    best.record.number,
                    &probs,
                    &labels,
                )?);
                files.extend(plots::roc_pr(&out, best.record.number, &probs, &labels)?);
            }
            // K classes or labels: one probability column each.
            Err(binary) => {
                let classes = predictions::read_class_predictions(&p).map_err(|_| binary)?;
                if !classes.multi_label {
                    files.extend(plots::class_confusion_matrix(
                        &out,
                        best.record.number,
                        &classes,
                    )?);
                }
                files.extend(plots::class_pr_curves(&out, best.record.number, &classes)?);
            }
        },
        None => eprintln!(
            "note: trial {} left no {VAL_PREDICTIONS_FILE}: no confusion matrix or ROC/PR curves",
            best.record.number
        ),
    }
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
