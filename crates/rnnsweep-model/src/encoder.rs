//! Texts → the id rows a network reads: one [`View`] per tower (its own tokenizer and
//! sequence length), a row's views padded each to its own length and laid side by side, so
//! everything that moves rows (splits, batches, teachers, prediction) moves every view at once
//! and only the network splits them.

use crate::config::{InputView, ModelConfig, Padding, Truncating};
use crate::tokenizer::{NgramRange, Tokenizer, TokenizerOptions};

/// A rectangular `[rows, len]` matrix of token ids, 0 = padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Padded {
    pub ids: Vec<u32>,
    pub rows: usize,
    pub len: usize,
}

impl Padded {
    /// Real (non-padding) tokens in each row.
    pub fn lengths(&self) -> Vec<usize> {
        (0..self.rows)
            .map(|r| self.row(r).iter().filter(|&&id| id != 0).count())
            .collect()
    }

    pub fn row(&self, r: usize) -> &[u32] {
        &self.ids[r * self.len..(r + 1) * self.len]
    }
}

/// Length of the longest sequence (Keras's default `maxlen`).
pub fn longest(sequences: &[Vec<u32>]) -> usize {
    sequences.iter().map(Vec::len).max().unwrap_or(0)
}

/// Keras `pad_sequences(sequences, maxlen=len, padding, truncating, value=0)`.
pub fn pad_sequences(
    sequences: &[Vec<u32>],
    len: usize,
    padding: Padding,
    truncating: Truncating,
) -> Padded {
    let mut ids = vec![0u32; sequences.len() * len];
    for (r, seq) in sequences.iter().enumerate() {
        let kept: &[u32] = if seq.len() > len {
            match truncating {
                Truncating::Pre => &seq[seq.len() - len..],
                Truncating::Post => &seq[..len],
            }
        } else {
            seq
        };
        let out = &mut ids[r * len..(r + 1) * len];
        match padding {
            Padding::Post => out[..kept.len()].copy_from_slice(kept),
            Padding::Pre => out[len - kept.len()..].copy_from_slice(kept),
        }
    }
    Padded {
        ids,
        rows: sequences.len(),
        len,
    }
}

/// One view of the texts: its tokenizer and the length its rows are padded or cut to.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub input: InputView,
    pub tokenizer: Tokenizer,
    pub sequence_length: usize,
}

/// What a network's tower needs to know of its view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewShape {
    /// The embedding's input size (the tokenizer's id limit).
    pub vocab: usize,
    /// Columns of a row this view takes.
    pub width: usize,
    /// Its tower reads the ids as a bag (see [`InputView::is_bag`]).
    pub bag: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextEncoder {
    /// In the order their ids sit in a row.
    pub views: Vec<View>,
    pub padding: Padding,
    pub truncating: Truncating,
}

/// Which key holds a view's sequence length: `char_sequence_length` for the character view of
/// a model of several views, `ngram_sequence_length` for the n-gram view, `sequence_length`
/// otherwise (so a one-view character model keeps the key it always had).
fn length_key(input: InputView, several: bool) -> &'static str {
    match input {
        InputView::Char if several => "char_sequence_length",
        InputView::Ngram => "ngram_sequence_length",
        _ => "sequence_length",
    }
}

fn length_slot(cfg: &mut ModelConfig, input: InputView, several: bool) -> &mut Option<usize> {
    match length_key(input, several) {
        "char_sequence_length" => &mut cfg.char_sequence_length,
        "ngram_sequence_length" => &mut cfg.ngram_sequence_length,
        _ => &mut cfg.sequence_length,
    }
}

/// A view's sequence length as the configuration gives it (`None` = its longest row);
/// `several` when the model has more than one view.
pub fn configured_length(cfg: &ModelConfig, input: InputView, several: bool) -> Option<usize> {
    match length_key(input, several) {
        "char_sequence_length" => cfg.char_sequence_length,
        "ngram_sequence_length" => cfg.ngram_sequence_length,
        _ => cfg.sequence_length,
    }
}

