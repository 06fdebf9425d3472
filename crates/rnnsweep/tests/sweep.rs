//! End-to-end sweeps with a stand-in worker (tests/fixtures/fake_worker.py) and with the
//! built-in BiLSTM worker: specs, crashes, interrupts, resume, Optuna-schema contents.

mod common;

use std::time::Duration;

use common::*;
use rnnsweep_search::store::{TrialRecord, TrialState};

#[test]
fn a_driver_killed_mid_trial_resumes_without_losing_or_repeating_work() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fake_spec(
        dir.path(),
        "crash",
        "random",
        4,
        0.4,
        "  x: {distribution: uniform, min: 0.1, max: 1.0}\n",
    );
    let (mut driver, _) = start_until(&spec, |l| l.starts_with("trial 1 epoch 1"));
    driver.kill().unwrap(); // SIGKILL: no chance to clean up
    driver.wait().unwrap();
    let db = dir.path().join("crash.db");
    let before = trials(&db, "crash");
    assert_eq!(count(&before, TrialState::Complete), 1);
    assert_eq!(
        count(&before, TrialState::Running),
        1,
        "the killed trial is left RUNNING"
    );
    let killed_x = param(&before[1], "x");

    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("trial 1 lost its driver; its parameters are queued again as trial"),
        "{stdout}"
    );
    let after = trials(&db, "crash");
    assert_eq!(
        count(&after, TrialState::Complete),
        4,
        "exactly run_cap finished"
    );
    assert_eq!(count(&after, TrialState::Fail), 1);
    assert_eq!(count(&after, TrialState::Running), 0);
    let failed = after.iter().find(|t| t.state == TrialState::Fail).unwrap();
    assert_eq!(failed.number, 1);
    assert!(failed.system_attrs["fail_reason"]
        .as_str()
        .unwrap()
        .starts_with("heartbeat stopped"));
    // The killed trial's parameters ran again, in a new trial, to completion.
    let rerun = after
        .iter()
        .find(|t| t.state == TrialState::Complete && param(t, "x") == killed_x)
        .unwrap();
    assert!(rerun.number > 1);
    assert_eq!(rerun.intermediate.len(), 3);
    // Trial 0 completed before the crash and was not run again.
    let log = std::fs::read_to_string(dir.path().join("runs.log")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.starts_with("done 0 ")).count(),
        1,
        "{log}"
    );
    let done: Vec<&str> = log.lines().filter(|l| l.starts_with("done")).collect();
    assert_eq!(done.len(), 4, "{log}");
}

#[test]
fn grid_covers_each_point_once_across_an_interrupt() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fake_spec(
        dir.path(),
        "grid",
        "grid",
        100,
        0.5,
        "  x: {values: [0.1, 0.2, 0.3]}\n  epochs: {values: [1, 2]}\n",
    );
    let (mut driver, _) = start_until(&spec, |l| l.starts_with("trial 2 started"));
    // Two Ctrl-Cs: stop the running trial now.
    signal(driver.id(), 2);
    std::thread::sleep(Duration::from_millis(100));
    signal(driver.id(), 2);
    let status = driver.wait().unwrap();
    assert_eq!(status.code(), Some(131));
    let db = dir.path().join("grid.db");
    let mid = trials(&db, "grid");
    assert_eq!(
        count(&mid, TrialState::Running),
        0,
        "an interrupted trial is not left running"
    );
    assert_eq!(count(&mid, TrialState::Waiting), 1, "it is queued again");

    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("every point of the search space has been tried"));
    let all = trials(&db, "grid");
    let mut points: Vec<(u64, u64)> = all
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .map(|t| {
            (
                (param(t, "x") * 10.0).round() as u64,
                param(t, "epochs") as u64,
            )
        })
        .collect();
    points.sort_unstable();
    // Categorical params are stored as indices: x ∈ {0,1,2}, epochs ∈ {0,1}.
    assert_eq!(
        points,
        vec![(0, 0), (0, 1), (10, 0), (10, 1), (20, 0), (20, 1)]
    );
}

#[test]
fn a_first_ctrl_c_lets_running_trials_finish_and_starts_no_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fake_spec(
        dir.path(),
        "drain",
        "random",
        5,
        0.3,
        "  x: {distribution: uniform, min: 0, max: 1}\n",
    );
    let (mut driver, _) = start_until(&spec, |l| l.starts_with("trial 1 started"));
    signal(driver.id(), 2);
    let status = driver.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let all = trials(&dir.path().join("drain.db"), "drain");
    assert_eq!(all.len(), 2, "no trial started after the interrupt");
    assert_eq!(
        count(&all, TrialState::Complete),
        2,
        "the running trial finished"
    );
}

