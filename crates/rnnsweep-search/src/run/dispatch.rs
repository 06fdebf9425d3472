//! The sweep's dispatcher, sole owner of the store and the pruner: it claims trials while the
//! device pool has free slots, hands each to a [`TrialProcess`] (its own OS process),
//! records what the trials report, decides how each trial ended ([`crate::run::outcome`]) and resumes
//! an interrupted study. It never prints: progress goes out as [`SweepEvent`]s to whatever
//! reporter the caller plugs in, and interrupts come in as [`Interrupts`] flags.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use rnnsweep_model::device::DeviceName;

use crate::devices::{DevicePool, Lease};
use crate::display::human_duration;
use crate::pruning::Pruner;
use crate::run::error::SweepError;
use crate::run::events::{StopCause, SweepEvent};
use crate::run::final_budget::{FinalPlan, RunningTrial};
use crate::run::identity::{open_study, study_uuid, trial_dir};
use crate::run::outcome::{
    classify, environment_fault, group_reasons, path_in, Ended, Outcome, KILLED_FROM_OUTSIDE,
};
use crate::run::process::{Line, TrialProcess};
use crate::run::protocol::{metric, TrialTask, WorkerMessage};
use crate::run::signals::Interrupts;
use crate::sampling;
use crate::space::trial_config::build_config;
use crate::space::Space;
use crate::spec::Spec;
use crate::store::recovery::legacy_fixed_params;
use crate::store::{keys, user_values, Claim, Store, TrialRecord, TrialState};

/// What the driver needs besides the spec.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// The program that runs the built-in worker (`<exe> worker`).
    pub exe: PathBuf,
    /// Trial folders go to `<results_dir>/<study>/trial-<n>/`.
    pub results_dir: PathBuf,
    /// Accept a changed search space for an existing study.
    pub force_new_space: bool,
    /// Set by the caller's signal handlers (or a test): drain, then stop.
    pub interrupts: Interrupts,
}

/// How long a trial stopped for its time limit gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

struct Running {
    trial: TrialRecord,
    lease: Lease,
    device: String,
    process: TrialProcess,
    started: Instant,
    last_beat: Instant,
    /// The last protocol line: `silence_timeout` counts from here.
    last_line: Instant,
    /// When the time limit's SIGTERM went out, and whether SIGKILL followed.
    stopping_since: Option<Instant>,
    killed: bool,
    ended: Ended,
}

