//! Search efficiency: TPE, pruning (ASHA and median) on synthetic objectives, pruned trials
//! stored as Optuna stores them.

use std::path::Path;

use crate::common::*;
use rnnsweep_search::store::{TrialRecord, TrialState};

fn function_spec(
    dir: &Path,
    name: &str,
    method: &str,
    run_cap: usize,
    extra: &str,
) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "name: {name}\nstorage: {name}.db\nmethod: {method}\nseed: 4\nrun_cap: {run_cap}\n\
             trial: {{kind: function, name: branin, epochs: 9, noise: 0.0}}\n{extra}\
             parameters:\n  x0: {{distribution: uniform, min: -5, max: 10}}\n  x1: {{distribution: uniform, min: 0, max: 15}}\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn asha_prunes_at_rungs_and_stores_pruned_trials_as_optuna_does() {
    let dir = tempfile::tempdir().unwrap();
    let spec = function_spec(
        dir.path(),
        "asha",
        "random",
        30,
        "early_terminate: {type: hyperband, min_iter: 1, eta: 3}\n",
    );
    run_ok(rnnsweep().arg("run").arg(&spec));
    let all = trials(&dir.path().join("asha.db"), "asha");
    let pruned: Vec<_> = all
        .iter()
        .filter(|t| t.state == TrialState::Pruned)
        .collect();
    let complete = count(&all, TrialState::Complete);
    assert_eq!(
        pruned.len() + complete,
        30,
        "pruned trials count as finished"
    );
    assert!(
        pruned.len() >= 10,
        "ASHA with eta 3 prunes most trials: {}",
        pruned.len()
    );
    for t in &pruned {
        // Stopped at a rung (epoch 1 or 3), with its curve so far and its last value as value.
        let last = t.intermediate.last().unwrap();
        assert!(
            [1, 3].contains(&last.0),
            "trial {} pruned at epoch {}",
            t.number,
            last.0
        );
        assert_eq!(t.intermediate.len() as i64, last.0);
        assert_eq!(t.value, last.1);
    }
    assert!(all
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .all(|t| t.intermediate.len() == 9));
}

#[test]
fn median_pruning_stops_trials_worse_than_the_median() {
    let dir = tempfile::tempdir().unwrap();
    let spec = function_spec(
        dir.path(),
        "median",
        "random",
        20,
        "early_terminate: {type: median, warmup_epochs: 2, min_trials: 3}\n",
    );
    run_ok(rnnsweep().arg("run").arg(&spec));
    let all = trials(&dir.path().join("median.db"), "median");
    let pruned: Vec<_> = all
        .iter()
        .filter(|t| t.state == TrialState::Pruned)
        .collect();
    assert!(!pruned.is_empty());
    assert!(
        pruned.iter().all(|t| t.intermediate.len() > 2),
        "never during warm-up"
    );
    // Trials run one at a time here, so a trial was judged against the trials numbered before
    // it: its best value so far (branin is minimised) was worse than their median at the
    // epoch it stopped, and there were at least min_trials of them.
    for t in &pruned {
        let (epoch, _) = *t.intermediate.last().unwrap();
        let best = t
            .intermediate
            .iter()
            .filter_map(|(_, v)| *v)
            .fold(f64::INFINITY, f64::min);
        let mut before: Vec<f64> = all
            .iter()
            .filter(|o| o.number < t.number)
            .filter_map(|o| {
                o.intermediate
                    .iter()
                    .find(|(s, _)| *s == epoch)
                    .and_then(|(_, v)| *v)
            })
            .collect();
        assert!(
            before.len() >= 3,
            "trial {} pruned with {} others",
            t.number,
            before.len()
        );
        before.sort_by(f64::total_cmp);
        let n = before.len();
        let median = if n % 2 == 1 {
            before[n / 2]
        } else {
            (before[n / 2 - 1] + before[n / 2]) / 2.0
        };
        assert!(
            best > median,
            "trial {} was pruned at epoch {epoch} with best {best} but the median was {median}",
            t.number
        );
    }
    assert!(
        all.iter().any(|t| t.state == TrialState::Complete),
        "not everything is pruned"
    );
}

