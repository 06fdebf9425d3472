//! End-to-end sweeps with a stand-in worker (tests/fixtures/fake_worker.py) and with the
//! built-in BiLSTM worker: specs, crashes, interrupts, resume, Optuna-schema contents.

use std::time::Duration;

use crate::common::*;
use rnnsweep_search::store::{TrialRecord, TrialState};

#[test]
fn a_driver_killed_mid_trial_resumes_without_losing_or_repeating_work() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "crash")
        .run_cap(4)
        .sleep(0.4)
        .params("  x: {distribution: uniform, min: 0.1, max: 1.0}\n")
        .write();
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
    let spec = FakeSpec::new(dir.path(), "grid")
        .method("grid")
        .run_cap(100)
        .sleep(0.5)
        .params("  x: {values: [0.1, 0.2, 0.3]}\n  epochs: {values: [1, 2]}\n")
        .write();
    let (mut driver, _) = start_until(&spec, |l| l.starts_with("trial 2 started"));
    // Two Ctrl-Cs: stop the running trial now. The shell's convention: 128 + SIGINT.
    signal(driver.id(), 2);
    std::thread::sleep(Duration::from_millis(100));
    signal(driver.id(), 2);
    let status = driver.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let db = dir.path().join("grid.db");
    let mid = trials(&db, "grid");
    assert_eq!(
        count(&mid, TrialState::Running),
        0,
        "an interrupted trial is not left running"
    );
    assert_eq!(count(&mid, TrialState::Waiting), 1, "it is queued again");

    let o = run_ok(rnnsweep().arg("run").arg(&spec));
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
    let spec = FakeSpec::new(dir.path(), "drain")
        .run_cap(5)
        .sleep(0.3)
        .params("  x: {distribution: uniform, min: 0, max: 1}\n")
        .write();
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
    let spec = FakeSpec::new(dir.path(), "fails")
        .method("grid")
        .run_cap(100)
        .params("  x: {values: [1, 2, 3]}\n  fail_on: {value: 2}\n")
        .write();
    run_ok(rnnsweep().arg("run").arg(&spec));
    let all = trials(&dir.path().join("fails.db"), "fails");
    assert_eq!(count(&all, TrialState::Complete), 2);
    let failed: Vec<&TrialRecord> = all.iter().filter(|t| t.state == TrialState::Fail).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].system_attrs["fail_reason"], "x=2 is not allowed");
}

#[test]
fn a_changed_search_space_is_refused_and_the_study_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "space")
        .run_cap(2)
        .params("  x: {values: [1, 2]}\n")
        .write();
    run_ok(rnnsweep().arg("run").arg(&spec));
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
    run_ok(rnnsweep().arg("run").arg(&spec).arg("--force-new-space"));
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
        let folder =
            std::path::PathBuf::from(t.system_attrs["rnnsweep:trial_dir"].as_str().unwrap());
        assert!(folder.join("trial.json").exists());
        assert!(folder.ends_with(format!("trial-{}", t.number)));
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

#[test]
fn sigterm_stops_running_trials_and_exits_with_143() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "term")
        .run_cap(5)
        .sleep(0.5)
        .params("  x: {values: [0.1, 0.2, 0.3]}\n")
        .write();
    let (mut driver, _) = start_until(&spec, |l| l.starts_with("trial 0 started"));
    signal(driver.id(), 15);
    let status = driver.wait().unwrap();
    assert_eq!(status.code(), Some(143), "128 + SIGTERM, as shells expect");
    let mid = trials(&dir.path().join("term.db"), "term");
    assert_eq!(count(&mid, TrialState::Running), 0);
    assert_eq!(
        count(&mid, TrialState::Waiting),
        1,
        "the stopped trial is queued again"
    );
}

#[test]
fn a_new_study_of_the_same_name_never_adopts_the_old_ones_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let spec = real_spec(dir.path());
    let db = dir.path().join("out/real.db");
    let run = || {
        run_ok(rnnsweep().arg("run").arg(&spec));
        trials(&db, "real")
    };
    let first = run();
    // The study file is deleted and the data changes under the same path: the next study of
    // the same name must train on the new data, not report the old study's numbers.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("out/real.db{suffix}")));
    }
    let sample = dir.path().join("sample.csv");
    let text = std::fs::read_to_string(&sample).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let header = lines.remove(0);
    lines.reverse();
    lines.truncate(450);
    std::fs::write(&sample, format!("{header}\n{}\n", lines.join("\n"))).unwrap();
    let second = run();
    let folder = |t: &TrialRecord| {
        std::path::PathBuf::from(t.system_attrs["rnnsweep:trial_dir"].as_str().unwrap())
    };
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.params, b.params, "the same spec samples the same trials");
        assert_ne!(folder(a), folder(b), "each study has its own trial folders");
        assert_ne!(
            a.user_attrs["val_loss"], b.user_attrs["val_loss"],
            "trial {} reports the old study's result",
            b.number
        );
        assert!(folder(b).join("checkpoint/checkpoint.safetensors").exists());
    }
}

