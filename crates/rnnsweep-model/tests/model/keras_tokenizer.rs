//! The tokenizer on the bundled sample must equal Keras's own Tokenizer
//! (fixture from `scripts/keras-tokenizer-fixture.sh`).

use std::path::PathBuf;

use rnnsweep_model::data::{load_csv, Columns, Labels};
use rnnsweep_model::tokenizer::{Tokenizer, TokenizerOptions};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    rows: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    /// Keras `Tokenizer(**options)`.
    options: KerasOptions,
    /// The first `rows` texts were fitted and converted.
    rows: usize,
    vocabulary: Vec<String>,
    counts: Vec<u64>,
    sequences: Vec<Vec<u32>>,
}

#[derive(Deserialize, Debug)]
struct KerasOptions {
    num_words: Option<usize>,
    #[serde(default)]
    char_level: bool,
    #[serde(default = "yes")]
    lower: bool,
    filters: Option<String>,
    oov_token: Option<String>,
}

fn yes() -> bool {
    true
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
    let mut char_level_cases = 0;
    for case in fixture.cases {
        let o = &case.options;
        let options = TokenizerOptions {
            char_level: o.char_level,
            lower: o.lower,
            filters: o
                .filters
                .clone()
                .unwrap_or(TokenizerOptions::default().filters),
            oov_token: o.oov_token.clone(),
            ..TokenizerOptions::default()
        };
        char_level_cases += usize::from(o.char_level);
        let texts: Vec<&str> = table.texts().into_iter().take(case.rows).collect();
        let tok = Tokenizer::fit_with(o.num_words, &options, texts.iter().copied());
        assert_eq!(tok.vocabulary, case.vocabulary, "{o:?}");
        assert_eq!(tok.counts, case.counts, "{o:?}");
        let seqs = tok.texts_to_sequences(texts.iter().copied());
        for (i, (got, want)) in seqs.iter().zip(&case.sequences).enumerate() {
            assert_eq!(got, want, "row {} ({o:?})", i + 1);
        }
        assert_eq!(seqs.len(), case.sequences.len());
    }
    assert_eq!(char_level_cases, 2);
}
