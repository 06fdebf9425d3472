//! A study's identity on disk and in the store: opening (or creating) the spec's study, its
//! UUID, and the trial folders keyed by it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::run::error::SweepError;
use crate::spec::Spec;
use crate::store::{keys, Store};

/// A fresh random identity for a study (UUID version 4 form). Not a training draw: it must
/// differ between two studies made from the same spec, so it comes from the OS.
fn new_study_uuid() -> String {
    use rand::Rng;
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The study's identity, given one now if it has none (a study Optuna or an older rnnsweep
/// made).
pub fn study_uuid(store: &mut dyn Store, study: i64) -> Result<String, SweepError> {
    if let Some(u) = store
        .study_system_attrs(study)?
        .get(keys::STUDY_UUID)
        .and_then(Value::as_str)
    {
        return Ok(u.to_string());
    }
    let uuid = new_study_uuid();
    store.set_study_system_attr(study, keys::STUDY_UUID, &Value::from(uuid.clone()))?;
    Ok(uuid)
}

/// Opens (or creates) the spec's study, refusing a changed search space unless forced.
pub fn open_study(
    spec: &Spec,
    store: &mut dyn Store,
    force_new_space: bool,
) -> Result<i64, SweepError> {
    let fingerprint = Value::from(spec.space_fingerprint());
    let user = BTreeMap::from([
        (keys::SPEC.to_string(), Value::from(spec.source.clone())),
        (
            keys::SPEC_FILE.to_string(),
            Value::from(spec.path.display().to_string()),
        ),
        (keys::METRIC.to_string(), Value::from(spec.metric.clone())),
    ]);
    let system = BTreeMap::from([
        (keys::SPACE.to_string(), fingerprint.clone()),
        (keys::STUDY_UUID.to_string(), Value::from(new_study_uuid())),
    ]);
    let study = store.open_study(&spec.name, spec.direction, &user, &system)?;
    let stored = store.study_system_attrs(study)?.get(keys::SPACE).cloned();
    if stored.as_ref() != Some(&fingerprint) {
        if !force_new_space {
            return Err(SweepError::Space(format!(
                "study `{}` in {} was created with a different search space, training settings or metric; \
                 run with --force-new-space to continue it with this spec, or give the spec another name",
                spec.name,
                spec.storage
            )));
        }
        store.set_study_system_attr(study, keys::SPACE, &fingerprint)?;
        store.set_study_user_attr(study, keys::SPEC, &Value::from(spec.source.clone()))?;
        store.set_study_user_attr(study, keys::METRIC, &Value::from(spec.metric.clone()))?;
    }
    Ok(study)
}

/// Where a trial keeps its files: `<results_dir>/<study>/<first 8 of the study's UUID>/trial-<n>`.
/// Keyed by the study's identity, so a new study of the same name (the file deleted and the
/// spec run again) never finds an old study's checkpoints.
pub fn trial_dir(results_dir: &Path, study: &str, study_uuid: &str, number: i64) -> PathBuf {
    let short: String = study_uuid.chars().filter(|c| *c != '-').take(8).collect();
    results_dir
        .join(study)
        .join(short)
        .join(format!("trial-{number}"))
}
