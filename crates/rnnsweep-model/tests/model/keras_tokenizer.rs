//! The tokenizer on the bundled sample must equal Keras's own Tokenizer
//! (fixture from `scripts/keras-tokenizer-fixture.sh`).

use std::path::PathBuf;

use rnnsweep_model::data::{load_csv, Columns, Labels};
use rnnsweep_model::tokenizer::Tokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    rows: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    num_words: usize,
    vocabulary: Vec<String>,
    counts: Vec<u64>,
    sequences: Vec<Vec<u32>>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn sample_tokens_equal_keras() {
    let fixture: Fixture = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("crates/rnnsweep-model/tests/fixtures/sample-keras-tokenizer.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let table = load_csv(
        &repo().join("experiments/data/sample.csv"),
        &Columns::default(),
        Labels::Required,
    )
    .unwrap();
    assert_eq!(table.rows.len(), fixture.rows);
    assert!(
        table.invalid_utf8_fields > 0,
        "the sample should exercise lossy decoding"
    );
    for case in fixture.cases {
        let tok = Tokenizer::fit(Some(case.num_words), table.texts());
        assert_eq!(
            tok.vocabulary, case.vocabulary,
            "num_words={}",
            case.num_words
        );
        assert_eq!(tok.counts, case.counts, "num_words={}", case.num_words);
        let seqs = tok.texts_to_sequences(table.texts());
        for (i, (got, want)) in seqs.iter().zip(&case.sequences).enumerate() {
            assert_eq!(got, want, "row {} (num_words={})", i + 1, case.num_words);
        }
        assert_eq!(seqs.len(), case.sequences.len());
    }
}
