//! Parallel trials: device slots (with fake GPUs), several drivers on one study, SIGKILL at
//! random moments, a user's own command.

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use rand::{Rng, SeedableRng};
use rnnsweep_search::store::TrialState;

/// (number, device, start, end) of each finished worker run, from the fake worker's log.
fn runs(log: &str) -> Vec<(i64, String, f64, f64)> {
    let mut starts: BTreeMap<i64, (String, f64)> = BTreeMap::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (number, cuda, t): (i64, String, f64) = (
            f[1].parse().unwrap(),
            f[2].to_string(),
            f[3].parse().unwrap(),
        );
        match f[0] {
            "start" => {
                starts.insert(number, (cuda, t));
            }
            "done" | "crash" => {
                let (device, start) = starts.remove(&number).unwrap();
                out.push((number, device, start, t));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn four_fake_gpus_each_run_their_own_trials_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "gpus").run_cap(12).sleep(0.15).params("  x: {distribution: uniform, min: 0.1, max: 1.0}\n  epochs: {value: 2}\n  crash_on: {value: 0.5}\n").top("resources: {devices: [cuda:0, cuda:1, cuda:2, cuda:3], trials_per_device: 1}\n").write();
    let o = rnnsweep()
        .env("RNNSWEEP_FAKE_CUDA", "1")
        .arg("run")
        .arg(&spec)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("4 trial(s) at once"), "{stdout}");
    let all = trials(&dir.path().join("gpus.db"), "gpus");
    assert_eq!(count(&all, TrialState::Complete), 12);
    let log = std::fs::read_to_string(dir.path().join("runs.log")).unwrap();
    let runs = runs(&log);
    // The trial sees only its own GPU, and the store records that GPU.
    for (number, cuda, _, _) in &runs {
        let t = all.iter().find(|t| t.number == *number).unwrap();
        assert_eq!(
            t.user_attrs["device"],
            format!("cuda:{cuda}"),
            "trial {number}"
        );
    }
    let devices: HashSet<&str> = runs.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(devices.len(), 4, "every GPU got trials: {log}");
    // Never two trials at once on a one-slot GPU.
    for a in &runs {
        for b in &runs {
            if a.0 < b.0 && a.1 == b.1 {
                assert!(
                    a.3 <= b.2 || b.3 <= a.2,
                    "trials {} and {} overlap on cuda:{}",
                    a.0,
                    b.0,
                    a.1
                );
            }
        }
    }
    // All four ran at once at some point.
    let max_parallel = runs
        .iter()
        .map(|a| runs.iter().filter(|b| b.2 <= a.2 && a.2 < b.3).count())
        .max()
        .unwrap();
    assert_eq!(max_parallel, 4, "{log}");
}

#[test]
fn a_crashed_trial_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    // Every trial with x = 1 dies by SIGKILL mid-epoch; one GPU, so later trials need the slot.
    let spec = FakeSpec::new(dir.path(), "crashes")
        .method("grid")
        .run_cap(100)
        .sleep(0.05)
        .params("  x: {values: [1, 2, 3, 4]}\n  crash_on: {value: 1}\n  epochs: {value: 1}\n")
        .top("resources: {devices: [cuda:7]}\n")
        .write();
    run_ok(
        rnnsweep()
            .env("RNNSWEEP_FAKE_CUDA", "1")
            .arg("run")
            .arg(&spec),
    );
    let all = trials(&dir.path().join("crashes.db"), "crashes");
    assert_eq!(count(&all, TrialState::Complete), 3);
    // A SIGKILL rnnsweep did not send: retried once (it could have been the out-of-memory
    // killer), then given up.
    let failed: Vec<_> = all.iter().filter(|t| t.state == TrialState::Fail).collect();
    assert_eq!(failed.len(), 2);
    let reason = |n: usize| failed[n].system_attrs["fail_reason"].as_str().unwrap();
    assert_eq!(
        reason(0),
        format!(
            "killed by signal 9 (probably out of memory); re-queued as trial {}",
            failed[1].number
        )
    );
    assert_eq!(reason(1), "killed by signal 9 (probably out of memory)");
    assert!(all.iter().all(|t| t.user_attrs["device"] == "cuda:7"));
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_devices_need_a_cuda_build() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "nocuda")
        .run_cap(1)
        .params("  x: {value: 1}\n")
        .top("resources: {devices: [cuda:0]}\n")
        .write();
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("resources: CUDA devices need a build with the `cuda` feature"),
        "{stderr}"
    );
    assert!(!dir.path().join("nocuda.db").exists());
}

