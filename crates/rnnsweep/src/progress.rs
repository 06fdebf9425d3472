//! Reporters of sweep events: progress bars on a terminal, plain log lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rnnsweep_model::metrics::Direction;
use rnnsweep_search::display::{short_value, sig4};
use rnnsweep_search::run::events::SweepEvent;
use rnnsweep_search::run::outcome::same_reason;
use rnnsweep_search::store::TrialState;

pub struct Reporter {
    metric: String,
    direction: Direction,
    best: Option<f64>,
    bars: Option<Bars>,
    /// The last failure's trial and reason, and how many failed in a row with it: a run of
    /// equal failures prints the reason once.
    failing: Option<(i64, String, usize)>,
}

struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    trials: HashMap<i64, ProgressBar>,
}

impl Reporter {
    /// `finished` and `best` describe the study before this run (a resume starts part-way).
    pub fn new(
        metric: &str,
        direction: Direction,
        run_cap: usize,
        finished: usize,
        best: Option<f64>,
    ) -> Self {
        let bars = std::io::stdout().is_terminal().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let overall = multi.add(match run_cap {
                usize::MAX => ProgressBar::no_length(),
                n => ProgressBar::new(n as u64),
            });
            overall.set_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:30}] {pos}/{len} finished  {msg}  ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            overall.set_prefix("sweep");
            overall.set_position(finished as u64);
            overall.enable_steady_tick(Duration::from_millis(500));
            Bars {
                multi,
                overall,
                trials: HashMap::new(),
            }
        });
        let mut r = Self {
            metric: metric.to_string(),
            direction,
            best,
            bars,
            failing: None,
        };
        r.show_best();
        r
    }

    fn show_best(&mut self) {
        if let Some(b) = &self.bars {
            b.overall.set_message(match self.best {
                Some(v) => format!("best {} {}", self.metric, sig4(v)),
                None => String::new(),
            });
        }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some(b) => {
                let _ = b.multi.println(text);
            }
            None => say!("{text}"),
        }
    }

    pub fn event(&mut self, event: &SweepEvent) {
        match event {
            SweepEvent::Requeued { failed, queued: Some(queued) } => self.line(format!("trial {failed} lost its driver; its parameters are queued again as trial {queued}")),
            SweepEvent::Requeued { failed, queued: None } => self.line(format!("trial {failed} lost its driver again; not re-queued (max_retries reached): FAIL")),
            SweepEvent::TrialStarted { number, params, device, epochs, resumed_from } => {
                let p: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", short_value(v))).collect();
                let from = resumed_from.map(|n| format!(" (continuing trial {n}'s checkpoint)")).unwrap_or_default();
                self.line(format!("trial {number} started on {device}{from}: {}", p.join(" ")));
                if let Some(b) = &mut self.bars {
                    let bar = b.multi.insert_before(&b.overall, ProgressBar::new(epochs.unwrap_or(0).max(0) as u64));
                    bar.set_style(
                        ProgressStyle::with_template("  trial {prefix:>4} {msg:<12} epoch {pos}/{len} [{bar:20}] {elapsed}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(number.to_string());
                    bar.set_message(device.clone());
                    b.trials.insert(*number, bar);
                }
            }
            SweepEvent::Epoch { number, epoch, value } => {
                let v = value.map_or("-".into(), sig4);
                match &mut self.bars {
                    Some(b) => {
                        if let Some(bar) = b.trials.get(number) {
                            bar.set_position(*epoch as u64);
                            let device = bar.message().split(' ').next().unwrap_or_default().to_string();
                            bar.set_message(format!("{device} {} {v}", self.metric));
                        }
                    }
                    None => say!("trial {number} epoch {epoch}: {} {v}", self.metric),
                }
            }
            SweepEvent::TrialFinished { number, state, value, seconds, reason } => {
                if *state == TrialState::Complete {
                    if let Some(v) = value {
                        let better = self.best.is_none_or(|b| self.direction.better(*v, b));
                        if better {
                            self.best = Some(*v);
                        }
                    }
                }
                if let Some(b) = &mut self.bars {
                    if let Some(bar) = b.trials.remove(number) {
                        bar.finish_and_clear();
                        b.multi.remove(&bar);
                    }
                    if state.is_finished() {
                        b.overall.inc(1);
                    }
                }
                self.show_best();
                let v = value.map_or(String::new(), |v| format!(" {} {}", self.metric, sig4(v)));
                let r = match (reason, *state == TrialState::Fail) {
                    (Some(r), true) => self.failure(*number, r),
                    (Some(r), false) => format!(": {r}"),
                    (None, _) => String::new(),
                };
                if *state != TrialState::Fail {
                    self.failing = None;
                }
                self.line(format!("trial {number} {}{v} in {seconds:.1}s{r}", state.as_str()));
            }
            SweepEvent::TrialWarning { number, message } => self.line(format!("trial {number} warning: {message}")),
            SweepEvent::Draining { running } => self.line(format!(
                "interrupted: no new trials; waiting for {running} running trial(s) to finish (Ctrl-C again to stop them now — they will be re-run on resume)"
            )),
            SweepEvent::SlotRetired { device, remaining } => self.line(format!(
                "a trial on {device} was killed from outside (most likely for memory): at most {remaining} trial(s) at once there from now on"
            )),
            SweepEvent::TimingOut { number, reason } => self.line(format!("trial {number} {reason}: stopping it")),
            SweepEvent::Waiting { running_elsewhere } => {
                tracing::info!("waiting for {running_elsewhere} trial(s) run by other drivers")
            }
        }
    }

    /// The reason part of a FAIL line: in full the first time, then "same reason as trial N
    /// (k in a row)".
    fn failure(&mut self, number: i64, reason: &str) -> String {
        match &mut self.failing {
            Some((first, seen, count)) if same_reason(seen, reason) => {
                *count += 1;
                format!(": same reason as trial {first} ({count} in a row)")
            }
            _ => {
                self.failing = Some((number, reason.to_string(), 1));
                format!(": {reason}")
            }
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.bars {
            b.overall.finish_and_clear();
            let _ = b.multi.clear();
        }
    }
}
