//! Loading a labelled text CSV (the tweets' `id,label,tweet`, or any other columns) into rows,
//! with errors that name file and line. Labels are read as people write them (integers or
//! words) and become class indices by a [`LabelRule`].
//!
//! A small RFC 4180 reader is used instead of the `csv` crate because that crate silently
//! accepts an unterminated quote (reading to end of file as one field), and real exports of
//! this data set contain invalid UTF-8 that must be decoded lossily with a warning.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which header names hold the id, the label and the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Columns {
    pub id: String,
    pub label: String,
    pub text: String,
    /// Several 0/1 label columns (a multi-label task: a row may have any of them); `label` is
    /// then unused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            id: "id".into(),
            label: "label".into(),
            text: "tweet".into(),
            labels: Vec::new(),
        }
    }
}

/// How label values become classes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelRule {
    /// The classes in their order (class index = position); `None`: the distinct values of
    /// the training file, sorted (numerically when all are integers), and `0`, `1` for files
    /// whose labels are all 0 or 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// One-vs-rest: rows of these classes are the positive class (1) of a binary task, every
    /// other row the negative class (0).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub positive: Vec<String>,
}

impl LabelRule {
    /// Exactly the classes `0` and `1` (the tweets' rule; anything else is an error).
    pub fn binary() -> Self {
        Self {
            classes: Some(vec!["0".into(), "1".into()]),
            positive: Vec::new(),
        }
    }

    /// The same classes as an already loaded table (for a validation or test file).
    pub fn same_as(table: &Table) -> Self {
        Self {
            classes: Some(table.source_classes.clone()),
            positive: table.positive.clone(),
        }
    }
}

/// The most classes a task may have (class indices are bytes).
pub const MAX_CLASSES: usize = 255;

/// One CSV row. `label` is `None` for unlabelled (prediction) files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: String,
    /// The class index (position in [`Table::classes`]); `None` in a multi-label table.
    pub label: Option<u8>,
    /// A multi-label table's 0/1 per label column (empty otherwise).
    pub targets: Vec<u8>,
    pub text: String,
    /// 1-based line on which the record starts.
    pub line: usize,
}

/// Whether a label column is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    Required,
    /// Read labels when the column exists, otherwise load for prediction.
    Optional,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: the file is empty (expected a header row such as `id,label,tweet`)")]
    Empty { path: PathBuf },
    #[error("{path}:1: missing column `{column}` (header has: {header})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        header: String,
    },
    #[error("{path}:{line}: expected {expected} fields as in the header, found {found}")]
    FieldCount {
        path: PathBuf,
        line: usize,
        expected: usize,
        found: usize,
    },
    #[error("{path}:{line}: label `{value}` in column `{column}` is not 0 or 1")]
    BadLabel {
        path: PathBuf,
        line: usize,
        column: String,
        value: String,
    },
    #[error(
        "{path}:{line}: label `{value}` in column `{column}` is not one of the classes ({classes})"
    )]
    UnknownClass {
        path: PathBuf,
        line: usize,
        column: String,
        value: String,
        classes: String,
    },
    #[error("{path}:{line}: empty label in column `{column}`")]
    EmptyLabel {
        path: PathBuf,
        line: usize,
        column: String,
    },
    #[error("{path}: {message}")]
    Classes { path: PathBuf, message: String },
    #[error("{path}:{line}: quoted field is never closed (unterminated quote)")]
    UnterminatedQuote { path: PathBuf, line: usize },
    #[error("{path}:{line}: stray quote inside an unquoted field")]
    StrayQuote { path: PathBuf, line: usize },
    #[error("{path}: has a header but no data rows")]
    NoRows { path: PathBuf },
}

/// A loaded file: its rows and what was repaired on the way.
#[derive(Debug, Clone)]
pub struct Table {
    pub path: PathBuf,
    pub rows: Vec<Row>,
    pub labelled: bool,
    /// The task's class names, by class index (`0`, `1` for the tweets; `not hate`, `hate`
    /// for a one-vs-rest task). Empty for an unlabelled table.
    pub classes: Vec<String>,
    /// The label column's classes before a one-vs-rest rule made them two.
    pub source_classes: Vec<String>,
    /// The one-vs-rest rule's positive classes (empty otherwise).
    pub positive: Vec<String>,
    /// The columns it was read with.
    pub columns: Columns,
    /// Read from several 0/1 label columns (`classes` are their names).
    pub multi_label: bool,
    /// Fields that held invalid UTF-8, decoded with U+FFFD.
    pub invalid_utf8_fields: usize,
    pub first_invalid_utf8_line: Option<usize>,
}

