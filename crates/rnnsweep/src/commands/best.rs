//! `rnnsweep best`: the best trial's parameters; with `--retrain`, the final model.

use std::path::PathBuf;

use anyhow::bail;
use rnnsweep_model::artifact::Combine;
use rnnsweep_model::train::Control;
use rnnsweep_search::devices::DevicePool;
use rnnsweep_search::display::sig4;
use rnnsweep_search::results::final_model::{save, FinalModelRequest, Saved};
use rnnsweep_search::results::members::{train_on_slots, MemberProcess};
use rnnsweep_search::results::retrain::{RetrainOptions, Retrained};
use rnnsweep_search::results::study::Study;
use rnnsweep_search::selection::Selection;
use rnnsweep_search::spec::final_model::SelectionRule;
use rnnsweep_search::store::StorageLocation;

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
    /// Train on this device, one member after another (default: the spec's device slots,
    /// the members at once as trials run, each with its slot's thread share).
    #[arg(long)]
    pub device: Option<String>,
    /// Train this one member (run by `best --retrain` on a device slot): its model goes
    /// beside its checkpoint in OUT.partial.
    #[arg(long, hide = true, requires_all = ["retrain", "out"])]
    pub member: Option<i64>,
    /// With --retrain: retrain the K best configurations (by their mean over seeds when
    /// `confirm` ran) and save one model folder that averages their probabilities.
    /// Default: the spec's `final: {ensemble: K}`, else 1.
    #[arg(long, value_name = "K")]
    pub ensemble: Option<usize>,
    /// How the ensemble's members are chosen: `greedy` (on the trials' validation
    /// predictions; stops early when no addition helps) or `top` (the K best by rank).
    /// Default: the spec's `final: {selection}`, else greedy.
    #[arg(long, value_enum)]
    pub selection: Option<SelectionArg>,
    /// How the ensemble makes one probability: `probability` (the mean probability) or
    /// `logit` (the probability of the mean log-odds). Default: the spec's
    /// `final: {combine}`, else probability.
    #[arg(long, value_enum)]
    pub combine: Option<CombineArg>,
    /// With --retrain: hand over one network, the best configuration trained again on the
    /// ensemble's probabilities as well as the labels (knowledge distillation); the ensemble is
    /// kept in OUT/teacher. Default: the spec's `final: {distill}`.
    #[arg(long, overrides_with = "no_distill")]
    pub distill: bool,
    /// Do not distil, even when the spec's `final` section asks.
    #[arg(long, overrides_with = "distill")]
    pub no_distill: bool,
    /// With --distill: a CSV of rows without labels (same text column) the student also
    /// learns from the ensemble, such as a competition's test file.
    #[arg(long, value_name = "FILE")]
    pub unlabelled: Option<PathBuf>,
    /// With --distill: the labels' share of the student's loss, in [0, 1) (default 0: the
    /// ensemble alone teaches).
    #[arg(long, value_name = "ALPHA")]
    pub distill_alpha: Option<f64>,
    /// With --distill: the temperature that softens the ensemble's probabilities and the
    /// student's logits (default 2).
    #[arg(long, value_name = "T")]
    pub distill_temperature: Option<f64>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SelectionArg {
    Greedy,
    Top,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CombineArg {
    Probability,
    Logit,
}

/// A study loaded for pictures and exports.
pub fn run(args: &BestArgs) -> anyhow::Result<()> {
    // A process that trains keeps freed memory for the next step; the sweep driver does not,
    // since every worker it forks copies its page tables.
    rnnsweep_model::alloc::keep_freed_memory();
    let study = Study::open(&args.db, args.study.as_deref())?;
    if let Some(number) = args.member {
        return train_one_member(args, &study, number);
    }
    let best = study.best_trial()?;
    println!(
        "best trial {} of study `{}`: {} {}",
        best.number,
        study.name,
        study.objective()?,
        best.value.map_or("-".into(), sig4)
    );
    for (k, p) in &best.params {
        println!("  {k:<22} {}", p.value());
    }
    if !args.retrain {
        return Ok(());
    }
    let Some(out) = &args.out else {
        bail!("--retrain needs --out DIR for the model");
    };
    // Found before anything trains, not after.
    check_replaceable(out)?;
    // Without --device, the spec's slots: members at once when there are several.
    let mut pool = match &args.device {
        Some(_) => None,
        None => study
            .stored_spec()
            .ok()
            .and_then(|s| DevicePool::new(&s.resources).ok()),
    };
    // One process trains on --device, else on the spec's first device.
    let in_process_device = match &args.device {
        Some(d) => d.clone(),
        None => study
            .stored_spec()
            .ok()
            .and_then(|s| s.resources.device_names().ok())
            .and_then(|names| names.first().map(ToString::to_string))
            .unwrap_or_else(|| "cpu".into()),
    };
    let options = RetrainOptions {
        epochs: args.epochs,
        keep_validation: args.keep_validation,
        device: in_process_device,
    };
    let plan = study.final_model_plan(FinalModelRequest {
        ensemble: args.ensemble,
        selection: args.selection.map(|s| match s {
            SelectionArg::Greedy => SelectionRule::Greedy,
            SelectionArg::Top => SelectionRule::Top,
        }),
        combine: args.combine.map(|c| match c {
            CombineArg::Probability => Combine::Probability,
            CombineArg::Logit => Combine::Logit,
        }),
        distill: match (args.distill, args.no_distill) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        unlabelled: args.unlabelled.clone(),
        alpha: args.distill_alpha,
        temperature: args.distill_temperature,
    })?;
    let members = plan.asked;
    if let Some((candidates, selection)) = &plan.selection {
        match selection {
            Selection::Greedy {
                members: m,
                path,
                stopped_early,
            } => {
                println!(
                    "ensemble members, chosen greedily on the trials' validation predictions:"
                );
                for (k, (i, ap)) in m.iter().zip(path).enumerate() {
                    println!(
                        "  {}. trial {:<5} validation AP of the average so far {}",
                        k + 1,
                        candidates[*i].number,
                        sig4(*ap)
                    );
                }
                if *stopped_early {
                    println!(
                        "  (stopped at {}: adding any other configuration lowered the validation AP)",
                        m.len()
                    );
                }
            }
            Selection::Ranked { why, .. } => {
                println!("ensemble members: the best by rank ({why})");
            }
        }
        if selection.members().len() < members.min(candidates.len())
            && matches!(selection, Selection::Ranked { .. })
        {
            println!(
                "note: the study has {} completed configuration(s); the ensemble has that many",
                selection.members().len()
            );
        }
    }
    let chosen = plan.chosen;
    let member_numbers: Vec<i64> = chosen.iter().map(|t| t.number).collect();
    let mut retrained = Vec::new();
    // What selection chose, which may be fewer than asked for.
    let total = chosen.len();
    // Each member checkpoints every epoch beside the output folder, so a killed retraining
    // run again continues where it stopped; the folder goes once the model is saved.
    let partial = partial_folder(out);
    match pool.as_mut().filter(|p| p.capacity() > 1 && total > 1) {
        Some(pool) => {
            let exe = std::env::current_exe()?;
            let processes: Vec<MemberProcess> = chosen
                .iter()
                .enumerate()
                .map(|(k, t)| MemberProcess {
                    label: format!("member {} of {total}", k + 1),
                    args: member_args(args, &study.name, t.number, out),
                })
                .collect();
            train_on_slots(&exe, &processes, pool, &mut |line| println!("{line}"))?;
            let device = rnnsweep_model::device::open(&options.device)?;
            for t in &chosen {
                retrained.push(Retrained::load_member(
                    &member_result(&partial, t.number),
                    &device,
                )?);
            }
        }
        None => {
            for (k, trial) in chosen.into_iter().enumerate() {
                let label = (members > 1).then(|| format!("member {} of {total}", k + 1));
                retrained.push(train_member(
                    &study,
                    trial,
                    &options,
                    &partial,
                    label.as_deref(),
                )?);
            }
        }
    }
    // The model is written whole beside OUT, then takes OUT's place: a folder never holds the
    // files of two models (an old ensemble's `ensemble.json` would outrank a new single model).
    let staged = partial.join("final");
    if staged.exists() {
        std::fs::remove_dir_all(&staged)?;
    }
    let saved = match &plan.distill {
        None => save(retrained, plan.combine, &staged)?,
        Some(distill) => {
            let teacher_dir = partial.join("teacher");
            let calibration = teacher_calibration(&retrained, plan.combine);
            let teacher = save(retrained, plan.combine, &teacher_dir)?.into_predictor();
            let student = study.best_trial()?;
            let number = student.number;
            let plan = study.distill(student, &options, &teacher, &member_numbers, distill)?;
            let checkpoint = partial.join("student");
            let resumed = plan.resumable_epochs(&checkpoint)?;
            println!(
                "distilling {} into trial {number}'s configuration: {} labelled rows{}, \
                 alpha {}, temperature {}, {} epochs{}",
                if total > 1 {
                    format!("the ensemble of {total}")
                } else {
                    format!("trial {}", member_numbers[0])
                },
                plan.train_rows(),
                match plan.unlabelled_rows() {
                    0 => String::new(),
                    n => format!(" and {n} unlabelled rows"),
                },
                distill.settings.alpha,
                distill.settings.temperature,
                plan.config.epochs,
                resumed_note(resumed, &checkpoint)
            );
            let student = plan.train(Some(&checkpoint), |r| print_epoch(r, resumed))?;
            compare_on_calibration(&calibration, teacher.threshold(), &student);
            // One model: nothing to combine.
            let saved = save(vec![student], Combine::default(), &staged)?;
            std::fs::rename(&teacher_dir, staged.join("teacher"))?;
            println!(
                "the ensemble it learnt from is kept in {}",
                out.join("teacher").display()
            );
            saved
        }
    };
    check_replaceable(out)?;
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::rename(&staged, out)?;
    if let Err(e) = std::fs::remove_dir_all(&partial) {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!(
                "warning: {}: cannot remove the finished members' checkpoints: {e}",
                partial.display()
            );
        }
    }
    match saved {
        Saved::Model(model) => println!(
            "model written to {} ({}; use `rnnsweep predict --model {}`)",
            out.display(),
            decision(&model.threshold, model.task.outputs()),
            out.display()
        ),
        Saved::Ensemble(ensemble) => println!(
            "ensemble of {} written to {} ({}, {} chosen on {} calibration rows; use `rnnsweep predict --model {}`)",
            ensemble.members.len(),
            out.display(),
            match ensemble.combine {
                Combine::Probability => "mean probability",
                Combine::Logit => "probability of the mean log-odds",
            },
            decision(&ensemble.threshold, ensemble.task().outputs()),
            ensemble.threshold.calibration_rows,
            out.display()
        ),
    }
    Ok(())
}