impl TextEncoder {
    /// Fits each view's tokenizer on `texts` (Keras's `fit_on_texts`) and takes its sequence
    /// length from the configuration, or the longest tokenized text.
    pub fn fit(cfg: &ModelConfig, texts: &[&str]) -> Self {
        Self::fit_encode(cfg, texts).0
    }

    /// [`TextEncoder::fit`], with `texts` encoded: each text is tokenized once per view.
    pub fn fit_encode(cfg: &ModelConfig, texts: &[&str]) -> (Self, Padded) {
        let inputs = cfg.inputs.views(&cfg.tokenizer);
        let several = inputs.len() > 1;
        let (views, padded): (Vec<View>, Vec<Padded>) = inputs
            .into_iter()
            .map(|input| {
                let tokenizer = Tokenizer::fit_with(
                    Some(cfg.max_words),
                    &options_for(cfg, input),
                    texts.iter().copied(),
                );
                let sequences = tokenizer.texts_to_sequences(texts.iter().copied());
                let sequence_length = configured_length(cfg, input, several)
                    .unwrap_or_else(|| longest(&sequences))
                    .max(1);
                let padded =
                    pad_sequences(&sequences, sequence_length, cfg.padding, cfg.truncating);
                let view = View {
                    input,
                    tokenizer,
                    sequence_length,
                };
                (view, padded)
            })
            .unzip();
        let encoder = Self {
            views,
            padding: cfg.padding,
            truncating: cfg.truncating,
        };
        (encoder, side_by_side(&padded, texts.len()))
    }