impl Table {
    pub fn texts(&self) -> Vec<&str> {
        self.rows.iter().map(|r| r.text.as_str()).collect()
    }

    /// Labels of a labelled table (0 where a row has none, which a labelled table never has).
    pub fn labels(&self) -> Vec<u8> {
        self.rows.iter().map(|r| r.label.unwrap_or(0)).collect()
    }

    pub fn positives(&self) -> usize {
        self.rows.iter().filter(|r| r.label == Some(1)).count()
    }

    /// A multi-label table's targets, row-major `[rows, labels]`.
    pub fn targets(&self) -> Vec<u8> {
        self.rows
            .iter()
            .flat_map(|r| r.targets.iter().copied())
            .collect()
    }

    /// Rows per class, by class index (rows with each label, for a multi-label table).
    pub fn class_counts(&self) -> Vec<usize> {
        if self.multi_label {
            let mut counts = vec![0usize; self.classes.len()];
            for r in &self.rows {
                for (c, &t) in counts.iter_mut().zip(&r.targets) {
                    *c += usize::from(t);
                }
            }
            return counts;
        }
        let mut counts = vec![0usize; self.classes.len()];
        for r in &self.rows {
            if let Some(c) = r.label.and_then(|l| counts.get_mut(usize::from(l))) {
                *c += 1;
            }
        }
        counts
    }
}

/// Reads a CSV file whose labels are 0 or 1; warns once (through `tracing`) when invalid
/// UTF-8 was replaced.
pub fn load_csv(path: &Path, columns: &Columns, labels: Labels) -> Result<Table, DataError> {
    load_csv_with(path, columns, labels, &LabelRule::binary())
}

/// [`load_csv`] with labels read by `rule`.
pub fn load_csv_with(
    path: &Path,
    columns: &Columns,
    labels: Labels,
    rule: &LabelRule,
) -> Result<Table, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let table = parse_csv_with(path, &bytes, columns, labels, rule)?;
    if table.invalid_utf8_fields > 0 {
        tracing::warn!(
            "{}: {} field(s) held invalid UTF-8, replaced by U+FFFD (first on line {})",
            path.display(),
            table.invalid_utf8_fields,
            table.first_invalid_utf8_line.unwrap_or(0)
        );
    }
    Ok(table)
}

/// A training file and, when given, a validation file read the same way: the same columns,
/// and the classes the training file's labels gave (so both files share class indices).
pub fn load_labelled(
    train: &Path,
    validation: Option<&Path>,
    columns: &Columns,
    rule: &LabelRule,
) -> Result<(Table, Option<Table>), DataError> {
    let table = load_csv_with(train, columns, Labels::Required, rule)?;
    let validation = match validation {
        Some(path) => Some(load_csv_with(
            path,
            columns,
            Labels::Required,
            &LabelRule::same_as(&table),
        )?),
        None => None,
    };
    Ok((table, validation))
}

/// Parses CSV bytes whose labels are 0 or 1; `path` is only used in messages.
pub fn parse_csv(
    path: &Path,
    bytes: &[u8],
    columns: &Columns,
    labels: Labels,
) -> Result<Table, DataError> {
    parse_csv_with(path, bytes, columns, labels, &LabelRule::binary())
}