#[test]
fn tpe_is_reproducible_and_finds_better_points_than_its_random_start() {
    let dir = tempfile::tempdir().unwrap();
    let a = function_spec(
        dir.path(),
        "tpe_a",
        "tpe",
        40,
        "resources: {trials_per_device: 1}\n",
    );
    let b = function_spec(
        dir.path(),
        "tpe_b",
        "tpe",
        40,
        "resources: {trials_per_device: 1}\n",
    );
    for s in [&a, &b] {
        run_ok(rnnsweep().arg("run").arg(s));
    }
    let ta = trials(&dir.path().join("tpe_a.db"), "tpe_a");
    let tb = trials(&dir.path().join("tpe_b.db"), "tpe_b");
    let xs = |t: &[rnnsweep_search::store::TrialRecord]| {
        t.iter()
            .map(|t| (param(t, "x0"), param(t, "x1")))
            .collect::<Vec<_>>()
    };
    assert_eq!(xs(&ta), xs(&tb), "same seed, same results, same sequence");
    let best = |t: &[rnnsweep_search::store::TrialRecord]| {
        t.iter()
            .filter_map(|t| t.value)
            .fold(f64::INFINITY, f64::min)
    };
    let startup = best(&ta[..10]);
    let later = best(&ta[10..]);
    assert!(
        later < startup,
        "TPE improves on its 10 random trials: {later} vs {startup}"
    );
    assert!(later < 2.0, "close to Branin's minimum 0.398: {later}");
}

