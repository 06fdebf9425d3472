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
