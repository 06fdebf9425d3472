//! Keras's `EarlyStopping`: the monitored metric, patience, and the best epoch's weights.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::error::{ModelError, Result};
use crate::metrics::{direction_of, Direction};
use crate::nn::Net;
use crate::train::history::EpochReport;

/// Keras's `EarlyStopping` callback: watches one metric, counts epochs without improvement,
/// and keeps the best epoch's weights to restore.
pub(crate) struct EarlyStopping<'a> {
    pub(crate) settings: &'a crate::config::EarlyStopping,
    pub(crate) direction: Direction,
    pub(crate) best_value: Option<f64>,
    pub(crate) best_epoch: usize,
    pub(crate) best_state: Option<HashMap<String, Tensor>>,
    pub(crate) wait: usize,
}

impl<'a> EarlyStopping<'a> {
    pub(crate) fn new(settings: &'a crate::config::EarlyStopping) -> Result<Self> {
        let monitor = settings.monitor.as_str();
        let direction = direction_of(monitor).ok_or_else(|| ModelError::Config {
            at: "early_stopping.monitor".into(),
            message: format!("`{monitor}` is not a reported metric"),
        })?;
        Ok(Self {
            settings,
            direction,
            best_value: None,
            best_epoch: 0,
            best_state: None,
            wait: 0,
        })
    }

    /// Without a validation set there is nothing to monitor but training metrics: every
    /// epoch runs, the last one is kept.
    pub(crate) fn monitoring(&self, held_out: bool) -> bool {
        held_out || self.settings.monitor.starts_with("train_")
    }

    /// Records an epoch: the wait grows each epoch and resets on improvement (Keras's rule).
    pub(crate) fn observe(
        &mut self,
        report: &EpochReport,
        held_out: bool,
        net: &Net,
    ) -> Result<()> {
        if !self.monitoring(held_out) {
            return Ok(());
        }
        self.wait += 1;
        let value = report.metric(&self.settings.monitor).unwrap_or(f64::NAN);
        let delta = self.settings.min_delta;
        let improved = match self.best_value {
            None => !value.is_nan(),
            Some(best) => match self.direction {
                Direction::Minimize => value < best - delta,
                Direction::Maximize => value > best + delta,
            },
        };
        if improved {
            self.best_value = Some(value);
            self.best_epoch = report.epoch;
            self.wait = 0;
            if self.settings.restore_best {
                self.best_state = Some(net.state()?);
            }
        }
        Ok(())
    }

    pub(crate) fn should_stop(&self, held_out: bool) -> bool {
        self.monitoring(held_out) && self.settings.enabled && self.wait >= self.settings.patience
    }

    /// Puts the best epoch's weights back (when asked to) and says which epoch the net holds.
    pub(crate) fn restore(&self, net: &Net, last_epoch: usize) -> Result<usize> {
        match (&self.best_state, self.settings.restore_best) {
            (Some(best), true) => {
                net.load_state(best, "best weights")?;
                Ok(self.best_epoch)
            }
            _ => Ok(last_epoch),
        }
    }
}