/// Parses CSV bytes with labels read by `rule`; `path` is only used in messages.
pub fn parse_csv_with(
    path: &Path,
    bytes: &[u8],
    columns: &Columns,
    labels: Labels,
    rule: &LabelRule,
) -> Result<Table, DataError> {
    let p = || path.to_path_buf();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut records = RecordReader {
        bytes,
        pos: 0,
        line: 1,
    };
    let mut invalid = 0usize;
    let mut first_invalid = None;
    let mut decode = |field: &[u8], line: usize| match std::str::from_utf8(field) {
        Ok(s) => s.to_string(),
        Err(_) => {
            invalid += 1;
            first_invalid.get_or_insert(line);
            String::from_utf8_lossy(field).into_owned()
        }
    };

    let Some((header_line, header)) = records.next_record(path)? else {
        return Err(DataError::Empty { path: p() });
    };
    let header: Vec<String> = header
        .iter()
        .map(|f| decode(f, header_line).trim().to_string())
        .collect();
    let find = |name: &str| header.iter().position(|h| h == name);
    let missing = |name: &str| DataError::MissingColumn {
        path: p(),
        column: name.to_string(),
        header: header.join(","),
    };
    // Without an `id` column (the default name) rows are numbered from 0, as pandas writes
    // its index; a column the spec names must exist.
    let id_col = match find(&columns.id) {
        Some(c) => Some(c),
        None if columns.id == Columns::default().id => None,
        None => return Err(missing(&columns.id)),
    };
    let text_col = find(&columns.text).ok_or_else(|| missing(&columns.text))?;
    let multi_label = !columns.labels.is_empty();
    let label_col = match (find(&columns.label), labels) {
        _ if multi_label => None,
        (Some(c), _) => Some(c),
        (None, Labels::Optional) => None,
        (None, Labels::Required) => return Err(missing(&columns.label)),
    };
    let found: Vec<Option<usize>> = columns.labels.iter().map(|l| find(l)).collect();
    let target_cols: Option<Vec<usize>> = if !multi_label {
        None
    } else if found.iter().all(Option::is_some) {
        Some(found.into_iter().flatten().collect())
    } else if labels == Labels::Optional && found.iter().all(Option::is_none) {
        None
    } else {
        let absent = columns
            .labels
            .iter()
            .zip(&found)
            .find(|(_, f)| f.is_none())
            .map_or("", |(name, _)| name.as_str());
        return Err(missing(absent));
    };

    let mut rows = Vec::new();
    let mut raw_labels: Vec<Option<String>> = Vec::new();
    while let Some((line, fields)) = records.next_record(path)? {
        // A blank line (e.g. a trailing newline pair) is not a record.
        if fields.len() == 1 && fields[0].is_empty() {
            continue;
        }
        if fields.len() != header.len() {
            return Err(DataError::FieldCount {
                path: p(),
                line,
                expected: header.len(),
                found: fields.len(),
            });
        }
        let label = match label_col {
            None => None,
            Some(c) => {
                let raw = decode(&fields[c], line).trim().to_string();
                if raw.is_empty() {
                    return Err(DataError::EmptyLabel {
                        path: p(),
                        line,
                        column: columns.label.clone(),
                    });
                }
                Some(raw)
            }
        };
        let id = match id_col {
            Some(c) => decode(&fields[c], line).trim().to_string(),
            None => raw_labels.len().to_string(),
        };
        let mut targets = Vec::new();
        for (&c, name) in target_cols.iter().flatten().zip(&columns.labels) {
            let raw = decode(&fields[c], line);
            targets.push(match raw.trim() {
                "0" => 0,
                "1" => 1,
                other => {
                    return Err(DataError::BadLabel {
                        path: p(),
                        line,
                        column: name.clone(),
                        value: other.to_string(),
                    })
                }
            });
        }
        raw_labels.push(label);
        rows.push(Row {
            id,
            label: None,
            targets,
            text: decode(&fields[text_col], line),
            line,
        });
    }
    if rows.is_empty() {
        return Err(DataError::NoRows { path: p() });
    }
    let (classes, source_classes) = if label_col.is_some() {
        let classes = encode_labels(path, &columns.label, rule, &mut rows, &raw_labels)?;
        (classes.0, classes.1)
    } else if target_cols.is_some() {
        (columns.labels.clone(), columns.labels.clone())
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Table {
        path: p(),
        rows,
        labelled: label_col.is_some() || target_cols.is_some(),
        multi_label: target_cols.is_some(),
        classes,
        source_classes,
        positive: if label_col.is_some() {
            rule.positive.clone()
        } else {
            Vec::new()
        },
        columns: columns.clone(),
        invalid_utf8_fields: invalid,
        first_invalid_utf8_line: first_invalid,
    })
}

