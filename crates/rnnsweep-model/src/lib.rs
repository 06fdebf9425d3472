//! Everything needed to train and evaluate ONE configuration of the BiLSTM text classifier.
//!
//! The data path is [`data`] (CSV rows) → [`tokenizer`] (Keras-compatible word ids) →
//! [`dataset`] (padding, stratified split, class weights, seeded batches). This crate knows
//! nothing of studies, storage or scheduling.

pub mod alloc;
pub mod artifact;
pub mod config;
pub mod data;
pub mod dataset;
pub mod error;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod init;
pub mod lstm;
pub mod metrics;
pub mod net;
pub mod optim;
pub mod pooling;
pub mod threshold;
pub mod tokenizer;
pub mod train;

pub use candle_core::Device;
pub use config::ModelConfig;
pub use error::ModelError;

/// Parses a device name: `cpu`, or `cuda:N` in builds with the `cuda` feature.
pub fn device(name: &str) -> Result<candle_core::Device, ModelError> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(ordinal)) => {
                if candle_core::utils::cuda_is_available() {
                    Ok(candle_core::Device::new_cuda(ordinal)?)
                } else {
                    Err(ModelError::Config {
                        at: "device".into(),
                        message: format!("`{other}` needs a build with the `cuda` feature"),
                    })
                }
            }
            _ => Err(ModelError::Config {
                at: "device".into(),
                message: format!("`{other}` is not a device (use cpu or cuda:N)"),
            }),
        },
    }
}
