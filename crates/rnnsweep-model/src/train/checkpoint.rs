//! A checkpoint after each epoch, resumed only by the configuration and data it was
//! written for, so an interrupted trial continues bit-identically.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::nn::Net;
use crate::optim::{KerasOptimizer, OptimizerScalars};
use crate::train::early_stopping::EarlyStopping;
use crate::train::history::EpochReport;

/// The task a checkpoint belongs to: the data file (path, size, modification time). With the
/// configuration (parameters and seed included) it decides whether a checkpoint is resumed.
pub fn task_fingerprint(data_file: &Path) -> serde_json::Value {
    let path = std::path::absolute(data_file).unwrap_or_else(|_| data_file.to_path_buf());
    let meta = std::fs::metadata(data_file).ok();
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().to_string());
    serde_json::json!({
        "data": path.display().to_string(),
        "bytes": meta.map(|m| m.len()),
        "modified_ns": modified,
    })
}

/// [`task_fingerprint`] of the training file and, when validation rows come from their own
/// file, of that file too.
pub fn data_fingerprint(train: &Path, validation: Option<&Path>) -> serde_json::Value {
    match validation {
        None => task_fingerprint(train),
        Some(v) => serde_json::json!({
            "train": task_fingerprint(train),
            "validation": task_fingerprint(v),
        }),
    }
}

/// Removes a checkpoint in `dir` that was written for another configuration or task, and
/// says so (one line naming the folder); `None` when there is none or it belongs here.
pub fn discard_foreign_checkpoint(
    dir: &Path,
    cfg: &ModelConfig,
    task: Option<&serde_json::Value>,
) -> Result<Option<String>> {
    let path = dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let why = match read_checkpoint(&path, &Device::Cpu) {
        Err(e) => format!("it is unreadable ({e})"),
        Ok((meta, _)) if meta.config != *cfg => "it was written for another configuration".into(),
        Ok((meta, _)) if meta.task.as_ref() != task => {
            "it was written for other data (file, size or time changed)".into()
        }
        Ok(_) => return Ok(None),
    };
    std::fs::remove_file(&path).map_err(|e| ModelError::Artifact {
        path: path.display().to_string(),
        message: format!("cannot remove a foreign checkpoint: {e}"),
    })?;
    Ok(Some(format!(
        "{}: the checkpoint there was not resumed because {why}; training starts fresh",
        dir.display()
    )))
}

