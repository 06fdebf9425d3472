//! `rnnsweep plot | export | best`: what a user looks at after a sweep.

use std::path::PathBuf;

use anyhow::{bail, Context};
use rnnsweep_model::artifact::TrainedModel;
use rnnsweep_model::data::{load_csv, Labels};
use rnnsweep_model::train::{fit, prepare, prepare_all, Control, FitOptions};
use rnnsweep_model::ModelConfig;
use rnnsweep_search::assemble::build_config;
use rnnsweep_search::leaderboard::{decode_param, rank};
use rnnsweep_search::report::{self, TrialData};
use rnnsweep_search::store::{keys, StorageLocation, Store};
use rnnsweep_search::study::Study;
use rnnsweep_search::worker::VAL_PREDICTIONS_FILE;

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

#[derive(clap::Args)]
pub struct BestArgs {
    pub db: StorageLocation,
    #[arg(long)]
    pub study: Option<String>,
    /// Train the best configuration again and save the model to --out.
    #[arg(long)]
    pub retrain: bool,
    /// Epochs for the retrain on the full file (default: the best trial's kept epoch).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Keep the validation split (and early stopping) instead of training on every row, as
    /// the report did.
    #[arg(long)]
    pub keep_validation: bool,
    /// Model folder to write (with --retrain).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// A study loaded for pictures and exports.
struct Loaded {
    store: Box<dyn Store>,
    study_id: i64,
    name: String,
    direction: rnnsweep_model::metrics::Direction,
    metric: String,
    trials: Vec<TrialData>,
}

fn load(db: &StorageLocation, study: Option<&str>) -> anyhow::Result<Loaded> {
    let handle = Study::open(db, study)?;
    let metric = handle.objective()?;
    let Study {
        store,
        id,
        name,
        direction,
        ..
    } = handle;
    let trials = store
        .trials(id)?
        .into_iter()
        .map(|record| {
            Ok(TrialData {
                epochs: store.epochs(record.trial_id)?,
                record,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Loaded {
        store,
        study_id: id,
        name,
        direction,
        metric,
        trials,
    })
}

pub fn plot(args: &PlotArgs) -> anyhow::Result<()> {
    let Loaded {
        name,
        direction,
        metric,
        trials,
        ..
    } = load(&args.db, args.study.as_deref())?;
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
    files.extend(report::optimization_history(
        &out, &trials, &metric, direction,
    )?);
    files.extend(report::parallel_coordinates(&out, &trials, &metric)?);
    files.extend(report::learning_curves(&out, &top, &metric)?);
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
        Some(p) => {
            let (probs, labels) = report::read_predictions(&p)?;
            files.extend(report::confusion_matrix(
                &out,
                best.record.number,
                &probs,
                &labels,
            )?);
            files.extend(report::roc_pr(&out, best.record.number, &probs, &labels)?);
        }
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

pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let Loaded { metric, trials, .. } = load(&args.db, args.study.as_deref())?;
    let text = match args.format {
        ExportFormat::Csv => report::export_csv(&trials, &metric, args.epochs),
        ExportFormat::Json => {
            serde_json::to_string_pretty(&report::export_rows(&trials, &metric, args.epochs))?
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

pub fn best(args: &BestArgs) -> anyhow::Result<()> {
    let Loaded {
        store,
        study_id: id,
        name,
        direction,
        metric,
        trials,
    } = load(&args.db, args.study.as_deref())?;
    let records: Vec<_> = trials.iter().map(|t| t.record.clone()).collect();
    let ranked = rank(&records, &metric, direction, None);
    let Some(top) = ranked.first().filter(|r| r.rank.is_some()) else {
        bail!("{}: study `{name}` has no completed trial", args.db);
    };
    let best = trials
        .iter()
        .find(|t| t.record.number == top.number)
        .expect("ranked from these trials");
    println!(
        "best trial {} of study `{name}`: {metric} {}",
        best.record.number,
        best.record.value.map_or("-".into(), |v| format!("{v:.4}"))
    );
    for (k, p) in &best.record.params {
        println!(
            "  {k:<22} {}",
            decode_param(p.internal, &p.distribution_json)
        );
    }
    if !args.retrain {
        return Ok(());
    }
    let Some(out) = &args.out else {
        bail!("--retrain needs --out DIR for the model");
    };
    let spec = Study {
        store,
        location: args.db.clone(),
        id,
        name: name.clone(),
        direction,
    }
    .stored_spec()?;
    let params = best
        .record
        .params
        .iter()
        .map(|(k, p)| (k.clone(), decode_param(p.internal, &p.distribution_json)))
        .collect();
    let mut cfg: ModelConfig = build_config(&spec.training, &params)
        .map_err(|m| anyhow::anyhow!("best trial's configuration: {m}"))?;
    let table = load_csv(&spec.train_file, &spec.columns, Labels::Required)?;
    let device = rnnsweep_model::device(&args.device)?;
    let data = if args.keep_validation {
        if let Some(n) = args.epochs {
            cfg.epochs = n;
        }
        prepare(&table, &cfg)?
    } else {
        let kept = best
            .record
            .user_attrs
            .get("best_epoch")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize);
        cfg.epochs = args.epochs.or(kept).unwrap_or(cfg.epochs).max(1);
        prepare_all(&table, &cfg)?
    };
    println!(
        "retraining on {} rows ({}), {} epochs",
        data.train.labels.len(),
        if args.keep_validation {
            format!("{} held out for validation", data.validation.labels.len())
        } else {
            "every row".into()
        },
        cfg.epochs
    );
    let outcome = fit(&cfg, &data, &device, &FitOptions::default(), |r| {
        println!(
            "epoch {:>3}  train_loss {:.4}  train_acc {:.4}  val_loss {:.4}  val_f1 {:.4}  {:.1}s",
            r.epoch, r.train_loss, r.train_accuracy, r.val_loss, r.val_f1, r.seconds
        );
        Control::Continue
    })?;
    let model = TrainedModel::from_training(cfg, data, outcome.net);
    model.save(out)?;
    crate::train_cmd::write_history(&out.join("history.csv"), &outcome.history)?;
    println!(
        "model written to {} (use `rnnsweep predict --model {}`)",
        out.display(),
        out.display()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct CopyArgs {
    /// Source: an SQLite file, `sqlite:///path.db`, or `postgresql://user@host:port/db`.
    #[arg(long)]
    pub from: StorageLocation,
    /// Destination, in the same forms (created if needed).
    #[arg(long)]
    pub to: StorageLocation,
    /// Copy this study only (default: every study in the source).
    #[arg(long)]
    pub study: Option<String>,
}

/// Copies studies between stores (SQLite ↔ PostgreSQL), trials as they are.
pub fn copy_study(args: &CopyArgs) -> anyhow::Result<()> {
    let source = args.from.open_existing()?;
    let mut dest = args.to.open()?;
    let studies: Vec<_> = source
        .studies()?
        .into_iter()
        .filter(|s| args.study.as_ref().is_none_or(|n| &s.name == n))
        .collect();
    if studies.is_empty() {
        bail!(
            "{}: no study{} to copy",
            args.from,
            args.study
                .as_ref()
                .map(|n| format!(" named `{n}`"))
                .unwrap_or_default()
        );
    }
    for s in studies {
        if let Some(id) = dest.study_id(&s.name)? {
            let n = dest.trials(id)?.len();
            if n > 0 {
                bail!(
                    "{}: study `{}` already exists there with {n} trials; nothing was copied",
                    args.to,
                    s.name
                );
            }
        }
        let user = source.study_user_attrs(s.study_id)?;
        let system = source.study_system_attrs(s.study_id)?;
        let id = dest.open_study(&s.name, s.direction, &user, &system)?;
        let trials = source.trials(s.study_id)?;
        for t in &trials {
            dest.import_trial(id, t, &source.epochs(t.trial_id)?)?;
        }
        println!("copied study `{}`: {} trials", s.name, trials.len());
    }
    Ok(())
}