/// One member trained in this process, checkpointed in `partial/trial-N` (resumed from there):
/// its line, its epochs, the model.
fn train_member(
    study: &Study,
    trial: rnnsweep_search::store::TrialRecord,
    options: &RetrainOptions,
    partial: &std::path::Path,
    label: Option<&str>,
) -> anyhow::Result<Retrained> {
    let number = trial.number;
    let plan = study.retrain(trial, options)?;
    let checkpoint = partial.join(format!("trial-{number}"));
    let resumed = plan.resumable_epochs(&checkpoint)?;
    println!(
        "{}retraining trial {number} on {} rows ({}), {} epochs{}",
        label.map(|l| format!("{l}: ")).unwrap_or_default(),
        plan.train_rows(),
        if options.keep_validation {
            format!("{} held out for validation", plan.validation_rows())
        } else if plan.calibration_rows() > 0 {
            format!(
                "every row but the {} calibration rows",
                plan.calibration_rows()
            )
        } else {
            "every row".into()
        },
        plan.config.epochs,
        resumed_note(resumed, &checkpoint)
    );
    Ok(plan.train(Some(&checkpoint), |r| print_epoch(r, resumed))?)
}

/// `best --member N`, in a process `best --retrain` started on a device slot: train that
/// member and leave it where the parent reads it.
fn train_one_member(args: &BestArgs, study: &Study, number: i64) -> anyhow::Result<()> {
    let Some(out) = &args.out else {
        bail!("--member needs --out DIR");
    };
    let Some(trial) = study.trials()?.into_iter().find(|t| t.number == number) else {
        bail!("study `{}` has no trial {number}", study.name);
    };
    let options = RetrainOptions {
        epochs: args.epochs,
        keep_validation: args.keep_validation,
        device: args.device.clone().unwrap_or_else(|| "cpu".into()),
    };
    let partial = partial_folder(out);
    let member = train_member(study, trial, &options, &partial, None)?;
    member.save_member(&member_result(&partial, number))?;
    Ok(())
}

