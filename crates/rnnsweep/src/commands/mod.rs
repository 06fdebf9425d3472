//! One module per command: its arguments next to the code that runs it. Commands do not call
//! each other; what they share lives in the library crates.

pub mod best;
pub mod confirm;
pub mod copy_study;
pub mod enqueue;
pub mod export;
pub mod export_model;
pub mod inspect;
pub mod leaderboard;
pub mod plot;
pub mod predict;
pub mod retry;
pub mod run;
pub mod show;
pub mod studies;
pub mod train;
pub mod worker;