#[test]
fn failing_trials_are_recorded_and_the_sweep_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fake_spec(
        dir.path(),
        "fails",
        "grid",
        100,
        0.0,
        "  x: {values: [1, 2, 3]}\n  fail_on: {value: 2}\n",
    );
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    assert!(o.status.success());
    let all = trials(&dir.path().join("fails.db"), "fails");
    assert_eq!(count(&all, TrialState::Complete), 2);
    let failed: Vec<&TrialRecord> = all.iter().filter(|t| t.state == TrialState::Fail).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].system_attrs["fail_reason"], "x=2 is not allowed");
}

#[test]
fn a_changed_search_space_is_refused_and_the_study_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fake_spec(
        dir.path(),
        "space",
        "random",
        2,
        0.0,
        "  x: {values: [1, 2]}\n",
    );
    assert!(rnnsweep()
        .arg("run")
        .arg(&spec)
        .output()
        .unwrap()
        .status
        .success());
    let db = dir.path().join("space.db");
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("[1, 2]", "[1, 2, 3]")
        .replace("run_cap: 2", "run_cap: 3");
    std::fs::write(&spec, text).unwrap();
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("study `space` in")
            && stderr.contains("was created with a different search space"),
        "{stderr}"
    );
    assert_eq!(trials(&db, "space").len(), 2);
    let o = rnnsweep()
        .arg("run")
        .arg(&spec)
        .arg("--force-new-space")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(count(&trials(&db, "space"), TrialState::Complete), 3);
}

#[test]
fn spec_errors_name_the_place_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.yaml");
    std::fs::write(&spec, "name: bad\ndata: {train: x.csv}\nmethod: random\nrun_cap: 2\nparameters:\n  learning_rate:\n    distribution: uniform\n    min: 0.5\n    max: 0.1\n").unwrap();
    let o = rnnsweep()
        .current_dir(dir.path())
        .arg("run")
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!(
            "error: {}:8:5: parameters.learning_rate.min: min 0.5 is greater than max 0.1",
            spec.display()
        )
    );
    assert!(!dir.path().join("results").exists());
}

#[test]
fn bad_database_files_are_named_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.db");
    std::fs::write(&db, "hello").unwrap();
    let o = rnnsweep().arg("leaderboard").arg(&db).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        format!(
            "error: {}: not an SQLite database (refusing to touch it)",
            db.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&db).unwrap(), "hello");
    let o = rnnsweep()
        .arg("leaderboard")
        .arg(dir.path().join("missing.db"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.db: no such study file"));
}

#[test]
fn the_built_in_worker_trains_ranks_and_resumes_from_the_study_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = real_spec(dir.path());
    let o = rnnsweep()
        .arg("run")
        .arg(&spec)
        .arg("--force-new-space")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("3 of 3 trials finished — run_cap reached"),
        "{stdout}"
    );
    let db = dir.path().join("out/real.db");
    let all = trials(&db, "real");
    assert_eq!(count(&all, TrialState::Complete), 3);
    for t in &all {
        assert_eq!(t.intermediate.len(), 2);
        assert_eq!(t.user_attrs["device"], "cpu");
        // The objective is val_loss at the kept (best) epoch.
        let best = t.user_attrs["best_epoch"].as_i64().unwrap();
        assert_eq!(t.value, t.intermediate[(best - 1) as usize].1);
        assert!(dir
            .path()
            .join(format!("out/real/trial-{}/trial.json", t.number))
            .exists());
    }
    // Leaderboard: minimised objective, best first.
    let o = rnnsweep()
        .args(["leaderboard"])
        .arg(&db)
        .args(["--format", "csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8(o.stdout).unwrap();
    let values: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect();
    assert_eq!(values.len(), 3);
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{csv}");
    // `resume` reads the spec from the study: nothing left to do.
    let o = rnnsweep().arg("resume").arg(&db).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("run_cap reached"));
    assert_eq!(trials(&db, "real").len(), 3);
    let o = rnnsweep().arg("show").arg(&db).arg("0").output().unwrap();
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        shown.contains("study real, trial 0 — COMPLETE") && shown.contains("optimizer"),
        "{shown}"
    );
    let o = rnnsweep().arg("studies").arg(&db).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("real"));
}
