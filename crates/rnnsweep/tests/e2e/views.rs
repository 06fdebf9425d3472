//! One network over several views of a text (`inputs: word+char`, `word+ngram`): searched like
//! any other key, trained, saved with a tokenizer per view, predicting from a file — through the
//! binary.

use serde_json::Value;

use crate::common::*;
use rnnsweep_search::store::TrialState;

/// `rnnsweep train` on the sample with a small network and `sets`; its stdout.
fn train_views(dir: &std::path::Path, model: &std::path::Path, sets: &[&str]) -> String {
    let mut cmd = rnnsweep();
    cmd.arg("train").arg("--data").arg(dir.join("sample.csv"));
    for set in ["epochs=2", "embedding_dim=8", "lstm_units=[8]", "dense=[]"]
        .iter()
        .chain(sets)
    {
        cmd.args(["--set", set]);
    }
    let o = run_ok(cmd.arg("--out").arg(model));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `rnnsweep export-model` of `model` to `out`; its stdout.
fn export_views(model: &std::path::Path, out: &std::path::Path) -> String {
    let o = run_ok(
        rnnsweep()
            .args(["export-model", "--model"])
            .arg(model)
            .arg("--out")
            .arg(out),
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The JSON file at `path`.
fn json_file(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_word_and_char_network_is_searched_trained_saved_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    real_spec(dir);
    let spec = dir.join("views.yaml");
    std::fs::write(
        &spec,
        "name: views\nstorage: out/views.db\ndata: {train: sample.csv}\nmethod: grid\nseed: 1\n\
         metric: {name: val_pr_auc, goal: maximize}\n\
         training: {epochs: 2, batch_size: 64, batch_norm_momentum: 0.9, embedding_dim: 8, \
         lstm_units: [8], dense: [{units: 8}], pooling: max, batching: {mode: bucket}}\n\
         parameters:\n  inputs: {values: [word, char, word+char, word+ngram]}\n  cell: {values: [lstm, gru]}\n",
    )
    .unwrap();
    let o = run_ok(rnnsweep().arg("run").arg(&spec).arg("--dry-run"));
    let plan = String::from_utf8_lossy(&o.stdout);
    // The dry run prices each trial with its own views: a two-tower trial costs more than
    // either view's own network.
    let planned: std::collections::BTreeMap<&str, &str> = plan
        .lines()
        .filter_map(|l| l.trim().strip_prefix("trial ")?.split_once(": "))
        .filter(|(_, rest)| rest.starts_with("cell="))
        .collect();
    let flops = |n: &str| -> f64 {
        let line = plan
            .lines()
            .find(|l| l.trim().starts_with(&format!("trial {n}: ")) && l.contains("FLOP"))
            .unwrap();
        let amount = line
            .split(", ")
            .nth(1)
            .unwrap()
            .split(' ')
            .collect::<Vec<_>>();
        let scale = match amount[1] {
            "GFLOP" => 1e9,
            "MFLOP" => 1e6,
            "kFLOP" => 1e3,
            _ => 1.0,
        };
        amount[0].parse::<f64>().unwrap() * scale
    };
    // The dry run lists the first five of the grid's eight points.
    assert!(planned.len() >= 5, "{plan}");
    let cost = |cell: &str, inputs: &str| {
        planned
            .iter()
            .find(|(_, p)| p.starts_with(cell) && p.ends_with(&format!("inputs={inputs}")))
            .map(|(n, _)| flops(n))
    };
    let mut compared = 0;
    for cell in ["cell=lstm", "cell=gru"] {
        // The n-gram bag adds a little to the word network; a character tower adds more than
        // any single view costs.
        for (more, less) in [
            ("word+char", "word+ngram"),
            ("word+ngram", "word"),
            ("word+char", "word"),
            ("word+char", "char"),
        ] {
            if let (Some(a), Some(b)) = (cost(cell, more), cost(cell, less)) {
                assert!(a > b, "{cell}: {more} against {less}: {plan}");
                compared += usize::from(more == "word+ngram" || less == "word+ngram");
            }
        }
    }
    assert!(compared >= 2, "{plan}");
    assert!(
        plan.contains("words /") && plan.contains("characters") && plan.contains("n-grams"),
        "{plan}"
    );

    run_ok(rnnsweep().arg("run").arg(&spec));
    let trials = trials(&dir.join("out/views.db"), "views");
    assert_eq!(count(&trials, TrialState::Complete), 8);
    let mut seen: Vec<(String, String)> = trials
        .iter()
        .map(|t| {
            let p = t.param_values();
            assert!(t.value.is_some_and(f64::is_finite), "{p:?}");
            (
                p["inputs"].as_str().unwrap().to_string(),
                p["cell"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("char", "gru"),
            ("char", "lstm"),
            ("word", "gru"),
            ("word", "lstm"),
            ("word+char", "gru"),
            ("word+char", "lstm"),
            ("word+ngram", "gru"),
            ("word+ngram", "lstm")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // The same network trained by hand, saved with both tokenizers, predicting a file.
    let model = dir.join("model");
    let stdout = train_views(
        dir,
        &model,
        &["inputs=[word, char]", "char_sequence_length=60", "cell=gru"],
    );
    assert!(
        stdout.contains("word view: sequence length")
            && stdout.contains("char view: sequence length 60"),
        "{stdout}"
    );
    assert!(model.join("tokenizer.json").is_file());
    let chars: Value = json_file(&model.join("tokenizer.char.json"));
    assert_eq!(chars["options"]["char_level"], true, "{chars}");
    let config: Value = json_file(&model.join("config.json"));
    assert_eq!(config["inputs"], "word+char");
    assert_eq!(config["char_sequence_length"], 60);
    assert!(config["sequence_length"].as_u64().unwrap() > 1, "{config}");

    let input = dir.join("texts.csv");
    // Row 2's words are all unknown to the tokenizer; its characters are not.
    std::fs::write(
        &input,
        "id,tweet\n1,love this so much\n2,zzqx qqzx xxzq\n3,\n",
    )
    .unwrap();
    let text = predict_text(&model, &input, &dir.join("predictions.csv"));
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{text}");
    let p: Vec<f64> = rows
        .iter()
        .map(|r| r.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(p.iter().all(|p| (0.0..=1.0).contains(p)), "{text}");
    assert_ne!(
        p[1], p[2],
        "the character tower reads the unknown words: {text}"
    );

    // ONNX: two inputs, a tokenizer file each (check-onnx.sh scores such models with
    // onnxruntime against `predict`).
    let out = dir.join("deploy/model.onnx");
    let stdout = export_views(&model, &out);
    assert!(
        stdout.contains("tokenizer of the input `char_ids`:")
            && stdout.contains("model.char.tokenizer.json"),
        "{stdout}"
    );
    assert!(out.is_file() && dir.join("deploy/model.tokenizer.json").is_file());
    let chars: Value = json_file(&dir.join("deploy/model.char.tokenizer.json"));
    assert_eq!(chars["config"]["char_level"], true);
}

#[test]
fn a_word_and_ngram_network_reads_the_ngrams_of_unknown_words() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    real_spec(dir);
    let model = dir.join("model");
    let stdout = train_views(
        dir,
        &model,
        &["inputs=ngram+word", "pooling=max", "view_dropout=0.5"],
    );
    assert!(
        stdout.contains("word view: sequence length")
            && stdout.contains("ngram view: sequence length"),
        "{stdout}"
    );
    let ngrams: Value = json_file(&model.join("tokenizer.ngram.json"));
    assert_eq!(
        ngrams["options"]["ngrams"],
        serde_json::json!({"min": 2, "max": 5})
    );
    assert!(ngrams["vocabulary"].as_array().unwrap().iter().all(|g| g
        .as_str()
        .unwrap()
        .chars()
        .count()
        <= 5));
    let config: Value = json_file(&model.join("config.json"));
    assert_eq!(config["inputs"], "word+ngram");
    // The longest tweet's n-grams: far more than its words.
    assert!(
        config["ngram_sequence_length"].as_u64().unwrap()
            > 4 * config["sequence_length"].as_u64().unwrap(),
        "{config}"
    );

    // "lovelove" is no word of the sample, but its n-grams ("<lo", "love", …) are.
    let input = dir.join("texts.csv");
    std::fs::write(&input, "id,tweet\n1,lovelove\n2,\n3,zzqx\n").unwrap();
    let text = predict_text(&model, &input, &dir.join("predictions.csv"));
    let p: Vec<f64> = text
        .lines()
        .skip(1)
        .map(|r| r.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(p.len(), 3, "{text}");
    assert_ne!(p[0], p[1], "the n-gram tower reads an unknown word: {text}");

    let out = dir.join("deploy/model.onnx");
    let stdout = export_views(&model, &out);
    assert!(
        stdout.contains("tokenizer of the input `ngram_ids`:")
            && stdout.contains("model.ngram.tokenizer.json"),
        "{stdout}"
    );
    let keras: Value = json_file(&dir.join("deploy/model.ngram.tokenizer.json"));
    assert_eq!(keras["config"]["ngrams"], serde_json::json!([2, 5]));
}
