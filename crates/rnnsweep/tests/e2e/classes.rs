//! Any labelled text: several classes written as words, an unnamed id column, one-vs-rest,
//! and the errors a user's own file can hold — through the binary as a user runs it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::*;

/// The first `rows` rows of the bundled three-class sample (`,class,text`), and the rest.
fn topics(dir: &Path, rows: usize) -> (PathBuf, PathBuf) {
    let sample =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments/data/topics.csv");
    let text = std::fs::read_to_string(sample).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (train, test) = (dir.join("train.csv"), dir.join("test.csv"));
    std::fs::write(&train, lines[..=rows].join("\n") + "\n").unwrap();
    std::fs::write(
        &test,
        [&lines[..1], &lines[rows + 1..]].concat().join("\n") + "\n",
    )
    .unwrap();
    (train, test)
}

const MODEL: &str = "training: {epochs: 4, batch_size: 32, batch_norm_momentum: 0.9, embedding_dim: 16, lstm_units: [16], dense: [{units: 16}], threshold: {mode: max_macro_f1}}\n";

fn spec(dir: &Path, data: &str, extra: &str) -> PathBuf {
    let spec = dir.join("topics.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: topics\nstorage: topics.db\ndata: {data}\nmethod: random\nseed: 4\n{extra}{MODEL}\
             parameters:\n  optimizer: {{values: [adam, nadam]}}\n  learning_rate: {{values: [0.01, 0.02]}}\n"
        ),
    )
    .unwrap();
    spec
}

