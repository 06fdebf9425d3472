use crate::data::DataError;
use crate::tokenizer::TokenizerError;

/// Everything that can go wrong while training, evaluating or loading one configuration.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{at}: {message}")]
    Config { at: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Artifact { path: String, message: String },
    #[error("training diverged: the loss became {value} at epoch {epoch}, batch {batch}")]
    NonFinite {
        epoch: usize,
        batch: usize,
        value: f32,
    },
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
