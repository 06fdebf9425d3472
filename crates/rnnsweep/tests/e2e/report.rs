//! After a sweep: plots, exports, the best model retrained, a submission with flagged tweets.

use crate::common::*;
use rnnsweep_search::store::TrialState;

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let n = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (n(16), n(20))
}

#[test]
fn a_finished_study_gives_plots_exports_a_retrained_model_and_a_submission() {
    let dir = tempfile::tempdir().unwrap();
    let spec = real_spec(dir.path());
    run_ok(rnnsweep().arg("run").arg(&spec));
    let db = dir.path().join("out/real.db");

    // Plots: PNG and SVG of each picture, decodable, at the documented size.
    let plots = dir.path().join("plots");
    run_ok(rnnsweep().arg("plot").arg(&db).arg("--out").arg(&plots));
    for name in [
        "optimization_history",
        "parallel_coordinates",
        "learning_curves",
        "confusion_matrix",
        "roc_pr",
    ] {
        let png = std::fs::read(plots.join(format!("{name}.png"))).unwrap();
        assert_eq!(png_size(&png), (1000, 640), "{name}");
        assert!(
            png.len() > 10_000,
            "{name}.png looks empty ({} bytes)",
            png.len()
        );
        let svg = std::fs::read_to_string(plots.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.contains("<svg")
                && svg.contains("width=\"1000\"")
                && svg.trim_end().ends_with("</svg>"),
            "{name}.svg"
        );
    }
    let svg = std::fs::read_to_string(plots.join("optimization_history.svg")).unwrap();
    assert!(
        svg.contains("best so far") && svg.contains("val_loss"),
        "legend and axis label are text in the SVG"
    );

    // Exports: one row per trial, or per trial and epoch.
    let o = rnnsweep()
        .arg("export")
        .arg(&db)
        .args(["--format", "csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    for col in [
        "trial",
        "state",
        "val_loss",
        "param_optimizer",
        "param_learning_rate",
        "val_f1",
        "val_roc_auc",
        "epochs",
        "duration_s",
        "device",
    ] {
        assert!(
            lines[0].split(',').any(|h| h == col),
            "missing column {col}: {}",
            lines[0]
        );
    }
    let o = rnnsweep()
        .arg("export")
        .arg(&db)
        .args(["--format", "csv", "--epochs"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(o.stdout).unwrap().lines().count(),
        1 + 3 * 2
    );
    let out = dir.path().join("trials.json");
    run_ok(
        rnnsweep()
            .arg("export")
            .arg(&db)
            .args(["--format", "json", "--epochs", "--out"])
            .arg(&out),
    );
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(
        |r| r["params"]["optimizer"].is_string() && r["history"].as_array().unwrap().len() == 2
    ));

    // The best configuration, retrained on every row, then a submission for unlabelled tweets.
    let model = dir.path().join("final");
    let o = rnnsweep()
        .arg("best")
        .arg(&db)
        .args(["--retrain", "--epochs", "2", "--out"])
        .arg(&model)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        stdout.contains("retraining trial 1 on 600 rows (every row), 2 epochs"),
        "{stdout}"
    );
    assert!(model.join("model.safetensors").exists() && model.join("history.csv").exists());
    let test_csv = dir.path().join("test.csv");
    std::fs::write(&test_csv, "id,tweet\n31963,i love the beach\n31964,i despise every one of the glorbs\n31965,we enjoy sunday\n").unwrap();
    let submission = dir.path().join("submission.csv");
    let o = rnnsweep()
        .arg("predict")
        .arg("--model")
        .arg(&model)
        .arg("--input")
        .arg(&test_csv)
        .arg("--out")
        .arg(&submission)
        .args(["--show-flagged", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    assert!(
        stdout.contains("rank          id  probability  tweet"),
        "{stdout}"
    );
    let flagged: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(['1', '2']) && l.contains("3196"))
        .collect();
    assert_eq!(flagged.len(), 2, "{stdout}");
    let sub = std::fs::read_to_string(&submission).unwrap();
    assert!(sub.starts_with("id,probability,label\n31963,"), "{sub}");
    assert_eq!(sub.lines().count(), 4);
}

/// `best --retrain` killed while training its second member, then run again: the first member
/// is not trained again, the second continues after its last finished epoch, and the model is
/// the one an uninterrupted run writes (the same predictions, to the last digit).
#[test]
fn a_killed_retrain_continues_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let spec = real_spec(dir.path());
    run_ok(rnnsweep().arg("run").arg(&spec));
    let db = dir.path().join("out/real.db");
    let retrain = |out: &std::path::Path| {
        let mut c = rnnsweep();
        c.arg("best").arg(&db).args([
            "--retrain",
            "--ensemble",
            "2",
            "--selection",
            "top",
            "--epochs",
            "4",
            "--out",
        ]);
        c.arg(out);
        c
    };
    let whole = dir.path().join("whole");
    run_ok(&mut retrain(&whole));

    let resumed = dir.path().join("resumed");
    let in_member_two = std::cell::Cell::new(false);
    let (mut child, lines) = spawn_until(&mut retrain(&resumed), |line| {
        if line.starts_with("member 2 of 2") {
            in_member_two.set(true);
        }
        in_member_two.get() && line.starts_with("epoch   2")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        lines.iter().any(|l| l.starts_with("epoch   2")),
        "{}",
        lines.join("\n")
    );
    assert!(
        !resumed.exists(),
        "nothing is written before every member is trained"
    );
    let partial = dir.path().join("resumed.partial");
    assert!(partial.is_dir());

    let o = run_ok(&mut retrain(&resumed));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let member = |k: usize| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("member {k} of 2")))
            .unwrap_or_else(|| panic!("no member {k} line: {stdout}"))
            .to_string()
    };
    assert!(
        member(1).contains("4 epochs, resumed after epoch 4 from"),
        "{stdout}"
    );
    assert!(
        member(2).contains("4 epochs, resumed after epoch 2 from"),
        "{stdout}"
    );
    // Member 1's four epochs and member 2's first two come from the checkpoints; only member
    // 2's last two are trained.
    let replayed = stdout.matches("(from the checkpoint)").count();
    let epochs = stdout.lines().filter(|l| l.starts_with("epoch ")).count();
    assert_eq!((replayed, epochs), (6, 8), "{stdout}");
    assert!(
        !partial.exists(),
        "the checkpoints go once the model is saved"
    );

    let test_csv = dir.path().join("test.csv");
    let sample = std::fs::read_to_string(dir.path().join("sample.csv")).unwrap();
    std::fs::write(&test_csv, sample).unwrap();
    let predict = |model: &std::path::Path, name: &str| {
        let out = dir.path().join(name);
        run_ok(
            rnnsweep()
                .arg("predict")
                .arg("--model")
                .arg(model)
                .arg("--input")
                .arg(&test_csv)
                .arg("--out")
                .arg(&out),
        );
        std::fs::read_to_string(out).unwrap()
    };
    let (a, b) = (
        predict(&whole, "whole.csv"),
        predict(&resumed, "resumed.csv"),
    );
    assert_eq!(a.lines().count(), 601);
    assert_eq!(
        a, b,
        "the resumed ensemble predicts as the uninterrupted one"
    );
}