/// The label column's classes (given, or the file's distinct values), then every row's class
/// index; with a one-vs-rest rule the task's two classes. Returns `(task classes, column
/// classes)`.
fn encode_labels(
    path: &Path,
    column: &str,
    rule: &LabelRule,
    rows: &mut [Row],
    raw: &[Option<String>],
) -> Result<(Vec<String>, Vec<String>), DataError> {
    let classes_error = |message: String| DataError::Classes {
        path: path.to_path_buf(),
        message,
    };
    let source_classes: Vec<String> = match &rule.classes {
        Some(given) => {
            let mut seen = std::collections::HashSet::new();
            if let Some(twice) = given.iter().find(|c| !seen.insert(c.as_str())) {
                return Err(classes_error(format!(
                    "class `{twice}` is listed twice in `labels`"
                )));
            }
            given.clone()
        }
        None => infer_classes(raw.iter().flatten().map(String::as_str)),
    };
    if source_classes.len() > MAX_CLASSES {
        return Err(classes_error(format!(
            "column `{column}` has {} classes; at most {MAX_CLASSES} are supported",
            source_classes.len()
        )));
    }
    let index: std::collections::HashMap<&str, u8> = source_classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u8))
        .collect();
    for (row, value) in rows.iter_mut().zip(raw) {
        let Some(value) = value else { continue };
        match index.get(value.as_str()) {
            Some(&class) => row.label = Some(class),
            None if source_classes == ["0", "1"] && rule.classes.is_some() => {
                return Err(DataError::BadLabel {
                    path: path.to_path_buf(),
                    line: row.line,
                    column: column.to_string(),
                    value: value.clone(),
                })
            }
            None => {
                return Err(DataError::UnknownClass {
                    path: path.to_path_buf(),
                    line: row.line,
                    column: column.to_string(),
                    value: value.clone(),
                    classes: source_classes.join(", "),
                })
            }
        }
    }
    if rule.positive.is_empty() {
        if source_classes.len() < 2 {
            return Err(classes_error(format!(
                "column `{column}` has only the class `{}`: a classifier needs two or more",
                source_classes.join("")
            )));
        }
        return Ok((source_classes.clone(), source_classes));
    }
    let mut positive = vec![false; source_classes.len()];
    for name in &rule.positive {
        match index.get(name.as_str()) {
            Some(&class) => positive[usize::from(class)] = true,
            None => {
                return Err(classes_error(format!(
                    "positive class `{name}` is not a value of column `{column}` ({})",
                    source_classes.join(", ")
                )))
            }
        }
    }
    if positive.iter().all(|&p| p) {
        return Err(classes_error(format!(
            "every class of column `{column}` is positive: nothing is left for the negative class"
        )));
    }
    for row in rows.iter_mut() {
        if let Some(class) = row.label {
            row.label = Some(u8::from(positive[usize::from(class)]));
        }
    }
    let name = rule.positive.join("|");
    Ok((vec![format!("not {name}"), name], source_classes))
}

/// The distinct values, sorted numerically when all are integers, else as text; `0`, `1`
/// whenever every value is one of them (a binary file with one class present stays binary).
fn infer_classes<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    let distinct: std::collections::BTreeSet<&str> = values.collect();
    if distinct.iter().all(|v| matches!(*v, "0" | "1")) {
        return vec!["0".into(), "1".into()];
    }
    let mut classes: Vec<&str> = distinct.into_iter().collect();
    if classes.iter().all(|v| v.parse::<i64>().is_ok()) {
        classes.sort_by_key(|v| v.parse::<i64>().unwrap_or(0));
    }
    classes.into_iter().map(str::to_string).collect()
}

type Record<'a> = (usize, Vec<Cow<'a, [u8]>>);

