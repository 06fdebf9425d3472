//! Reading a study back: the ranking behind the leaderboard and `best`, confirmation of the
//! leaders with fresh seeds, ensembles, retraining the final model, plots and exports.

pub mod confirm;
pub mod distill;
pub mod ensemble;
pub mod error;
pub mod export;
pub mod final_model;
pub mod leaderboard;
pub mod members;
pub mod plots;
pub mod retrain;
pub mod study;
pub mod warm_start;
