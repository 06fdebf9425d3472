//! `rnnsweep run --dry-run`: what a spec would do, computed without writing anything — the
//! space, the first planned trials, the device plan and what one trial costs.

use std::fmt::Write as _;

use rnnsweep_model::config::{InputView, ModelConfig};
use rnnsweep_model::dataset::prepare_with;
use rnnsweep_model::encoder::{configured_length, longest, options_for};
use rnnsweep_model::tokenizer::Tokenizer;

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
    Model(#[from] rnnsweep_model::error::ModelError),
    #[error(transparent)]
    Data(#[from] rnnsweep_model::data::DataError),
    #[error("{0}")]
    Invalid(String),
}

/// The data as the first trial would see it.
struct DataShape {
    train_rows: usize,
    validation_rows: usize,
    /// Each view's `(id limit, longest row)` under the training block's tokenizer options.
    word: (usize, usize),
    char: (usize, usize),
    /// Measured only when a planned trial reads n-grams (cutting every word of the file into
    /// its n-grams is the costly one).
    ngram: Option<(usize, usize)>,
    /// Each class with its rows in the training file.
    classes: Vec<(String, usize)>,
    multi_label: bool,
}

fn data_shape(spec: &Spec, with_ngrams: bool) -> Result<DataShape, PlanError> {
    let cfg = ModelConfig::from_value(spec.training.clone(), "training")?;
    let (table, validation) = spec.tables()?;
    let data = prepare_with(&table, validation.as_ref(), &cfg)?;
    let texts = table.texts();
    let view = |input: InputView| {
        let tokenizer = Tokenizer::fit_with(None, &options_for(&cfg, input), texts.iter().copied());
        let longest = longest(&tokenizer.texts_to_sequences(texts.iter().copied()));
        (tokenizer.id_limit(), longest.max(1))
    };
    Ok(DataShape {
        train_rows: data.train.labels.len(),
        validation_rows: data.validation.labels.len(),
        word: view(InputView::Word),
        char: view(InputView::Char),
        ngram: with_ngrams.then(|| view(InputView::Ngram)),
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
        spec.metric,
        spec.direction,
        spec.method,
        crate::display::run_cap_text(spec.run_cap),
        spec.max_retries
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
    let finished = |n: usize, params| TrialRecord {
        trial_id: n as i64,
        number: n as i64,
        state: TrialState::Complete,
        params,
        value: None,
        intermediate: Vec::new(),
        user_attrs: Default::default(),
        system_attrs: Default::default(),
        datetime_start: None,
        datetime_complete: None,
    };
    // The spec's enqueued configurations run before anything is sampled.
    let mut seen: Vec<TrialRecord> = Vec::new();
    for entry in &spec.enqueue {
        let params = space.resolve_fixed(entry).map_err(PlanError::Invalid)?;
        seen.push(finished(seen.len(), params));
    }
    let queued = seen.len();
    for n in queued..queued + PLANNED_TRIALS {
        let Some(p) = sampler.sample(&seen, n as i64) else {
            break;
        };
        seen.push(finished(n, space.to_stored(&p)));
    }
    let planned: Vec<Point> = seen.iter().map(|t| space.decode(&t.params)).collect();
    let _ = writeln!(w, "\nfirst planned trials:");
    for (n, p) in planned.iter().enumerate() {
        let from_spec = if n < queued {
            " (the spec's enqueue)"
        } else {
            ""
        };
        let _ = writeln!(w, "  trial {n}: {}{from_spec}", point_text(p));
    }
    if spec.method == Method::Tpe {
        let _ = writeln!(
            w,
            "  (TPE: the first {} trials are {}random as above; later ones depend on the results)",
            spec.tpe.n_startup_trials,
            if queued > 0 { "the spec's and " } else { "" }
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
    let configs: Vec<Result<ModelConfig, String>> = planned
        .iter()
        .map(|p| build_config(&spec.training, p))
        .collect();
    let reads_ngrams = configs
        .iter()
        .flatten()
        .any(|cfg| cfg.inputs.views(&cfg.tokenizer).contains(&InputView::Ngram));
    let shape = data_shape(spec, reads_ngrams)?;
    let ngrams = |(vocab, longest): (usize, usize)| {
        (
            format!(" / {} n-grams", vocab - 1),
            format!(" / {longest} n-grams"),
        )
    };
    let (ngram_vocab, ngram_longest) = shape.ngram.map(ngrams).unwrap_or_default();
    let _ = writeln!(
        w,
        "data: {} — {} training rows, {} validation rows, vocabulary {} words / {} \
         characters{ngram_vocab}, longest row {} words / {} characters{ngram_longest}",
        spec.train_file.display(),
        shape.train_rows,
        shape.validation_rows,
        shape.word.0 - 1,
        shape.char.0 - 1,
        shape.word.1,
        shape.char.1,
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
    for (n, cfg) in configs.into_iter().enumerate() {
        let cfg = cfg.map_err(|m| PlanError::Invalid(format!("trial {n}: {m}")))?;
        let views = cfg.inputs.views(&cfg.tokenizer);
        let several = views.len() > 1;
        let views: Vec<(InputView, usize, usize)> = views
            .into_iter()
            .map(|input| {
                let (vocab, longest) = match input {
                    InputView::Char => shape.char,
                    InputView::Word => shape.word,
                    // Measured above, since this trial reads n-grams.
                    InputView::Ngram => shape.ngram.unwrap_or((1, 1)),
                };
                let length = configured_length(&cfg, input, several);
                (input, vocab.min(cfg.max_words), length.unwrap_or(longest))
            })
            .collect();
        let cost = cfg.cost_of_views(&views);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(yaml: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec::parse(yaml, &dir.path().join("spec.yaml")).unwrap();
        describe(&spec).unwrap()
    }

    fn planned_trials(text: &str) -> Vec<&str> {
        text.lines()
            .skip_while(|l| *l != "first planned trials:")
            .skip(1)
            .take_while(|l| l.starts_with("  trial "))
            .collect()
    }

    #[test]
    fn a_grid_plans_each_point_once_in_its_seeded_order() {
        let text = plan(
            "name: g\nmethod: grid\nrun_cap: 9\ntrial: {kind: function, name: sphere}\n\
             parameters:\n  x0: {values: [-1, 0, 1]}\n  x1: {value: 2}\n",
        );
        assert!(text.contains("grid size: 3 distinct points"), "{text}");
        let trials = planned_trials(&text);
        assert_eq!(trials.len(), 3, "{text}");
        for x in ["x0=-1 x1=2", "x0=0 x1=2", "x0=1 x1=2"] {
            assert_eq!(
                trials.iter().filter(|t| t.ends_with(x)).count(),
                1,
                "{x}: {text}"
            );
        }
        assert!(text.contains("cost: trials run your own command; no model estimate"));
    }

    #[test]
    fn random_search_over_a_small_space_plans_what_the_sweep_will_draw() {
        let yaml =
            "name: r\nmethod: random\nseed: 4\nrun_cap: 9\ntrial: {kind: function, name: sphere}\n\
                    parameters:\n  x0: {values: [-1, 1]}\n";
        let text = plan(yaml);
        let trials = planned_trials(&text);
        // Two distinct points, then the space is spent: no repeats, as in the sweep.
        assert_eq!(trials.len(), 2, "{text}");
        assert_ne!(trials[0].split(": ").nth(1), trials[1].split(": ").nth(1));
        assert_eq!(plan(yaml), text, "the plan is seeded");
    }

    #[test]
    fn the_specs_enqueued_configurations_are_planned_first() {
        let text = plan(
            "name: q\nmethod: random\nseed: 4\nrun_cap: 9\ntrial: {kind: function, name: sphere}\n\
             parameters:\n  x0: {values: [-1, 0, 1]}\n  x1: {value: 2}\n\
             enqueue:\n  - {x0: 1}\n",
        );
        let trials = planned_trials(&text);
        assert_eq!(
            trials[0], "  trial 0: x0=1 x1=2 (the spec's enqueue)",
            "{text}"
        );
        // The random draws then skip the queued point, as in the sweep.
        assert_eq!(trials.len(), 3, "{text}");
        assert!(trials[1..].iter().all(|t| !t.contains("x0=1 ")), "{text}");
    }

    #[test]
    fn tpe_says_its_start_up_trials_are_random_and_names_the_devices() {
        let text = plan(
            "name: t\nmethod: tpe\nrun_cap: 9\ntrial: {kind: function, name: sphere}\n\
             tpe: {n_startup_trials: 4}\nresources: {trials_per_device: 2, threads_per_trial: 1}\n\
             parameters:\n  x0: {min: -1.0, max: 1.0}\n",
        );
        assert!(
            text.contains("grid size: unbounded (a parameter is continuous)"),
            "{text}"
        );
        assert_eq!(planned_trials(&text).len(), PLANNED_TRIALS);
        assert!(
            text.contains("(TPE: the first 4 trials are random as above;"),
            "{text}"
        );
        assert!(
            text.contains("devices: cpu; 2 trial(s) at once, 1 CPU thread(s) each"),
            "{text}"
        );
    }

    #[test]
    fn a_model_spec_reports_its_data_classes_and_cost() {
        let sample =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/data/sample.csv");
        let yaml = format!(
            "name: m\nmethod: random\nrun_cap: 2\ndata: {{train: {}}}\n\
             training: {{epochs: 3}}\nparameters:\n  lstm_units: {{values: [16, 32]}}\n",
            sample.display()
        );
        let text = plan(&yaml);
        assert!(text.contains("classes (binary): 0 ("), "{text}");
        let costs: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("cost per trial"))
            .skip(1)
            .collect();
        assert_eq!(costs.len(), 2, "{text}");
        assert!(
            costs.iter().all(|l| l.ends_with("3 epochs at most")),
            "{text}"
        );
    }
}
