//! Running a sweep: the dispatcher's loop, the trial processes it starts and the protocol
//! they speak, the devices they are leased, and what a finished process means for the store.

pub mod dispatch;
pub mod error;
pub mod events;
mod final_budget;
pub mod identity;
pub mod outcome;
pub mod plan;
pub mod process;
pub mod protocol;
pub mod signals;
pub mod trial;
pub mod wandb;