/// With `max_duration` and a `final` section, the search stops claiming trials while the final
/// model still fits, and stops the trials still running then at their last epoch: `run` and
/// then `best --retrain` together take the hour (here 30 s) the spec promises.
#[test]
fn max_duration_covers_the_search_and_the_final_model() {
    let dir = tempfile::tempdir().unwrap();
    real_spec(dir.path());
    let spec = dir.path().join("budget.yaml");
    std::fs::write(
        &spec,
        "name: budget\nstorage: out/budget.db\ndata: {train: sample.csv}\nmethod: random\nseed: 3\n\
         metric: {name: val_loss}\nrun_cap: 500\nmax_duration: 30s\nfinal: {ensemble: 7, selection: top}\n\
         training: {epochs: 4, batch_size: 64, embedding_dim: 8, lstm_units: [8], dense: [{units: 8}]}\n\
         parameters:\n  learning_rate: {distribution: log_uniform_values, min: 0.001, max: 0.01}\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let o = run_ok(rnnsweep().arg("run").arg(&spec));
    let search = started.elapsed();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("kept for the final model (final: ensemble 7"),
        "{stdout}"
    );
    let db = dir.path().join("out/budget.db");
    let started = std::time::Instant::now();
    run_ok(
        rnnsweep()
            .arg("best")
            .arg(&db)
            .args(["--retrain", "--out"])
            .arg(dir.path().join("final")),
    );
    let final_model = started.elapsed();
    let longest_trial = trials(&db, "budget")
        .iter()
        .filter_map(|t| t.user_attrs.get("duration_s").and_then(|v| v.as_f64()))
        .fold(0.0, f64::max);
    // "max_duration reached, less 3.911s kept for the final model"
    let reserved: f64 = stdout
        .split("less ")
        .nth(1)
        .and_then(|rest| rest.split("s kept").next())
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or_else(|| panic!("no reserve in seconds: {stdout}"));
    let (search, final_model) = (search.as_secs_f64(), final_model.as_secs_f64());
    // The search stopped that much early, the trials running then with it (recorded pruned
    // at their last epoch, or queued again before their first): only process teardown runs
    // past it.
    assert!(
        search <= 30.0 - reserved + 2.5,
        "search {search:.1} s with {reserved:.1} s reserved (longest trial {longest_trial:.1} s)"
    );
    for t in trials(&db, "budget") {
        match t.state {
            TrialState::Complete | TrialState::Waiting => {}
            TrialState::Pruned => assert_eq!(
                t.user_attrs.get("stopped_by").and_then(|v| v.as_str()),
                Some("max_duration"),
                "{t:?}"
            ),
            TrialState::Fail => assert!(
                t.system_attrs["fail_reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("the rest of max_duration")),
                "{t:?}"
            ),
            other => panic!("trial {} is {other:?}", t.number),
        }
    }
    // Once the reserve begins no trial starts: cutting the running ones lowers the estimate,
    // and that room is the final model's.
    let all = trials(&db, "budget");
    let first_cut = all
        .iter()
        .filter(|t| t.user_attrs.contains_key("stopped_by"))
        .filter_map(|t| t.datetime_complete.clone())
        .min();
    if let Some(cut) = first_cut {
        assert!(
            all.iter()
                .filter_map(|t| t.datetime_start.as_ref())
                .all(|start| *start <= cut),
            "a trial started after the reserve began at {cut}: {all:?}"
        );
    }
    // The reserve was the final model's time, within what load changes between the two runs
    // can explain; so the two together took the 30 s the spec gives, give or take. Each of the
    // 7 members' estimates also carries its trial's process start and data loading (a few
    // tenths of a second) that retraining in one process does not pay: with an optimised
    // build these tiny models train in less than that.
    let overheads = 7.0 * 0.3;
    assert!(
        (0.3 * final_model..=3.0 * final_model + overheads).contains(&reserved),
        "{reserved:.1} s reserved, the final model took {final_model:.1} s"
    );
    let total = search + final_model;
    assert!(
        total <= 30.0 + 2.5 + 0.7 * final_model,
        "search {search:.1} s + final model {final_model:.1} s = {total:.1} s for max_duration 30s"
    );
}

/// `final: {distill}` hands over one network taught by the ensemble, on the labelled rows and
/// an unlabelled file's; the ensemble is kept beside it, and both predict.
#[test]
fn a_distilled_student_learns_from_the_ensemble_and_an_unlabelled_file() {
    let dir = tempfile::tempdir().unwrap();
    real_spec(dir.path());
    let sample = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../experiments/data/sample.csv");
    let text = String::from_utf8_lossy(&std::fs::read(sample).unwrap()).into_owned();
    // Rows the search never saw, without their label column (id,tweet as a test file has).
    let unlabelled: Vec<String> = std::iter::once("id,tweet".to_string())
        .chain(text.lines().skip(601).take(400).map(|l| {
            let mut fields = l.splitn(3, ',');
            let (id, _label, tweet) = (
                fields.next().unwrap(),
                fields.next(),
                fields.next().unwrap(),
            );
            format!("{id},{tweet}")
        }))
        .collect();
    std::fs::write(
        dir.path().join("unlabelled.csv"),
        unlabelled.join("\n") + "\n",
    )
    .unwrap();
    let db = small_study(
        dir.path(),
        "distil",
        "final: {ensemble: 2, selection: top, distill: {unlabelled: unlabelled.csv, temperature: 2}}\n",
    );
    let best = |extra: &[&str], out: &str| retrain_command(&db, dir.path(), extra, out);
    // Bad requests are refused before anything trains.
    std::fs::create_dir_all(dir.path().join("notes")).unwrap();
    std::fs::write(dir.path().join("notes/todo.txt"), "keep me").unwrap();
    for (extra, out, named) in [
        (
            &["--no-distill", "--unlabelled", "u.csv"][..],
            "refused",
            "--unlabelled",
        ),
        (&["--distill-alpha", "1"][..], "refused", "--distill-alpha"),
        (
            &["--unlabelled", "missing.csv"][..],
            "refused",
            "missing.csv",
        ),
        (&[][..], "notes", "notes: exists and is not a model folder"),
    ] {
        let o = best(extra, out).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && stderr.contains(named),
            "{extra:?}: {stderr}"
        );
        assert!(!String::from_utf8_lossy(&o.stdout).contains("epoch "));
        assert!(!dir.path().join("refused").exists());
        assert!(dir.path().join("notes/todo.txt").is_file());
    }

    let o = run_ok(&mut best(&[], "student"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("distilling the ensemble of 2 into trial "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains(" labelled rows and 400 unlabelled rows, alpha 0, temperature 2, 3 epochs"),
        "{line}"
    );
    // Two members and the student, three epochs each.
    let epochs = stdout.lines().filter(|l| l.starts_with("epoch ")).count();
    assert_eq!(epochs, 9, "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("on the ")
            && l.contains("calibration rows: teacher AP")
            && l.contains("; student AP")),
        "{stdout}"
    );
    let student = dir.path().join("student");
    assert!(student.join("config.json").is_file());
    assert!(!student.join("ensemble.json").exists(), "one network");
    assert!(student.join("teacher/ensemble.json").is_file());
    assert!(student.join("teacher/member-2/history.csv").is_file());
    assert!(!dir.path().join("student.partial").exists());
    let unlabelled = dir.path().join("unlabelled.csv");
    let predict = |model: &std::path::Path, name: &str| {
        predict_text(model, &unlabelled, &dir.path().join(name))
    };
    assert_eq!(predict(&student, "s.csv").lines().count(), 401);
    assert_eq!(
        predict(&student.join("teacher"), "t.csv").lines().count(),
        401
    );
    // Written again as an ensemble, the folder holds that ensemble alone: no student's files
    // beside it for `predict` to mistake.
    run_ok(&mut best(&["--no-distill"], "student"));
    assert!(student.join("ensemble.json").is_file());
    assert!(!student.join("config.json").exists());
    assert!(!student.join("teacher").exists());
}

/// Without `--device`, an ensemble's members train at once on the spec's slots, one process
/// each; the ensemble is the one a single process trains them into one after another.
#[test]
fn an_ensembles_members_train_at_once_on_the_specs_slots() {
    let dir = tempfile::tempdir().unwrap();
    let db = small_study(
        dir.path(),
        "slots",
        "final: {ensemble: 3, selection: top}\n\
         resources: {trials_per_device: 2, threads_per_trial: 1}\n",
    );
    let retrain = |extra: &[&str], out: &str| {
        let mut c = retrain_command(&db, dir.path(), extra, out);
        // The one-process run with the slots' thread share, so both do the same sums.
        c.env("RAYON_NUM_THREADS", "1")
            .env("CANDLE_NUM_THREADS", "1");
        c
    };
    let o = run_ok(&mut retrain(&[], "at-once"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    for k in 1..=3 {
        let prefix = format!("member {k} of 3: ");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{prefix}retraining trial "))),
            "{stdout}"
        );
        let epochs = stdout
            .lines()
            .filter(|l| l.starts_with(&format!("{prefix}epoch ")))
            .count();
        assert_eq!(epochs, 3, "{stdout}");
    }
    assert!(!dir.path().join("at-once.partial").exists());
    let o = run_ok(&mut retrain(&["--device", "cpu"], "one-by-one"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("epoch ")).count(),
        9,
        "{stdout}"
    );
    let predict = |model: &str| {
        predict_text(
            &dir.path().join(model),
            &dir.path().join("sample.csv"),
            &dir.path().join(format!("{model}.csv")),
        )
    };
    let (a, b) = (predict("at-once"), predict("one-by-one"));
    assert_eq!(a.lines().count(), 601);
    assert_eq!(a, b, "the same ensemble either way");
}
