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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::train::history::tests::report;
    use candle_core::Device;

    fn net() -> Net {
        let cfg = ModelConfig {
            embedding_dim: 4,
            lstm_units: vec![2],
            dense: vec![],
            ..ModelConfig::default()
        };
        Net::new(&cfg, 20, &Device::Cpu).unwrap()
    }

    fn settings(monitor: &str, patience: usize, min_delta: f64) -> crate::config::EarlyStopping {
        crate::config::EarlyStopping {
            monitor: monitor.into(),
            patience,
            min_delta,
            ..Default::default()
        }
    }

    #[test]
    fn patience_counts_epochs_without_an_improvement_larger_than_min_delta() {
        let net = net();
        let s = settings("val_loss", 2, 0.01);
        let mut stopping = EarlyStopping::new(&s).unwrap();
        // 0.495 is better than 0.5 but not by more than 0.01: it does not count.
        let mut stops = Vec::new();
        for (epoch, loss) in [0.5, 0.495, 0.48, 0.479, 0.478].into_iter().enumerate() {
            stopping
                .observe(&report(epoch + 1, loss, f64::NAN), true, &net)
                .unwrap();
            stops.push(stopping.should_stop(true));
        }
        assert_eq!(stops, [false, false, false, false, true]);
        assert_eq!((stopping.best_epoch, stopping.best_value), (3, Some(0.48)));
        assert_eq!(stopping.restore(&net, 5).unwrap(), 3);
    }

    #[test]
    fn a_maximised_metric_improves_upwards() {
        let net = net();
        let s = settings("val_f1", 1, 0.0);
        let mut stopping = EarlyStopping::new(&s).unwrap();
        stopping.observe(&report(1, 0.5, 0.6), true, &net).unwrap();
        stopping.observe(&report(2, 0.4, 0.7), true, &net).unwrap();
        assert!(!stopping.should_stop(true));
        stopping.observe(&report(3, 0.3, 0.7), true, &net).unwrap();
        assert!(stopping.should_stop(true));
        assert_eq!(stopping.best_epoch, 2);
    }

    #[test]
    fn without_validation_rows_every_epoch_runs_and_the_last_is_kept() {
        let net = net();
        let s = settings("val_loss", 1, 0.0);
        let mut stopping = EarlyStopping::new(&s).unwrap();
        for epoch in 1..=4 {
            stopping
                .observe(&report(epoch, f64::NAN, f64::NAN), false, &net)
                .unwrap();
            assert!(!stopping.should_stop(false));
        }
        assert_eq!(stopping.restore(&net, 4).unwrap(), 4);
        let e = EarlyStopping::new(&settings("val_nonsense", 1, 0.0))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("`val_nonsense` is not a reported metric"),
            "{e}"
        );
    }

    #[test]
    fn the_best_epochs_weights_come_back() {
        let net = net();
        let s = settings("val_loss", 5, 0.0);
        let mut stopping = EarlyStopping::new(&s).unwrap();
        stopping
            .observe(&report(1, 0.3, f64::NAN), true, &net)
            .unwrap();
        let best = net.towers[0]
            .embedding
            .as_tensor()
            .to_vec2::<f32>()
            .unwrap();
        net.towers[0]
            .embedding
            .set(&(net.towers[0].embedding.as_tensor() + 1.0).unwrap())
            .unwrap();
        stopping
            .observe(&report(2, 0.4, f64::NAN), true, &net)
            .unwrap();
        assert_eq!(stopping.restore(&net, 2).unwrap(), 1);
        assert_eq!(
            net.towers[0]
                .embedding
                .as_tensor()
                .to_vec2::<f32>()
                .unwrap(),
            best
        );
    }
}
