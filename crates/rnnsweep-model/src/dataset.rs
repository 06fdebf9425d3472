//! From a labelled table to what the network sees: the encoder fitted on the file (its
//! tokenizers and padding, [`crate::encoder`]), a seeded stratified split, class weights and seeded shuffled mini-batches
//! ([`prepare`] does it all).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::config::ModelConfig;
use crate::data::Table;
use crate::encoder::{Padded, TextEncoder};
use crate::error::{ModelError, Result};
use crate::seed::mix;

/// Row indices of a train/validation split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
}

/// Splits each class separately so both parts keep the class shares (to within one row);
/// the same seed always gives the same split.
pub fn stratified_split(labels: &[u8], validation_fraction: f64, seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train = Vec::new();
    let mut validation = Vec::new();
    // Classes 0 and 1 always come first, so a binary split is what it was before K classes.
    let classes = labels.iter().copied().max().unwrap_or(0).max(1);
    for class in 0..=classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        members.shuffle(&mut rng);
        let n_val = (members.len() as f64 * validation_fraction).round() as usize;
        validation.extend_from_slice(&members[..n_val]);
        train.extend_from_slice(&members[n_val..]);
    }
    // Interleave classes again: training order is reshuffled per epoch anyway, but a
    // validation set ordered by class would make order-dependent bugs invisible.
    train.shuffle(&mut rng);
    validation.shuffle(&mut rng);
    Split { train, validation }
}

/// The report's class weights: `max(count) / count` for classes 0 and 1 (1.0 for an absent class).
pub fn class_weights(labels: &[u8]) -> [f32; 2] {
    let counts = [
        labels.iter().filter(|&&l| l == 0).count(),
        labels.iter().filter(|&&l| l == 1).count(),
    ];
    let max = counts[0].max(counts[1]) as f32;
    counts.map(|c| if c == 0 { 1.0 } else { max / c as f32 })
}

/// scikit-learn's `compute_class_weight("balanced")`: `rows / (classes · count)` per class
/// (1.0 for a class with no rows), the multi-class weighting.
pub fn balanced_class_weights(labels: &[u8], classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    for &l in labels {
        if let Some(c) = counts.get_mut(usize::from(l)) {
            *c += 1;
        }
    }
    let rows = labels.len() as f64;
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                1.0
            } else {
                (rows / (classes as f64 * c as f64)) as f32
            }
        })
        .collect()
}

/// The training weights of a task: the report's `max / count` for two classes (so binary
/// studies train exactly as before), scikit-learn's balanced weights for more.
pub fn task_class_weights(labels: &[u8], classes: usize) -> Vec<f32> {
    if classes <= 2 {
        class_weights(labels).to_vec()
    } else {
        balanced_class_weights(labels, classes)
    }
}

/// Mini-batches of row indices, shuffled by a generator derived from `(seed, epoch)` so an
/// epoch's order can be recomputed after a resume without saving generator state.
pub fn epoch_batches(
    rows: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let mut order = rows.to_vec();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, epoch as u64, 0xBA7C));
    order.shuffle(&mut rng);
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Length bucketing: the rows in the same seeded order as [`epoch_batches`], then each pool of
/// `bucket_size` batches sorted by length (ties keep that order) and cut into batches, and the
/// batches in a seeded random order. Batches of similar lengths waste little on padding.
pub fn bucket_batches(
    rows: &[usize],
    lengths: &[usize],
    batch_size: usize,
    bucket_size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut order = rows.to_vec();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, epoch as u64, 0xBA7C));
    order.shuffle(&mut rng);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for pool in order.chunks(batch_size * bucket_size.max(1)) {
        let mut pool = pool.to_vec();
        pool.sort_by_key(|&r| std::cmp::Reverse(lengths[r]));
        batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
        seed,
        epoch as u64,
        0xB0C7,
    )));
    batches
}

/// Padded rows with their labels.
#[derive(Debug, Clone)]
pub struct Examples {
    pub ids: Padded,
    /// Class indices; in a multi-label task each row's stratum (its rarest label, or the
    /// label count for a row with none), which only the splits use.
    pub labels: Vec<u8>,
    /// A multi-label task's 0/1 targets, row-major `[rows, labels]` (empty otherwise).
    pub targets: Vec<u8>,
    /// Each example's row in the table it came from (the training file, or the
    /// validation file when there is one), for ids in prediction files.
    pub source_rows: Vec<usize>,
}

/// A table's labels as the splits and the trainer take them.
struct RowLabels {
    labels: Vec<u8>,
    targets: Vec<u8>,
    /// Targets per row (0 unless multi-label).
    width: usize,
}

