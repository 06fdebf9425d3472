//! After a sweep: plots, exports, the best model retrained, a submission with flagged tweets.

use crate::common::*;

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
