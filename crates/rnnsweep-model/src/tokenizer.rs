//! A word tokenizer that reproduces Keras's `Tokenizer(num_words=N)` with its defaults, so
//! sequences match what the 2021 report's pipeline fed its model.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Keras's default `filters`: each of these characters becomes a space.
pub const KERAS_FILTERS: &str = "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: cannot read or write the tokenizer: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid tokenizer file: {source}")]
    Format {
        path: String,
        source: serde_json::Error,
    },
    #[error("{at}: {message}")]
    Options { at: String, message: String },
}

/// Splits a text the way `keras.preprocessing.text.text_to_word_sequence` does with defaults:
/// lower-case, filter characters to spaces, split on the single space only, drop empties.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    TokenizerOptions::default().tokens(text).into_iter()
}

/// Keras `Tokenizer`'s options besides `num_words`, with Keras's defaults and meanings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerOptions {
    /// Every character (spaces and punctuation included, `filters` not applied) is a token.
    pub char_level: bool,
    pub lower: bool,
    /// Characters replaced by `split` before splitting (word level only).
    pub filters: String,
    /// The separator words are split on.
    pub split: String,
    /// A token for words not in the vocabulary or past `num_words`; it takes index 1.
    /// Without it such words are dropped.
    pub oov_token: Option<String>,
    /// The tokens are each word's character n-grams of these lengths, not the words: the
    /// `ngram` view's tokenizer (see [`char_ngrams`]). Not a Keras option.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ngrams: Option<NgramRange>,
}

/// The n-gram lengths of the `ngram` view, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NgramRange {
    pub min: usize,
    pub max: usize,
}

impl NgramRange {
    /// scikit-learn's `char_wb` 2–5-grams: what the TF-IDF baseline of `scripts/quality.sh`
    /// reads.
    pub const DEFAULT: Self = Self { min: 2, max: 5 };
}

/// A word's character n-grams as scikit-learn's `analyzer="char_wb"` takes them, with `<` and
/// `>` marking the word's ends (Keras's filters remove both, so they are never part of a
/// word): for each length in order, every window of the bounded word; a bounded word shorter
/// than a length is one n-gram of its own, once.
pub fn char_ngrams(word: &str, range: NgramRange, out: &mut Vec<String>) {
    let bounded: Vec<char> = std::iter::once('<')
        .chain(word.chars())
        .chain(std::iter::once('>'))
        .collect();
    for n in range.min..=range.max {
        if bounded.len() <= n {
            out.push(bounded.iter().collect());
            break;
        }
        out.extend(bounded.windows(n).map(|w| w.iter().collect::<String>()));
    }
}

impl Default for TokenizerOptions {
    fn default() -> Self {
        Self {
            char_level: false,
            lower: true,
            filters: KERAS_FILTERS.to_string(),
            split: " ".to_string(),
            oov_token: None,
            ngrams: None,
        }
    }
}

impl TokenizerOptions {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn validate(&self) -> Result<(), TokenizerError> {
        if self.split.is_empty() && !self.char_level {
            return Err(TokenizerError::Options {
                at: "tokenizer.split".into(),
                message: "an empty separator splits nothing (Python's str.split refuses it too)"
                    .into(),
            });
        }
        if let Some(r) = self.ngrams {
            if self.char_level {
                return Err(TokenizerError::Options {
                    at: "tokenizer.ngrams".into(),
                    message: "n-grams are cut from words; leave char_level out".into(),
                });
            }
            if r.min == 0 || r.min > r.max {
                return Err(TokenizerError::Options {
                    at: "tokenizer.ngrams".into(),
                    message: format!(
                        "n-gram lengths {}..{} are not a range of lengths ≥ 1",
                        r.min, r.max
                    ),
                });
            }
        }
        Ok(())
    }

    /// A text's tokens: Keras's `fit_on_texts`/`texts_to_sequences` split.
    pub fn tokens(&self, text: &str) -> Vec<String> {
        let text = if self.lower {
            text.to_lowercase()
        } else {
            text.to_string()
        };
        if self.char_level {
            return text.chars().map(String::from).collect();
        }
        let mut filtered = String::with_capacity(text.len());
        for c in text.chars() {
            if self.filters.contains(c) {
                filtered.push_str(&self.split);
            } else {
                filtered.push(c);
            }
        }
        let words = filtered
            .split(self.split.as_str())
            .filter(|w| !w.is_empty());
        match self.ngrams {
            None => words.map(str::to_string).collect(),
            Some(range) => {
                let mut grams = Vec::new();
                for w in words {
                    char_ngrams(w, range, &mut grams);
                }
                grams
            }
        }
    }
}

