//! The sweep driver: claims trials from the store, runs each in a worker process, records
//! what the worker reports, and resumes an interrupted study. The driver alone owns the store;
//! progress goes out as [`SweepEvent`]s to whatever reporter the caller plugs in.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::assemble::build_config;
use crate::sampler::{GridSampler, Point, RandomSampler, Sampler, Space};
use crate::spec::{Method, Spec};
use crate::store::{Claim, Store, StoreError, TrialState};
use crate::worker::{metric, TrialTask, WorkerMessage, TRIAL_ENV};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Space(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What the driver needs besides the spec.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The program that runs the built-in worker (`<exe> worker`).
    pub exe: PathBuf,
    /// Trial folders go to `<results_dir>/<study>/trial-<n>/`.
    pub results_dir: PathBuf,
    pub device: String,
    /// `RAYON_NUM_THREADS` / `CANDLE_NUM_THREADS` for each trial.
    pub threads: usize,
    /// Accept a changed search space for an existing study.
    pub force_new_space: bool,
}

/// Progress, for reporters (progress lines, logs, the final table).
#[derive(Debug, Clone)]
pub enum SweepEvent {
    Requeued {
        failed: i64,
        queued: i64,
    },
    TrialStarted {
        number: i64,
        params: Point,
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
    Waiting {
        running_elsewhere: usize,
    },
}

/// Why the sweep loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCause {
    RunCapReached,
    SpaceExhausted,
    MaxDuration,
    TooManyFailures(usize),
    Interrupted,
}