#[test]
fn a_three_class_sweep_ranks_by_macro_f1_and_its_ensemble_predicts_every_class() {
    let dir = tempfile::tempdir().unwrap();
    let (_, test) = topics(dir.path(), 900);
    let spec = spec(
        dir.path(),
        "{train: train.csv, columns: {id: '', label: class, text: text}}",
        "metric: {name: val_macro_f1}\nrun_cap: 3\n",
    );
    let dry = run_ok(rnnsweep().arg("run").arg(&spec).arg("--dry-run"));
    let dry = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.contains("classes (multi-class, softmax): politics (")
            && dry.contains("sport (")
            && dry.contains("tech ("),
        "{dry}"
    );
    run_ok(rnnsweep().arg("run").arg(&spec).current_dir(dir.path()));

    let db = dir.path().join("topics.db");
    let trials = trials(&db, "topics");
    assert_eq!(
        count(&trials, rnnsweep_search::store::TrialState::Complete),
        3
    );
    for t in &trials {
        let f1 = t.user_attrs["val_macro_f1"].as_f64().unwrap();
        assert_eq!(t.value, Some(f1), "the objective is the macro F1");
        let per_class = t.user_attrs["val_per_class"].as_array().unwrap();
        let names: Vec<&str> = per_class
            .iter()
            .map(|c| c["class"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["politics", "sport", "tech"]);
        // val_f1 is the macro F1 too: the mean of the per-class F1 values.
        let mean = per_class
            .iter()
            .map(|c| c["f1"].as_f64().unwrap())
            .sum::<f64>()
            / 3.0;
        assert!((mean - f1).abs() < 1e-12 && t.user_attrs["val_f1"].as_f64() == Some(f1));
        let matrix = t.user_attrs["val_confusion_matrix"].as_array().unwrap();
        let total: u64 = matrix
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .map(|v| v.as_u64().unwrap())
            .sum();
        // 10 % of the 900 rows validate (to within a row per class).
        assert!((88..=92).contains(&total), "{total}");
        let dir = t.system_attrs["rnnsweep:trial_dir"].as_str().unwrap();
        let predictions =
            std::fs::read_to_string(Path::new(dir).join("val_predictions.csv")).unwrap();
        assert_eq!(predictions.lines().count() as u64, total + 1);
        let mut lines = predictions.lines();
        assert_eq!(lines.next(), Some("id,label,politics,sport,tech"));
        let row: Vec<&str> = lines.next().unwrap().split(',').collect();
        let sum: f64 = row[2..].iter().map(|p| p.parse::<f64>().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{row:?}");
    }
    let board = run_ok(
        rnnsweep()
            .arg("leaderboard")
            .arg(&db)
            .args(["--format", "json"]),
    );
    let board: Vec<Value> = serde_json::from_slice(&board.stdout).unwrap();
    let first = board.iter().find(|r| r["rank"] == 1).unwrap();
    let best = trials
        .iter()
        .map(|t| t.value.unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(first["val_macro_f1"].as_f64(), Some(best));

    // Plots: a 3×3 confusion matrix and one precision-recall curve per class.
    let plots = dir.path().join("plots");
    let o = run_ok(rnnsweep().arg("plot").arg(&db).arg("--out").arg(&plots));
    let listed = String::from_utf8_lossy(&o.stdout);
    for f in ["confusion_matrix.png", "pr_curves.png", "pr_curves.svg"] {
        assert!(listed.contains(f), "{listed}");
    }
    let svg = std::fs::read_to_string(plots.join("pr_curves.svg")).unwrap();
    for class in ["politics (AP", "sport (AP", "tech (AP"] {
        assert!(svg.contains(class), "the legend names every class: {class}");
    }
    let matrix = std::fs::read_to_string(plots.join("confusion_matrix.svg")).unwrap();
    assert!(matrix.matches("<rect").count() >= 9, "nine cells");
    // The best configuration again with a fresh seed, ranked by the mean over its runs.
    run_ok(
        rnnsweep()
            .arg("confirm")
            .arg(&db)
            .args(["--top", "1", "--repeats", "2"])
            .current_dir(dir.path()),
    );
    let confirmed =
        run_ok(
            rnnsweep()
                .arg("leaderboard")
                .arg(&db)
                .args(["--confirmed", "--format", "json"]),
        );
    let confirmed: Value = serde_json::from_slice(&confirmed.stdout).unwrap();
    let runs = confirmed[0]["values"].as_array().map_or(0, Vec::len);
    assert_eq!(runs, 3, "the original and its two repeats: {confirmed}");
    let model = dir.path().join("model");
    let o = run_ok(
        rnnsweep()
            .arg("best")
            .arg(&db)
            .args([
                "--retrain",
                "--ensemble",
                "2",
                "--combine",
                "logit",
                "--out",
            ])
            .arg(&model),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("ensemble of 2 written"), "{stdout}");
    // The classes are decided with offsets chosen on the combined calibration probabilities.
    let ensemble: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("ensemble.json")).unwrap())
            .unwrap();
    let offsets = ensemble["threshold"]["offsets"].as_array().unwrap();
    assert_eq!(offsets.len(), 3);
    assert_eq!(offsets[0], 0.0, "class 0 is the reference");
    let calibration = ensemble["threshold"]["calibration_rows"].as_u64().unwrap();
    assert!((88..=92).contains(&calibration), "{calibration}");
    let out = dir.path().join("predictions.csv");
    let o = run_ok(
        rnnsweep()
            .args(["predict", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&test)
            .arg("--out")
            .arg(&out)
            .args(["--show-flagged", "2"]),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("600 rows scored"), "{stdout}");
    assert!(stdout.contains("most likely `tech`:"), "{stdout}");
    let accuracy: f64 = stdout
        .split("accuracy ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(accuracy > 0.7, "the topic words decide most rows: {stdout}");
    let written = std::fs::read_to_string(&out).unwrap();
    let mut lines = written.lines();
    assert_eq!(lines.next(), Some("id,label,politics,sport,tech"));
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(row[0], "900", "ids from the unnamed first column");
    let probs: Vec<f64> = row[2..].iter().map(|p| p.parse().unwrap()).collect();
    let argmax = (0..3)
        .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
        .unwrap();
    assert_eq!(row[1], ["politics", "sport", "tech"][argmax]);
    assert_eq!(written.lines().count(), 601);
}

#[test]
fn one_vs_rest_turns_a_class_column_into_a_binary_task() {
    let dir = tempfile::tempdir().unwrap();
    topics(dir.path(), 600);
    let spec = spec(
        dir.path(),
        "{train: train.csv, columns: {id: '', label: class, text: text}, positive: tech}",
        "run_cap: 1\n",
    );
    let dry = run_ok(rnnsweep().arg("run").arg(&spec).arg("--dry-run"));
    let dry = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.contains("classes (binary): not tech ("), "{dry}");
    run_ok(rnnsweep().arg("run").arg(&spec).current_dir(dir.path()));
    let trials = trials(&dir.path().join("topics.db"), "topics");
    let t = &trials[0];
    assert!(t.user_attrs["val_pr_auc"].as_f64().is_some());
    assert!(!t.user_attrs.contains_key("val_per_class"), "a binary task");
    let dir_of = t.system_attrs["rnnsweep:trial_dir"].as_str().unwrap();
    let predictions =
        std::fs::read_to_string(Path::new(dir_of).join("val_predictions.csv")).unwrap();
    assert!(predictions.starts_with("id,probability,label\n"));
}

#[test]
fn labels_outside_the_classes_or_empty_fail_with_file_line_and_column_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.csv");
    std::fs::write(
        &train,
        "review,stars\ngreat,positive\nawful,negative\nfine,neutral\nmeh,mixed\n",
    )
    .unwrap();
    let data = "{train: train.csv, columns: {label: stars, text: review}, labels: [negative, neutral, positive]}";
    let spec = spec(dir.path(), data, "run_cap: 1\n");
    for args in [vec!["run"], vec!["run", "--dry-run"]] {
        let o = rnnsweep()
            .args(&args[..1])
            .arg(&spec)
            .args(&args[1..])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains(&format!(
                "{}:5: label `mixed` in column `stars` is not one of the classes (negative, neutral, positive)",
                train.display()
            )),
            "{stderr}"
        );
        assert!(!dir.path().join("topics.db").exists(), "nothing is stored");
    }
    std::fs::write(&train, "review,stars\ngreat,positive\nawful,\n").unwrap();
    let o = rnnsweep()
        .arg("run")
        .arg(&spec)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3: empty label in column `stars`",
            train.display()
        )),
        "{stderr}"
    );
    let spec = self::spec(
        dir.path(),
        "{train: train.csv, columns: {label: stars, text: review}, labels: [a, b], positive: c}",
        "run_cap: 1\n",
    );
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("data.positive") && stderr.contains("`c` is not one of `labels` (a, b)"),
        "{stderr}"
    );
}

