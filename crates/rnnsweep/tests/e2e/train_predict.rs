use std::path::PathBuf;

use crate::common::*;

fn sample_head(dir: &std::path::Path, rows: usize) -> PathBuf {
    let sample =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments/data/sample.csv");
    let text = String::from_utf8_lossy(&std::fs::read(sample).unwrap()).into_owned();
    let head: Vec<&str> = text.lines().take(rows + 1).collect();
    let p = dir.join("head.csv");
    std::fs::write(&p, head.join("\n") + "\n").unwrap();
    p
}

#[test]
fn train_writes_a_model_that_predict_uses_on_unlabelled_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_head(dir.path(), 300);
    let model = dir.path().join("model");
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
                "--set",
                "epochs=2",
                "--out",
            ])
            .arg(&model),
    );
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert!(
        stdout.contains("300 rows: 270 train / 30 validation"),
        "{stdout}"
    );
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(model.join(f).exists(), "{f}");
    }
    let history = std::fs::read_to_string(model.join("history.csv")).unwrap();
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("epoch,train_loss,"));
    assert!(lines[2].starts_with("2,"));

    // The competition's test.csv has no label column.
    let unlabelled = dir.path().join("test.csv");
    std::fs::write(
        &unlabelled,
        "id,tweet\n90001,i love sunday\n90002,\"all glorbs should be banned, now\"\n90003,\n",
    )
    .unwrap();
    let out = dir.path().join("pred.csv");
    run_ok(
        rnnsweep()
            .args(["predict", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&unlabelled)
            .arg("--out")
            .arg(&out),
    );
    let pred = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<Vec<&str>> = pred.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], vec!["id", "probability", "label"]);
    assert_eq!(rows.len(), 4);
    for (row, id) in rows[1..].iter().zip(["90001", "90002", "90003"]) {
        assert_eq!(row[0], id);
        let p: f32 = row[1].parse().unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert_eq!(row[2], if p >= 0.5 { "1" } else { "0" });
    }
}