struct Dispatcher<'a> {
    spec: &'a Spec,
    store: &'a mut dyn Store,
    options: &'a SweepOptions,
    study: i64,
    study_uuid: String,
    space: Space,
    pool: DevicePool,
    running: HashMap<u64, Running>,
    next_id: u64,
    tx: mpsc::Sender<(u64, Line)>,
    failures: usize,
    /// Trials of this run that reached an end (not re-queued), and the failed ones among them
    /// with their reasons and folders: a run whose first trials all fail stops.
    run_finished: usize,
    run_failed: Vec<(String, PathBuf)>,
    /// Set when the sweep must start no new trial (a broken setup, a fault of the machine).
    halt: Option<StopCause>,
    pruner: Option<Box<dyn Pruner + Send>>,
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
    let study_uuid = study_uuid(store, study)?;
    let space = spec.space();
    let mut sampler = sampling::build(spec.method, &space, spec.seed, spec.direction, &spec.tpe)
        .map_err(SweepError::Space)?;
    let pool = DevicePool::new(&spec.resources).map_err(SweepError::Space)?;
    let (tx, rx) = mpsc::channel();
    let mut d = Dispatcher {
        spec,
        store,
        options,
        study,
        study_uuid,
        space,
        pool,
        running: HashMap::new(),
        next_id: 0,
        tx,
        failures: 0,
        run_finished: 0,
        run_failed: Vec::new(),
        halt: None,
        pruner: crate::pruning::build(spec.early_terminate.as_ref(), spec.direction),
    };
    let started = Instant::now();
    let shortest_limit = [
        Some(spec.heartbeat_grace),
        spec.trial_timeout,
        spec.silence_timeout,
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(spec.heartbeat_grace);
    let tick = (shortest_limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut last_recovery: Option<Instant> = None;
    let mut drained_announced = false;
    // Why no new trial can start, once that is known.
    let mut no_more: Option<StopCause> = None;
    // The final model's share of max_duration: planned again whenever a trial finishes, with
    // the trials still running priced in at every turn.
    let student_rows = if spec.max_duration.is_some() {
        crate::run::final_budget::student_rows_factor(spec)
    } else {
        1.0
    };
    let mut final_plan = FinalPlan::new(spec, &[], student_rows);
    let mut planned_at: Option<usize> = None;
    let mut reserve_began: Option<Duration> = None;
    loop {
        // Only a spec with both a limit and a final model has anything to reserve.
        let reserves = spec.max_duration.is_some() && spec.final_ensemble.is_some();
        if reserves && planned_at != Some(d.run_finished) {
            final_plan = FinalPlan::new(spec, &d.store.trials(study)?, student_rows);
            planned_at = Some(d.run_finished);
        }
        let reserved = if reserves {
            final_plan.with_running(&d.running_for_reserve())
        } else {
            Duration::ZERO
        };
        let interrupt_level = options.interrupts.level();
        if interrupt_level >= 2 {
            d.stop_all(on_event)?;
            return Ok(StopCause::InterruptedNow);
        }
        let stop_new = if interrupt_level == 1 {
            if !drained_announced && !d.running.is_empty() {
                on_event(&SweepEvent::Draining {
                    running: d.running.len(),
                });
            }
            drained_announced = true;
            Some(StopCause::Interrupted)
        } else if let Some(cause) = &d.halt {
            Some(cause.clone())
        } else if spec.max_duration.is_some_and(|m| started.elapsed() >= m) {
            Some(StopCause::MaxDuration)
        } else if let Some(reserved) = reserve_began {
            // Cutting the running trials lowers the estimate; the rest stays the final model's.
            Some(StopCause::FinalModelReserve { reserved })
        } else if spec
            .max_duration
            .is_some_and(|m| started.elapsed() + reserved >= m)
        {
            reserve_began = Some(reserved);
            Some(StopCause::FinalModelReserve { reserved })
        } else if d.failures >= spec.max_failures {
            Some(StopCause::TooManyFailures(d.failures))
        } else {
            None
        };
        // The rest of max_duration is the final model's: a trial still running would eat into
        // it (a slow one by many minutes), so it ends at its last reported epoch.
        if reserves
            && matches!(
                stop_new,
                Some(StopCause::MaxDuration | StopCause::FinalModelReserve { .. })
            )
        {
            d.cut_for_final_model(on_event)?;
        }

        if stop_new.is_none() && d.pool.has_free() {
            if last_recovery.is_none_or(|t| t.elapsed() >= tick) {
                for r in d
                    .store
                    .recover_stale(study, spec.heartbeat_grace, spec.max_retries)?
                {
                    // A trial given up after its drivers kept dying is bounded by max_retries;
                    // it says nothing about this run's setup, so max_failures does not count it.
                    on_event(&SweepEvent::Requeued {
                        failed: r.failed,
                        queued: r.queued,
                    });
                }
                last_recovery = Some(Instant::now());
            }
            no_more = None;
            // A trial that fails at once frees its slot at once: the failure cap must be
            // checked here too, or a broken configuration would be claimed forever.
            while d.pool.has_free() && d.failures < spec.max_failures && d.halt.is_none() {
                if let Some(gone) = spec.data_files().into_iter().find(|f| !f.is_file()) {
                    d.halt = Some(StopCause::EnvironmentFault {
                        fault: "the data file is gone".into(),
                        path: gone.display().to_string(),
                        trial: None,
                        detail: String::new(),
                    });
                    break;
                }
                let history = sampler.needs_history();
                let claim =
                    d.store
                        .claim(study, spec.run_cap, history, &mut |trials, number| {
                            sampler
                                .sample(trials, number)
                                .map(|p| d.space.to_stored(&p))
                        })?;
                match claim {
                    Claim::Trial(t) => d.start(t, on_event)?,
                    Claim::Exhausted => {
                        no_more = Some(StopCause::SpaceExhausted);
                        break;
                    }
                    Claim::CapReached => {
                        no_more = Some(StopCause::RunCapReached);
                        break;
                    }
                }
            }
        }

        if d.running.is_empty() {
            if let Some(cause) = stop_new {
                return Ok(cause);
            }
            match &no_more {
                Some(StopCause::RunCapReached) => {
                    let elsewhere = d
                        .store
                        .summary(study)?
                        .counts
                        .get(TrialState::Running.as_str())
                        .copied()
                        .unwrap_or(0);
                    if elsewhere == 0 {
                        return Ok(StopCause::RunCapReached);
                    }
                    // Other drivers hold the last trials: wait, in case one dies and its
                    // trial comes back to the queue.
                    on_event(&SweepEvent::Waiting {
                        running_elsewhere: elsewhere,
                    });
                    std::thread::sleep(tick);
                    continue;
                }
                Some(cause) => return Ok(cause.clone()),
                None => {}
            }
        }

        // Wake for the final model's share of max_duration on time, not a tick late.
        let wait = match spec.max_duration.filter(|_| reserves) {
            Some(m) => m
                .saturating_sub(started.elapsed() + reserved)
                .clamp(Duration::from_millis(10), tick),
            None => tick,
        };
        match rx.recv_timeout(wait) {
            Ok((id, Line::Text(line))) => d.on_line(id, &line, on_event)?,
            Ok((id, Line::Closed)) => d.finish(id, on_event)?,
            Err(_) => {}
        }
        d.heartbeats(tick)?;
        d.enforce_time_limits(on_event);
    }
}

impl Dispatcher<'_> {
    /// The trials running now as the final model's reserve prices them.
    fn running_for_reserve(&self) -> Vec<RunningTrial> {
        self.running
            .values()
            .map(|r| RunningTrial {
                seconds: r.started.elapsed().as_secs_f64(),
                best_value: r
                    .trial
                    .intermediate
                    .iter()
                    .filter_map(|(_, v)| *v)
                    .filter(|v| v.is_finite())
                    .reduce(|a, b| self.spec.direction.best(a, b)),
            })
            .collect()
    }

    /// A queued trial (enqueued by Optuna or `rnnsweep enqueue`, or re-queued) runs with
    /// exactly its given values, checked against the space; the reason names the parameter.
    fn resolve_queued(
        &mut self,
        trial: &mut TrialRecord,
    ) -> Result<Result<(), String>, SweepError> {
        let given = if !trial.params.is_empty() {
            // Optuna's `add_trial` and RetryFailedTrialCallback store the values as params.
            Value::Object(trial.param_values().into_iter().collect())
        } else {
            match trial.system_attrs.get(keys::FIXED_PARAMS) {
                Some(v) => match legacy_fixed_params(v) {
                    Some(stored) => Value::Object(user_values(&stored).into_iter().collect()),
                    None => v.clone(),
                },
                None => Value::Object(Default::default()),
            }
        };
        let params = match self.space.resolve_fixed(&given) {
            Ok(p) => p,
            Err(m) => return Ok(Err(m)),
        };
        if params != trial.params {
            self.store.set_trial_params(trial.trial_id, &params)?;
            trial.params = params;
        }
        Ok(Ok(()))
    }

    fn start(
        &mut self,
        mut trial: TrialRecord,
        on_event: &mut dyn FnMut(&SweepEvent),
    ) -> Result<(), SweepError> {
        let queued = trial.params.is_empty()
            || trial.system_attrs.contains_key(keys::FIXED_PARAMS)
            || trial.system_attrs.contains_key(keys::FAILED_TRIAL);
        if queued {
            if let Err(reason) = self.resolve_queued(&mut trial)? {
                return self.fail_now(
                    &trial,
                    Instant::now(),
                    format!("queued trial not run: {reason}"),
                    on_event,
                );
            }
        }
        let avoid = trial
            .system_attrs
            .get(keys::AVOID_DEVICE)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<DeviceName>().ok());
        let Some(lease) = self.pool.lease(avoid) else {
            // Cannot happen: claims are made only with a free slot.
            self.store.fail_and_requeue(
                self.study,
                trial.trial_id,
                "no free device slot",
                &BTreeMap::new(),
            )?;
            return Ok(());
        };
        let (env, worker_device) = self.pool.worker_env(&lease);
        let spec = self.spec;
        let params = self.space.decode(&trial.params);
        let resumed_from = trial
            .system_attrs
            .get(keys::RESUME_FROM)
            .and_then(Value::as_i64);
        let started = Instant::now();
        let device_label = lease.device.to_string();
        let seed = trial.system_attrs.get(keys::SEED).and_then(Value::as_u64);
        let config = match build_config(&spec.training, &params) {
            // A `confirm` run: the same configuration with its own seed.
            Ok(c) => Some(rnnsweep_model::config::ModelConfig {
                seed: seed.unwrap_or(c.seed),
                ..c
            }),
            // A user's command (or a synthetic function) reads its own parameters.
            Err(_) if !spec.trial.trains_model() => None,
            Err(m) => {
                self.pool.release(&lease);
                return self.fail_now(
                    &trial,
                    started,
                    format!("invalid configuration: {m}"),
                    on_event,
                );
            }
        };
        on_event(&SweepEvent::TrialStarted {
            number: trial.number,
            params: params.clone(),
            device: device_label.clone(),
            epochs: spec
                .trial
                .function()
                .map(|f| f.epochs as i64)
                .or_else(|| config.as_ref().map(|c| c.epochs as i64)),
            resumed_from,
        });
        let dir = trial_dir(
            &self.options.results_dir,
            &spec.name,
            &self.study_uuid,
            trial.number,
        );
        let task = TrialTask {
            study: spec.name.clone(),
            number: trial.number,
            params: params.clone(),
            config,
            train_file: spec.train_file.clone(),
            validation_file: spec.validation_file.clone(),
            columns: spec.columns.clone(),
            labels: spec.labels.clone(),
            checkpoint_dir: trial_dir(
                &self.options.results_dir,
                &spec.name,
                &self.study_uuid,
                resumed_from.unwrap_or(trial.number),
            )
            .join("checkpoint"),
            trial_dir: dir.clone(),
            metric: spec.metric.clone(),
            device: worker_device.clone(),
            function: spec.trial.function().cloned(),
        };
        let task_path = dir.join("trial.json");
        if let Err((path, e)) = write_task(&dir, &task_path, &task) {
            // The driver's own write: the machine is at fault, not this trial's values.
            self.pool.release(&lease);
            let fault =
                environment_fault(&e.to_string()).unwrap_or("cannot write the trial folder");
            let detail = format!("cannot write {}: {e}", path.display());
            let path = path.display().to_string();
            return self.halt_for_environment(&trial, started, fault, path, detail, on_event);
        }
        self.store.set_trial_user_attr(
            trial.trial_id,
            keys::DEVICE,
            &Value::from(device_label.clone()),
        )?;
        self.store.set_trial_system_attr(
            trial.trial_id,
            keys::TRIAL_DIR,
            &Value::from(dir.display().to_string()),
        )?;

        let id = self.next_id;
        self.next_id += 1;
        let process = match TrialProcess::spawn(
            &spec.trial,
            &self.options.exe,
            &task,
            &task_path,
            &env,
            id,
            self.tx.clone(),
        ) {
            Ok(w) => w,
            Err(e) => {
                self.pool.release(&lease);
                return self.fail_now(
                    &trial,
                    started,
                    format!("cannot start the worker: {e}"),
                    on_event,
                );
            }
        };
        let kill_retry_allowed = !trial.system_attrs.contains_key(keys::KILL_RETRY);
        let oom_retry_allowed = !trial.system_attrs.contains_key(keys::OOM_RETRY)
            && matches!(lease.device, DeviceName::Cuda(_))
            && self.pool.capacity() > 1;
        self.running.insert(
            id,
            Running {
                trial,
                lease,
                device: device_label,
                process,
                started,
                last_beat: Instant::now(),
                last_line: Instant::now(),
                stopping_since: None,
                killed: false,
                ended: Ended {
                    oom_retry_allowed,
                    kill_retry_allowed,
                    ..Ended::default()
                },
            },
        );
        Ok(())
    }

    /// Fails a running trial in one store call: state, reason and any attributes.
    fn fail_now(
        &mut self,
        trial: &TrialRecord,
        started: Instant,
        reason: String,
        on_event: &mut dyn FnMut(&SweepEvent),
    ) -> Result<(), SweepError> {
        self.fail_with(trial, started, reason, BTreeMap::new(), on_event)
    }

    fn fail_with(
        &mut self,
        trial: &TrialRecord,
        started: Instant,
        reason: String,
        user_attrs: BTreeMap<String, Value>,
        on_event: &mut dyn FnMut(&SweepEvent),
    ) -> Result<(), SweepError> {
        let system = BTreeMap::from([(keys::FAIL_REASON.to_string(), Value::from(reason.clone()))]);
        self.store
            .finish(trial.trial_id, TrialState::Fail, None, &user_attrs, &system)?;
        self.failures += 1;
        let dir = trial_dir(
            &self.options.results_dir,
            &self.spec.name,
            &self.study_uuid,
            trial.number,
        );
        self.run_failed.push((reason.clone(), dir));
        self.ended_in_run();
        on_event(&SweepEvent::TrialFinished {
            number: trial.number,
            state: TrialState::Fail,
            value: None,
            seconds: started.elapsed().as_secs_f64(),
            reason: Some(reason),
        });
        Ok(())
    }

    fn on_line(
        &mut self,
        id: u64,
        line: &str,
        on_event: &mut dyn FnMut(&SweepEvent),
    ) -> Result<(), SweepError> {
        let Some(r) = self.running.get_mut(&id) else {
            return Ok(());
        };
        if r.ended.pruned_at.is_some() {
            // Lines the worker wrote before it was stopped: the trial ended at the pruning epoch.
            return Ok(());
        }
        let message = WorkerMessage::parse(line);
        if message.is_some() {
            r.last_line = Instant::now();
        }
        match message {
            Some(WorkerMessage::Epoch { epoch, metrics }) => {
                let value = metric(&metrics, &self.spec.metric);
                self.store.report_epoch(
                    r.trial.trial_id,
                    epoch,
                    value,
                    &Value::Object(metrics.into_iter().collect()),
                )?;
                r.ended.epochs_seen = r.ended.epochs_seen.max(epoch);
                r.ended.last_value = value;
                r.last_beat = Instant::now();
                // The pruner judges by the trial's own curve, kept here as reported.
                r.trial.intermediate.retain(|(s, _)| *s != epoch);
                r.trial.intermediate.push((epoch, value));
                let number = r.trial.number;
                on_event(&SweepEvent::Epoch {
                    number,
                    epoch,
                    value,
                });
                // A `confirm` run measures seed noise: stopping it early would bias the mean.
                // A spec's known configuration is there to be had whole: a rung would judge it
                // against whatever reached that epoch first.
                let unprunable = r.trial.repeat_of().is_some() || r.trial.from_spec_enqueue();
                if let Some(pruner) = self.pruner.as_ref().filter(|_| !unprunable) {
                    // The other trials' values at this epoch, as every driver has recorded
                    // them: one small query, however large the study.
                    let others = self.store.values_at(self.study, epoch)?;
                    let r = self.running.get_mut(&id).expect("present above");
                    if pruner.prune(&others, &r.trial, epoch) {
                        r.ended.pruned_at = Some(epoch);
                        // Stop now: the slot is free as soon as the worker is gone.
                        r.process.signal(libc::SIGKILL);
                    }
                }
            }
            Some(done @ WorkerMessage::Final { .. }) => r.ended.final_message = Some(done),
            Some(WorkerMessage::Error { message }) => r.ended.error = Some(message),
            Some(WorkerMessage::Warning { message }) => {
                let number = r.trial.number;
                on_event(&SweepEvent::TrialWarning { number, message });
            }
            None => {}
        }
        Ok(())
    }

    fn heartbeats(&mut self, every: Duration) -> Result<(), SweepError> {
        for r in self.running.values_mut() {
            if r.last_beat.elapsed() >= every {
                self.store.heartbeat(r.trial.trial_id)?;
                r.last_beat = Instant::now();
            }
        }
        Ok(())
    }

    /// Records a worker whose output has ended, and frees its slot whatever happened.
    fn finish(&mut self, id: u64, on_event: &mut dyn FnMut(&SweepEvent)) -> Result<(), SweepError> {
        let Some(r) = self.running.remove(&id) else {
            return Ok(());
        };
        let Running {
            trial,
            lease,
            device,
            process,
            started,
            mut ended,
            ..
        } = r;
        let reaped = process.reap();
        ended.exit = Some(reaped.how);
        ended.signal = reaped.signal;
        ended.stderr = reaped.stderr;
        self.pool.release(&lease);
        let seconds = started.elapsed().as_secs_f64();
        let duration = (keys::DURATION_S.to_string(), json!(seconds));
        let none = BTreeMap::new();
        match classify(&ended, &self.spec.metric) {
            Outcome::Complete {
                value,
                mut user_attrs,
            } => {
                user_attrs.extend([duration]);
                self.store.finish(
                    trial.trial_id,
                    TrialState::Complete,
                    Some(value),
                    &user_attrs,
                    &none,
                )?;
                self.ended_in_run();
                let reached = self
                    .spec
                    .metric_target
                    .is_some_and(|t| value == t || self.spec.direction.better(value, t));
                if reached && self.halt.is_none() {
                    self.halt = Some(StopCause::TargetReached {
                        trial: trial.number,
                        value,
                    });
                }
                on_event(&SweepEvent::TrialFinished {
                    number: trial.number,
                    state: TrialState::Complete,
                    value: Some(value),
                    seconds,
                    reason: None,
                });
            }
            Outcome::Pruned {
                epoch,
                value,
                mut user_attrs,
            } => {
                user_attrs.extend([duration]);
                self.store.finish(
                    trial.trial_id,
                    TrialState::Pruned,
                    value,
                    &user_attrs,
                    &none,
                )?;
                self.ended_in_run();
                on_event(&SweepEvent::TrialFinished {
                    number: trial.number,
                    state: TrialState::Pruned,
                    value,
                    seconds,
                    reason: Some(if ended.cut_for_final_model {
                        format!(
                            "stopped at epoch {epoch}: the rest of max_duration is the final \
                             model's"
                        )
                    } else {
                        format!("pruned at epoch {epoch}")
                    }),
                });
            }
            Outcome::OutOfMemory { .. } => {
                // Once more, on another device.
                self.store
                    .set_trial_user_attr(trial.trial_id, &duration.0, &duration.1)?;
                let extra = BTreeMap::from([
                    (keys::AVOID_DEVICE.to_string(), Value::from(device.clone())),
                    (keys::OOM_RETRY.to_string(), json!(1)),
                ]);
                let reason = format!("out of memory on {device}");
                self.requeue(&trial, seconds, &reason, &extra, on_event)?;
            }
            Outcome::KilledFromOutside => {
                self.store
                    .set_trial_user_attr(trial.trial_id, &duration.0, &duration.1)?;
                if let Some(remaining) = self.pool.retire_slot(lease.device) {
                    on_event(&SweepEvent::SlotRetired {
                        device: device.clone(),
                        remaining,
                    });
                }
                let extra = BTreeMap::from([(keys::KILL_RETRY.to_string(), json!(1))]);
                self.requeue(&trial, seconds, KILLED_FROM_OUTSIDE, &extra, on_event)?;
            }
            Outcome::Fail { reason } => {
                let fault = environment_fault(&reason).or_else(|| environment_fault(&ended.stderr));
                if let Some(fault) = fault {
                    self.store
                        .set_trial_user_attr(trial.trial_id, &duration.0, &duration.1)?;
                    let path = path_in(&reason)
                        .or_else(|| path_in(&ended.stderr))
                        .unwrap_or_else(|| {
                            let dir = trial_dir(
                                &self.options.results_dir,
                                &self.spec.name,
                                &self.study_uuid,
                                trial.number,
                            );
                            dir.display().to_string()
                        });
                    return self
                        .halt_for_environment(&trial, started, fault, path, reason, on_event);
                }
                self.fail_with(
                    &trial,
                    started,
                    reason,
                    BTreeMap::from([duration]),
                    on_event,
                )?;
            }
        }
        Ok(())
    }

    /// A fault of the machine met by `trial` (in its own error or in the driver's writes for
    /// it): the trial FAILs with the reason and its values are queued again, so a resume once
    /// the machine is fixed runs them; no new trial starts in this run.
    fn halt_for_environment(
        &mut self,
        trial: &TrialRecord,
        started: Instant,
        fault: &str,
        path: String,
        detail: String,
        on_event: &mut dyn FnMut(&SweepEvent),
    ) -> Result<(), SweepError> {
        let seconds = started.elapsed().as_secs_f64();
        self.requeue(trial, seconds, &detail, &BTreeMap::new(), on_event)?;
        self.halt = Some(StopCause::EnvironmentFault {
            fault: fault.to_string(),
            path,
            trial: Some(trial.number),
            detail,
        });
        Ok(())
    }

    /// Fails a running trial with `reason` and queues its values again (with `extra` for the
    /// retry), telling the reporter which trial re-runs it. Returns that trial's number.
    fn requeue(
        &mut self,
        trial: &TrialRecord,
        seconds: f64,
        reason: &str,
        extra: &BTreeMap<String, Value>,
        on_event: &mut dyn FnMut(&SweepEvent),
    ) -> Result<i64, SweepError> {
        let queued = self
            .store
            .fail_and_requeue(self.study, trial.trial_id, reason, extra)?;
        on_event(&SweepEvent::TrialFinished {
            number: trial.number,
            state: TrialState::Fail,
            value: None,
            seconds,
            reason: Some(format!("{reason}; re-queued as trial {queued}")),
        });
        Ok(queued)
    }

    /// Counts a trial of this run that reached its end; when the first
    /// `max_initial_failures` of them all failed, the setup is broken and the sweep stops.
    fn ended_in_run(&mut self) {
        self.run_finished += 1;
        let limit = self.spec.max_initial_failures;
        let all_failed = self.run_failed.len() == self.run_finished;
        if limit == 0 || self.run_finished != limit || !all_failed || self.halt.is_some() {
            return;
        }
        let reasons = group_reasons(self.run_failed.iter().map(|(r, _)| (r.as_str(), 0)))
            .into_iter()
            .map(|(reason, trials)| (reason, trials.len()))
            .collect();
        self.halt = Some(StopCause::BrokenSetup {
            failed: self.run_failed.len(),
            reasons,
            trial_dir: self.run_failed[0].1.clone(),
        });
    }

    /// Stops trials past `trial_timeout` or `silence_timeout`: SIGTERM to the process group,
    /// SIGKILL after [`STOP_GRACE`]. The trial is recorded when its output closes.
    fn enforce_time_limits(&mut self, on_event: &mut dyn FnMut(&SweepEvent)) {
        let (total, silence) = (self.spec.trial_timeout, self.spec.silence_timeout);
        for r in self.running.values_mut() {
            if let Some(since) = r.stopping_since {
                if !r.killed && since.elapsed() >= STOP_GRACE {
                    r.process.signal(libc::SIGKILL);
                    r.killed = true;
                }
                continue;
            }
            let reason = if let Some(limit) = total.filter(|l| r.started.elapsed() >= *l) {
                format!("timed out after {} (trial_timeout)", human_duration(limit))
            } else if let Some(limit) = silence.filter(|l| r.last_line.elapsed() >= *l) {
                format!(
                    "timed out after {} without a protocol line (silence_timeout)",
                    human_duration(limit)
                )
            } else {
                continue;
            };
            r.ended.timed_out = Some(reason.clone());
            r.process.signal(libc::SIGTERM);
            r.stopping_since = Some(Instant::now());
            on_event(&SweepEvent::TimingOut {
                number: r.trial.number,
                reason,
            });
        }
    }

    /// Stops the running trials when the rest of `max_duration` is the final model's: one
    /// that has reported an epoch is recorded pruned there (its curve and value kept, as a rung
    /// would stop it); one that has not is queued again, so a resume runs it.
    fn cut_for_final_model(
        &mut self,
        on_event: &mut dyn FnMut(&SweepEvent),
    ) -> Result<(), SweepError> {
        let fresh: Vec<u64> = self
            .running
            .iter()
            .filter(|(_, r)| r.ended.pruned_at.is_none() && r.ended.epochs_seen == 0)
            .map(|(id, _)| *id)
            .collect();
        for r in self.running.values_mut() {
            if r.ended.pruned_at.is_none() && r.ended.epochs_seen > 0 {
                r.ended.pruned_at = Some(r.ended.epochs_seen);
                r.ended.cut_for_final_model = true;
                r.process.signal(libc::SIGKILL);
            }
        }
        for id in &fresh {
            if let Some(r) = self.running.get(id) {
                r.process.signal(libc::SIGTERM);
            }
        }
        self.requeue_stopped(
            &fresh,
            "stopped before its first epoch: the rest of max_duration is the final model's",
            "stopped before its first epoch to keep the final model's time",
            on_event,
        )
    }

    /// Stops every running trial and queues it again, so a resume re-runs it.
    fn stop_all(&mut self, on_event: &mut dyn FnMut(&SweepEvent)) -> Result<(), SweepError> {
        for r in self.running.values() {
            r.process.signal(libc::SIGTERM);
        }
        let ids: Vec<u64> = self.running.keys().copied().collect();
        self.requeue_stopped(&ids, "interrupted by the user", "interrupted", on_event)
    }

    /// Waits for the trials `ids` (already sent SIGTERM) to end, SIGKILL after [`STOP_GRACE`],
    /// frees their slots and queues their values again: `stored` is the failed attempt's
    /// reason, `shown` what the terminal says before "re-queued as trial N".
    fn requeue_stopped(
        &mut self,
        ids: &[u64],
        stored: &str,
        shown: &str,
        on_event: &mut dyn FnMut(&SweepEvent),
    ) -> Result<(), SweepError> {
        let deadline = Instant::now() + STOP_GRACE;
        for id in ids {
            let Some(r) = self.running.remove(id) else {
                continue;
            };
            r.process.stop(deadline);
            self.pool.release(&r.lease);
            let queued = self.store.fail_and_requeue(
                self.study,
                r.trial.trial_id,
                stored,
                &BTreeMap::new(),
            )?;
            on_event(&SweepEvent::TrialFinished {
                number: r.trial.number,
                state: TrialState::Fail,
                value: None,
                seconds: r.started.elapsed().as_secs_f64(),
                reason: Some(format!("{shown}; re-queued as trial {queued}")),
            });
        }
        Ok(())
    }
}

