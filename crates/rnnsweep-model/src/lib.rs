//! Everything needed to train and evaluate ONE configuration of the BiLSTM text classifier.
//!
//! The data path is [`data`] (CSV rows) → [`tokenizer`] (Keras-compatible word ids) →
//! [`dataset`] (padding, stratified split, class weights, seeded batches). This crate knows
//! nothing of studies, storage or scheduling.

pub mod data;
pub mod dataset;
pub mod tokenizer;
