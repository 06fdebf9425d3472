//! Device names, one grammar for the whole program: `cpu`, `cuda:N` (`gpu:N` is its alias;
//! a bare `cuda` or `gpu` means ordinal 0). The spec's `resources`, the trial's `--device`,
//! `train`, `predict` and `best --device` all parse through [`DeviceName`].

use std::fmt;
use std::str::FromStr;

/// candle's device, the one type of candle the orchestrator handles (it holds an opened device
/// between choosing and training), so that crate needs no candle dependency of its own.
pub use candle_core::Device;

use crate::error::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceName {
    Cpu,
    Cuda(usize),
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceName::Cpu => write!(f, "cpu"),
            DeviceName::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for DeviceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "cpu" => Ok(DeviceName::Cpu),
            "cuda" | "gpu" => Ok(DeviceName::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .or_else(|| other.strip_prefix("gpu:"))
                .and_then(|n| n.parse().ok())
                .map(DeviceName::Cuda)
                .ok_or_else(|| format!("`{other}` is not a device (use cpu or cuda:N)")),
        }
    }
}

/// Opens the named device; `cuda:N` needs a build with the `cuda` feature.
pub fn open(name: &str) -> Result<Device, ModelError> {
    let config = |message: String| ModelError::Config {
        at: "device".into(),
        message,
    };
    match name.parse::<DeviceName>().map_err(config)? {
        DeviceName::Cpu => Ok(candle_core::Device::Cpu),
        DeviceName::Cuda(ordinal) => {
            if candle_core::utils::cuda_is_available() {
                Ok(candle_core::Device::new_cuda(ordinal)?)
            } else {
                Err(config(format!(
                    "`{name}` needs a build with the `cuda` feature"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_device_parses_to_one_name() {
        for (text, name) in [
            ("cpu", DeviceName::Cpu),
            (" cpu ", DeviceName::Cpu),
            ("cuda", DeviceName::Cuda(0)),
            ("gpu", DeviceName::Cuda(0)),
            ("cuda:3", DeviceName::Cuda(3)),
            ("gpu:3", DeviceName::Cuda(3)),
        ] {
            assert_eq!(text.parse::<DeviceName>(), Ok(name), "{text}");
        }
        assert_eq!(DeviceName::Cuda(3).to_string(), "cuda:3");
        assert_eq!(
            "tpu:0".parse::<DeviceName>(),
            Err("`tpu:0` is not a device (use cpu or cuda:N)".to_string())
        );
    }

    #[test]
    fn opening_a_bad_name_says_which_and_the_grammar() {
        let e = open("cuda:x").map(|_| ()).unwrap_err().to_string();
        assert!(
            e.contains("`cuda:x` is not a device (use cpu or cuda:N)"),
            "{e}"
        );
    }
}