impl RowLabels {
    fn of(table: &Table) -> Self {
        if !table.multi_label {
            return Self {
                labels: table.labels(),
                targets: Vec::new(),
                width: 0,
            };
        }
        let width = table.classes.len();
        let counts = table.class_counts();
        // Stratified by each row's rarest label, so every label keeps its share in each part
        // to within a few rows (a row with none is its own stratum).
        let labels = table
            .rows
            .iter()
            .map(|r| {
                (0..width)
                    .filter(|&c| r.targets[c] == 1)
                    .min_by_key(|&c| counts[c])
                    .unwrap_or(width) as u8
            })
            .collect();
        Self {
            labels,
            targets: table.targets(),
            width,
        }
    }
}

impl Examples {
    fn select(all: &Padded, labels: &RowLabels, rows: &[usize]) -> Self {
        let mut ids = Vec::with_capacity(rows.len() * all.len);
        for &r in rows {
            ids.extend_from_slice(all.row(r));
        }
        let w = labels.width;
        Self {
            ids: Padded {
                ids,
                rows: rows.len(),
                len: all.len,
            },
            labels: rows.iter().map(|&r| labels.labels[r]).collect(),
            targets: rows
                .iter()
                .flat_map(|&r| labels.targets[r * w..(r + 1) * w].iter().copied())
                .collect(),
            source_rows: rows.to_vec(),
        }
    }
}

/// Everything the trainer needs from a labelled file.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The fitted tokenizers and sequence lengths: a row's columns.
    pub encoder: TextEncoder,
    pub train: Examples,
    pub validation: Examples,
    /// Training rows held out to choose the decision threshold (empty when it is fixed).
    pub calibration: Examples,
    /// Per class index.
    pub class_weights: Vec<f32>,
    /// The task's class names, by class index (the training file's).
    pub classes: Vec<String>,
    /// How the training file's labels were read, to read other files the same way.
    pub label_rule: crate::data::LabelRule,
    /// The columns the training file was read with.
    pub columns: crate::data::Columns,
    /// Several 0/1 labels per row (`classes` are the labels): K sigmoids.
    pub multi_label: bool,
}

impl Prepared {
    /// How many outputs the network has: one sigmoid for two classes, K softmax outputs for
    /// more, one sigmoid per label for a multi-label task.
    pub fn outputs(&self) -> usize {
        outputs_of(self.classes.len(), self.multi_label)
    }
}

/// The network's outputs for a task: one (a sigmoid) for two classes, one per class (a
/// softmax) for more, one per label (independent sigmoids) for a multi-label task.
pub fn outputs_of(classes: usize, multi_label: bool) -> usize {
    if multi_label || classes > 2 {
        classes
    } else {
        1
    }
}

/// How many of a row's outputs one probability is normalised over: all K for a softmax, 1
/// where each output is its own sigmoid (binary and multi-label models).
pub fn normalised_width(outputs: usize, multi_label: bool) -> usize {
    if multi_label {
        1
    } else {
        outputs
    }
}

impl Examples {
    fn empty(len: usize) -> Self {
        Self {
            ids: Padded {
                ids: Vec::new(),
                rows: 0,
                len,
            },
            labels: Vec::new(),
            targets: Vec::new(),
            source_rows: Vec::new(),
        }
    }
}

/// Fits the tokenizer on every row of the file (as the report did), pads, and makes the
/// stratified split.
pub fn prepare(table: &Table, cfg: &ModelConfig) -> Result<Prepared> {
    prepare_with(table, None, cfg)
}

