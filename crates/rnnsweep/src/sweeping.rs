//! A study's sweep run in the terminal (for `run`, `resume` and `confirm`): the spec's
//! resources overridden from the command line, live progress, the final table and the exit
//! code.

use std::process::ExitCode;

use anyhow::{bail, Context};
use std::time::Duration;

use rnnsweep_search::display::{human_duration, run_cap_text};
use rnnsweep_search::results::leaderboard::{failure_summary, rank, render_table};
use rnnsweep_search::results::study::Study;
use rnnsweep_search::results::warm_start::{queue_spec_trials, warm_start};
use rnnsweep_search::run::dispatch::{run_sweep, SweepOptions};
use rnnsweep_search::run::events::StopCause;
use rnnsweep_search::run::signals::{install_signal_handlers, Interrupts};
use rnnsweep_search::spec::duration::parse_duration;
use rnnsweep_search::spec::Spec;
use rnnsweep_search::store::{StorageLocation, TrialState};

use crate::progress::Reporter;

/// Overrides of the spec's `resources`.
#[derive(clap::Args)]
pub struct ExecArgs {
    /// Devices for the trials, e.g. `cpu` or `cuda:0,cuda:1`.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<String>,
    /// Trials at once on each device.
    #[arg(long)]
    pub trials_per_device: Option<usize>,
    /// CPU threads each trial may use.
    #[arg(long)]
    pub threads_per_trial: Option<usize>,
    /// Finished trials wanted, instead of the spec's `run_cap` (W&B's `wandb agent --count`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub run_cap: Option<u64>,
    /// Stop (and FAIL) a trial that runs longer than this, e.g. `30m` (the spec's
    /// `trial_timeout`).
    #[arg(long, value_parser = parse_limit)]
    pub trial_timeout: Option<Duration>,
    /// Stop (and FAIL) a trial that writes no protocol line for this long, e.g. `10m` (the
    /// spec's `silence_timeout`).
    #[arg(long, value_parser = parse_limit)]
    pub silence_timeout: Option<Duration>,
    /// Start from another study's finished trials (an SQLite file or `postgresql://…`): the
    /// sampler learns from them; they count toward `run_cap`. Taken once per study.
    #[arg(long, value_name = "STORAGE")]
    pub warm_start: Option<StorageLocation>,
    /// Which study of `--warm-start` (needed when it holds several).
    #[arg(long, value_name = "NAME", requires = "warm_start")]
    pub warm_start_study: Option<String>,
}

fn parse_limit(text: &str) -> Result<Duration, String> {
    parse_duration(&serde_json::Value::from(text))
        .ok_or_else(|| format!("`{text}` is not a positive duration such as 90s, 30m or 2h"))
}

