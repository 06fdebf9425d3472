//! `rnnsweep run --dry-run`: what a spec would do, computed without writing anything — the
//! space, the first planned trials, the device plan and what one trial costs.

use std::fmt::Write as _;

use rnnsweep_model::dataset::prepare_with;
use rnnsweep_model::ModelConfig;

use crate::devices::DevicePool;
use crate::display::short_value;
use crate::sampling::{self, Method};
use crate::space::trial_config::build_config;
use crate::space::Point;
use crate::spec::Spec;
use crate::store::{TrialRecord, TrialState};

/// How many planned trials the dry run lists.
pub const PLANNED_TRIALS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Model(#[from] rnnsweep_model::ModelError),
    #[error(transparent)]
    Data(#[from] rnnsweep_model::data::DataError),
    #[error("{0}")]
    Invalid(String),
}

/// The data as the first trial would see it.
struct DataShape {
    train_rows: usize,
    validation_rows: usize,
    vocab: usize,
    sequence_length: usize,
    /// Each class with its rows in the training file.
    classes: Vec<(String, usize)>,
    multi_label: bool,
}

fn data_shape(spec: &Spec) -> Result<DataShape, PlanError> {
    let cfg = ModelConfig::from_value(spec.training.clone(), "training")?;
    let (table, validation) = spec.tables()?;
    let data = prepare_with(&table, validation.as_ref(), &cfg)?;
    Ok(DataShape {
        train_rows: data.train.labels.len(),
        validation_rows: data.validation.labels.len(),
        vocab: data.tokenizer.id_limit(),
        sequence_length: data.sequence_length,
        classes: table
            .classes
            .iter()
            .cloned()
            .zip(table.class_counts())
            .collect(),
        multi_label: table.multi_label,
    })
}

fn point_text(p: &Point) -> String {
    p.iter()
        .map(|(k, v)| format!("{k}={}", short_value(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn human_count(x: f64) -> String {
    match x {
        x if x >= 1e12 => format!("{:.1} T", x / 1e12),
        x if x >= 1e9 => format!("{:.1} G", x / 1e9),
        x if x >= 1e6 => format!("{:.1} M", x / 1e6),
        x if x >= 1e3 => format!("{:.1} k", x / 1e3),
        x => format!("{x:.0} "),
    }
}

/// The dry run's report. Reads the data file (for a built-in model) but writes nothing.
pub fn describe(spec: &Spec) -> Result<String, PlanError> {
    let space = spec.space();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "study `{}` in {} (dry run: nothing is written)",
        spec.name, spec.storage
    );
    let _ = writeln!(
        w,
        "objective: {} ({:?}); {:?} search; run_cap {}; max_retries {}",
        spec.metric, spec.direction, spec.method, spec.run_cap, spec.max_retries
    );
    let _ = writeln!(w, "\nsearch space ({} parameters):", space.parameters.len());
    for (name, d) in &space.parameters {
        let _ = writeln!(w, "  {name:<24} {}", d.describe());
    }
    match space.grid() {
        Some(g) => {
            let _ = writeln!(w, "grid size: {} distinct points", g.len());
        }
        None => {
            let _ = writeln!(w, "grid size: unbounded (a parameter is continuous)");
        }
    }

    // Each planned point is recorded as a finished trial so that samplers which skip points
    // already seen (grid, random over a finite space) plan what the sweep would run; TPE finds
    // no values among them and draws its random start-up trials.
    let mut sampler = sampling::build(spec.method, &space, spec.seed, spec.direction, &spec.tpe)
        .map_err(PlanError::Invalid)?;
    let mut seen: Vec<TrialRecord> = Vec::new();
    for n in 0..PLANNED_TRIALS as i64 {
        let Some(p) = sampler.sample(&seen, n) else {
            break;
        };
        seen.push(TrialRecord {
            trial_id: n,
            number: n,
            state: TrialState::Complete,
            params: space.to_stored(&p),
            value: None,
            intermediate: Vec::new(),
            user_attrs: Default::default(),
            system_attrs: Default::default(),
            datetime_start: None,
            datetime_complete: None,
        });
    }
    let planned: Vec<Point> = seen.iter().map(|t| space.decode(&t.params)).collect();
    let _ = writeln!(w, "\nfirst planned trials:");
    for (n, p) in planned.iter().enumerate() {
        let _ = writeln!(w, "  trial {n}: {}", point_text(p));
    }
    if spec.method == Method::Tpe {
        let _ = writeln!(
            w,
            "  (TPE: the first {} trials are random as above; later ones depend on the results)",
            spec.tpe.n_startup_trials
        );
    }

    let pool = DevicePool::new(&spec.resources).map_err(PlanError::Invalid)?;
    let devices = spec.resources.device_names().map_err(PlanError::Invalid)?;
    let _ = writeln!(
        w,
        "\ndevices: {}; {} trial(s) at once, {} CPU thread(s) each",
        devices
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        pool.capacity(),
        pool.cpu_threads
    );

    if !spec.trial.trains_model() {
        let _ = writeln!(w, "cost: trials run your own command; no model estimate");
        return Ok(out);
    }
    let shape = data_shape(spec)?;
    let _ = writeln!(
        w,
        "data: {} — {} training rows, {} validation rows, vocabulary {} ids, sequence length {}",
        spec.train_file.display(),
        shape.train_rows,
        shape.validation_rows,
        shape.vocab,
        shape.sequence_length
    );
    let kind = match shape.classes.len() {
        _ if shape.multi_label => "multi-label, one sigmoid each; rows with each",
        2 => "binary",
        _ => "multi-class, softmax",
    };
    let classes: Vec<String> = shape
        .classes
        .iter()
        .map(|(name, rows)| format!("{name} ({rows})"))
        .collect();
    let _ = writeln!(w, "classes ({kind}): {}", classes.join(", "));
    let _ = writeln!(
        w,
        "cost per trial (model parameters; FLOPs per epoch, forward + backward):"
    );
    for (n, p) in planned.iter().enumerate() {
        let cfg = build_config(&spec.training, p)
            .map_err(|m| PlanError::Invalid(format!("trial {n}: {m}")))?;
        let length = cfg.sequence_length.unwrap_or(shape.sequence_length);
        let cost = cfg.cost(shape.vocab, length);
        let _ = writeln!(
            w,
            "  trial {n}: {}params, {}FLOP per epoch, {} epochs at most",
            human_count(cost.parameters as f64),
            human_count(cost.flops_per_epoch(shape.train_rows, shape.validation_rows)),
            cfg.epochs
        );
    }
    Ok(out)
}