    /// The encoder a saved model was trained with: its configuration (with the lengths
    /// [`TextEncoder::record_lengths`] wrote) and one fitted tokenizer per view.
    pub fn from_saved(cfg: &ModelConfig, tokenizers: Vec<Tokenizer>) -> Result<Self, String> {
        let inputs = cfg.inputs.views(&cfg.tokenizer);
        if tokenizers.len() != inputs.len() {
            return Err(format!(
                "{} tokenizer(s) for {} view(s)",
                tokenizers.len(),
                inputs.len()
            ));
        }
        let several = inputs.len() > 1;
        let views = inputs
            .into_iter()
            .zip(tokenizers)
            .map(|(input, tokenizer)| {
                let sequence_length = configured_length(cfg, input, several).ok_or_else(|| {
                    format!(
                        "{} is missing (a saved model always has one)",
                        length_key(input, several)
                    )
                })?;
                Ok(View {
                    input,
                    tokenizer,
                    sequence_length,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            views,
            padding: cfg.padding,
            truncating: cfg.truncating,
        })
    }

    /// The configuration with each view's sequence length written in, as a saved model keeps
    /// it.
    pub fn record_lengths(&self, cfg: ModelConfig) -> ModelConfig {
        let several = self.views.len() > 1;
        let mut cfg = cfg;
        for v in &self.views {
            *length_slot(&mut cfg, v.input, several) = Some(v.sequence_length);
        }
        cfg
    }

    /// The file a saved model keeps view `index`'s tokenizer in: `tokenizer.json` for the
    /// first (so one-view models read as before), `tokenizer.<view>.json` for another.
    pub fn tokenizer_file(&self, index: usize) -> String {
        tokenizer_file(index, self.views[index].input)
    }

    /// Each text's views, padded and side by side: `[rows, Σ sequence lengths]`.
    pub fn encode(&self, texts: &[&str]) -> Padded {
        let padded: Vec<Padded> = self
            .views
            .iter()
            .map(|v| {
                pad_sequences(
                    &v.tokenizer.texts_to_sequences(texts.iter().copied()),
                    v.sequence_length,
                    self.padding,
                    self.truncating,
                )
            })
            .collect();
        side_by_side(&padded, texts.len())
    }

    /// Columns of one encoded row.
    pub fn width(&self) -> usize {
        self.views.iter().map(|v| v.sequence_length).sum()
    }

    pub fn shapes(&self) -> Vec<ViewShape> {
        self.views
            .iter()
            .map(|v| ViewShape {
                vocab: v.tokenizer.id_limit(),
                width: v.sequence_length,
                bag: v.input.is_bag(),
            })
            .collect()
    }

    /// The first view (the only one of a one-view model).
    pub fn first(&self) -> &View {
        &self.views[0]
    }
}

/// Each view's rows laid side by side: row r is view 0's row r, then view 1's.
fn side_by_side(views: &[Padded], rows: usize) -> Padded {
    let len = views.iter().map(|p| p.len).sum();
    let mut ids = Vec::with_capacity(rows * len);
    for r in 0..rows {
        for p in views {
            ids.extend_from_slice(p.row(r));
        }
    }
    Padded { ids, rows, len }
}

/// See [`TextEncoder::tokenizer_file`].
pub fn tokenizer_file(index: usize, input: InputView) -> String {
    if index == 0 {
        "tokenizer.json".into()
    } else {
        format!("tokenizer.{}.json", input.name())
    }
}

/// The tokenizer options of one view: the user's, with character level or n-grams set by the
/// view. The n-gram view has no OOV token: an unknown n-gram is dropped from the bag rather
/// than counted as one shared token.
pub fn options_for(cfg: &ModelConfig, input: InputView) -> TokenizerOptions {
    let user = cfg.tokenizer.clone();
    match input {
        InputView::Word => TokenizerOptions {
            char_level: false,
            ..user
        },
        InputView::Char => TokenizerOptions {
            char_level: true,
            ..user
        },
        InputView::Ngram => TokenizerOptions {
            char_level: false,
            oov_token: None,
            ngrams: Some(NgramRange::DEFAULT),
            ..user
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs() -> Vec<Vec<u32>> {
        vec![vec![1, 2, 3, 4, 5], vec![6, 7], vec![]]
    }

    #[test]
    fn pad_post_truncate_pre() {
        let p = pad_sequences(&seqs(), 3, Padding::Post, Truncating::Pre);
        assert_eq!(p.ids, vec![3, 4, 5, 6, 7, 0, 0, 0, 0]);
    }

    #[test]
    fn pad_post_truncate_post() {
        let p = pad_sequences(&seqs(), 3, Padding::Post, Truncating::Post);
        assert_eq!(p.ids, vec![1, 2, 3, 6, 7, 0, 0, 0, 0]);
    }

    #[test]
    fn pad_pre_truncate_pre() {
        let p = pad_sequences(&seqs(), 3, Padding::Pre, Truncating::Pre);
        assert_eq!(p.ids, vec![3, 4, 5, 0, 6, 7, 0, 0, 0]);
    }

    #[test]
    fn pad_pre_truncate_post() {
        let p = pad_sequences(&seqs(), 3, Padding::Pre, Truncating::Post);
        assert_eq!(p.ids, vec![1, 2, 3, 0, 6, 7, 0, 0, 0]);
        assert_eq!(p.row(1), &[0, 6, 7]);
    }

    #[test]
    fn default_length_is_the_longest() {
        assert_eq!(longest(&seqs()), 5);
        let p = pad_sequences(&seqs(), longest(&seqs()), Padding::Post, Truncating::Pre);
        assert_eq!(p.row(0), &[1, 2, 3, 4, 5]);
        assert_eq!(p.row(1), &[6, 7, 0, 0, 0]);
    }
    use crate::config::Inputs;

    #[test]
    fn two_views_lie_side_by_side_each_padded_to_its_own_length() {
        let cfg = ModelConfig {
            inputs: Inputs::word_and_char(),
            sequence_length: Some(3),
            char_sequence_length: None,
            ..ModelConfig::default()
        };
        let texts = ["ab ab", "b"];
        let e = TextEncoder::fit(&cfg, &texts);
        // Words: "ab" (twice) = 1, "b" = 2. Characters by count: b 3, a 2, space 1 → b=1,
        // a=2, " "=3; the longest text has 5 characters.
        assert_eq!(e.views[0].input, InputView::Word);
        assert_eq!(e.views[1].input, InputView::Char);
        assert_eq!(
            (e.views[0].sequence_length, e.views[1].sequence_length),
            (3, 5)
        );
        let p = e.encode(&["ab ab", "b", "ba"]);
        assert_eq!(p.len, 8);
        assert_eq!(p.row(0), &[1, 1, 0, 2, 1, 3, 2, 1]);
        assert_eq!(p.row(1), &[2, 0, 0, 1, 0, 0, 0, 0]);
        // An unknown word is dropped; its characters are not.
        assert_eq!(p.row(2), &[0, 0, 0, 1, 2, 0, 0, 0]);
        assert_eq!(
            e.shapes(),
            vec![
                ViewShape {
                    vocab: 3,
                    width: 3,
                    bag: false
                },
                ViewShape {
                    vocab: 4,
                    width: 5,
                    bag: false
                }
            ]
        );
    }

    #[test]
    fn the_ngram_view_is_each_words_ngrams_with_its_own_length_and_file() {
        let cfg = ModelConfig {
            inputs: "word+ngram".parse().unwrap(),
            tokenizer: TokenizerOptions {
                oov_token: Some("?".into()),
                ..TokenizerOptions::default()
            },
            ..ModelConfig::default()
        };
        let texts = ["ab ab", "b"];
        let (e, p) = TextEncoder::fit_encode(&cfg, &texts);
        assert_eq!(e.views[1].input, InputView::Ngram);
        // "<ab>" gives <a ab b> <ab ab> <ab> (the whole bounded word once, at length 4);
        // "<b>" gives <b b> <b>. By count, then first seen: b> (3), then <a ab <ab ab> <ab>
        // (2 each), then <b <b>: ids 1 to 8. Words: the OOV token 1, ab 2, b 3. No OOV id
        // for n-grams: the user's oov_token is the word view's.
        assert_eq!(e.views[1].tokenizer.oov_id(), None);
        assert_eq!(e.views[0].tokenizer.oov_id(), Some(1));
        assert_eq!(e.views[1].sequence_length, 12);
        assert_eq!(p.row(1), &[3, 0, 7, 1, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // A saved model's lengths: each view its own key.
        let saved = e.record_lengths(cfg.clone());
        assert_eq!(
            (saved.sequence_length, saved.ngram_sequence_length),
            (Some(2), Some(12))
        );
        assert_eq!(e.tokenizer_file(1), "tokenizer.ngram.json");
        let back = TextEncoder::from_saved(
            &saved,
            e.views.iter().map(|v| v.tokenizer.clone()).collect(),
        )
        .unwrap();
        assert_eq!(back.encode(&texts), p);
        assert!(e.shapes()[1].bag && !e.shapes()[0].bag);
    }

    #[test]
    fn one_view_is_the_tokenizer_and_padding_of_before() {
        let cfg = ModelConfig {
            sequence_length: Some(4),
            ..ModelConfig::default()
        };
        let texts = ["a b c", "c"];
        let e = TextEncoder::fit(&cfg, &texts);
        let tokenizer = Tokenizer::fit_with(Some(cfg.max_words), &cfg.tokenizer, texts);
        assert_eq!(e.views.len(), 1);
        assert_eq!(e.first().tokenizer, tokenizer);
        assert_eq!(
            e.encode(&texts),
            pad_sequences(
                &tokenizer.texts_to_sequences(texts),
                4,
                cfg.padding,
                cfg.truncating
            )
        );
    }
}
