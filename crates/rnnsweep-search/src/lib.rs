//! The orchestrator, in the order a sweep travels: a YAML [`spec::Spec`] names a
//! [`space::Space`]; a [`sampling::Sampler`] proposes points in it and a [`pruning::Pruner`]
//! stops poor trials early; [`run::dispatch::run_sweep`] runs each trial in its own process
//! ([`run::process`], speaking [`run::protocol`]) and records it in a [`store::Store`] whose
//! SQLite form is Optuna's own schema; [`results`] reads a finished study back: the
//! leaderboard, confirmation, ensembles and the final model, plots and exports.
//!
//! The model crate is used only through its configuration type and public training API.

pub mod devices;
pub mod display;
pub mod predictions;
pub mod pruning;
pub mod results;
pub mod run;
pub mod sampling;
pub mod selection;
pub mod space;
pub mod spec;
pub mod store;