#[test]
fn a_checkpoint_for_other_data_is_not_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let sample = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../experiments/data/sample.csv");
    let text = String::from_utf8_lossy(&std::fs::read(sample).unwrap()).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let data = dir.path().join("data.csv");
    let train = |rows: &[&str]| {
        let text = format!("{}\n{}\n", lines[0], rows.join("\n"));
        // Rewriting a file changes its time, which counts as new data; leave it alone if equal.
        if std::fs::read_to_string(&data).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&data, text).unwrap();
        }
        let o = run_ok(
            rnnsweep()
                .args(["train", "--data"])
                .arg(&data)
                .args([
                    "--set",
                    "lstm_units=[8]",
                    "--set",
                    "dense=[{units: 8}]",
                    "--set",
                    "embedding_dim=8",
                ])
                .args([
                    "--set",
                    "epochs=2",
                    "--set",
                    "batch_size=64",
                    "--set",
                    "batch_norm_momentum=0.9",
                ])
                .arg("--checkpoint")
                .arg("--out")
                .arg(dir.path().join("model")),
        );
        (
            String::from_utf8_lossy(&o.stderr).into_owned(),
            std::fs::read_to_string(dir.path().join("model/history.csv")).unwrap(),
        )
    };
    let (_, old) = train(&lines[1..500]);
    let (warning, new) = train(&lines[500..1000]);
    assert!(
        warning.contains("checkpoint")
            && warning.contains("not resumed because it was written for other data"),
        "{warning}"
    );
    assert_ne!(old, new, "the second run trained on its own data");
    // Same data again: the checkpoint is this task's own and is resumed without a word.
    let (quiet, again) = train(&lines[500..1000]);
    assert!(!quiet.contains("not resumed"), "{quiet}");
    assert_eq!(again, new);
}

#[test]
fn enqueued_values_run_exactly_and_bad_ones_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "queue")
        .run_cap(3)
        .params("  x: {distribution: uniform, min: 0.1, max: 1.0}\n  opt: {values: [adam, sgd]}\n")
        .write();
    let db = dir.path().join("queue.db");
    // A study must exist first: run one trial's worth, then queue by hand.
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("run_cap: 3", "run_cap: 1");
    std::fs::write(&spec, &text).unwrap();
    run_ok(rnnsweep().arg("run").arg(&spec));
    let enqueue = |args: &[&str]| {
        rnnsweep()
            .current_dir(dir.path())
            .args(["enqueue", "sqlite:///queue.db"])
            .args(args)
            .output()
            .unwrap()
    };
    let o = enqueue(&["--set", "x=0.25", "--set", "opt=sgd"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("queued trial 1 in study `queue`"));
    for (args, message) in [
        (
            vec!["--set", "x=2.0", "--set", "opt=sgd"],
            "parameter `x` = 2.0 is outside the search space: it must be a number in [0.1, 1]",
        ),
        (
            vec!["--set", "x=0.5"],
            "parameter `opt` has no queued value",
        ),
        (
            vec!["--set", "x=0.5", "--set", "opt=sgd", "--set", "y=1"],
            "parameter `y` is not in the study's search space",
        ),
    ] {
        let o = enqueue(&args);
        assert_eq!(o.status.code(), Some(1));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.starts_with("error: queue.db: ") && e.contains(message),
            "{e}"
        );
    }
    assert_eq!(
        trials(&db, "queue").len(),
        2,
        "rejected values are not stored"
    );
    // Optuna's enqueue form written straight into the file, with a value outside the space.
    {
        let store = rnnsweep_search::store::sqlite::SqliteStore::open(&db).unwrap();
        let mut store: Box<dyn rnnsweep_search::store::Store> = Box::new(store);
        let id = store.study_id("queue").unwrap().unwrap();
        let attrs = std::collections::BTreeMap::from([(
            "fixed_params".to_string(),
            serde_json::json!({"x": 0.5, "opt": "adagrad"}),
        )]);
        assert_eq!(store.enqueue(id, &attrs).unwrap(), 2);
    }
    std::fs::write(&spec, text.replace("run_cap: 1", "run_cap: 3")).unwrap();
    run_ok(rnnsweep().arg("run").arg(&spec));
    let all = trials(&db, "queue");
    let t1 = all.iter().find(|t| t.number == 1).unwrap();
    assert_eq!(t1.state, TrialState::Complete);
    assert_eq!(param(t1, "x"), 0.25);
    assert_eq!(param(t1, "opt"), 1.0, "sgd is choice 1");
    let t2 = all.iter().find(|t| t.number == 2).unwrap();
    assert_eq!(t2.state, TrialState::Fail);
    assert_eq!(
        t2.system_attrs["fail_reason"],
        "queued trial not run: parameter `opt` = \"adagrad\" is outside the search space: it must be one of [\"adam\", \"sgd\"]"
    );
    assert!(
        t2.params.is_empty(),
        "a rejected trial never ran with defaults"
    );
    // `retry --failed` queues it again with Optuna's retry keys; a second retry is refused.
    run_ok(rnnsweep().args(["retry"]).arg(&db).arg("--failed"));
    let all = trials(&db, "queue");
    let again = all.last().unwrap();
    assert_eq!(again.state, TrialState::Waiting);
    assert_eq!(again.system_attrs["failed_trial"], 2);
    assert_eq!(again.system_attrs["retry_history"], serde_json::json!([2]));
    let o = rnnsweep()
        .args(["retry"])
        .arg(&db)
        .args(["--trial", "2"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("trial 2 was already queued again as trial")
    );
}

