//! The `rnnsweep` binary: argument parsing and glue over the library crates (`cli` parses,
//! `commands/` holds one thin module per command, `progress` reports sweep events, `exit` holds
//! the exit codes).

/// Prints a line; a closed stdout (`rnnsweep run | head`) must not kill the driver mid-study.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod cli;
mod commands;
mod data_args;
mod exit;
mod progress;
mod sweeping;

use std::process::ExitCode;

fn main() -> ExitCode {
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
            let message = rnnsweep_search::display::said_once(err.chain().map(ToString::to_string));
            eprintln!("error: {message}");
            ExitCode::from(exit::ERROR)
        }
    }
}
