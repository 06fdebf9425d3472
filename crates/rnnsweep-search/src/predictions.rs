//! The validation-predictions file a trial may leave in its folder ([`VAL_PREDICTIONS_FILE`]):
//! one row per validation row of the kept model, `id,probability,label` for a binary task,
//! `id,label,<classes>` for K classes, `id,labels,<labels>` for multi-label. The built-in trial
//! writes it; ensembles, `best`, the plots and the dispatcher's final-model reserve read it.

use std::path::Path;

use crate::store::{keys, TrialRecord};

/// What a worker may leave in its trial folder: one row per validation row of the kept model
/// (the built-in worker always does; ensembles and plots of the best trial use it).
pub const VAL_PREDICTIONS_FILE: &str = "val_predictions.csv";

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PredictionsError {
    pub path: String,
    pub message: String,
}

fn err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> PredictionsError + '_ {
    move |e| PredictionsError {
        path: path.display().to_string(),
        message: format!("{e:?}"),
    }
}

/// Reads a worker's predictions file: `id,probability,label` (or the older
/// `probability,label`).
pub fn read_predictions(path: &Path) -> Result<(Vec<f32>, Vec<u8>), PredictionsError> {
    let p = read_predictions_with_ids(path)?;
    Ok((p.probabilities, p.labels))
}

/// Each trial's validation predictions, binary or K-class, from its folder; `None` where a
/// trial left none (or an unreadable file: selection then falls back to rank and says so).
pub fn of_trials<'a>(
    trials: impl IntoIterator<Item = &'a TrialRecord>,
) -> Vec<Option<Predictions>> {
    trials
        .into_iter()
        .map(|t| {
            let dir = t.system_attrs.get(keys::TRIAL_DIR)?.as_str()?;
            let path = Path::new(dir).join(VAL_PREDICTIONS_FILE);
            read_predictions_with_ids(&path)
                .or_else(|_| read_class_predictions(&path))
                .ok()
        })
        .collect()
}

/// A predictions file's rows; `ids` is empty for files from before ids were written.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    pub ids: Vec<String>,
    /// Class 1's probability per row; for K classes row-major `[rows, K]`.
    pub probabilities: Vec<f32>,
    /// Class indices.
    pub labels: Vec<u8>,
    /// The class names of a K-class file (empty for a binary one).
    pub classes: Vec<String>,
    /// A multi-label file: `classes` are the labels, `labels` the row-major 0/1 targets.
    pub multi_label: bool,
}

/// Reads a K-class predictions file (`id,label,` then one column per class, as
/// [`write_class_predictions`] writes it).
pub fn read_class_predictions(path: &Path) -> Result<Predictions, PredictionsError> {
    let bad = |message: String| PredictionsError {
        path: path.display().to_string(),
        message,
    };
    let mut reader = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let multi_label = headers.get(1) == Some("labels");
    let (Some(id_at), Some(y_at)) = (
        headers.iter().position(|h| h == "id"),
        headers
            .iter()
            .position(|h| h == if multi_label { "labels" } else { "label" }),
    ) else {
        return Err(bad(
            "line 1: expected `id,label,` or `id,labels,` then one column per class".into(),
        ));
    };
    let class_at: Vec<usize> = (0..headers.len())
        .filter(|&k| k != id_at && k != y_at)
        .collect();
    let classes: Vec<String> = class_at.iter().map(|&k| headers[k].to_string()).collect();
    if classes.len() < if multi_label { 1 } else { 3 } {
        return Err(bad(
            "line 1: a K-class file has three or more class columns".into(),
        ));
    }
    let mut out = Predictions {
        ids: Vec::new(),
        probabilities: Vec::new(),
        labels: Vec::new(),
        classes,
        multi_label,
    };
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| bad(format!("line {line}: {e}")))?;
        let field = |k: usize| record.get(k).unwrap_or("").trim();
        if multi_label {
            let on: Vec<&str> = field(y_at).split('|').filter(|l| !l.is_empty()).collect();
            if let Some(unknown) = on.iter().find(|l| !out.classes.iter().any(|c| c == *l)) {
                return Err(bad(format!(
                    "line {line}: label `{unknown}` is not a label column"
                )));
            }
            let targets: Vec<u8> = out
                .classes
                .iter()
                .map(|c| u8::from(on.contains(&c.as_str())))
                .collect();
            out.labels.extend(targets);
            out.ids.push(field(id_at).to_string());
            for &k in &class_at {
                let p: f32 = field(k).parse().map_err(|_| {
                    bad(format!("line {line}: `{}` is not a probability", field(k)))
                })?;
                out.probabilities.push(p);
            }
            continue;
        }
        let label = out
            .classes
            .iter()
            .position(|c| c == field(y_at))
            .ok_or_else(|| {
                bad(format!(
                    "line {line}: label `{}` is not a class column",
                    field(y_at)
                ))
            })?;
        out.labels.push(label as u8);
        out.ids.push(field(id_at).to_string());
        for &k in &class_at {
            let p: f32 = field(k)
                .parse()
                .map_err(|_| bad(format!("line {line}: `{}` is not a probability", field(k))))?;
            out.probabilities.push(p);
        }
    }
    Ok(out)
}