/// How many epochs [`crate::train::fit`] would resume from the checkpoint in `dir` for this
/// configuration and task: 0 when there is none, or when it belongs to another configuration
/// or task (which `fit` discards, saying so).
pub fn resumable_epochs(
    dir: &Path,
    cfg: &ModelConfig,
    task: Option<&serde_json::Value>,
) -> Result<usize> {
    let path = dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        return Ok(0);
    }
    Ok(match read_checkpoint(&path, &Device::Cpu) {
        Ok((meta, _)) if meta.config == *cfg && meta.task.as_ref() == task => meta.epochs_done,
        _ => 0,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointMeta {
    epochs_done: usize,
    history: Vec<EpochReport>,
    best_value: Option<f64>,
    best_epoch: usize,
    wait: usize,
    optimizer: OptimizerScalars,
    config: ModelConfig,
    #[serde(default)]
    task: Option<serde_json::Value>,
}

const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Saves the run after each epoch and resumes it from there: weights, optimizer state, the
/// early-stopping state and the history, in one file written atomically. A checkpoint written
/// for another configuration or task is discarded, never resumed.
pub(crate) struct Checkpointer<'a> {
    pub(crate) dir: Option<&'a Path>,
    pub(crate) cfg: &'a ModelConfig,
    pub(crate) task: Option<&'a serde_json::Value>,
}

impl Checkpointer<'_> {
    /// Loads a checkpoint into `net`, `optimizer` and `stopping`; returns its history.
    pub(crate) fn resume(
        &self,
        net: &Net,
        optimizer: &mut KerasOptimizer,
        stopping: &mut EarlyStopping,
        device: &Device,
    ) -> Result<Vec<EpochReport>> {
        let Some(dir) = self.dir else {
            return Ok(Vec::new());
        };
        if let Some(warning) = discard_foreign_checkpoint(dir, self.cfg, self.task)? {
            tracing::warn!("{warning}");
        }
        let path = dir.join(CHECKPOINT_FILE);
        if !path.exists() {
            return Ok(Vec::new());
        }
        let (meta, tensors) = read_checkpoint(&path, device)?;
        let source = path.display().to_string();
        net.load_state(&prefixed(&tensors, "model."), &source)?;
        optimizer.load_state(&prefixed(&tensors, "opt."), meta.optimizer, &source)?;
        let best = prefixed(&tensors, "best.");
        stopping.best_state = (!best.is_empty()).then_some(best);
        stopping.best_value = meta.best_value;
        stopping.best_epoch = meta.best_epoch;
        stopping.wait = meta.wait;
        tracing::info!(
            "resuming from {} after epoch {}",
            path.display(),
            meta.epochs_done
        );
        Ok(meta.history)
    }

    pub(crate) fn save(
        &self,
        history: &[EpochReport],
        stopping: &EarlyStopping,
        net: &Net,
        optimizer: &KerasOptimizer,
    ) -> Result<()> {
        let Some(dir) = self.dir else {
            return Ok(());
        };
        let meta = CheckpointMeta {
            epochs_done: history.len(),
            history: history.to_vec(),
            best_value: stopping.best_value,
            best_epoch: stopping.best_epoch,
            wait: stopping.wait,
            optimizer: optimizer.state()?.1,
            config: self.cfg.clone(),
            task: self.task.cloned(),
        };
        write_checkpoint(dir, &meta, net, optimizer, stopping.best_state.as_ref())
    }
}

fn prefixed(tensors: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    tensors
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .map(|rest| (rest.to_string(), v.clone()))
        })
        .collect()
}

fn write_checkpoint(
    dir: &Path,
    meta: &CheckpointMeta,
    net: &Net,
    optimizer: &KerasOptimizer,
    best: Option<&HashMap<String, Tensor>>,
) -> Result<()> {
    let io = |source| ModelError::Io {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut all: HashMap<String, Tensor> = HashMap::new();
    for (k, v) in net.state()? {
        all.insert(format!("model.{k}"), v);
    }
    for (k, v) in optimizer.state()?.0 {
        all.insert(format!("opt.{k}"), v);
    }
    if let Some(best) = best {
        for (k, v) in best {
            all.insert(format!("best.{k}"), v.clone());
        }
    }
    // The metadata travels inside the same file so one rename makes the checkpoint atomic.
    let json = serde_json::to_vec(meta).map_err(|e| ModelError::Artifact {
        path: dir.display().to_string(),
        message: e.to_string(),
    })?;
    let len = json.len();
    all.insert(
        "meta.json".into(),
        Tensor::from_vec(json, len, &Device::Cpu)?,
    );
    let all: HashMap<String, Tensor> = all
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    candle_core::safetensors::save(&all, &tmp)?;
    std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE)).map_err(io)?;
    Ok(())
}

fn read_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(CheckpointMeta, HashMap<String, Tensor>)> {
    let bad = |message: String| ModelError::Artifact {
        path: path.display().to_string(),
        message,
    };
    let tensors = candle_core::safetensors::load(path, device)
        .map_err(|e| bad(format!("unreadable checkpoint: {e}")))?;
    let meta = tensors
        .get("meta.json")
        .ok_or_else(|| bad("checkpoint has no metadata".into()))?
        .to_vec1::<u8>()?;
    let meta: CheckpointMeta =
        serde_json::from_slice(&meta).map_err(|e| bad(format!("bad checkpoint metadata: {e}")))?;
    Ok((meta, tensors))
}
