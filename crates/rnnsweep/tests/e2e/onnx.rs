//! `export-model`: what a user sees on the command line. That the ONNX file computes what
//! `predict` computes is checked with onnxruntime itself by `scripts/check-onnx.sh`.

use crate::common::*;

#[test]
fn a_retrained_ensemble_with_list_choices_exports_with_its_tokenizer_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec = real_spec(dir.path());
    // A list-valued choice is stored as Optuna's JSON text; retraining must read it as a list.
    let text = std::fs::read_to_string(&spec).unwrap()
        + "  lstm_units: {values: [[6], [4, 4]]}\n  pooling: {values: [attention, max]}\n";
    std::fs::write(&spec, text).unwrap();
    run_ok(rnnsweep().arg("run").arg(&spec));
    let ens = dir.path().join("ens");
    run_ok(
        rnnsweep()
            .arg("best")
            .arg(dir.path().join("out/real.db"))
            .args([
                "--retrain",
                "--epochs",
                "1",
                "--ensemble",
                "2",
                "--selection",
                "top",
            ])
            .args(["--combine", "logit", "--out"])
            .arg(&ens),
    );
    for member in ["member-1", "member-2"] {
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(ens.join(member).join("config.json")).unwrap(),
        )
        .unwrap();
        let units = config["lstm_units"].as_array().unwrap();
        assert!(
            units == &[serde_json::json!(6)]
                || units == &[serde_json::json!(4), serde_json::json!(4)],
            "{config}"
        );
    }
    let out = dir.path().join("deploy/ens.onnx");
    let o = run_ok(
        rnnsweep()
            .args(["export-model", "--model"])
            .arg(&ens)
            .arg("--out")
            .arg(&out),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("(2 members,"), "{stdout}");
    assert!(out.is_file());
    let tokenizer: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("deploy/ens.tokenizer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(tokenizer["class_name"], "Tokenizer");
    // The ONNX file names the tokenizer file and the combination in its metadata.
    let bytes = std::fs::read(&out).unwrap();
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"ens.tokenizer.json"));
    assert!(has(b"rnnsweep.combine"));
    assert!(has(b"bidirectional"));
}

#[test]
fn export_model_refuses_an_out_file_that_is_not_onnx_and_a_missing_model() {
    let dir = tempfile::tempdir().unwrap();
    let o = rnnsweep()
        .args(["export-model", "--model"])
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("model.bin"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("model.bin: name the file with `.onnx`"),
        "{stderr}"
    );
    let o = rnnsweep()
        .args(["export-model", "--model"])
        .arg(dir.path().join("nothing"))
        .arg("--out")
        .arg(dir.path().join("m.onnx"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("--model") && stderr.contains("nothing"),
        "{stderr}"
    );
    assert!(stderr.lines().count() <= 2, "{stderr}");
    assert!(!dir.path().join("m.onnx").exists());
}
