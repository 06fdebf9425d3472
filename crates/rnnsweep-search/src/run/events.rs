//! What a sweep tells its reporter: progress events as trials start, report and end, and
//! why the loop stopped. The dispatcher sends them and never prints.

use std::path::PathBuf;

use crate::space::Point;
use crate::store::TrialState;

/// Progress, for reporters (progress bars, log lines, the final table).
#[derive(Debug, Clone)]
pub enum SweepEvent {
    /// A trial whose driver died: re-queued as `queued`, or (`None`) given up after
    /// `max_retries`.
    Requeued {
        failed: i64,
        queued: Option<i64>,
    },
    TrialStarted {
        number: i64,
        params: Point,
        device: String,
        epochs: Option<i64>,
        resumed_from: Option<i64>,
    },
    Epoch {
        number: i64,
        epoch: i64,
        value: Option<f64>,
    },
    TrialFinished {
        number: i64,
        state: TrialState,
        value: Option<f64>,
        seconds: f64,
        reason: Option<String>,
    },
    /// A worker's warning (e.g. a checkpoint it would not resume).
    TrialWarning {
        number: i64,
        message: String,
    },
    /// The first interrupt: no new trials; running ones finish.
    Draining {
        running: usize,
    },
    Waiting {
        running_elsewhere: usize,
    },
    /// A trial was killed from outside: `device` runs `remaining` trials at once from now on.
    SlotRetired {
        device: String,
        remaining: usize,
    },
    /// A trial past `trial_timeout` or `silence_timeout` is being stopped.
    TimingOut {
        number: i64,
        reason: String,
    },
}

/// Why the sweep loop ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StopCause {
    /// A trial's objective reached `metric.target`.
    TargetReached {
        trial: i64,
        value: f64,
    },
    /// The first trials of the run all failed: the script, the command or the data is broken.
    BrokenSetup {
        failed: usize,
        /// Each distinct reason with how many of those trials gave it, most frequent first.
        reasons: Vec<(String, usize)>,
        /// The first failed trial's folder (its stderr.log, trial.json).
        trial_dir: PathBuf,
    },
    /// The machine, not a trial, is at fault (a full disk, a read-only or forbidden folder,
    /// too many open files, the data file gone): no new trial was started.
    EnvironmentFault {
        fault: String,
        path: String,
        /// The trial that met it, if one did (the driver may meet it on its own).
        trial: Option<i64>,
        detail: String,
    },
    RunCapReached,
    SpaceExhausted,
    MaxDuration,
    /// `max_duration` less the time kept for the spec's final model (estimated from the
    /// trials' measured epochs) was reached.
    FinalModelReserve {
        reserved: std::time::Duration,
    },
    TooManyFailures(usize),
    /// First interrupt: running trials were allowed to finish.
    Interrupted,
    /// Second interrupt (or SIGTERM): running trials were stopped and queued again.
    InterruptedNow,
}
