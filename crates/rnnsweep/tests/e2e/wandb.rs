//! W&B's own example sweeps (tests/fixtures/wandb-sweeps, copied unchanged) run with
//! `rnnsweep run` as they are: W&B's top-level keys, `program` with the default command,
//! nested parameters, no `run_cap`, and scripts that report through `wandb.log`, which
//! rnnsweep's stand-in `wandb` module turns into the worker protocol.

use std::path::{Path, PathBuf};
use std::process::Output;

use rnnsweep_search::store::{TrialRecord, TrialState};

use crate::common::{count, rnnsweep, run_ok, trials};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wandb-sweeps")
}

/// A copy of W&B's examples in a fresh folder (studies go to `results/` there).
fn copy_examples(dir: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(format!("{}/.", examples().display()))
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

fn run_in(dir: &Path, spec: &str, flags: &[&str]) -> Output {
    run_ok(rnnsweep().current_dir(dir).arg("run").arg(spec).args(flags))
}

fn values(t: &TrialRecord) -> serde_json::Map<String, serde_json::Value> {
    t.param_values().into_iter().collect()
}

#[test]
fn w_and_b_s_example_sweeps_pass_the_dry_run_as_written() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    for spec in [
        "sweep-bayes.yaml",
        "sweep-grid.yaml",
        "local-controller/sweep-local-hyperband.yaml",
        "nested-params/sweep-nested-cli.yaml",
    ] {
        let o = run_in(dir.path(), spec, &["--dry-run"]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains("W&B's and not used here"),
            "{spec}: the W&B-only keys are noted: {stderr}"
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains("(dry run: nothing is written)"), "{stdout}");
    }
    assert!(
        !dir.path().join("results").exists(),
        "a dry run writes nothing"
    );
}

#[test]
fn the_grid_example_runs_every_point_with_the_scripts_logged_metric_as_objective() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    // No run_cap: a grid runs every point (3 × 3 × 3), as W&B's does.
    run_in(dir.path(), "sweep-grid.yaml", &["--trials-per-device", "9"]);
    let all = trials(&dir.path().join("results/sweep-grid.db"), "sweep-grid");
    assert_eq!(count(&all, TrialState::Complete), 27);
    for t in &all {
        let p = values(t);
        let (base, inc, dir) = (
            p["base"].as_f64().unwrap(),
            p["increment"].as_f64().unwrap(),
            p["direction"].as_f64().unwrap(),
        );
        // train.py: base + U(0, variance) then 5 steps of increment·direction, floored at 0;
        // the objective is the last logged loss_metric.
        let loss = t.value.unwrap();
        let end_low = (base + 5.0 * inc * dir).max(0.0);
        assert!(
            loss >= end_low - 1e-9 && loss <= end_low + 5.0 + 1e-9,
            "trial {}: loss {loss} for {p:?}",
            t.number
        );
        assert_eq!(t.intermediate.len(), 5, "one epoch per wandb.log call");
    }
}

#[test]
fn the_bayes_example_runs_until_its_count_and_hyperband_prunes() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    // No run_cap and not a grid: it would run until stopped; `--run-cap` is `wandb agent
    // --count`.
    run_in(
        dir.path(),
        "sweep-bayes.yaml",
        &["--run-cap", "4", "--trials-per-device", "4"],
    );
    let all = trials(&dir.path().join("results/sweep-bayes.db"), "sweep-bayes");
    assert_eq!(count(&all, TrialState::Complete), 4);
    assert!(all.iter().all(|t| t.value.is_some_and(f64::is_finite)));

    run_in(
        dir.path(),
        "local-controller/sweep-local-hyperband.yaml",
        &["--run-cap", "6", "--trials-per-device", "6"],
    );
    let all = trials(
        &dir.path().join("results/sweep-local-hyperband.db"),
        "sweep-local-hyperband",
    );
    assert_eq!(
        count(&all, TrialState::Complete) + count(&all, TrialState::Pruned),
        6
    );
}

#[test]
fn nested_parameters_reach_the_script_as_nested_config_and_the_study_as_dotted_names() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    run_in(
        dir.path(),
        "nested-params/sweep-nested-cli.yaml",
        &["--trials-per-device", "8"],
    );
    let all = trials(
        &dir.path().join("results/sweep-nested-cli.db"),
        "sweep-nested-cli",
    );
    assert_eq!(
        count(&all, TrialState::Complete),
        8,
        "2 × 2 × 2 grid points"
    );
    for t in &all {
        let p = values(t);
        let names: Vec<&str> = p.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["batch_size", "optimizer.lr", "optimizer.nadam.beta"]
        );
        // train-nested-cli.py reads wandb.config["optimizer"]["lr"] and logs
        // 1 - (epoch / 5) · lr · batch_size; its last epoch is 4.
        let (bs, lr) = (
            p["batch_size"].as_f64().unwrap(),
            p["optimizer.lr"].as_f64().unwrap(),
        );
        let expected = 1.0 - (4.0 / 5.0) * lr * bs;
        assert!(
            (t.value.unwrap() - expected).abs() < 1e-12,
            "trial {}: {:?} for {p:?}",
            t.number,
            t.value
        );
    }
}

#[test]
fn a_sweep_stops_once_a_trial_reaches_the_metric_target() {
    let dir = tempfile::tempdir().unwrap();
    let spec = crate::common::FakeSpec::new(dir.path(), "target")
        .method("grid")
        .params("  x: {values: [0.1, 0.2, 0.6, 0.7, 0.8, 0.9]}\n  epochs: {value: 1}\n")
        .top("metric: {name: val_f1, goal: maximize, target: 0.5}\n")
        .write();
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("run_cap: 1\n", "");
    std::fs::write(&spec, text).unwrap();
    let o = run_ok(rnnsweep().arg("run").arg(&spec));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let all = trials(&dir.path().join("target.db"), "target");
    let reached: Vec<&TrialRecord> = all
        .iter()
        .filter(|t| t.value.is_some_and(|v| v >= 0.5))
        .collect();
    assert_eq!(reached.len(), 1, "{stdout}");
    assert_eq!(
        reached[0].number,
        all.last().unwrap().number,
        "no trial after it"
    );
    assert!(
        stdout.contains(&format!(
            "trials finished — trial {} reached metric.target (val_f1 ",
            reached[0].number
        )),
        "{stdout}"
    );
}