/// The trial's folder and its `trial.json`; on failure, the path that could not be written.
fn write_task(
    dir: &Path,
    task_path: &Path,
    task: &TrialTask,
) -> Result<(), (PathBuf, std::io::Error)> {
    std::fs::create_dir_all(dir).map_err(|e| (dir.to_path_buf(), e))?;
    let text = serde_json::to_string_pretty(task).unwrap_or_default();
    std::fs::write(task_path, text).map_err(|e| (task_path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    //! The dispatcher on its own: trials are a shell script, interrupts are set by the test
    //! (no signals, no `rnnsweep` binary).
    use super::*;
    use crate::store::sqlite::SqliteStore;

    /// A spec whose trials run `worker.sh`: sleep, then one epoch and a final line.
    fn spec(dir: &Path, run_cap: usize, sleep: f64) -> Spec {
        let worker = dir.join("worker.sh");
        std::fs::write(
            &worker,
            format!(
                "sleep {sleep}\necho '{{\"type\":\"epoch\",\"epoch\":1,\"metrics\":{{\"val_f1\":0.5}}}}'\necho '{{\"type\":\"final\",\"metrics\":{{\"val_f1\":0.5}}}}'\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("t.csv"), "id,label,tweet\n1,0,a\n").unwrap();
        let text = format!(
            "name: unit\nstorage: unit.db\ndata: {{train: t.csv}}\nmethod: grid\nrun_cap: {run_cap}\ntrial: {{command: [sh, {}]}}\nparameters:\n  x: {{values: [1, 2, 3]}}\n",
            worker.display()
        );
        Spec::parse(&text, &dir.join("s.yaml")).unwrap()
    }

    fn options(dir: &Path) -> SweepOptions {
        SweepOptions {
            exe: PathBuf::from("/nonexistent/rnnsweep"),
            results_dir: dir.to_path_buf(),
            force_new_space: false,
            interrupts: Interrupts::default(),
        }
    }

    fn states(store: &dyn Store) -> Vec<TrialState> {
        let id = store.study_id("unit").unwrap().unwrap();
        store.trials(id).unwrap().iter().map(|t| t.state).collect()
    }

    #[test]
    fn a_sweep_runs_every_grid_point_and_records_each_trial_once() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), 10, 0.0);
        let mut store = SqliteStore::open(&dir.path().join("unit.db")).unwrap();
        let mut finished = Vec::new();
        let cause = run_sweep(&spec, &mut store, &options(dir.path()), &mut |e| {
            if let SweepEvent::TrialFinished { number, state, .. } = e {
                finished.push((*number, *state));
            }
        })
        .unwrap();
        assert_eq!(cause, StopCause::SpaceExhausted);
        assert_eq!(finished.len(), 3);
        assert!(finished.iter().all(|(_, s)| *s == TrialState::Complete));
        assert_eq!(states(&store), vec![TrialState::Complete; 3]);
    }

    #[test]
    fn a_terminate_stops_the_running_trial_and_queues_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), 3, 30.0);
        let mut store = SqliteStore::open(&dir.path().join("unit.db")).unwrap();
        let options = options(dir.path());
        let interrupts = options.interrupts.clone();
        let started = Instant::now();
        let cause = run_sweep(&spec, &mut store, &options, &mut |e| {
            if let SweepEvent::TrialStarted { .. } = e {
                interrupts.terminate();
            }
        })
        .unwrap();
        assert_eq!(cause, StopCause::InterruptedNow);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the worker was stopped, not waited for"
        );
        assert_eq!(states(&store), vec![TrialState::Fail, TrialState::Waiting]);
        assert_eq!(options.interrupts.signal(), libc::SIGTERM);
    }

    #[test]
    fn a_first_interrupt_lets_the_running_trial_finish_and_starts_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), 3, 0.2);
        let mut store = SqliteStore::open(&dir.path().join("unit.db")).unwrap();
        let options = options(dir.path());
        let interrupts = options.interrupts.clone();
        let cause = run_sweep(&spec, &mut store, &options, &mut |e| {
            if let SweepEvent::TrialStarted { .. } = e {
                interrupts.interrupt();
            }
        })
        .unwrap();
        assert_eq!(cause, StopCause::Interrupted);
        assert_eq!(states(&store), vec![TrialState::Complete]);
    }
}