/// A `cuda` build refuses a GPU the driver does not report before it creates anything: on a
/// machine without the driver (CI links against a stand-in that reports none) and on a GPU
/// machine alike, since no machine has 65 GPUs.
#[cfg(feature = "cuda")]
#[test]
fn a_cuda_device_the_driver_does_not_report_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "nogpu")
        .run_cap(1)
        .params("  x: {value: 1}\n")
        .top("resources: {devices: [cuda:64]}\n")
        .write();
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("resources: cuda:64"), "{stderr}");
    assert!(
        stderr.contains("CUDA driver says") || stderr.contains("is not on this machine"),
        "{stderr}"
    );
    assert!(!dir.path().join("nogpu.db").exists());
}

#[test]
fn four_drivers_share_one_study_without_duplicates_or_lock_errors() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "shared")
        .run_cap(16)
        .sleep(0.05)
        .params("  x: {distribution: uniform, min: 0, max: 1}\n  epochs: {value: 2}\n")
        .top("resources: {trials_per_device: 2, threads_per_trial: 1}\n")
        .write();
    let drivers: Vec<_> = (0..4)
        .map(|_| {
            rnnsweep()
                .arg("run")
                .arg(&spec)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for d in drivers {
        let o = d.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success(),
            "{}\n{stderr}",
            String::from_utf8_lossy(&o.stdout)
        );
        assert!(!stderr.contains("locked"), "{stderr}");
    }
    let all = trials(&dir.path().join("shared.db"), "shared");
    assert_eq!(count(&all, TrialState::Complete), 16, "exactly run_cap");
    assert_eq!(all.len(), 16);
    let xs: HashSet<u64> = all.iter().map(|t| param(t, "x").to_bits()).collect();
    assert_eq!(xs.len(), 16, "no trial ran twice");
    let numbers: HashSet<i64> = all.iter().map(|t| t.number).collect();
    assert_eq!(numbers, (0..16).collect());
}

#[test]
fn a_study_survives_ten_sigkills_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "chaos")
        .run_cap(10)
        .sleep(0.1)
        .params("  x: {distribution: uniform, min: 0, max: 1}\n  epochs: {value: 3}\n")
        .top("heartbeat_grace: 1s\nresources: {trials_per_device: 2, threads_per_trial: 1}\n")
        .write();
    // heartbeat_grace given twice would be a YAML error: drop the helper's default.
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replacen("heartbeat_grace: 2s\n", "", 1);
    std::fs::write(&spec, text).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    for _ in 0..10 {
        let mut driver = rnnsweep()
            .arg("run")
            .arg(&spec)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(50..900)));
        driver.kill().unwrap();
        driver.wait().unwrap();
    }
    run_ok(rnnsweep().arg("run").arg(&spec));
    let all = trials(&dir.path().join("chaos.db"), "chaos");
    let complete: Vec<_> = all
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .collect();
    assert_eq!(complete.len(), 10, "exactly run_cap finished");
    assert_eq!(
        count(&all, TrialState::Running) + count(&all, TrialState::Waiting),
        0
    );
    // No completed trial was lost or run twice: completed trials have distinct parameters,
    // each with its full history.
    let xs: HashSet<u64> = complete.iter().map(|t| param(t, "x").to_bits()).collect();
    assert_eq!(xs.len(), 10);
    assert!(complete.iter().all(|t| t.intermediate.len() == 3));
    // Every failed trial was a killed one whose parameters were queued again and completed.
    for f in all.iter().filter(|t| t.state == TrialState::Fail) {
        assert!(
            f.system_attrs["fail_reason"]
                .as_str()
                .unwrap()
                .contains("re-queued"),
            "{:?}",
            f.system_attrs
        );
    }
}