#[test]
fn bad_settings_fail_before_training_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_head(dir.path(), 50);
    let o = rnnsweep()
        .args(["train", "--data"])
        .arg(&data)
        .args(["--set", "optimizer.name=adamm", "--out"])
        .arg(dir.path().join("m"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8(o.stderr).unwrap();
    assert!(
        stderr.starts_with("error: --set: unknown variant `adamm`"),
        "{stderr}"
    );
    assert!(!dir.path().join("m").exists());
}

/// `id,probability,label` rows of a `predict` output.
fn predictions(path: &std::path::Path) -> Vec<(String, f64, u8)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_ensemble_averages_its_members_at_a_threshold_chosen_on_unseen_rows() {
    let dir = tempfile::tempdir().unwrap();
    let spec = real_spec(dir.path());
    // The spec's recipe: a threshold chosen on calibration rows, and a 2-model ensemble.
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "training: {epochs: 2,",
        "final: {ensemble: 2, selection: top}\ntraining: {threshold: {mode: max_f1}, calibration_split: 0.2, epochs: 2,",
    );
    std::fs::write(&spec, text).unwrap();
    run_ok(rnnsweep().arg("run").arg(&spec));
    let db = dir.path().join("out/real.db");
    let ens = dir.path().join("ens");
    let out = run_ok(
        rnnsweep()
            .arg("best")
            .arg(&db)
            .arg("--retrain")
            .arg("--out")
            .arg(&ens),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ensemble of 2 written"), "{stdout}");
    assert!(
        stdout.contains("the best by rank (selection: top)"),
        "{stdout}"
    );
    // Greedy selection (the default) keeps adding only while the validation AP rises.
    let greedy = dir.path().join("greedy");
    let out = run_ok(
        rnnsweep()
            .arg("best")
            .arg(&db)
            .args([
                "--retrain",
                "--ensemble",
                "3",
                "--selection",
                "greedy",
                "--out",
            ])
            .arg(&greedy),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("chosen greedily on the trials' validation predictions"),
        "{text}"
    );
    let aps: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("validation AP of the average so far ").nth(1))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert!(
        !aps.is_empty() && aps.windows(2).all(|w| w[1] >= w[0]),
        "{text}"
    );
    // "member K of N" counts the members selection chose, not the 3 asked for (whether the
    // members train in this process or print through their slots' processes).
    let chosen = aps.len();
    let mut numbered: Vec<(usize, usize)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("member "))
        .filter_map(|l| {
            let (k, rest) = l.split_once(" of ")?;
            let n = rest.split(|c: char| !c.is_ascii_digit()).next()?;
            Some((k.parse().ok()?, n.parse().ok()?))
        })
        .collect();
    numbered.dedup();
    assert_eq!(
        numbered,
        (1..=chosen).map(|k| (k, chosen)).collect::<Vec<_>>(),
        "{text}"
    );
    // Retraining holds no validation rows back, so its epoch lines have no validation columns
    // (they used to print `val_loss NaN val_f1 NaN`).
    let epochs: Vec<&str> = text.lines().filter(|l| l.contains("train_loss")).collect();
    assert!(
        !epochs.is_empty()
            && epochs
                .iter()
                .all(|l| !l.contains("NaN") && !l.contains("val_")),
        "{text}"
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ens.join("ensemble.json")).unwrap()).unwrap();
    assert_eq!(meta["members"], serde_json::json!(["member-1", "member-2"]));
    assert_eq!(meta["threshold"]["mode"], "max_f1");
    // 20 % of 600 rows, each class rounded.
    let calibration = meta["threshold"]["calibration_rows"].as_u64().unwrap();
    assert!((119..=121).contains(&calibration), "{calibration}");
    let threshold = meta["threshold"]["value"].as_f64().unwrap();
    let data = dir.path().join("sample.csv");
    let score = |model: &std::path::Path, name: &str, extra: &[&str]| {
        let path = dir.path().join(name);
        run_ok(
            rnnsweep()
                .args(["predict", "--model"])
                .arg(model)
                .arg("--input")
                .arg(&data)
                .arg("--out")
                .arg(&path)
                .args(extra),
        );
        predictions(&path)
    };
    let together = score(&ens, "ens.csv", &[]);
    let one = score(&ens.join("member-1"), "m1.csv", &[]);
    let two = score(&ens.join("member-2"), "m2.csv", &[]);
    assert_eq!(together.len(), 600);
    for ((e, a), b) in together.iter().zip(&one).zip(&two) {
        assert_eq!(e.0, a.0);
        // Printed with 6 decimals.
        assert!((e.1 - (a.1 + b.1) / 2.0).abs() < 2e-6, "{e:?} {a:?} {b:?}");
        assert_eq!(
            e.2,
            u8::from(e.1 >= threshold - 1e-6),
            "{e:?} at {threshold}"
        );
    }
    // Combined in log-odds, the ensemble's probability is that of the members' mean log-odds.
    let logit_dir = dir.path().join("logit");
    run_ok(
        rnnsweep()
            .arg("best")
            .arg(&db)
            .args(["--retrain", "--combine", "logit", "--out"])
            .arg(&logit_dir),
    );
    let logit_meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(logit_dir.join("ensemble.json")).unwrap())
            .unwrap();
    assert_eq!(logit_meta["combine"], "logit");
    assert_eq!(meta["combine"], "probability");
    let combined = score(&logit_dir, "logit.csv", &[]);
    let each = [
        score(&logit_dir.join("member-1"), "logit-1.csv", &[]),
        score(&logit_dir.join("member-2"), "logit-2.csv", &[]),
    ];
    let logit = |p: f64| {
        let p = p.clamp(1e-7, 1.0 - 1e-7);
        (p / (1.0 - p)).ln()
    };
    // Probabilities are printed with 6 decimals, so each member's is known to ±5e-7: the
    // ensemble's must lie between the combinations of the lower and of the upper ends.
    let combine = |shift: f64, row: usize| {
        let mean = each.iter().map(|m| logit(m[row].1 + shift)).sum::<f64>() / 2.0;
        1.0 / (1.0 + (-mean).exp())
    };
    let mut differs = 0;
    for (row, e) in combined.iter().enumerate() {
        let (low, high) = (combine(-5e-7, row), combine(5e-7, row));
        assert!(
            e.1 >= low - 1e-6 && e.1 <= high + 1e-6,
            "row {row}: {e:?} outside {low}..{high}"
        );
        differs += usize::from((e.1 - (each[0][row].1 + each[1][row].1) / 2.0).abs() > 1e-3);
    }
    assert!(differs > 0, "log-odds and probability means never differed");
    // --threshold overrides the ensemble's own.
    let all = score(&ens, "all.csv", &["--threshold", "0"]);
    assert!(all.iter().all(|r| r.2 == 1));
    // Without the spec key or with --ensemble 1: one model.
    let single = dir.path().join("single");
    run_ok(
        rnnsweep()
            .arg("best")
            .arg(&db)
            .args(["--retrain", "--ensemble", "1", "--out"])
            .arg(&single),
    );
    assert!(single.join("threshold.json").is_file() && !single.join("ensemble.json").exists());
}
