//! `rnnsweep run | resume | leaderboard | studies | show | enqueue | retry`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use rnnsweep_model::metrics::direction_of;
use rnnsweep_search::dispatch::{run_sweep, StopCause, SweepOptions};
use rnnsweep_search::executor::{install_signal_handlers, Interrupts};
use rnnsweep_search::leaderboard::{decode_param, rank, render_csv, render_json, render_table};
use rnnsweep_search::sampler::Point;
use rnnsweep_search::spec::Spec;
use rnnsweep_search::store::{StorageLocation, TrialState};
use rnnsweep_search::study::{RetrySelection, Study};

/// Prints a line; a closed stdout (`rnnsweep run | head`) must not kill the driver mid-study.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The shell's convention for a process ended by signal n: 128 + n (SIGINT 130, SIGTERM 143).
fn exit_for_signal(signal: i32) -> ExitCode {
    ExitCode::from((128 + signal) as u8)
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The sweep spec (YAML).
    pub spec: PathBuf,
    /// Where the study lives, instead of the spec's `storage`: an SQLite file,
    /// `sqlite:///relative.db`, `sqlite:////absolute.db` or `postgresql://user@host:port/db`.
    #[arg(long)]
    pub storage: Option<StorageLocation>,
    /// Continue an existing study even though its search space differs from this spec.
    #[arg(long)]
    pub force_new_space: bool,
    /// Check the spec and the data and print the plan (space, first trials, devices, cost per
    /// trial); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub exec: ExecArgs,
}

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
}

#[derive(clap::Args)]
pub struct ResumeArgs {
    /// The study: a file, `sqlite:///file.db` or `postgresql://…`.
    pub db: StorageLocation,
    /// Which study (needed when the file holds several).
    #[arg(long)]
    pub study: Option<String>,
    #[command(flatten)]
    pub exec: ExecArgs,
}

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
}

#[derive(clap::Args)]
pub struct StudiesArgs {
    pub db: StorageLocation,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    pub db: StorageLocation,
    /// Trial number.
    pub trial: i64,
    #[arg(long)]
    pub study: Option<String>,
}

#[derive(clap::Args)]
pub struct EnqueueArgs {
    /// The study: a file, `sqlite:///file.db` or `postgresql://…`.
    pub db: StorageLocation,
    #[arg(long)]
    pub study: Option<String>,
    /// A parameter's value (YAML), e.g. `--set optimizer=adam --set learning_rate=0.002`;
    /// every parameter of the space (constants may be left out).
    #[arg(long = "set", value_name = "NAME=VALUE", required = true)]
    pub set: Vec<String>,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["failed", "trial"])))]
pub struct RetryArgs {
    /// The study: a file, `sqlite:///file.db` or `postgresql://…`.
    pub db: StorageLocation,
    #[arg(long)]
    pub study: Option<String>,
    /// Queue every failed trial again (those not already re-queued).
    #[arg(long)]
    pub failed: bool,
    /// Queue this failed trial again.
    #[arg(long)]
    pub trial: Option<i64>,
}

