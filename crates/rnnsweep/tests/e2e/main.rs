//! End-to-end tests: the built `rnnsweep` binary run as a user runs it (sweeps with a stand-in
//! worker and with the built-in model, interrupts, crashes, resume, reports, PostgreSQL). One
//! test binary, so candle is linked once.

mod classes;
mod common;
mod data_inspect;
mod faults;
mod onnx;
mod postgres;
mod report;
mod scheduler;
mod search;
mod sweep;
mod train_predict;
mod views;
mod wandb;