#[test]
fn function_specs_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.yaml");
    std::fs::write(
        &spec,
        "name: bad\nmethod: tpe\nrun_cap: 5\ntrial: {kind: function, name: branin}\nparameters:\n  x0: {distribution: uniform, min: 0, max: 1}\n  y: {distribution: uniform, min: 0, max: 1}\n",
    )
    .unwrap();
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("parameters: branin takes parameters x0, x1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(&spec, "name: bad\nmethod: random\nrun_cap: 5\ntrial: {kind: function, name: branin}\nearly_terminate: {type: hyperband, eta: 1}\nparameters:\n  x0: {value: 1}\n  x1: {value: 1}\n").unwrap();
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(":5:1: early_terminate: eta must be ≥ 2"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn confirm_repeats_the_best_configurations_with_new_seeds_and_best_ranks_by_their_mean() {
    let dir = tempfile::tempdir().unwrap();
    let spec = real_spec(dir.path());
    run_ok(rnnsweep().arg("run").arg(&spec));
    let db = dir.path().join("out/real.db");
    let before = trials(&db, "real");
    // val_loss is minimised: the two lowest are the top 2.
    let mut by_value: Vec<_> = before
        .iter()
        .map(|t| (t.value.unwrap(), t.number))
        .collect();
    by_value.sort_by(|a, b| a.0.total_cmp(&b.0));
    let top: Vec<i64> = by_value.iter().take(2).map(|v| v.1).collect();
    let out = run_ok(
        rnnsweep()
            .args(["confirm"])
            .arg(&db)
            .args(["--top", "2", "--repeats", "2"]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = trials(&db, "real");
    assert_eq!(all.len(), 7, "3 trials + 2 × 2 repeats");
    let mut seeds = std::collections::BTreeSet::new();
    for t in all.iter().filter(|t| t.number >= 3) {
        let of = t.system_attrs["rnnsweep:confirm_of"].as_i64().unwrap();
        assert!(top.contains(&of), "trial {} repeats {of}", t.number);
        assert_eq!(t.state, TrialState::Complete);
        let original = &all[of as usize];
        assert_eq!(t.params, original.params, "the same configuration");
        assert_ne!(t.value, original.value, "another seed gives another result");
        assert!(seeds.insert(t.system_attrs["rnnsweep:seed"].as_u64().unwrap()));
        // Validation predictions name the rows they score.
        let folder =
            std::path::PathBuf::from(t.system_attrs["rnnsweep:trial_dir"].as_str().unwrap());
        let predictions = std::fs::read_to_string(folder.join("val_predictions.csv")).unwrap();
        assert!(
            predictions.starts_with("id,probability,label\n"),
            "{predictions}"
        );
        assert_eq!(predictions.lines().count(), 61, "60 validation rows of 600");
    }
    // The mean over the original and its repeats, by hand.
    let mean = |n: i64| {
        let v: Vec<f64> = all
            .iter()
            .filter(|t| {
                t.number == n
                    || t.system_attrs
                        .get("rnnsweep:confirm_of")
                        .and_then(|v| v.as_i64())
                        == Some(n)
            })
            .map(|t| t.value.unwrap())
            .collect();
        assert_eq!(v.len(), 3);
        v.iter().sum::<f64>() / 3.0
    };
    let best = if mean(top[0]) <= mean(top[1]) {
        top[0]
    } else {
        top[1]
    };
    let csv =
        run_ok(
            rnnsweep()
                .arg("leaderboard")
                .arg(&db)
                .args(["--confirmed", "--format", "csv"]),
        );
    let csv = String::from_utf8_lossy(&csv.stdout);
    let first: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(first[1], best.to_string(), "{csv}");
    assert!((first[2].parse::<f64>().unwrap() - mean(best)).abs() < 1e-12);
    assert_eq!(first[4], "3");
    assert!(stdout.contains("ranked by the mean over seeds"), "{stdout}");
    let shown = run_ok(rnnsweep().arg("best").arg(&db));
    assert!(
        String::from_utf8_lossy(&shown.stdout).starts_with(&format!("best trial {best} ")),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    // Asking again queues nothing new.
    let again =
        run_ok(
            rnnsweep()
                .args(["confirm"])
                .arg(&db)
                .args(["--top", "2", "--repeats", "2"]),
        );
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to queue"));
    assert_eq!(trials(&db, "real").len(), 7);
}

#[test]
fn a_warm_started_study_takes_the_old_trials_once_and_its_sampler_learns_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let old = function_spec(dir.path(), "old", "random", 12, "");
    run_ok(rnnsweep().arg("run").arg(&old));
    // The new space is narrower in x0: old trials with x0 past 5 lie outside it.
    let new = dir.path().join("new.yaml");
    std::fs::write(
        &new,
        "name: new\nstorage: new.db\nmethod: tpe\nseed: 4\nrun_cap: 16\ntpe: {n_startup_trials: 5}\n\
         trial: {kind: function, name: branin, epochs: 9, noise: 0.0}\n\
         parameters:\n  x0: {distribution: uniform, min: -5, max: 5}\n  x1: {distribution: uniform, min: 0, max: 15}\n",
    )
    .unwrap();
    let old_trials = trials(&dir.path().join("old.db"), "old");
    let inside = old_trials.iter().filter(|t| param(t, "x0") <= 5.0).count();
    assert!(
        (5..12).contains(&inside),
        "{inside} of the old trials inside"
    );
    let o = run_ok(
        rnnsweep()
            .arg("run")
            .arg(&new)
            .arg("--warm-start")
            .arg(dir.path().join("old.db")),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!(
            "warm start: {inside} finished trial(s) taken from {}#old ({} left out",
            dir.path().join("old.db").display(),
            12 - inside
        )),
        "{stdout}"
    );
    let all = trials(&dir.path().join("new.db"), "new");
    // They count toward run_cap: 16 in all, of which `inside` came from the old study.
    assert_eq!(count(&all, TrialState::Complete), 16);
    let taken: Vec<_> = all
        .iter()
        .filter(|t| t.system_attrs.contains_key("rnnsweep:warm_start_of"))
        .collect();
    assert_eq!(taken.len(), inside);
    for t in &taken {
        let of = &t.system_attrs["rnnsweep:warm_start_of"];
        let original = old_trials
            .iter()
            .find(|o| Some(o.number) == of["number"].as_i64())
            .unwrap();
        assert_eq!(t.value, original.value, "values come across as they were");
        assert_eq!(param(t, "x0"), param(original, "x0"));
        assert_eq!(t.intermediate, original.intermediate);
    }
    // With more finished trials than n_startup_trials, TPE models them from its first
    // proposal: the new study's own trials do better than the same number run cold, where the
    // first five are random start-up draws (branin's minimum is 0.398).
    let cold = dir.path().join("cold.yaml");
    std::fs::write(
        &cold,
        std::fs::read_to_string(&new)
            .unwrap()
            .replace("name: new\nstorage: new.db", "name: cold\nstorage: cold.db"),
    )
    .unwrap();
    let own = 16 - inside;
    run_ok(
        rnnsweep()
            .arg("run")
            .arg(&cold)
            .args(["--run-cap", &own.to_string()]),
    );
    let mean =
        |ts: Vec<&TrialRecord>| ts.iter().map(|t| t.value.unwrap()).sum::<f64>() / ts.len() as f64;
    let cold_trials = trials(&dir.path().join("cold.db"), "cold");
    let warm_own: Vec<&TrialRecord> = all
        .iter()
        .filter(|t| !t.system_attrs.contains_key("rnnsweep:warm_start_of"))
        .collect();
    assert_eq!(warm_own.len(), own);
    let (warm_mean, cold_mean) = (mean(warm_own), mean(cold_trials.iter().collect()));
    assert!(
        warm_mean < cold_mean,
        "warm {warm_mean} vs cold {cold_mean}"
    );
    // Run again with a larger cap: the old trials are not taken twice.
    let o = run_ok(
        rnnsweep()
            .arg("run")
            .arg(&new)
            .args(["--run-cap", "17", "--warm-start"])
            .arg(dir.path().join("old.db")),
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("already holds the trials of"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let all = trials(&dir.path().join("new.db"), "new");
    assert_eq!(all.len(), 17);
    // A study whose objective differs is refused, and nothing is written.
    let other = dir.path().join("other.yaml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&new).unwrap().replace(
            "name: new\nstorage: new.db",
            "name: other\nstorage: other.db\nmetric: {name: value, goal: maximize}",
        ),
    )
    .unwrap();
    let o = rnnsweep()
        .arg("run")
        .arg(&other)
        .arg("--warm-start")
        .arg(dir.path().join("old.db"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("their values cannot be compared"),
        "{stderr}"
    );
}

#[test]
fn a_specs_enqueued_configurations_run_first_exactly_once_and_to_their_end() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("queued.db");
    let pruner = "early_terminate: {type: hyperband, min_iter: 1, eta: 3}\n";
    // A study with its rungs filled: 12 random trials, most of them pruned at epoch 1 or 3.
    let spec = function_spec(dir.path(), "queued", "random", 12, pruner);
    run_ok(rnnsweep().arg("run").arg(&spec));
    let before = trials(&db, "queued");
    assert!(count(&before, TrialState::Pruned) >= 4);
    // Then the spec names two configurations: Branin's corner (its worst region, far worse
    // than most trials at the first rung) and one of its minima.
    let queue = "enqueue:\n  - {x0: -5.0, x1: 0.0}\n  - x0: 9.42478\n    x1: 2.475\n";
    let with_queue = function_spec(
        dir.path(),
        "queued",
        "random",
        15,
        &format!("{pruner}{queue}"),
    );
    let o = run_ok(rnnsweep().arg("run").arg(&with_queue));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("queued 2 trial(s) from the spec's enqueue: they run first, to their end"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let after = trials(&db, "queued");
    assert_eq!(after.len(), 15);
    let queued: Vec<_> = after
        .iter()
        .filter(|t| t.number >= 12 && t.number < 14)
        .collect();
    assert_eq!(
        queued
            .iter()
            .map(|t| (param(t, "x0"), param(t, "x1")))
            .collect::<Vec<_>>(),
        [(-5.0, 0.0), (9.42478, 2.475)],
        "the spec's entries run first, in its order, with exactly its values"
    );
    for t in &queued {
        assert_eq!(
            t.state,
            TrialState::Complete,
            "trial {} ran to its end",
            t.number
        );
        assert_eq!(t.intermediate.len(), 9);
        assert!(t.system_attrs.contains_key("rnnsweep:spec_enqueue"));
    }
    // The corner would have been pruned: at epoch 1 it is worse than every earlier trial that
    // reached that rung (Branin at (-5, 0) is 308.1; its minimum 0.398).
    assert!((queued[0].value.unwrap() - 308.13).abs() < 0.01);
    let corner = queued[0].intermediate[0].1.unwrap();
    assert!(before
        .iter()
        .all(|t| t.intermediate.first().and_then(|s| s.1).unwrap() < corner));
    assert!((queued[1].value.unwrap() - 0.3979).abs() < 1e-3);
    // Running the spec again queues nothing twice: one more sampled trial, no new queued ones.
    let again = function_spec(
        dir.path(),
        "queued",
        "random",
        16,
        &format!("{pruner}{queue}"),
    );
    let o = run_ok(rnnsweep().arg("run").arg(&again));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("from the spec's enqueue"));
    let last = trials(&db, "queued");
    assert_eq!(last.len(), 16);
    assert_eq!(
        last.iter()
            .filter(|t| t.system_attrs.contains_key("rnnsweep:spec_enqueue"))
            .count(),
        2
    );
}

#[test]
fn an_enqueued_configuration_outside_the_space_is_refused_before_a_study_exists() {
    let dir = tempfile::tempdir().unwrap();
    let spec = function_spec(
        dir.path(),
        "badqueue",
        "random",
        5,
        "enqueue:\n  - {x0: 1.0, x1: 2.0}\n  - {x0: 20.0, x1: 2.0}\n",
    );
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("badqueue.yaml:9:3: enqueue[1]: parameter `x0` = 20.0 is outside the search space: it must be a number in [-5, 10]"),
        "{e}"
    );
    assert!(!dir.path().join("badqueue.db").exists(), "nothing stored");
}