#[test]
fn study_files_open_by_sqlalchemy_urls() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "urls")
        .run_cap(2)
        .params("  x: {values: [1, 2]}\n")
        .write();
    // The spec may name its study by URL too.
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("storage: urls.db", "storage: sqlite:///urls.db");
    std::fs::write(&spec, text).unwrap();
    run_ok(rnnsweep().arg("run").arg(&spec));
    let db = dir.path().join("urls.db");
    let lb = |loc: &str| {
        let o = run_ok(rnnsweep().current_dir(dir.path()).args([
            "leaderboard",
            loc,
            "--format",
            "csv",
        ]));
        String::from_utf8(o.stdout).unwrap()
    };
    let plain = lb("urls.db");
    assert_eq!(plain.lines().count(), 3);
    assert_eq!(lb("sqlite:///urls.db"), plain);
    assert_eq!(lb(&format!("sqlite:///{}", db.display())), plain);
    run_ok(rnnsweep().current_dir(dir.path()).args([
        "copy-study",
        "--from",
        "sqlite:///urls.db",
        "--to",
        "sqlite:///copy.db",
    ]));
    assert_eq!(lb("sqlite:///copy.db"), plain);
    let o = rnnsweep()
        .args(["leaderboard", "sqlite://urls.db"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "clap rejects the argument");
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("write SQLite URLs as sqlite:///relative.db or sqlite:////absolute.db"));
}

#[test]
fn a_dry_run_prints_the_plan_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = real_spec(dir.path());
    let o = rnnsweep()
        .arg("run")
        .arg(&spec)
        .arg("--dry-run")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for expected in [
        "(dry run: nothing is written)",
        "search space (2 parameters):",
        "  learning_rate            a number in [0.001, 0.01] (log scale)",
        "  optimizer                one of [\"adam\", \"rmsprop\", \"adagrad\"]",
        "grid size: unbounded (a parameter is continuous)",
        "first planned trials:",
        "  trial 4: ",
        "devices: cpu; 1 trial(s) at once",
        "data: ",
        "540 training rows, 60 validation rows",
        "FLOP per epoch, 2 epochs at most",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    assert!(!dir.path().join("out").exists(), "a dry run writes nothing");
    // The planned trials are the ones the run then starts.
    let planned: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("  trial ") && !l.contains("params"))
        .take(3)
        .map(|l| l.split_once(": ").unwrap().1.to_string())
        .collect();
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    let started: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains(" started on cpu: "))
        .map(|l| l.split_once("cpu: ").unwrap().1.to_string())
        .collect();
    assert_eq!(planned, started);
}