/// The arguments of the process that trains trial `number` as a member (`--device` is added
/// for its slot).
fn member_args(
    args: &BestArgs,
    study: &str,
    number: i64,
    out: &std::path::Path,
) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec![
        "best".into(),
        args.db.to_arg().into(),
        "--study".into(),
        study.into(),
        "--retrain".into(),
        "--member".into(),
        number.to_string().into(),
        "--out".into(),
        out.into(),
    ];
    if let Some(e) = args.epochs {
        a.extend(["--epochs".into(), e.to_string().into()]);
    }
    if args.keep_validation {
        a.push("--keep-validation".into());
    }
    a
}

/// Where a member's process leaves what it trained: beside its checkpoint, not in it.
fn member_result(partial: &std::path::Path, number: i64) -> PathBuf {
    partial.join(format!("member-{number}"))
}

/// `best --retrain --out DIR` replaces a model folder (one with `config.json` or
/// `ensemble.json`) or an empty folder, never anything else.
fn check_replaceable(out: &std::path::Path) -> anyhow::Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let is_model = ["config.json", "ensemble.json"]
        .iter()
        .any(|f| out.join(f).is_file());
    let empty = out.is_dir()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
    if !(is_model || empty) {
        bail!(
            "{}: exists and is not a model folder; --out names the folder the model replaces",
            out.display()
        );
    }
    Ok(())
}

