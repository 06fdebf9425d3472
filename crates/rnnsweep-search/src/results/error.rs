//! The one error type of reading and using a stored study.

use crate::spec::SpecError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
    #[error(transparent)]
    Model(#[from] rnnsweep_model::error::ModelError),
    #[error(transparent)]
    Data(#[from] rnnsweep_model::data::DataError),
}
