//! The `rnnsweep` binary: argument parsing and glue over the library crates.

mod cli;
mod inspect;
mod progress;
mod report_cmd;
mod sweep_cmd;
mod train_cmd;
mod worker_cmd;

use std::process::ExitCode;

fn main() -> ExitCode {
    rnnsweep_model::alloc::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RNNSWEEP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