#[test]
fn a_multi_label_sweep_gives_every_label_its_sigmoid_and_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../experiments/data/topics-multilabel.csv");
    let text = std::fs::read_to_string(sample).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(
        dir.path().join("train.csv"),
        lines[..=900].join("\n") + "\n",
    )
    .unwrap();
    let test = dir.path().join("test.csv");
    std::fs::write(
        &test,
        [&lines[..1], &lines[901..]].concat().join("\n") + "\n",
    )
    .unwrap();
    let spec = spec(
        dir.path(),
        "{train: train.csv, columns: {text: text, labels: [sport, politics, tech]}}",
        "metric: {name: val_macro_f1}\nrun_cap: 2\n",
    );
    let dry = run_ok(rnnsweep().arg("run").arg(&spec).arg("--dry-run"));
    let dry = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.contains("classes (multi-label, one sigmoid each; rows with each): sport ("),
        "{dry}"
    );
    run_ok(rnnsweep().arg("run").arg(&spec).current_dir(dir.path()));
    let db = dir.path().join("topics.db");
    for t in trials(&db, "topics") {
        assert_eq!(t.state, rnnsweep_search::store::TrialState::Complete);
        let per_label = t.user_attrs["val_per_class"].as_array().unwrap();
        let mean = per_label
            .iter()
            .map(|c| c["f1"].as_f64().unwrap())
            .sum::<f64>()
            / 3.0;
        assert!(
            (mean - t.value.unwrap()).abs() < 1e-12,
            "macro F1 over the labels"
        );
        assert!(!t.user_attrs.contains_key("val_confusion_matrix"));
        let dir = t.system_attrs["rnnsweep:trial_dir"].as_str().unwrap();
        let predictions =
            std::fs::read_to_string(Path::new(dir).join("val_predictions.csv")).unwrap();
        assert!(predictions.starts_with("id,labels,sport,politics,tech\n"));
        // Independent sigmoids: a row's probabilities need not sum to 1.
        assert!(predictions.lines().skip(1).any(|l| {
            let p: f64 = l
                .split(',')
                .skip(2)
                .map(|v| v.parse::<f64>().unwrap())
                .sum();
            (p - 1.0).abs() > 0.05
        }));
    }
    let model = dir.path().join("model");
    run_ok(
        rnnsweep()
            .arg("best")
            .arg(&db)
            .args([
                "--retrain",
                "--ensemble",
                "2",
                "--combine",
                "logit",
                "--out",
            ])
            .arg(&model),
    );
    let ensemble: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("ensemble.json")).unwrap())
            .unwrap();
    let thresholds = ensemble["threshold"]["label_thresholds"]
        .as_array()
        .unwrap();
    assert_eq!(thresholds.len(), 3, "one threshold per label: {ensemble}");
    let out = dir.path().join("predictions.csv");
    let o = run_ok(
        rnnsweep()
            .args(["predict", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&test)
            .arg("--out")
            .arg(&out),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let macro_f1: f64 = stdout
        .split("macro_f1 ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(macro_f1 > 0.7, "{stdout}");
    let written = std::fs::read_to_string(&out).unwrap();
    let mut rows = written.lines();
    assert_eq!(rows.next(), Some("id,labels,sport,politics,tech"));
    // Labels combine one by one (mean log-odds per label), not as a softmax over the labels.
    assert!(rows.clone().any(|l| {
        let p: f64 = l
            .split(',')
            .skip(2)
            .map(|v| v.parse::<f64>().unwrap())
            .sum();
        (p - 1.0).abs() > 0.05
    }));
    assert_eq!(written.lines().count(), 601);
    // Some test rows talk about two topics and are given both.
    assert!(
        written
            .lines()
            .any(|l| l.split(',').nth(1).unwrap().contains('|')),
        "{written}"
    );
}

#[test]
fn train_and_inspect_read_a_users_columns_and_word_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = topics(dir.path(), 600);
    let flags = [
        "--id-column",
        "",
        "--label-column",
        "class",
        "--text-column",
        "text",
        "--labels",
        "auto",
    ];
    let o = run_ok(
        rnnsweep()
            .args(["data", "inspect", "--input"])
            .arg(&train)
            .args(flags),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("classes           3 (multi-class)"),
        "{stdout}"
    );
    assert!(stdout.contains("  sport "), "{stdout}");
    let model = dir.path().join("model");
    let o = run_ok(
        rnnsweep()
            .args(["train", "--data"])
            .arg(&train)
            .args(flags)
            .args([
                "--set",
                "epochs=2",
                "--set",
                "lstm_units=[8]",
                "--set",
                "embedding_dim=8",
                "--set",
                "cell=gru",
                "--out",
            ])
            .arg(&model),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("class weights "), "{stdout}");
    let out = dir.path().join("p.csv");
    run_ok(
        rnnsweep()
            .args(["predict", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&test)
            .arg("--out")
            .arg(&out),
    );
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(
        written.starts_with("id,label,politics,sport,tech\n600,"),
        "{written}"
    );
    // Without --labels the tweets' 0/1 rule holds, and says which value broke it.
    let o = rnnsweep()
        .args(["data", "inspect", "--input"])
        .arg(&train)
        .args(&flags[..6])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(":2: label `"), "{stderr}");
    assert!(
        stderr.contains("in column `class` is not 0 or 1"),
        "{stderr}"
    );
}