/// A fitted vocabulary. Index 0 is reserved for padding; words are numbered from 1 by
/// descending count, ties in first-seen order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tokenizer {
    /// Keep only words whose index is below this (Keras's `num_words`); `None` keeps all.
    pub num_words: Option<usize>,
    /// Every word seen in `fit`, in index order (`vocabulary[0]` has index 1).
    pub vocabulary: Vec<String>,
    /// Occurrence counts, parallel to `vocabulary` (0 for the `oov_token`).
    pub counts: Vec<u64>,
    /// Absent in tokenizers saved before there were options: Keras's defaults.
    #[serde(default, skip_serializing_if = "TokenizerOptions::is_default")]
    pub options: TokenizerOptions,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

impl Tokenizer {
    /// Keras `Tokenizer(num_words)` with the default options, fitted on `texts`.
    pub fn fit<'a>(num_words: Option<usize>, texts: impl IntoIterator<Item = &'a str>) -> Self {
        Self::fit_with(num_words, &TokenizerOptions::default(), texts)
    }

    pub fn fit_with<'a>(
        num_words: Option<usize>,
        options: &TokenizerOptions,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut position: HashMap<String, usize> = HashMap::new();
        let mut seen: Vec<(String, u64)> = Vec::new();
        for text in texts {
            for word in options.tokens(text) {
                match position.get(&word) {
                    Some(&i) => seen[i].1 += 1,
                    None => {
                        position.insert(word.clone(), seen.len());
                        seen.push((word, 1));
                    }
                }
            }
        }
        // Stable: equal counts keep first-seen order, as Python's list.sort does.
        seen.sort_by_key(|w| std::cmp::Reverse(w.1));
        // Keras puts the OOV token first (index 1). Should it also occur as a word, that later
        // entry wins the index, as in Keras's `dict(zip(...))`.
        if let Some(oov) = &options.oov_token {
            seen.insert(0, (oov.clone(), 0));
        }
        let (vocabulary, counts) = seen.into_iter().unzip();
        let mut tokenizer = Self {
            num_words,
            vocabulary,
            counts,
            options: options.clone(),
            index: HashMap::new(),
        };
        tokenizer.rebuild_index();
        tokenizer
    }

    fn rebuild_index(&mut self) {
        self.index = self
            .vocabulary
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32 + 1))
            .collect();
    }

    /// Index of a word as `word_index` in Keras (ignores `num_words`).
    pub fn word_index(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }

    /// The id unknown words and words past `num_words` become (`None`: they are dropped).
    pub fn oov_id(&self) -> Option<u32> {
        self.options
            .oov_token
            .as_deref()
            .and_then(|t| self.word_index(t))
    }

    /// Largest id that `texts_to_sequence` can produce, plus one: the embedding's input size.
    pub fn id_limit(&self) -> usize {
        let all = self.vocabulary.len() + 1;
        self.num_words.map_or(all, |n| n.min(all))
    }

    /// Keras `texts_to_sequences` for one text: unknown words and words at or past
    /// `num_words` become the OOV token's index, or are dropped without one.
    pub fn text_to_sequence(&self, text: &str) -> Vec<u32> {
        let limit = self.num_words.unwrap_or(usize::MAX);
        let oov = self.oov_id();
        self.options
            .tokens(text)
            .iter()
            .filter_map(|w| match self.word_index(w) {
                Some(i) if (i as usize) < limit => Some(i),
                _ => oov,
            })
            .collect()
    }

    pub fn texts_to_sequences<'a>(
        &self,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Vec<Vec<u32>> {
        texts
            .into_iter()
            .map(|t| self.text_to_sequence(t))
            .collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a tokenizer always serialises")
    }

    pub fn from_json(text: &str, path: &str) -> Result<Self, TokenizerError> {
        let mut tokenizer: Self =
            serde_json::from_str(text).map_err(|source| TokenizerError::Format {
                path: path.to_string(),
                source,
            })?;
        tokenizer.rebuild_index();
        Ok(tokenizer)
    }

    /// Keras's own tokenizer file (`Tokenizer.to_json()`, read back by
    /// `keras.preprocessing.text.tokenizer_from_json`; an n-gram tokenizer adds `ngrams`) with
    /// `num_words` as given: the word
    /// index, counts and options. Keras keeps per-document counts too (only its tf-idf
    /// matrices use them); they are not recorded here, so `word_docs` and `index_docs` are empty.
    pub fn to_keras_json(&self, num_words: Option<usize>) -> String {
        let mut word_index = serde_json::Map::new();
        let mut index_word = serde_json::Map::new();
        let mut word_counts = serde_json::Map::new();
        for (k, (word, count)) in self.vocabulary.iter().zip(&self.counts).enumerate() {
            // The index Keras's dict(zip(...)) keeps: a later duplicate wins.
            let index = self.word_index(word).unwrap_or(k as u32 + 1);
            word_index.insert(word.clone(), index.into());
            index_word.insert((k + 1).to_string(), word.clone().into());
            if self.options.oov_token.as_deref() != Some(word.as_str()) || *count > 0 {
                word_counts.insert(word.clone(), (*count).into());
            }
        }
        let text = |m: serde_json::Map<String, serde_json::Value>| {
            serde_json::Value::String(serde_json::Value::Object(m).to_string())
        };
        let o = &self.options;
        let mut keras = serde_json::json!({
            "class_name": "Tokenizer",
            "config": {
                "num_words": num_words,
                "filters": o.filters,
                "lower": o.lower,
                "split": o.split,
                "char_level": o.char_level,
                "oov_token": o.oov_token,
                "document_count": 0,
                "word_counts": text(word_counts),
                "word_docs": "{}",
                "index_docs": "{}",
                "index_word": text(index_word),
                "word_index": text(word_index),
            }
        });
        // Not a Keras option: Keras refuses the file (an unknown keyword) rather than reading
        // n-grams as words.
        if let Some(r) = o.ngrams {
            keras["config"]["ngrams"] = serde_json::json!([r.min, r.max]);
        }
        keras.to_string()
    }

    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        std::fs::write(path, self.to_json()).map_err(|source| TokenizerError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Self, TokenizerError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::from_json(&text, &shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<String> {
        words(text).collect()
    }

    #[test]
    fn filters_become_spaces_and_only_the_space_splits() {
        assert_eq!(split("Hello, World!!"), vec!["hello", "world"]);
        assert_eq!(split("a--b...c"), vec!["a", "b", "c"]);
        assert_eq!(split("@user #Tag it's"), vec!["user", "tag", "it's"]);
        assert_eq!(split("tab\there\nnewline"), vec!["tab", "here", "newline"]);
        // Repeated spaces give empty pieces, which are dropped.
        assert_eq!(split("  many    spaces  "), vec!["many", "spaces"]);
        // \r and the no-break space are not split on: they stay inside tokens.
        assert_eq!(split("line\rend"), vec!["line\rend"]);
        assert_eq!(split("non\u{a0}break"), vec!["non\u{a0}break"]);
        assert_eq!(split("émoji 😀!x"), vec!["émoji", "😀", "x"]);
    }

    #[test]
    fn unicode_upper_case_is_lowered() {
        assert_eq!(
            split("ÉCOLE ΣΟΦΟΣ İ"),
            vec!["école", "σοφο\u{3c2}", "i\u{307}"]
        );
    }

    #[test]
    fn indices_follow_count_then_first_seen_order() {
        // counts: b=3, a=2, c=2, d=1; a was seen before c.
        let t = Tokenizer::fit(None, ["b a", "c b", "a c b d"]);
        assert_eq!(t.vocabulary, vec!["b", "a", "c", "d"]);
        assert_eq!(t.counts, vec![3, 2, 2, 1]);
        assert_eq!(t.word_index("b"), Some(1));
        assert_eq!(t.word_index("a"), Some(2));
        assert_eq!(t.word_index("c"), Some(3));
        assert_eq!(t.word_index("d"), Some(4));
        assert_eq!(t.text_to_sequence("d c b a unknown"), vec![4, 3, 1, 2]);
    }

    #[test]
    fn num_words_keeps_indices_strictly_below_it() {
        let t = Tokenizer::fit(Some(3), ["b a", "c b", "a c b d"]);
        // Only b (1) and a (2) survive: at most num_words - 1 distinct ids.
        assert_eq!(t.text_to_sequence("d c b a"), vec![1, 2]);
        assert_eq!(t.id_limit(), 3);
        // The vocabulary is still complete, as Keras's word_index is.
        assert_eq!(t.word_index("d"), Some(4));
        let all = Tokenizer::fit(Some(100), ["x y"]);
        assert_eq!(all.id_limit(), 3);
    }

    #[test]
    fn oov_token_takes_index_one_and_stands_for_unknown_and_cut_words() {
        let options = TokenizerOptions {
            oov_token: Some("<unk>".into()),
            ..TokenizerOptions::default()
        };
        let t = Tokenizer::fit_with(Some(3), &options, ["b a", "c b", "a c b d"]);
        assert_eq!(t.vocabulary, vec!["<unk>", "b", "a", "c", "d"]);
        // b=2 is kept (< 3); a=3, c=4, d=5 and unknown words become 1.
        assert_eq!(t.text_to_sequence("d c b a zzz"), vec![1, 1, 2, 1, 1]);
    }

    #[test]
    fn char_level_keeps_every_character_and_lower_false_keeps_case() {
        let options = TokenizerOptions {
            char_level: true,
            lower: false,
            ..TokenizerOptions::default()
        };
        let t = Tokenizer::fit_with(None, &options, ["aB a!"]);
        // a=2, then B, ' ', '!' once each in first-seen order; filters do not apply.
        assert_eq!(t.vocabulary, vec!["a", "B", " ", "!"]);
        assert_eq!(t.text_to_sequence("Ba?"), vec![2, 1]);
        let split = TokenizerOptions {
            filters: String::new(),
            split: ",".into(),
            ..TokenizerOptions::default()
        };
        assert_eq!(split.tokens("A b,,C!"), vec!["a b", "c!"]);
    }

    #[test]
    fn ngrams_are_each_words_bounded_windows_as_char_wb_takes_them() {
        let options = TokenizerOptions {
            ngrams: Some(NgramRange { min: 2, max: 4 }),
            ..TokenizerOptions::default()
        };
        // "<ab>": three 2-grams, two 3-grams, then the whole bounded word once (its length
        // is 4); "<c>" is shorter than 4, so it is taken once at length 3 and no longer.
        assert_eq!(
            options.tokens("AB, c"),
            vec!["<a", "ab", "b>", "<ab", "ab>", "<ab>", "<c", "c>", "<c>"]
        );
        let t = Tokenizer::fit_with(None, &options, ["ab ab", "abc"]);
        // "<a", "ab" and "<ab" occur three times, "b>", "ab>" and "<ab>" twice ("<abc>" has
        // no "b>"), the rest once; unknown n-grams are dropped.
        assert_eq!(
            &t.vocabulary[..6],
            &["<a", "ab", "<ab", "b>", "ab>", "<ab>"]
        );
        assert_eq!(t.text_to_sequence("ab zz"), vec![1, 2, 4, 3, 5, 6]);
        let back = Tokenizer::from_json(&t.to_json(), "t.json").unwrap();
        assert_eq!(back.text_to_sequence("ab"), t.text_to_sequence("ab"));
        let err = TokenizerOptions {
            char_level: true,
            ..options.clone()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("tokenizer.ngrams"), "{err}");
    }

    #[test]
    fn json_round_trip_keeps_behaviour() {
        let t = Tokenizer::fit(Some(4), ["the cat", "the dog", "a cat"]);
        let back = Tokenizer::from_json(&t.to_json(), "mem").unwrap();
        assert_eq!(back, t);
        assert_eq!(
            back.text_to_sequence("the cat a dog"),
            t.text_to_sequence("the cat a dog")
        );
        let err = Tokenizer::from_json("{", "tok.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("tok.json: not a valid tokenizer file"),
            "{err}"
        );
    }
}
