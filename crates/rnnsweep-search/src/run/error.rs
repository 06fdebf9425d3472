//! Why a sweep could not go on: the store, the search space, or the driver's own files.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Space(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}