pub fn read_predictions_with_ids(path: &Path) -> Result<Predictions, PredictionsError> {
    let bad = |message: String| PredictionsError {
        path: path.display().to_string(),
        message,
    };
    let mut reader = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| bad(format!("line 1: no `{name}` column")))
    };
    let (p_at, y_at) = (column("probability")?, column("label")?);
    let id_at = headers.iter().position(|h| h == "id");
    let mut ids = Vec::new();
    let mut probs = Vec::new();
    let mut labels = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| bad(format!("line {line}: {e}")))?;
        let field = |k: usize| record.get(k).unwrap_or("").trim();
        let wrong = || {
            bad(format!(
                "line {line}: expected a probability and a 0/1 label"
            ))
        };
        probs.push(field(p_at).parse().map_err(|_| wrong())?);
        labels.push(field(y_at).parse().map_err(|_| wrong())?);
        if let Some(k) = id_at {
            ids.push(field(k).to_string());
        }
    }
    Ok(Predictions {
        ids,
        probabilities: probs,
        labels,
        classes: Vec::new(),
        multi_label: false,
    })
}

/// A CSV writer into memory with `\n` line ends (it quotes commas, quotes, `\r` and `\n`).
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new())
}

fn csv_text(w: csv::Writer<Vec<u8>>) -> String {
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// Writes a worker's `id,probability,label` file (read back by [`read_predictions`]).
pub fn write_predictions(
    path: &Path,
    ids: &[&str],
    probs: &[f32],
    labels: &[u8],
) -> Result<(), PredictionsError> {
    let mut w = csv_writer();
    let _ = w.write_record(["id", "probability", "label"]);
    for ((id, p), y) in ids.iter().zip(probs).zip(labels) {
        let _ = w.write_record([id.to_string(), p.to_string(), y.to_string()]);
    }
    std::fs::write(path, csv_text(w)).map_err(err(path))
}

/// A K-class predictions file: `id,label,` then one probability column per class (named as
/// the classes), `label` the true class's name. `probs` is row-major `[rows, K]`.
pub fn write_class_predictions(
    path: &Path,
    ids: &[&str],
    probs: &[f32],
    labels: &[u8],
    classes: &[String],
) -> Result<(), PredictionsError> {
    let mut w = csv_writer();
    let mut header = vec!["id".to_string(), "label".to_string()];
    header.extend(classes.iter().cloned());
    let _ = w.write_record(&header);
    for ((id, row), &y) in ids
        .iter()
        .zip(probs.chunks(classes.len().max(1)))
        .zip(labels)
    {
        let mut record = vec![
            id.to_string(),
            classes.get(usize::from(y)).cloned().unwrap_or_default(),
        ];
        record.extend(row.iter().map(f32::to_string));
        let _ = w.write_record(&record);
    }
    std::fs::write(path, csv_text(w)).map_err(err(path))
}

/// A multi-label predictions file: `id,labels,` then one probability column per label, where
/// `labels` lists the row's true labels joined by `|` (empty for none). `probs` and `targets`
/// are row-major `[rows, K]`.
pub fn write_label_predictions(
    path: &Path,
    ids: &[&str],
    probs: &[f32],
    targets: &[u8],
    names: &[String],
) -> Result<(), PredictionsError> {
    let k = names.len().max(1);
    let mut w = csv_writer();
    let mut header = vec!["id".to_string(), "labels".to_string()];
    header.extend(names.iter().cloned());
    let _ = w.write_record(&header);
    for ((id, row), t) in ids.iter().zip(probs.chunks(k)).zip(targets.chunks(k)) {
        let on: Vec<&str> = names
            .iter()
            .zip(t)
            .filter(|(_, &y)| y == 1)
            .map(|(n, _)| n.as_str())
            .collect();
        let mut record = vec![id.to_string(), on.join("|")];
        record.extend(row.iter().map(f32::to_string));
        let _ = w.write_record(&record);
    }
    std::fs::write(path, csv_text(w)).map_err(err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("binary.csv");
        write_predictions(&binary, &["a", "b,c"], &[0.25, 0.75], &[0, 1]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&binary).unwrap(),
            "id,probability,label\na,0.25,0\n\"b,c\",0.75,1\n"
        );
        let back = read_predictions_with_ids(&binary).unwrap();
        assert_eq!(back.ids, ["a", "b,c"]);
        assert_eq!(
            (back.probabilities, back.labels),
            (vec![0.25, 0.75], vec![0, 1])
        );

        let classes = ["ham", "spam", "eggs"].map(String::from);
        let multi = dir.path().join("classes.csv");
        write_class_predictions(
            &multi,
            &["x", "y"],
            &[0.5, 0.25, 0.25, 0.0, 0.0, 1.0],
            &[0, 2],
            &classes,
        )
        .unwrap();
        let back = read_class_predictions(&multi).unwrap();
        assert_eq!(back.ids, ["x", "y"]);
        assert_eq!(back.probabilities, [0.5, 0.25, 0.25, 0.0, 0.0, 1.0]);
        assert_eq!(
            (back.labels, back.classes.as_slice()),
            (vec![0, 2], classes.as_slice())
        );
        assert!(!back.multi_label);

        let labels = dir.path().join("labels.csv");
        write_label_predictions(&labels, &["r"], &[0.5, 0.75], &[1, 0], &classes[..2]).unwrap();
        let back = read_class_predictions(&labels).unwrap();
        assert!(back.multi_label);
        assert_eq!(
            (back.probabilities, back.labels),
            (vec![0.5, 0.75], vec![1, 0])
        );
        // A binary reader refuses a K-class file instead of misreading it.
        assert!(read_predictions(&multi).is_err());
    }

    #[test]
    fn a_bad_row_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        std::fs::write(&path, "id,probability,label\na,0.5,1\nb,high,0\n").unwrap();
        let e = read_predictions(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: line 3: expected a probability and a 0/1 label",
                path.display()
            )
        );
        std::fs::write(&path, "id,score\n").unwrap();
        let e = read_predictions(&path).unwrap_err().to_string();
        assert!(e.ends_with("line 1: no `probability` column"), "{e}");
    }
}