#[test]
fn a_users_own_command_gets_its_parameters_as_a_placeholder() {
    let dir = tempfile::tempdir().unwrap();
    let top = format!(
        "trial: {{command: [python3, {}, \"{{params_json}}\"]}}\n",
        fake_worker()
    );
    let spec = FakeSpec::new(dir.path(), "own")
        .method("grid")
        .run_cap(10)
        .params("  x: {values: [0.25, 0.75]}\n  epochs: {value: 2}\n")
        .top(&top)
        .write();
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    // Plain, readable progress lines when stdout is not a terminal.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("trial 0 started on cpu: ")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("trial 1 epoch 2: val_f1 ")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("trial 1 COMPLETE val_f1 ") && l.contains(" in ")),
        "{stdout}"
    );
    let all = trials(&dir.path().join("own.db"), "own");
    let mut values: Vec<f64> = all.iter().filter_map(|t| t.value).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, vec![0.25, 0.75]);
}

#[test]
fn out_of_memory_on_a_gpu_is_retried_once_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "oom")
        .method("grid")
        .run_cap(10)
        .params("  x: {values: [1]}\n  oom_on: {value: 0}\n  epochs: {value: 1}\n")
        .top("resources: {devices: [cuda:0, cuda:1]}\n")
        .write();
    run_ok(
        rnnsweep()
            .env("RNNSWEEP_FAKE_CUDA", "1")
            .arg("run")
            .arg(&spec),
    );
    let all = trials(&dir.path().join("oom.db"), "oom");
    assert_eq!(all.len(), 2, "one retry");
    assert_eq!(
        (all[0].state, all[0].user_attrs["device"].as_str()),
        (TrialState::Fail, Some("cuda:0"))
    );
    assert!(all[0].system_attrs["fail_reason"]
        .as_str()
        .unwrap()
        .starts_with("out of memory on cuda:0; re-queued as trial 1"));
    assert_eq!(
        (all[1].state, all[1].user_attrs["device"].as_str()),
        (TrialState::Complete, Some("cuda:1"))
    );
}

#[test]
fn under_the_drivers_cuda_visible_devices_each_trial_gets_the_gpu_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let spec = FakeSpec::new(dir.path(), "visible")
        .method("grid")
        .run_cap(4)
        .sleep(0.2)
        .params("  x: {values: [1, 2, 3, 4]}\n  epochs: {value: 1}\n")
        .top("resources: {devices: [cuda:0, cuda:1]}\n")
        .write();
    // The driver sees GPUs 2 and 3 as cuda:0 and cuda:1.
    run_ok(
        rnnsweep()
            .env("RNNSWEEP_FAKE_CUDA", "1")
            .env("CUDA_VISIBLE_DEVICES", "2,3")
            .arg("run")
            .arg(&spec),
    );
    let log = std::fs::read_to_string(dir.path().join("runs.log")).unwrap();
    let all = trials(&dir.path().join("visible.db"), "visible");
    for (number, cuda, _, _) in runs(&log) {
        let t = all.iter().find(|t| t.number == number).unwrap();
        let expected = match t.user_attrs["device"].as_str() {
            Some("cuda:0") => "2",
            Some("cuda:1") => "3",
            other => panic!("trial {number} on {other:?}"),
        };
        assert_eq!(cuda, expected, "trial {number}: {log}");
    }
}

#[test]
fn a_fused_lstm_on_a_gpu_is_refused_before_a_study_exists() {
    let dir = tempfile::tempdir().unwrap();
    let spec = crate::common::real_spec(dir.path());
    let text = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("training: {", "training: {lstm_impl: fused, ");
    std::fs::write(&spec, text).unwrap();
    let o = rnnsweep()
        .env("RNNSWEEP_FAKE_CUDA", "1")
        .arg("run")
        .arg(&spec)
        .args(["--devices", "cuda:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "training.lstm_impl: fused runs on the CPU only, and resources.devices has cuda:0"
        ),
        "{stderr}"
    );
    assert!(
        !dir.path().join("out/real.db").exists(),
        "no study was created"
    );
}