pub fn sweep(
    spec: &mut Spec,
    force_new_space: bool,
    dry_run: bool,
    exec: &ExecArgs,
) -> anyhow::Result<ExitCode> {
    if !exec.devices.is_empty() {
        spec.resources.devices = exec.devices.clone();
        spec.resources.gpu_indices.clear();
    }
    if let Some(n) = exec.trials_per_device {
        spec.resources.trials_per_device = n;
    }
    if exec.threads_per_trial.is_some() {
        spec.resources.threads_per_trial = exec.threads_per_trial;
    }
    if let Some(n) = exec.run_cap {
        spec.run_cap = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if exec.trial_timeout.is_some() {
        spec.trial_timeout = exec.trial_timeout;
    }
    if exec.silence_timeout.is_some() {
        spec.silence_timeout = exec.silence_timeout;
    }
    for w in spec
        .resources
        .validate()
        .map_err(|m| anyhow::anyhow!("resources: {m}"))?
    {
        eprintln!("warning: {w}");
    }
    // `--devices` may have put a GPU beside a fused LSTM.
    spec.check_lstm_on_devices()
        .map_err(|m| anyhow::anyhow!("{}: {m}", spec.path.display()))?;
    let spec = &*spec;
    for note in &spec.notes {
        eprintln!("note: {note}");
    }
    if spec.trial.trains_model() && !spec.train_file.is_file() {
        bail!(
            "{}: data.train: {}: no such file{}",
            spec.path.display(),
            spec.train_file.display(),
            if spec.train_file.ends_with("data/train.csv") {
                " (download train.csv as the README says)"
            } else {
                ""
            }
        );
    }
    if let Some(v) = spec.validation_file.as_ref().filter(|v| !v.is_file()) {
        bail!(
            "{}: data.validation: {}: no such file",
            spec.path.display(),
            v.display()
        );
    }
    if spec.trial.trains_model() {
        // A label the task cannot read fails here, once, before a study exists: not in every
        // trial.
        spec.tables()?;
    }
    if dry_run {
        say!("{}", rnnsweep_search::run::plan::describe(spec)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut store = spec.storage.open()?;
    let options = SweepOptions {
        exe: std::env::current_exe().context("cannot find the rnnsweep executable")?,
        results_dir: spec.storage.results_dir(),
        force_new_space,
        interrupts: install_signal_handlers(&Interrupts::default()),
    };
    let pool = rnnsweep_search::devices::DevicePool::new(&spec.resources)
        .map_err(|m| anyhow::anyhow!("resources: {m}"))?;
    say!(
        "study `{}` in {} ({:?} search on {}, {} run_cap {}; {} trial(s) at once, {} thread(s) each)",
        spec.name,
        spec.storage,
        spec.method,
        spec.resources.device_names().map_err(|m| anyhow::anyhow!(m))?.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        spec.metric,
        run_cap_text(spec.run_cap),
        pool.capacity(),
        pool.cpu_threads
    );
    if let Some(location) = &exec.warm_start {
        let source = Study::open(location, exec.warm_start_study.as_deref())
            .with_context(|| format!("--warm-start {location}"))?;
        if source.location == spec.storage && source.name == spec.name {
            bail!("--warm-start {location}: that is this study itself");
        }
        let study = rnnsweep_search::run::identity::open_study(spec, &mut *store, force_new_space)?;
        let w = warm_start(
            &source,
            &mut *store,
            study,
            &spec.space(),
            &spec.metric,
            spec.direction,
        )?;
        if w.already {
            say!(
                "warm start: study `{}` already holds the trials of {}",
                spec.name,
                w.source
            );
        } else {
            let outside = if w.outside > 0 {
                format!(" ({} left out: a parameter outside this space)", w.outside)
            } else {
                String::new()
            };
            say!(
                "warm start: {} finished trial(s) taken from {}{outside}; they count toward run_cap",
                w.taken,
                w.source
            );
        }
    }
    if !spec.enqueue.is_empty() {
        let study = rnnsweep_search::run::identity::open_study(spec, &mut *store, force_new_space)?;
        let queued = queue_spec_trials(&mut *store, study, &spec.enqueue)?;
        if queued > 0 {
            say!("queued {queued} trial(s) from the spec's enqueue: they run first, to their end");
        }
    }
    let (finished, best) = match store.study_id(&spec.name)? {
        Some(id) => {
            let s = store.summary(id)?;
            let count = |state: TrialState| s.counts.get(state.as_str()).copied().unwrap_or(0);
            (
                count(TrialState::Complete) + count(TrialState::Pruned),
                s.best,
            )
        }
        None => (0, None),
    };
    let mut reporter = Reporter::new(&spec.metric, spec.direction, spec.run_cap, finished, best);
    let outcome = run_sweep(spec, &mut *store, &options, &mut |e| reporter.event(e));
    reporter.finish();
    let cause = outcome?;
    drop(store);
    let study = Study::open(&spec.storage, Some(&spec.name))?;
    let name = study.name.clone();
    let trials = study.trials()?;
    // A broken setup's and a machine fault's closing messages give the reasons themselves.
    let stop_says_why = matches!(
        cause,
        StopCause::BrokenSetup { .. } | StopCause::EnvironmentFault { .. }
    );
    match failure_summary(&trials) {
        Some(failures) if !stop_says_why => say!("\n{failures}"),
        Some(_) => {}
        None => {
            let rows = rank(&trials, &spec.metric, study.direction, None);
            let table =
                render_table(&rows, &spec.metric, None, None).map_err(|m| anyhow::anyhow!(m))?;
            say!("\n{table}");
        }
    }
    let finished = trials.iter().filter(|t| t.state.is_finished()).count();
    let why = match &cause {
        StopCause::RunCapReached => "run_cap reached".to_string(),
        StopCause::TargetReached { trial, value } => {
            format!(
                "trial {trial} reached metric.target ({} {value})",
                spec.metric
            )
        }
        StopCause::SpaceExhausted => "every point of the search space has been tried".to_string(),
        StopCause::MaxDuration => "max_duration reached".to_string(),
        StopCause::FinalModelReserve { reserved } => format!(
            "max_duration reached, less {} kept for the final model (final: ensemble {}, \
             estimated from the epoch times of the members it would choose now; `rnnsweep best \
             DB --retrain` builds it)",
            human_duration(*reserved),
            spec.final_ensemble.unwrap_or(1)
        ),
        StopCause::TooManyFailures(n) => format!("stopped after {n} failed trials (max_failures)"),
        StopCause::BrokenSetup {
            failed,
            reasons,
            trial_dir,
        } => {
            let said = match reasons.as_slice() {
                [(reason, _)] => format!("all with the same reason:\n  {reason}"),
                _ => reasons
                    .iter()
                    .map(|(r, n)| format!("\n  {n} × {r}"))
                    .collect::<String>(),
            };
            format!(
                "stopped: the first {failed} trials of this run all failed (max_initial_failures), {said}\n\
                 the first one's folder, with its stderr.log and trial.json: {}\n\
                 fix the trial and run the same command again",
                trial_dir.display()
            )
        }
        StopCause::EnvironmentFault {
            fault,
            path,
            trial,
            detail,
        } => {
            let seen = match trial {
                // The driver's own write names path and fault already.
                Some(n) if detail.contains(path.as_str()) => format!(" (met by trial {n})"),
                Some(n) => format!(" (met by trial {n}: {detail})"),
                None => String::new(),
            };
            format!(
                "stopped: {fault}: {path}{seen}\n\
                 no new trial was started and nothing finished is lost; fix it and run the same command again to resume"
            )
        }
        StopCause::Interrupted => {
            "interrupted after the running trials finished; run the same command again to resume"
                .to_string()
        }
        StopCause::InterruptedNow => {
            "interrupted; the stopped trials are queued and re-run on resume".to_string()
        }
    };
    let of = match spec.run_cap {
        usize::MAX => String::new(),
        n => format!(" of {n}"),
    };
    say!("study `{name}`: {finished}{of} trials finished — {why}");
    Ok(match cause {
        StopCause::Interrupted | StopCause::InterruptedNow => {
            crate::exit::for_signal(options.interrupts.signal())
        }
        StopCause::TooManyFailures(_)
        | StopCause::BrokenSetup { .. }
        | StopCause::EnvironmentFault { .. } => ExitCode::from(crate::exit::ERROR),
        _ => ExitCode::SUCCESS,
    })
}