/// Set by the signal handler: 1 after the first Ctrl-C (finish cleanly), 2+ after more.
pub static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to [`INTERRUPTS`] so the driver can stop its trial, record it
/// and exit; a second signal makes the stop immediate.
pub fn install_interrupt_handler() {
    // SAFETY: the handler only touches an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

pub const SPACE_ATTR: &str = "rnnsweep:space";

pub fn space_of(spec: &Spec) -> Space {
    Space {
        parameters: spec.parameters.clone(),
        training: spec.training.clone(),
    }
}

/// Opens (or creates) the spec's study, refusing a changed search space unless forced.
pub fn open_study(
    spec: &Spec,
    store: &mut dyn Store,
    force_new_space: bool,
) -> Result<i64, SweepError> {
    let fingerprint = Value::from(spec.space_fingerprint());
    let user = BTreeMap::from([
        ("spec".to_string(), Value::from(spec.source.clone())),
        (
            "spec_file".to_string(),
            Value::from(spec.path.display().to_string()),
        ),
        ("metric".to_string(), Value::from(spec.metric.clone())),
    ]);
    let system = BTreeMap::from([(SPACE_ATTR.to_string(), fingerprint.clone())]);
    let study = store.open_study(&spec.name, spec.direction, &user, &system)?;
    let stored = store.study_system_attrs(study)?.get(SPACE_ATTR).cloned();
    if stored.as_ref() != Some(&fingerprint) {
        if !force_new_space {
            return Err(SweepError::Space(format!(
                "study `{}` in {} was created with a different search space, training settings or metric; \
                 run with --force-new-space to continue it with this spec, or give the spec another name",
                spec.name,
                spec.storage.display()
            )));
        }
        store.set_study_system_attr(study, SPACE_ATTR, &fingerprint)?;
        store.set_study_user_attr(study, "spec", &Value::from(spec.source.clone()))?;
        store.set_study_user_attr(study, "metric", &Value::from(spec.metric.clone()))?;
    }
    Ok(study)
}

/// Runs the sweep until `run_cap` trials are finished, the space or time runs out, too many
/// trials fail, or the user interrupts.
pub fn run_sweep(
    spec: &Spec,
    store: &mut dyn Store,
    options: &SweepOptions,
    on_event: &mut dyn FnMut(&SweepEvent),
) -> Result<StopCause, SweepError> {
    let study = open_study(spec, store, options.force_new_space)?;
    let space = space_of(spec);
    let mut sampler: Box<dyn Sampler> = match spec.method {
        Method::Random => Box::new(RandomSampler::new(space.clone(), spec.seed)),
        Method::Grid => Box::new(GridSampler::new(space.clone(), spec.seed).ok_or_else(|| {
            SweepError::Space(format!(
                "the grid has more than {} points: use method: random",
                crate::sampler::MAX_GRID_POINTS
            ))
        })?),
    };
    let started = Instant::now();
    let mut failures = 0usize;
    loop {
        if interrupted() {
            return Ok(StopCause::Interrupted);
        }
        if spec.max_duration.is_some_and(|d| started.elapsed() >= d) {
            return Ok(StopCause::MaxDuration);
        }
        if failures >= spec.max_failures {
            return Ok(StopCause::TooManyFailures(failures));
        }
        for (failed, queued) in store.recover_stale(study, spec.heartbeat_grace)? {
            on_event(&SweepEvent::Requeued { failed, queued });
        }
        let claim = store.claim(study, spec.run_cap, &mut |trials, number| {
            sampler.sample(trials, number).map(|p| space.to_stored(&p))
        })?;
        let trial = match claim {
            Claim::Trial(t) => t,
            Claim::Exhausted => return Ok(StopCause::SpaceExhausted),
            Claim::CapReached => {
                let running = store
                    .trials(study)?
                    .iter()
                    .filter(|t| t.state == TrialState::Running)
                    .count();
                if running == 0 {
                    return Ok(StopCause::RunCapReached);
                }
                // Other drivers hold the last trials: wait, in case one dies and its trial
                // comes back to the queue.
                on_event(&SweepEvent::Waiting {
                    running_elsewhere: running,
                });
                std::thread::sleep(Duration::from_secs(1).min(spec.heartbeat_grace / 4));
                continue;
            }
        };
        let state = run_trial(spec, store, study, &space, &trial, options, on_event)?;
        if state == TrialState::Fail {
            failures += 1;
        }
    }
}

/// Where a trial keeps its files.
pub fn trial_dir(results_dir: &Path, study: &str, number: i64) -> PathBuf {
    results_dir.join(study).join(format!("trial-{number}"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SweepError + '_ {
    move |source| SweepError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn spawn_worker(
    spec: &Spec,
    options: &SweepOptions,
    task_path: &Path,
    dir: &Path,
) -> std::io::Result<Child> {
    let mut cmd = match &spec.command {
        Some(argv) if !argv.is_empty() => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        _ => {
            let mut c = Command::new(&options.exe);
            c.arg("worker");
            c
        }
    };
    let threads = options.threads.max(1).to_string();
    cmd.env(TRIAL_ENV, task_path)
        .env("RAYON_NUM_THREADS", &threads)
        .env("CANDLE_NUM_THREADS", &threads)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir(std::env::current_dir().unwrap_or_else(|_| dir.to_path_buf()));
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // Own process group: Ctrl-C reaches the driver, which stops the worker itself.
                libc::setpgid(0, 0);
                // A worker must not outlive a driver killed with SIGKILL.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    cmd.spawn()
}

/// Stops a worker: SIGTERM to its group, a grace period, then SIGKILL.
fn stop_worker(child: &mut Child, grace: Duration) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain signal sends to the worker's own process group.
    unsafe {
        libc::kill(-pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if INTERRUPTS.load(Ordering::SeqCst) > 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[allow(clippy::too_many_arguments)]
fn run_trial(
    spec: &Spec,
    store: &mut dyn Store,
    study: i64,
    space: &Space,
    trial: &crate::store::TrialRecord,
    options: &SweepOptions,
    on_event: &mut dyn FnMut(&SweepEvent),
) -> Result<TrialState, SweepError> {
    let started = Instant::now();
    let params = space.decode(&trial.params);
    let resumed_from = trial
        .system_attrs
        .get("rnnsweep:resume_from")
        .and_then(Value::as_i64);
    on_event(&SweepEvent::TrialStarted {
        number: trial.number,
        params: params.clone(),
        resumed_from,
    });
    let fail = |store: &mut dyn Store,
                reason: String,
                on_event: &mut dyn FnMut(&SweepEvent)|
     -> Result<TrialState, SweepError> {
        store.set_trial_system_attr(trial.trial_id, "fail_reason", &Value::from(reason.clone()))?;
        store.finish(trial.trial_id, TrialState::Fail, None)?;
        on_event(&SweepEvent::TrialFinished {
            number: trial.number,
            state: TrialState::Fail,
            value: None,
            seconds: started.elapsed().as_secs_f64(),
            reason: Some(reason),
        });
        Ok(TrialState::Fail)
    };
    let config = match (build_config(&spec.training, &params), &spec.command) {
        (Ok(c), _) => serde_json::to_value(&c).unwrap_or(Value::Null),
        // A user's command reads its own parameters from `params`.
        (Err(_), Some(_)) => Value::Null,
        (Err(m), None) => return fail(store, format!("invalid configuration: {m}"), on_event),
    };
    let dir = trial_dir(&options.results_dir, &spec.name, trial.number);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let checkpoint_dir = trial_dir(
        &options.results_dir,
        &spec.name,
        resumed_from.unwrap_or(trial.number),
    )
    .join("checkpoint");
    let task = TrialTask {
        study: spec.name.clone(),
        number: trial.number,
        params: params.clone(),
        config,
        train_file: spec.train_file.clone(),
        columns: spec.columns.clone(),
        checkpoint_dir,
        trial_dir: dir.clone(),
        metric: spec.metric.clone(),
        device: options.device.clone(),
    };
    let task_path = dir.join("trial.json");
    std::fs::write(
        &task_path,
        serde_json::to_string_pretty(&task).unwrap_or_default(),
    )
    .map_err(io_err(&task_path))?;
    store.set_trial_user_attr(
        trial.trial_id,
        "device",
        &Value::from(options.device.clone()),
    )?;
    store.set_trial_system_attr(
        trial.trial_id,
        "rnnsweep:trial_dir",
        &Value::from(dir.display().to_string()),
    )?;

    let mut child = match spawn_worker(spec, options, &task_path, &dir) {
        Ok(c) => c,
        Err(e) => return fail(store, format!("cannot start the worker: {e}"), on_event),
    };
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().expect("piped");
    let log_path = dir.join("stderr.log");
    let stderr_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        let _ = std::fs::File::create(&log_path).and_then(|mut f| f.write_all(&buf));
        String::from_utf8_lossy(&buf).into_owned()
    });

    let heartbeat_every = (spec.heartbeat_grace / 4).max(Duration::from_millis(200));
    let mut final_message: Option<WorkerMessage> = None;
    let mut error: Option<String> = None;
    let mut epochs_seen = 0i64;
    let mut interrupted_here = false;
    loop {
        if interrupted() {
            interrupted_here = true;
            stop_worker(&mut child, Duration::from_secs(5));
            break;
        }
        match rx.recv_timeout(heartbeat_every) {
            Ok(line) => match WorkerMessage::parse(&line) {
                Some(WorkerMessage::Epoch { epoch, metrics }) => {
                    let value = metric(&metrics, &spec.metric);
                    store.report_epoch(
                        trial.trial_id,
                        epoch,
                        value,
                        &Value::Object(metrics.into_iter().collect()),
                    )?;
                    epochs_seen = epochs_seen.max(epoch);
                    on_event(&SweepEvent::Epoch {
                        number: trial.number,
                        epoch,
                        value,
                    });
                }
                Some(done @ WorkerMessage::Final { .. }) => final_message = Some(done),
                Some(WorkerMessage::Error { message }) => error = Some(message),
                None => {}
            },
            Err(mpsc::RecvTimeoutError::Timeout) => store.heartbeat(trial.trial_id)?,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait();
    let _ = reader.join();
    let stderr_text = stderr_thread.join().unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    store.set_trial_user_attr(trial.trial_id, "duration_s", &json!(seconds))?;

    if interrupted_here {
        let queued = store.fail_and_requeue(study, trial.trial_id, "interrupted by the user")?;
        on_event(&SweepEvent::TrialFinished {
            number: trial.number,
            state: TrialState::Fail,
            value: None,
            seconds,
            reason: Some(format!("interrupted; re-queued as trial {queued}")),
        });
        return Ok(TrialState::Fail);
    }
    if let Some(message) = error {
        return fail(store, message, on_event);
    }
    let Some(WorkerMessage::Final {
        metrics,
        best_epoch,
        epochs,
        stop,
    }) = final_message
    else {
        let tail: String = stderr_text
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        let how = match status {
            Ok(s) => match s.code() {
                Some(c) => format!("exited with status {c}"),
                None => format!("was killed ({s})"),
            },
            Err(e) => format!("could not be waited for: {e}"),
        };
        return fail(
            store,
            format!(
                "the worker {how} without a final result{}",
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            ),
            on_event,
        );
    };
    let Some(value) = metric(&metrics, &spec.metric).filter(|v| v.is_finite()) else {
        return fail(
            store,
            format!("the final result has no finite `{}`", spec.metric),
            on_event,
        );
    };
    for (k, v) in &metrics {
        store.set_trial_user_attr(trial.trial_id, k, v)?;
    }
    store.set_trial_user_attr(
        trial.trial_id,
        "epochs",
        &json!(epochs.unwrap_or(epochs_seen)),
    )?;
    if let Some(b) = best_epoch {
        store.set_trial_user_attr(trial.trial_id, "best_epoch", &json!(b))?;
    }
    if let Some(s) = stop {
        store.set_trial_user_attr(trial.trial_id, "stop_reason", &json!(s))?;
    }
    store.finish(trial.trial_id, TrialState::Complete, Some(value))?;
    on_event(&SweepEvent::TrialFinished {
        number: trial.number,
        state: TrialState::Complete,
        value: Some(value),
        seconds,
        reason: None,
    });
    Ok(TrialState::Complete)
}