/// Like [`prepare`], with the validation rows from their own file when `validation` is given
/// (the tokenizer is then fitted on the training file only, and `validation_split` unused).
pub fn prepare_with(
    table: &Table,
    validation: Option<&Table>,
    cfg: &ModelConfig,
) -> Result<Prepared> {
    for t in std::iter::once(table).chain(validation) {
        if !t.labelled {
            return Err(ModelError::Config {
                at: t.path.display().to_string(),
                message: "training needs a label column".into(),
            });
        }
    }
    if let Some(v) = validation {
        if v.classes != table.classes || v.multi_label != table.multi_label {
            return Err(ModelError::Config {
                at: v.path.display().to_string(),
                message: format!(
                    "the validation file's classes ({}) are not the training file's ({}); \
                     read it with the training file's label rule",
                    v.classes.join(", "),
                    table.classes.join(", ")
                ),
            });
        }
    }
    let (encoder, padded) = TextEncoder::fit_encode(cfg, &table.texts());
    let sequence_length = encoder.width();
    let row_labels = RowLabels::of(table);
    let labels = row_labels.labels.clone();
    // The calibration slice comes first, from every row of the training file, seeded by the
    // model seed alone: whatever validation_split a trial samples, and with or without a
    // validation split (the final retrain), configurations with the same seed hold out the
    // same rows, so an ensemble of them can choose its threshold on rows none trained on.
    let all_rows: Vec<usize> = (0..labels.len()).collect();
    let (rest, calibration) = if cfg.threshold.needs_calibration() {
        let split = stratified_split(&labels, cfg.calibration_split, mix(cfg.seed, 0, 0xCA1B));
        if split.train.is_empty() || split.validation.is_empty() {
            return Err(ModelError::Config {
                at: "calibration_split".into(),
                message: format!("{} rows cannot give up a calibration slice", labels.len()),
            });
        }
        let mut rest = split.train;
        // Sorted, so the validation split below sees rows in file order as without one.
        rest.sort_unstable();
        (
            rest,
            Examples::select(&padded, &row_labels, &split.validation),
        )
    } else {
        (all_rows, Examples::empty(sequence_length))
    };
    let (train_rows, validation) = match validation {
        Some(v) => {
            let padded = encoder.encode(&v.texts());
            let rows: Vec<usize> = (0..padded.rows).collect();
            if rows.is_empty() {
                return Err(ModelError::Config {
                    at: v.path.display().to_string(),
                    message: "the validation file has no rows".into(),
                });
            }
            (rest, Examples::select(&padded, &RowLabels::of(v), &rows))
        }
        None => {
            // validation_split stays a share of the whole file.
            let share = cfg.validation_split * labels.len() as f64 / rest.len().max(1) as f64;
            let rest_labels: Vec<u8> = rest.iter().map(|&r| labels[r]).collect();
            let split = stratified_split(&rest_labels, share.min(1.0), mix(cfg.seed, 0, 0x5917));
            if split.train.is_empty() || split.validation.is_empty() {
                return Err(ModelError::Config {
                    at: "validation_split".into(),
                    message: format!(
                        "{} rows cannot be split into training and validation sets",
                        labels.len()
                    ),
                });
            }
            let pick = |k: &[usize]| k.iter().map(|&i| rest[i]).collect::<Vec<_>>();
            (
                pick(&split.train),
                Examples::select(&padded, &row_labels, &pick(&split.validation)),
            )
        }
    };
    let train = Examples::select(&padded, &row_labels, &train_rows);
    let classes = table.classes.clone();
    let class_weights = if table.multi_label {
        // One weight per row in the loss: a multi-label task weights no row above another.
        vec![1.0; classes.len()]
    } else if cfg.class_weighting {
        task_class_weights(&train.labels, classes.len())
    } else {
        vec![1.0; classes.len().max(2)]
    };
    Ok(Prepared {
        encoder,
        validation,
        calibration,
        train,
        class_weights,
        classes,
        label_rule: crate::data::LabelRule::same_as(table),
        columns: table.columns.clone(),
        multi_label: table.multi_label,
    })
}

