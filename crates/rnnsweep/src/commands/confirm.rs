//! `rnnsweep confirm`: the best configurations trained again with fresh seeds, then ranked by
//! their mean.

use std::process::ExitCode;

use rnnsweep_search::results::confirm::{confirmed_ranking, render_confirmed};
use rnnsweep_search::results::study::Study;
use rnnsweep_search::store::{StorageLocation, TrialState};

use crate::sweeping::{sweep, ExecArgs};

#[derive(clap::Args)]
pub struct ConfirmArgs {
    /// The study: a file, `sqlite:///file.db` or `postgresql://…`.
    pub db: StorageLocation,
    #[arg(long)]
    pub study: Option<String>,
    /// How many of the best configurations (by their single run) to repeat.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Fresh-seed runs per configuration (runs already there count).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[command(flatten)]
    pub exec: ExecArgs,
}

pub fn run(args: &ConfirmArgs) -> anyhow::Result<ExitCode> {
    if args.top == 0 || args.repeats == 0 {
        anyhow::bail!("--top and --repeats must be at least 1");
    }
    let mut study = Study::open(&args.db, args.study.as_deref())?;
    let queued = study.confirm(args.top, args.repeats)?;
    for (trial, new) in &queued {
        say!(
            "trial {trial}: {} more run(s) with fresh seeds queued as trial(s) {}",
            new.len(),
            new.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut spec = study.stored_spec()?;
    // Only the queued runs: the spec's run_cap and time limit were for the search.
    let summary = study.summary()?;
    let count = |s: TrialState| summary.counts.get(s.as_str()).copied().unwrap_or(0);
    spec.run_cap = count(TrialState::Complete)
        + count(TrialState::Pruned)
        + count(TrialState::Running)
        + count(TrialState::Waiting);
    spec.max_duration = None;
    drop(study);
    let code = if queued.is_empty() {
        say!(
            "nothing to queue: the top {} already have {} run(s) each",
            args.top,
            args.repeats
        );
        ExitCode::SUCCESS
    } else {
        sweep(&mut spec, false, false, &args.exec)?
    };
    let study = Study::open(&args.db, args.study.as_deref())?;
    let ranked = confirmed_ranking(&study.trials()?, study.direction);
    say!(
        "\nranked by the mean over seeds (what `best` now uses):\n{}",
        render_confirmed(&ranked, &study.objective()?)
    );
    Ok(code)
}
