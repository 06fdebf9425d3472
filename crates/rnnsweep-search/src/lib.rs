//! The orchestrator: a YAML [`spec::Spec`] becomes a [`sampler::Space`]; a
//! [`sampler::Sampler`] proposes trials; [`dispatch::run_sweep`] runs each in a worker process
//! (protocol in [`worker`]) and records it in a [`store::Store`] whose SQLite form is
//! Optuna's own schema; [`leaderboard`] ranks the results.
//!
//! The model crate is used only through its configuration type and public training API.

pub mod confirm;
pub mod devices;
pub mod dispatch;
pub mod ensemble;
pub mod executor;
pub mod leaderboard;
pub mod outcome;
pub mod plan;
pub mod pruner;
pub mod report;
pub mod sampler;
pub mod space;
pub mod spec;
pub mod store;
pub mod study;
pub mod synthetic;
pub mod tpe;
pub mod trial_config;
pub mod worker;
