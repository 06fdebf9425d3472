//! `rnnsweep worker`: the built-in trial worker (hidden). Reads the task file named by
//! `RNNSWEEP_TRIAL`, runs it ([`rnnsweep_search::run::trial`]) and prints the JSON-lines
//! protocol on stdout.

use std::io::Write;

use anyhow::Context;
use rnnsweep_search::run::protocol::{TrialTask, WorkerMessage, TRIAL_ENV};
use rnnsweep_search::run::trial::run_trial;

fn emit(message: &WorkerMessage) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", message.to_line());
    let _ = out.flush();
}

pub fn run() -> anyhow::Result<std::process::ExitCode> {
    // A process that trains keeps freed memory for the next step; the sweep driver does not,
    // since every worker it forks copies its page tables.
    rnnsweep_model::alloc::keep_freed_memory();
    let path = std::env::var_os(TRIAL_ENV).with_context(|| {
        format!("{TRIAL_ENV} is not set: `rnnsweep worker` is started by `rnnsweep run`")
    })?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read the trial task", path.to_string_lossy()))?;
    let task: TrialTask = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a trial task", path.to_string_lossy()))?;
    match run_trial(&task, &mut |m| emit(&m)) {
        Ok(()) => Ok(std::process::ExitCode::SUCCESS),
        Err(e) => {
            emit(&WorkerMessage::Error {
                message: rnnsweep_search::display::error_said_once(&e),
            });
            Ok(std::process::ExitCode::from(crate::exit::ERROR))
        }
    }
}