struct RecordReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> RecordReader<'a> {
    /// Returns the next record's fields (unquoted, `""` unescaped) with the line it starts on.
    fn next_record(&mut self, path: &Path) -> Result<Option<Record<'a>>, DataError> {
        if self.pos >= self.bytes.len() {
            return Ok(None);
        }
        let start_line = self.line;
        let mut fields: Vec<Cow<'a, [u8]>> = Vec::new();
        loop {
            let b = self.bytes;
            if self.pos < b.len() && b[self.pos] == b'"' {
                let quote_line = self.line;
                self.pos += 1;
                let field_start = self.pos;
                let mut has_escaped_quote = false;
                loop {
                    match b.get(self.pos) {
                        None => {
                            return Err(DataError::UnterminatedQuote {
                                path: path.to_path_buf(),
                                line: quote_line,
                            })
                        }
                        Some(b'"') if b.get(self.pos + 1) == Some(&b'"') => {
                            has_escaped_quote = true;
                            self.pos += 2;
                        }
                        Some(b'"') => break,
                        Some(b'\n') => {
                            self.line += 1;
                            self.pos += 1;
                        }
                        Some(_) => self.pos += 1,
                    }
                }
                let raw = &b[field_start..self.pos];
                self.pos += 1; // closing quote
                let field = if has_escaped_quote {
                    Cow::Owned(unescape_quotes(raw))
                } else {
                    Cow::Borrowed(raw)
                };
                fields.push(field);
                match b.get(self.pos) {
                    None => return Ok(Some((start_line, fields))),
                    Some(b',') => self.pos += 1,
                    Some(b'\n') => {
                        self.pos += 1;
                        self.line += 1;
                        return Ok(Some((start_line, fields)));
                    }
                    Some(b'\r') if b.get(self.pos + 1) == Some(&b'\n') => {
                        self.pos += 2;
                        self.line += 1;
                        return Ok(Some((start_line, fields)));
                    }
                    Some(_) => {
                        return Err(DataError::StrayQuote {
                            path: path.to_path_buf(),
                            line: self.line,
                        })
                    }
                }
            } else {
                let field_start = self.pos;
                while self.pos < b.len() && !matches!(b[self.pos], b',' | b'\n') {
                    if b[self.pos] == b'"' {
                        return Err(DataError::StrayQuote {
                            path: path.to_path_buf(),
                            line: self.line,
                        });
                    }
                    self.pos += 1;
                }
                let mut field = &b[field_start..self.pos];
                match b.get(self.pos) {
                    Some(b',') => {
                        fields.push(Cow::Borrowed(field));
                        self.pos += 1;
                    }
                    end => {
                        if let Some(stripped) = field.strip_suffix(b"\r") {
                            field = stripped;
                        }
                        fields.push(Cow::Borrowed(field));
                        if end.is_some() {
                            self.pos += 1;
                            self.line += 1;
                        }
                        return Ok(Some((start_line, fields)));
                    }
                }
            }
        }
    }
}