/// `, resumed after epoch E from DIR` when a checkpoint is picked up.
fn resumed_note(resumed: usize, checkpoint: &std::path::Path) -> String {
    if resumed > 0 {
        format!(
            ", resumed after epoch {resumed} from {}",
            checkpoint.display()
        )
    } else {
        String::new()
    }
}

fn print_epoch(r: &rnnsweep_model::train::history::EpochReport, resumed: usize) -> Control {
    // Without a validation split there is nothing to report but the training side.
    let validation = if r.val_loss.is_nan() {
        String::new()
    } else {
        format!("  val_loss {:.4}  val_f1 {:.4}", r.val_loss, r.val_f1)
    };
    let replayed = if r.epoch <= resumed {
        "  (from the checkpoint)"
    } else {
        ""
    };
    println!(
        "epoch {:>3}  train_loss {:.4}  train_acc {:.4}{validation}  {:.1}s{replayed}",
        r.epoch, r.train_loss, r.train_accuracy, r.seconds
    );
    Control::Continue
}

/// The teacher's combined probabilities for the calibration rows, as it chose its threshold
/// on them, with their labels.
fn teacher_calibration(
    members: &[rnnsweep_search::results::retrain::Retrained],
    combine: Combine,
) -> (Vec<f32>, Vec<u8>) {
    let Some(first) = members.first() else {
        return (Vec::new(), Vec::new());
    };
    let columns: Vec<&[f32]> = members
        .iter()
        .map(|m| m.calibration.probabilities.as_slice())
        .collect();
    (
        combine.combine_outputs(&columns, first.model.task.normalised_width()),
        first.calibration.labels.clone(),
    )
}

/// Whether the student kept the teacher's quality, on the calibration rows neither trained
/// on (a binary task's average precision and F1 at each one's threshold).
fn compare_on_calibration(
    (teacher, labels): &(Vec<f32>, Vec<u8>),
    teacher_threshold: &rnnsweep_model::artifact::StoredThreshold,
    student: &rnnsweep_search::results::retrain::Retrained,
) {
    let outputs = student.model.task.outputs();
    if outputs != 1 || labels.is_empty() || teacher.len() != labels.len() {
        return;
    }
    let line = |who: &str, p: &[f32], t: f64| {
        let c = rnnsweep_model::metrics::classify(p, labels, t as f32);
        format!(
            "{who} AP {} F1 {} (threshold {t:.2})",
            sig4(rnnsweep_model::metrics::average_precision(p, labels)),
            sig4(c.f1)
        )
    };
    println!(
        "on the {} calibration rows: {}; {}",
        labels.len(),
        line("teacher", teacher, teacher_threshold.value),
        line(
            "student",
            &student.calibration.probabilities,
            student.model.threshold.value
        )
    );
}

/// Where `best --retrain --out DIR` keeps its members' checkpoints until DIR is written:
/// `DIR.partial`, beside it.
fn partial_folder(out: &std::path::Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// How a saved model decides, for people: its threshold, per-class offsets or per-label
/// thresholds.
fn decision(t: &rnnsweep_model::artifact::StoredThreshold, outputs: usize) -> String {
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !t.label_thresholds.is_empty() {
        format!("label thresholds {}", list(&t.label_thresholds))
    } else if outputs > 1 && !t.offsets.is_empty() {
        format!("class offsets {}", list(&t.offsets))
    } else if outputs > 1 {
        "argmax".into()
    } else {
        format!("threshold {:.4}", t.value)
    }
}
