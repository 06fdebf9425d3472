//! Exit codes, in one place.

use std::process::ExitCode;

/// Bad input or a failed command.
pub const ERROR: u8 = 1;

/// The shell's convention for a process ended by signal n: 128 + n (SIGINT 130, SIGTERM 143).
pub fn for_signal(signal: i32) -> ExitCode {
    ExitCode::from((128 + signal) as u8)
}
