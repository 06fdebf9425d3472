//! The flags that say how a labelled CSV is read, shared by the commands that read one
//! outside a spec (`data inspect`, `train`): the spec's `data.columns`, `data.labels` and
//! `data.positive` as flags.

use rnnsweep_model::data::{Columns, LabelRule};

#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    #[arg(long, default_value = "id")]
    pub id_column: String,
    #[arg(long, default_value = "label")]
    pub label_column: String,
    #[arg(long, default_value = "tweet")]
    pub text_column: String,
    /// Several 0/1 label columns, comma-separated (a multi-label file; `--label-column` is then
    /// unused).
    #[arg(long, value_delimiter = ',')]
    pub label_columns: Vec<String>,
    /// The classes in order, comma-separated, or `auto` for the file's distinct values
    /// (default: 0 and 1, anything else is an error).
    #[arg(long)]
    pub labels: Option<String>,
    /// One-vs-rest: these classes (comma-separated) are the positive class of a binary task.
    #[arg(long, value_delimiter = ',')]
    pub positive: Vec<String>,
}

impl DataArgs {
    pub fn columns(&self) -> Columns {
        Columns {
            id: self.id_column.clone(),
            label: self.label_column.clone(),
            text: self.text_column.clone(),
            labels: self.label_columns.clone(),
        }
    }

    pub fn rule(&self) -> LabelRule {
        let positive = self.positive.clone();
        match self.labels.as_deref() {
            None if positive.is_empty() => LabelRule::binary(),
            None | Some("auto") => LabelRule {
                classes: None,
                positive,
            },
            Some(list) => LabelRule {
                classes: Some(list.split(',').map(|c| c.trim().to_string()).collect()),
                positive,
            },
        }
    }
}