fn sweep(
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
    for w in spec
        .resources
        .validate()
        .map_err(|m| anyhow::anyhow!("resources: {m}"))?
    {
        eprintln!("warning: {w}");
    }
    let spec = &*spec;
    for note in &spec.notes {
        eprintln!("note: {note}");
    }
    if spec.command.is_none() && spec.function.is_none() && !spec.train_file.is_file() {
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
    if dry_run {
        say!("{}", rnnsweep_search::plan::describe(spec)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut store = spec.storage.open()?;
    let options = SweepOptions {
        exe: std::env::current_exe().context("cannot find the rnnsweep executable")?,
        results_dir: spec.storage.results_dir(),
        force_new_space,
        interrupts: install_signal_handlers(&Interrupts::default()),
    };
    let pool = rnnsweep_search::scheduler::DevicePool::new(&spec.resources)
        .map_err(|m| anyhow::anyhow!("resources: {m}"))?;
    say!(
        "study `{}` in {} ({:?} search on {}, {} run_cap {}; {} trial(s) at once, {} thread(s) each)",
        spec.name,
        spec.storage,
        spec.method,
        spec.resources.device_names().map_err(|m| anyhow::anyhow!(m))?.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        spec.metric,
        spec.run_cap,
        pool.capacity(),
        pool.cpu_threads
    );
    let (finished, best) = match store.study_id(&spec.name)? {
        Some(id) => {
            let trials = store.trials(id)?;
            let s = store.studies()?.into_iter().find(|s| s.study_id == id);
            (
                trials.iter().filter(|t| t.state.is_finished()).count(),
                s.and_then(|s| s.best),
            )
        }
        None => (0, None),
    };
    let mut reporter =
        crate::progress::Reporter::new(&spec.metric, spec.direction, spec.run_cap, finished, best);
    let outcome = run_sweep(spec, &mut *store, &options, &mut |e| reporter.event(e));
    reporter.finish();
    let cause = outcome?;
    drop(store);
    let study = Study::open(&spec.storage, Some(&spec.name))?;
    let name = study.name.clone();
    let trials = study.store.trials(study.id)?;
    let rows = rank(&trials, &spec.metric, study.direction, None);
    let table = render_table(&rows, &spec.metric, None, None).map_err(|m| anyhow::anyhow!(m))?;
    say!("\n{table}");
    let finished = trials.iter().filter(|t| t.state.is_finished()).count();
    let why = match &cause {
        StopCause::RunCapReached => "run_cap reached".to_string(),
        StopCause::SpaceExhausted => "every point of the search space has been tried".to_string(),
        StopCause::MaxDuration => "max_duration reached".to_string(),
        StopCause::TooManyFailures(n) => format!("stopped after {n} failed trials (max_failures)"),
        StopCause::Interrupted => {
            "interrupted after the running trials finished; run the same command again to resume"
                .to_string()
        }
        StopCause::InterruptedNow => {
            "interrupted; the stopped trials are queued and re-run on resume".to_string()
        }
    };
    say!(
        "study `{name}`: {finished} of {} trials finished — {why}",
        spec.run_cap
    );
    Ok(match cause {
        StopCause::Interrupted | StopCause::InterruptedNow => {
            exit_for_signal(options.interrupts.signal())
        }
        StopCause::TooManyFailures(_) => ExitCode::from(crate::cli::EXIT_ERROR),
        _ => ExitCode::SUCCESS,
    })
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let mut spec = Spec::load(&args.spec)?;
    if let Some(s) = &args.storage {
        spec.storage = s.clone();
    }
    sweep(&mut spec, args.force_new_space, args.dry_run, &args.exec)
}

pub fn resume(args: &ResumeArgs) -> anyhow::Result<ExitCode> {
    let study = Study::open(&args.db, args.study.as_deref())?;
    let mut spec = study.stored_spec()?;
    drop(study);
    sweep(&mut spec, false, false, &args.exec)
}

pub fn leaderboard(args: &LeaderboardArgs) -> anyhow::Result<()> {
    let study = Study::open(&args.db, args.study.as_deref())?;
    let objective = study.objective()?;
    if let Some(m) = &args.metric {
        if m != &objective && direction_of(m).is_none() {
            bail!(
                "--metric {m}: not a reported metric (one of: {})",
                rnnsweep_model::metrics::METRIC_NAMES.join(", ")
            );
        }
    }
    let mut rows = rank(
        &study.store.trials(study.id)?,
        &objective,
        study.direction,
        args.metric.as_deref(),
    );
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

pub fn enqueue(args: &EnqueueArgs) -> anyhow::Result<()> {
    let mut values = Point::new();
    for a in &args.set {
        let (name, value) = rnnsweep_model::ModelConfig::parse_assignment(a)?;
        if values.insert(name.clone(), value).is_some() {
            bail!("--set {name}: given twice");
        }
    }
    let mut study = Study::open(&args.db, args.study.as_deref())?;
    let number = study.enqueue(&values)?;
    println!(
        "queued trial {number} in study `{}`; `rnnsweep resume {}` (or run the spec) runs it first",
        study.name, args.db
    );
    Ok(())
}

pub fn retry(args: &RetryArgs) -> anyhow::Result<()> {
    let mut study = Study::open(&args.db, args.study.as_deref())?;
    let which = match args.trial {
        Some(n) => RetrySelection::Trial(n),
        None => RetrySelection::AllFailed,
    };
    let queued = study.retry(which)?;
    if queued.is_empty() {
        println!("study `{}` has no failed trial to retry", study.name);
    }
    for (failed, number) in queued {
        println!("trial {failed} queued again as trial {number}");
    }
    Ok(())
}

pub fn studies(args: &StudiesArgs) -> anyhow::Result<()> {
    let store = args.db.open_existing()?;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "study",
        "direction",
        "trials",
        "complete",
        "pruned",
        "fail",
        "running",
        "waiting",
        "best",
    ]);
    for s in store.studies()? {
        let c = |k: &str| s.counts.get(k).copied().unwrap_or(0).to_string();
        table.add_row(vec![
            s.name.clone(),
            format!("{:?}", s.direction).to_lowercase(),
            s.counts.values().sum::<usize>().to_string(),
            c("COMPLETE"),
            c("PRUNED"),
            c("FAIL"),
            c("RUNNING"),
            c("WAITING"),
            s.best
                .map_or("-".into(), rnnsweep_search::leaderboard::sig4),
        ]);
    }
    println!("{table}");
    Ok(())
}

pub fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let Study {
        store,
        id: study,
        name,
        ..
    } = Study::open(&args.db, args.study.as_deref())?;
    let trials = store.trials(study)?;
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
    if let Some(r) = t.system_attrs.get("fail_reason") {
        println!("fail reason     {}", r.as_str().unwrap_or_default());
    }
    println!("parameters:");
    for (k, p) in &t.params {
        println!(
            "  {k:<22} {}",
            decode_param(p.internal, &p.distribution_json)
        );
    }
    println!("attributes:");
    for (k, v) in &t.user_attrs {
        println!("  {k:<22} {v}");
    }
    let epochs = store.epochs(t.trial_id)?;
    if !epochs.is_empty() {
        let cols = [
            "train_loss",
            "val_loss",
            "val_accuracy",
            "val_precision",
            "val_recall",
            "val_f1",
            "val_roc_auc",
            "seconds",
        ];
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
