//! Everything needed to train and evaluate ONE configuration of the BiLSTM text classifier.
//!
//! The data path is [`data`] (CSV rows) → [`tokenizer`] (Keras-compatible word ids) →
//! [`encoder`] (a view per tower: words, characters, or both side by side in one row) →
//! [`dataset`] (padding, stratified split, class weights, seeded batches). This crate knows
//! nothing of studies, storage or scheduling.

pub mod alloc;
pub mod artifact;
pub mod config;
pub mod data;
pub mod dataset;
pub mod device;
pub mod encoder;
pub mod error;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod init;
pub mod metrics;
pub mod nn;
pub mod onnx;
pub mod optim;
pub mod seed;
pub mod threshold;
pub mod tokenizer;
pub mod train;

/// How many CUDA devices the driver reports, or why it cannot say (no driver, no device), so a
/// sweep can refuse `cuda:N` before it starts instead of failing every trial.
#[cfg(feature = "cuda")]
pub fn cuda_device_count() -> Result<usize, String> {
    use candle_core::cuda_backend::cudarc::driver::result;
    result::init()
        .and_then(|()| result::device::get_count())
        .map(|count| usize::try_from(count).unwrap_or(0))
        .map_err(|e| {
            let text = |r: Result<&std::ffi::CStr, _>| {
                r.map_or_else(|_| format!("{e:?}"), |s| s.to_string_lossy().into_owned())
            };
            format!("{}: {}", text(e.error_name()), text(e.error_string()))
        })
}