fn unescape_quotes(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        out.push(raw[i]);
        i += if raw[i] == b'"' { 2 } else { 1 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8], labels: Labels) -> Result<Table, DataError> {
        parse_csv(Path::new("t.csv"), text, &Columns::default(), labels)
    }

    #[test]
    fn reads_quoted_fields_crlf_and_escaped_quotes() {
        let t = parse(
            b"id,label,tweet\r\n1,0,\"hello, \"\"world\"\"\"\r\n2,1,\"two\nlines\"\n3,0,plain\r\n",
            Labels::Required,
        )
        .unwrap();
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[0].text, "hello, \"world\"");
        assert_eq!(t.rows[1].text, "two\nlines");
        assert_eq!(t.rows[1].line, 3);
        assert_eq!(t.rows[2].text, "plain");
        assert_eq!(t.rows[2].line, 5);
        assert_eq!(t.labels(), vec![0, 1, 0]);
    }

    #[test]
    fn carriage_return_inside_a_quoted_field_is_kept() {
        let t = parse(b"id,label,tweet\n1,0,\"a\rb\"\n", Labels::Required).unwrap();
        assert_eq!(t.rows[0].text, "a\rb");
    }

    #[test]
    fn columns_may_come_in_any_order_and_unlabelled_files_load() {
        let t = parse(b"tweet,id\nhi there,7\n", Labels::Optional).unwrap();
        assert!(!t.labelled);
        assert_eq!(t.rows[0].id, "7");
        assert_eq!(t.rows[0].label, None);
        assert_eq!(t.rows[0].text, "hi there");
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let t = parse(
            b"id,label,tweet\n1,0,ok\n2,0,bad \xF0\x9F here\n3,1,x\xFF\n",
            Labels::Required,
        )
        .unwrap();
        assert_eq!(t.rows[1].text, "bad \u{FFFD} here");
        assert_eq!(t.rows[2].text, "x\u{FFFD}");
        assert_eq!(t.invalid_utf8_fields, 2);
        assert_eq!(t.first_invalid_utf8_line, Some(3));
    }

    fn message(text: &[u8], labels: Labels) -> String {
        parse(text, labels).unwrap_err().to_string()
    }

    #[test]
    fn error_messages_name_file_and_line() {
        assert_eq!(
            message(b"", Labels::Required),
            "t.csv: the file is empty (expected a header row such as `id,label,tweet`)"
        );
        assert_eq!(
            message(b"id,tweet\n1,hi\n", Labels::Required),
            "t.csv:1: missing column `label` (header has: id,tweet)"
        );
        assert_eq!(
            message(b"id,label\n1,0\n", Labels::Optional),
            "t.csv:1: missing column `tweet` (header has: id,label)"
        );
        assert_eq!(
            message(b"id,label,tweet\n1,0,a\n2,2,b\n", Labels::Required),
            "t.csv:3: label `2` in column `label` is not 0 or 1"
        );
        assert_eq!(
            message(b"id,label,tweet\n1,0,a\n2,1\n", Labels::Required),
            "t.csv:3: expected 3 fields as in the header, found 2"
        );
        assert_eq!(
            message(b"id,label,tweet\n1,0,a\n2,1,b,c\n", Labels::Required),
            "t.csv:3: expected 3 fields as in the header, found 4"
        );
        assert_eq!(
            message(
                b"id,label,tweet\n1,0,a\n2,1,\"open\nnever closed\n",
                Labels::Required
            ),
            "t.csv:3: quoted field is never closed (unterminated quote)"
        );
        assert_eq!(
            message(b"id,label,tweet\n", Labels::Required),
            "t.csv: has a header but no data rows"
        );
    }

    fn parse_rule(text: &[u8], columns: &Columns, rule: &LabelRule) -> Result<Table, DataError> {
        parse_csv_with(Path::new("d.csv"), text, columns, Labels::Required, rule)
    }

    fn davidson_columns() -> Columns {
        Columns {
            id: String::new(),
            label: "class".into(),
            text: "tweet".into(),
            labels: Vec::new(),
        }
    }

    #[test]
    fn several_label_columns_make_a_multi_label_table() {
        let columns = Columns {
            id: "id".into(),
            text: "comment_text".into(),
            labels: vec!["toxic".into(), "insult".into()],
            ..Columns::default()
        };
        let text = b"id,comment_text,toxic,insult\na,you fool,1,1\nb,nice,0,0\nc,bad,1,0\n";
        let t = parse_rule(text, &columns, &LabelRule::default()).unwrap();
        assert!(t.multi_label && t.labelled);
        assert_eq!(t.classes, ["toxic", "insult"]);
        assert_eq!(t.targets(), vec![1, 1, 0, 0, 1, 0]);
        assert_eq!(t.class_counts(), vec![2, 1]);
        let bad = b"id,comment_text,toxic,insult\na,x,1,1\nb,y,0,yes\n";
        assert_eq!(
            parse_rule(bad, &columns, &LabelRule::default())
                .unwrap_err()
                .to_string(),
            "d.csv:3: label `yes` in column `insult` is not 0 or 1"
        );
        let missing = b"id,comment_text,toxic\na,x,1\n";
        assert_eq!(
            parse_rule(missing, &columns, &LabelRule::default())
                .unwrap_err()
                .to_string(),
            "d.csv:1: missing column `insult` (header has: id,comment_text,toxic)"
        );
        // A file to predict may have none of the label columns.
        let unlabelled = parse_csv_with(
            Path::new("d.csv"),
            b"id,comment_text\na,x\n",
            &columns,
            Labels::Optional,
            &LabelRule::default(),
        )
        .unwrap();
        assert!(!unlabelled.labelled && !unlabelled.multi_label);
    }

    const THREE_CLASSES: &[u8] =
        b",count,class,tweet\n0,3,neither,a\n1,3,hate,b\n2,3,offensive,c\n3,3,neither,d\n";

    #[test]
    fn word_labels_become_sorted_classes_and_an_empty_column_name_is_the_id() {
        let t = parse_rule(THREE_CLASSES, &davidson_columns(), &LabelRule::default()).unwrap();
        assert_eq!(t.classes, ["hate", "neither", "offensive"]);
        assert_eq!(t.labels(), vec![1, 0, 2, 1]);
        assert_eq!(t.rows[2].id, "2");
        assert_eq!(t.class_counts(), vec![1, 2, 1]);
    }

    #[test]
    fn given_classes_fix_the_order_and_unknown_values_name_file_line_and_column() {
        let rule = LabelRule {
            classes: Some(vec!["hate".into(), "offensive".into(), "neither".into()]),
            positive: Vec::new(),
        };
        let t = parse_rule(THREE_CLASSES, &davidson_columns(), &rule).unwrap();
        assert_eq!(t.labels(), vec![2, 0, 1, 2]);
        let rule = LabelRule {
            classes: Some(vec!["hate".into(), "neither".into()]),
            positive: Vec::new(),
        };
        assert_eq!(
            parse_rule(THREE_CLASSES, &davidson_columns(), &rule)
                .unwrap_err()
                .to_string(),
            "d.csv:4: label `offensive` in column `class` is not one of the classes (hate, neither)"
        );
        let twice = LabelRule {
            classes: Some(vec!["a".into(), "a".into()]),
            positive: Vec::new(),
        };
        assert_eq!(
            parse_rule(THREE_CLASSES, &davidson_columns(), &twice)
                .unwrap_err()
                .to_string(),
            "d.csv: class `a` is listed twice in `labels`"
        );
    }

    #[test]
    fn integer_classes_sort_as_numbers_and_zero_one_stays_binary() {
        let t = parse_rule(
            b"id,label,tweet\n1,10,a\n2,9,b\n3,2,c\n",
            &Columns::default(),
            &LabelRule::default(),
        )
        .unwrap();
        assert_eq!(t.classes, ["2", "9", "10"]);
        let t = parse_rule(
            b"id,label,tweet\n1,0,a\n2,0,b\n",
            &Columns::default(),
            &LabelRule::default(),
        )
        .unwrap();
        assert_eq!(t.classes, ["0", "1"]);
    }

    #[test]
    fn one_vs_rest_makes_a_binary_task() {
        let rule = LabelRule {
            classes: None,
            positive: vec!["hate".into(), "offensive".into()],
        };
        let t = parse_rule(THREE_CLASSES, &davidson_columns(), &rule).unwrap();
        assert_eq!(t.classes, ["not hate|offensive", "hate|offensive"]);
        assert_eq!(t.labels(), vec![0, 1, 1, 0]);
        assert_eq!(t.source_classes, ["hate", "neither", "offensive"]);
        // A test file read with the training file's rule gets the same two classes.
        let again = parse_rule(THREE_CLASSES, &davidson_columns(), &LabelRule::same_as(&t));
        assert_eq!(again.unwrap().labels(), t.labels());
        let bad = LabelRule {
            classes: None,
            positive: vec!["spam".into()],
        };
        assert_eq!(
            parse_rule(THREE_CLASSES, &davidson_columns(), &bad)
                .unwrap_err()
                .to_string(),
            "d.csv: positive class `spam` is not a value of column `class` (hate, neither, offensive)"
        );
    }

    #[test]
    fn empty_labels_single_classes_and_a_named_missing_id_are_errors() {
        assert_eq!(
            parse_rule(
                b"id,label,tweet\n1,pos,a\n2,,b\n",
                &Columns::default(),
                &LabelRule::default()
            )
            .unwrap_err()
            .to_string(),
            "d.csv:3: empty label in column `label`"
        );
        assert_eq!(
            parse_rule(
                b"id,label,tweet\n1,pos,a\n2,pos,b\n",
                &Columns::default(),
                &LabelRule::default()
            )
            .unwrap_err()
            .to_string(),
            "d.csv: column `label` has only the class `pos`: a classifier needs two or more"
        );
        let named = Columns {
            id: "tweet_id".into(),
            ..Columns::default()
        };
        assert_eq!(
            parse_rule(b"id,label,tweet\n1,0,a\n", &named, &LabelRule::default())
                .unwrap_err()
                .to_string(),
            "d.csv:1: missing column `tweet_id` (header has: id,label,tweet)"
        );
        // Without the default `id` column, rows are numbered from 0.
        let t = parse_rule(
            b"label,tweet\n0,a\n1,b\n",
            &Columns::default(),
            &LabelRule::default(),
        )
        .unwrap();
        assert_eq!(t.rows[1].id, "1");
    }

    /// Hostile CSV bytes: no input may panic; every rejection names the file.
    mod hostile {
        use super::*;
        use proptest::prelude::*;

        const PIECES: &[&[u8]] = &[
            b"id",
            b"label",
            b"tweet",
            b",",
            b"\"",
            b"\"\"",
            b"\n",
            b"\r\n",
            b"\r",
            b"0",
            b"1",
            b"2",
            b"-1",
            b" ",
            b"@user",
            b"#tag",
            b"\xEF\xBB\xBF",
            b"\xff\xfe",
            b"\xc3",
            b"\x00",
            b"\xe2\x82",
            b"id,label,tweet\n",
            b"1,0,hello\n",
            b"\"a,b\"",
            b"\"unterminated",
            b"\t",
        ];

        fn bytes() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..200),
                proptest::collection::vec(proptest::sample::select(PIECES), 0..40)
                    .prop_map(|p| p.concat()),
                proptest::collection::vec(proptest::sample::select(PIECES), 0..30).prop_map(|p| [
                    b"id,label,tweet\n".as_slice(),
                    &p.concat()
                ]
                .concat()),
                // Well-formed files with hostile text cells, so the accepting side is
                // exercised too (random bytes almost never make a loadable file).
                proptest::collection::vec(
                    (
                        0u32..10_000,
                        0u8..2,
                        proptest::collection::vec(proptest::sample::select(CELL_PIECES), 1..6)
                    ),
                    1..20
                )
                .prop_map(|rows| {
                    let mut file = b"id,label,tweet\n".to_vec();
                    for (id, label, text) in rows {
                        file.extend(format!("{id},{label},\"").as_bytes());
                        file.extend(text.concat());
                        file.extend(b"\"\n");
                    }
                    file
                }),
            ]
        }

        /// Cell text that stays inside a quoted field: commas, doubled quotes, line breaks,
        /// tags, non-ASCII.
        const CELL_PIECES: &[&[u8]] = &[
            b"hello",
            b",",
            b"\"\"",
            b"\n",
            b"\r\n",
            b" ",
            b"@user",
            b"#tag",
            b"\xc3\xa9",
            b"\xe2\x82\xac",
            b"\t",
        ];

        #[test]
        fn any_bytes_load_or_fail_with_the_file_named() {
            let loaded = std::cell::Cell::new(0usize);
            crate::fuzz::run(100_000, (bytes(), any::<bool>()), |(b, labelled)| {
                let labels = if labelled {
                    Labels::Required
                } else {
                    Labels::Optional
                };
                match parse_csv(Path::new("fuzz.csv"), &b, &Columns::default(), labels) {
                    Ok(t) => {
                        loaded.set(loaded.get() + 1);
                        prop_assert!(!t.rows.is_empty())
                    }
                    Err(e) => {
                        let m = e.to_string();
                        prop_assert!(m.starts_with("fuzz.csv"), "{}", m);
                    }
                }
                Ok(())
            });
            // Both sides reached: files that load and files refused with their name.
            eprintln!("loaded {} of 100000", loaded.get());
            assert!(loaded.get() > 1_000, "only {} files loaded", loaded.get());
            assert!(
                loaded.get() < 99_000,
                "only {} files refused",
                100_000 - loaded.get()
            );
        }
    }
}
