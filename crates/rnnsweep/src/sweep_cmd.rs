//! `rnnsweep run | resume | leaderboard | studies | show`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use rnnsweep_model::metrics::{direction_of, Direction};
use rnnsweep_search::leaderboard::{decode_param, rank, render_csv, render_json, render_table};
use rnnsweep_search::spec::Spec;
use rnnsweep_search::store::{is_postgres, open_store, Store, TrialState};
use rnnsweep_search::sweep::{install_interrupt_handler, run_sweep, StopCause, SweepOptions};

/// Prints a line; a closed stdout (`rnnsweep run | head`) must not kill the driver mid-study.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Exit code after the first Ctrl-C: running trials finished, no new ones started.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit code after a second Ctrl-C or SIGTERM: running trials were stopped and queued again.
pub const EXIT_INTERRUPTED_NOW: u8 = 131;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The sweep spec (YAML).
    pub spec: PathBuf,
    /// Where the study lives, instead of the spec's `storage`: an SQLite file or
    /// `postgresql://user@host:port/db`.
    #[arg(long)]
    pub storage: Option<String>,
    /// Continue an existing study even though its search space differs from this spec.
    #[arg(long)]
    pub force_new_space: bool,
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
    /// The study file.
    pub db: PathBuf,
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
    pub db: PathBuf,
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
}

#[derive(clap::Args)]
pub struct StudiesArgs {
    pub db: PathBuf,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    pub db: PathBuf,
    /// Trial number.
    pub trial: i64,
    #[arg(long)]
    pub study: Option<String>,
}

/// Opens an existing study file (or a PostgreSQL database) without creating a file.
pub fn open_existing(db: &Path) -> anyhow::Result<Box<dyn Store>> {
    let location = db.to_string_lossy();
    if !is_postgres(&location) && !db.exists() {
        bail!("{}: no such study file", db.display());
    }
    Ok(open_store(&location)?)
}

pub fn pick_study(
    store: &dyn Store,
    db: &Path,
    name: Option<&str>,
) -> anyhow::Result<(i64, String, Direction)> {
    let studies = store.studies()?;
    let chosen = match name {
        Some(n) => studies
            .into_iter()
            .find(|s| s.name == n)
            .with_context(|| format!("{}: no study named `{n}`", db.display()))?,
        None => match studies.len() {
            0 => bail!("{}: the file holds no study", db.display()),
            1 => studies.into_iter().next().expect("one study"),
            _ => bail!(
                "{}: the file holds several studies ({}); choose one with --study",
                db.display(),
                studies
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    Ok((chosen.study_id, chosen.name, chosen.direction))
}

fn sweep(spec: &mut Spec, force_new_space: bool, exec: &ExecArgs) -> anyhow::Result<ExitCode> {
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
    let mut store = open_store(&spec.storage.to_string_lossy())?;
    let options = SweepOptions {
        exe: std::env::current_exe().context("cannot find the rnnsweep executable")?,
        // Trial folders sit next to an SQLite study; a database study keeps them in results/.
        results_dir: if is_postgres(&spec.storage.to_string_lossy()) {
            PathBuf::from("results")
        } else {
            spec.storage
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        },
        force_new_space,
    };
    install_interrupt_handler();
    let pool = rnnsweep_search::scheduler::DevicePool::new(&spec.resources)
        .map_err(|m| anyhow::anyhow!("resources: {m}"))?;
    say!(
        "study `{}` in {} ({:?} search on {}, {} run_cap {}; {} trial(s) at once, {} thread(s) each)",
        spec.name,
        spec.storage.display(),
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
    let (study, name, direction) = pick_study(&*store, &spec.storage, Some(&spec.name))?;
    let trials = store.trials(study)?;
    let rows = rank(&trials, &spec.metric, direction, None);
    say!("\n{}", render_table(&rows, &spec.metric));
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
        StopCause::Interrupted => ExitCode::from(EXIT_INTERRUPTED),
        StopCause::InterruptedNow => ExitCode::from(EXIT_INTERRUPTED_NOW),
        StopCause::TooManyFailures(_) => ExitCode::from(crate::cli::EXIT_ERROR),
        _ => ExitCode::SUCCESS,
    })
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let mut spec = Spec::load(&args.spec)?;
    if let Some(s) = &args.storage {
        spec.storage = PathBuf::from(s);
    }
    sweep(&mut spec, args.force_new_space, &args.exec)
}

pub fn resume(args: &ResumeArgs) -> anyhow::Result<ExitCode> {
    let store = open_existing(&args.db)?;
    let (study, name, _) = pick_study(&*store, &args.db, args.study.as_deref())?;
    let attrs = store.study_user_attrs(study)?;
    let text = attrs
        .get("spec")
        .and_then(|v| v.as_str())
        .with_context(|| {
            format!(
                "{}: study `{name}` was not written by rnnsweep (no spec)",
                args.db.display()
            )
        })?;
    let file = attrs
        .get("spec_file")
        .and_then(|v| v.as_str())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("spec.yaml"));
    let mut spec = Spec::parse(text, &file)?;
    // The study lives where it was found, whatever the spec said.
    spec.storage = args.db.clone();
    drop(store);
    sweep(&mut spec, false, &args.exec)
}

pub fn leaderboard(args: &LeaderboardArgs) -> anyhow::Result<()> {
    let store = open_existing(&args.db)?;
    let (study, _, direction) = pick_study(&*store, &args.db, args.study.as_deref())?;
    let objective = store
        .study_user_attrs(study)?
        .get("metric")
        .and_then(|v| v.as_str())
        .unwrap_or("objective")
        .to_string();
    if let Some(m) = &args.metric {
        if m != &objective && direction_of(m).is_none() {
            bail!(
                "--metric {m}: not a reported metric (one of: {})",
                rnnsweep_model::metrics::METRIC_NAMES.join(", ")
            );
        }
    }
    let mut rows = rank(
        &store.trials(study)?,
        &objective,
        direction,
        args.metric.as_deref(),
    );
    if let Some(n) = args.top {
        rows.truncate(n);
    }
    let label = args.metric.clone().unwrap_or(objective);
    let text = match args.format {
        Format::Table => render_table(&rows, &label) + "\n",
        Format::Csv => render_csv(&rows, &label),
        Format::Json => render_json(&rows, &label) + "\n",
    };
    print!("{text}");
    Ok(())
}

pub fn studies(args: &StudiesArgs) -> anyhow::Result<()> {
    let store = open_existing(&args.db)?;
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
            s.best.map_or("-".into(), |b| format!("{b:.4}")),
        ]);
    }
    println!("{table}");
    Ok(())
}

pub fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let store = open_existing(&args.db)?;
    let (study, name, _) = pick_study(&*store, &args.db, args.study.as_deref())?;
    let trials = store.trials(study)?;
    let t = trials
        .iter()
        .find(|t| t.number == args.trial)
        .with_context(|| {
            format!(
                "{}: study `{name}` has no trial {}",
                args.db.display(),
                args.trial
            )
        })?;
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