/// Like [`prepare`], but every row trains and none is held out for validation (the final
/// model after a search, trained on the whole file for a fixed number of epochs). The
/// calibration slice, if the threshold needs one, is still held out.
pub fn prepare_all(
    table: &Table,
    validation: Option<&Table>,
    cfg: &ModelConfig,
) -> Result<Prepared> {
    let mut p = prepare_with(table, validation, cfg)?;
    let rows = p.train.ids.rows + p.validation.ids.rows;
    let mut ids = p.train.ids.ids.clone();
    ids.extend_from_slice(&p.validation.ids.ids);
    let mut labels = p.train.labels.clone();
    labels.extend_from_slice(&p.validation.labels);
    let mut targets = p.train.targets.clone();
    targets.extend_from_slice(&p.validation.targets);
    let mut source_rows = p.train.source_rows.clone();
    source_rows.extend_from_slice(&p.validation.source_rows);
    p.train = Examples {
        ids: Padded {
            ids,
            rows,
            len: p.encoder.width(),
        },
        labels,
        targets,
        source_rows,
    };
    p.validation = Examples::empty(p.encoder.width());
    if cfg.class_weighting && !p.multi_label {
        p.class_weights = task_class_weights(&p.train.labels, p.classes.len());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_class_shares_and_is_deterministic() {
        // 93 negatives, 7 positives.
        let labels: Vec<u8> = (0..1000).map(|i| u8::from(i % 100 < 7)).collect();
        let s = stratified_split(&labels, 0.1, 42);
        assert_eq!(s.validation.len() + s.train.len(), 1000);
        let val_pos = s.validation.iter().filter(|&&i| labels[i] == 1).count();
        assert_eq!(val_pos, 7); // 70 positives * 0.1
        assert_eq!(s.validation.len(), 100); // 7 + round(930 * 0.1)
        let mut all: Vec<usize> = s.train.iter().chain(&s.validation).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(s, stratified_split(&labels, 0.1, 42));
        assert_ne!(s, stratified_split(&labels, 0.1, 43));
    }

    #[test]
    fn split_rounds_each_class_to_within_one_row() {
        let labels: Vec<u8> = (0..37).map(|i| u8::from(i < 5)).collect();
        let s = stratified_split(&labels, 0.1, 1);
        let val_pos = s.validation.iter().filter(|&&i| labels[i] == 1).count();
        let val_neg = s.validation.len() - val_pos;
        assert_eq!((val_pos, val_neg), (1, 3)); // round(0.5)=1 (half away from zero), round(3.2)=3
    }

    #[test]
    fn balanced_weights_are_rows_over_classes_times_count() {
        // scikit-learn: compute_class_weight("balanced", classes=[0,1,2], y=[0,0,0,0,1,1,2,2,2,2,2,2])
        // = 12 / (3 · [4, 2, 6]) = [1.0, 2.0, 0.6667].
        let labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2];
        let w = balanced_class_weights(&labels, 3);
        assert_eq!(w[..2], [1.0, 2.0]);
        assert!((w[2] - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(task_class_weights(&labels, 3), w);
        assert_eq!(task_class_weights(&[0, 0, 0, 1], 2), vec![1.0, 3.0]);
        assert_eq!(
            balanced_class_weights(&[0, 0], 3),
            vec![1.0 / 3.0, 1.0, 1.0]
        );
    }

    #[test]
    fn a_three_class_split_keeps_each_class_share() {
        let labels: Vec<u8> = (0..300).map(|i| [0u8, 1, 1, 2, 2, 2][i % 6]).collect();
        let s = stratified_split(&labels, 0.1, 7);
        let count = |rows: &[usize], c: u8| rows.iter().filter(|&&r| labels[r] == c).count();
        assert_eq!(
            [0, 1, 2].map(|c| count(&s.validation, c)),
            [5, 10, 15],
            "10 % of 50, 100 and 150 rows"
        );
        assert_eq!(s.train.len() + s.validation.len(), 300);
    }

    #[test]
    fn class_weights_are_max_over_count() {
        let labels: Vec<u8> = [vec![0u8; 93], vec![1u8; 7]].concat();
        let w = class_weights(&labels);
        assert_eq!(w[0], 1.0);
        assert!((w[1] - 93.0 / 7.0).abs() < 1e-6);
        assert_eq!(class_weights(&[0, 0]), [1.0, 1.0]);
    }

    #[test]
    fn batches_cover_every_row_once_and_repeat_per_seed() {
        let rows: Vec<usize> = (0..10).collect();
        let lengths: Vec<usize> = rows.iter().map(|r| (r * 7) % 11).collect();
        let buckets = bucket_batches(&rows, &lengths, 4, 2, 7, 0);
        let mut all: Vec<usize> = buckets.concat();
        all.sort_unstable();
        assert_eq!(all, rows, "every row once");
        assert_eq!(
            buckets,
            bucket_batches(&rows, &lengths, 4, 2, 7, 0),
            "seeded"
        );
        assert_ne!(
            buckets,
            bucket_batches(&rows, &lengths, 4, 2, 7, 1),
            "new order each epoch"
        );
        let spread = |bs: &[Vec<usize>]| -> usize {
            bs.iter()
                .map(|b| {
                    let l: Vec<usize> = b.iter().map(|&r| lengths[r]).collect();
                    l.iter().max().unwrap() - l.iter().min().unwrap()
                })
                .sum()
        };
        assert!(
            spread(&buckets) < spread(&epoch_batches(&rows, 4, 7, 0)),
            "bucketed batches mix fewer lengths"
        );
        let b = epoch_batches(&rows, 4, 7, 0);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut flat: Vec<usize> = b.concat();
        flat.sort_unstable();
        assert_eq!(flat, rows);
        assert_eq!(b, epoch_batches(&rows, 4, 7, 0));
        assert_ne!(b, epoch_batches(&rows, 4, 7, 1));
    }
}
