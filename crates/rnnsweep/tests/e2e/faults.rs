//! Faults of the trial and of the machine: a script that raises at its first line, trials that
//! hang (silent or chatty), a full disk and a folder that refuses writes, a trial killed from
//! outside. Each must end the sweep (or the trial) with one clear reason, not burn the study.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rnnsweep_search::store::{TrialRecord, TrialState};

use crate::common::{count, rnnsweep, run_ok, signal, trials};

/// A spec whose trials run `script` (Python, written to `dir/trial.py`) with no `data` key: a
/// command trial reads its own data. `extra` is more top-level YAML.
fn script_spec(dir: &Path, name: &str, script: &str, params: &str, extra: &str) -> PathBuf {
    let program = dir.join("trial.py");
    std::fs::write(&program, script).unwrap();
    let text = format!(
        "name: {name}\nstorage: {name}.db\nmethod: grid\nrun_cap: 400\nheartbeat_grace: 2s\n\
         resources: {{devices: [cpu], trials_per_device: 1}}\n\
         trial: {{command: [python3, {}, \"{{params_json}}\"]}}\n{extra}parameters:\n{params}",
        program.display()
    );
    let spec = dir.join(format!("{name}.yaml"));
    std::fs::write(&spec, text).unwrap();
    spec
}

/// The protocol lines a script prints, as Python source.
const PROTOCOL: &str = r#"
import json, os, sys, time
p = json.loads(sys.argv[1])
task = json.load(open(os.environ["RNNSWEEP_TRIAL"]))
def epoch(n, v):
    print(json.dumps({"type": "epoch", "epoch": n, "metrics": {"val_f1": v}}), flush=True)
def final(v):
    print(json.dumps({"type": "final", "metrics": {"val_f1": v}, "epochs": 1}), flush=True)
"#;

/// The sweep's closing message: what follows "stopped: ".
fn closing(stdout: &str) -> &str {
    stdout
        .split_once("stopped: ")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no closing message:\n{stdout}"))
}

/// The trial that ran `x` (the first, when several did).
fn with_x(all: &[TrialRecord], x: f64) -> &TrialRecord {
    all.iter()
        .find(|t| t.param_values()["x"].as_f64() == Some(x))
        .unwrap_or_else(|| panic!("no trial ran x = {x}"))
}

fn reason(t: &TrialRecord) -> &str {
    t.system_attrs["fail_reason"].as_str().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_script_that_raises_stops_the_sweep_after_three_trials_with_its_reason_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = script_spec(
        dir.path(),
        "broken",
        "raise RuntimeError('cannot import the tokenizer')\n",
        "  x: {values: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n",
        "",
    );
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    let all = trials(&dir.path().join("broken.db"), "broken");
    assert_eq!(
        all.len(),
        3,
        "stopped after the first 3 trials, not 10:\n{stdout}"
    );
    assert_eq!(count(&all, TrialState::Fail), 3);
    // The live lines give the reason once, then point back to it with a count.
    assert!(stdout.contains("trial 1 FAIL in "), "{stdout}");
    assert!(
        stdout.contains(": same reason as trial 0 (2 in a row)")
            && stdout.contains(": same reason as trial 0 (3 in a row)"),
        "{stdout}"
    );
    let closing = closing(&stdout);
    assert!(
        closing.starts_with(
            "the first 3 trials of this run all failed (max_initial_failures), all with the same reason:"
        ),
        "{closing}"
    );
    assert_eq!(
        closing
            .matches("RuntimeError: cannot import the tokenizer")
            .count(),
        1,
        "{closing}"
    );
    // Said live for trial 0 and once at the end: never per trial.
    assert_eq!(
        stdout
            .matches("RuntimeError: cannot import the tokenizer")
            .count(),
        2,
        "{stdout}"
    );
    // The folder it names holds the trial's stderr, traceback and all.
    let folder = closing
        .lines()
        .find_map(|l| {
            l.strip_prefix("the first one's folder, with its stderr.log and trial.json: ")
        })
        .unwrap_or_else(|| panic!("{closing}"));
    let log = std::fs::read_to_string(Path::new(folder).join("stderr.log")).unwrap();
    assert!(
        log.contains("Traceback") && log.contains("RuntimeError"),
        "{log}"
    );
    assert!(folder.ends_with("trial-0"), "{folder}");

    // The leaderboard of a study whose trials all failed says why, with a count.
    let o = run_ok(
        rnnsweep()
            .arg("leaderboard")
            .arg(dir.path().join("broken.db")),
    );
    let (board, _) = text(&o);
    assert!(board.starts_with("no trial finished with a value; the failures:\n  3 × the worker exited with status 1 without a final result: "), "{board}");
    assert!(board.contains("(trials 0, 1, 2)"), "{board}");
    assert!(!board.contains('│'), "no table of dashes:\n{board}");
}

#[test]
fn a_trial_past_its_time_limits_is_stopped_and_its_slot_runs_the_next() {
    let dir = tempfile::tempdir().unwrap();
    // x = 1 prints one epoch, then hangs silently and ignores SIGTERM; x = 2 keeps printing
    // epochs for ever; x = 3 is a normal trial.
    let script = format!(
        "{PROTOCOL}\
import signal
if p['x'] == 1:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    epoch(1, 0.1)
    time.sleep(300)
elif p['x'] == 2:
    n = 0
    while True:
        n += 1
        epoch(n, 0.2)
        time.sleep(0.3)
else:
    epoch(1, 0.3)
    final(0.3)
"
    );
    let spec = script_spec(
        dir.path(),
        "hung",
        &script,
        "  x: {values: [1, 2, 3]}\n",
        "silence_timeout: 2s\n",
    );
    let started = Instant::now();
    let o = rnnsweep()
        .arg("run")
        .arg(&spec)
        .args(["--trial-timeout", "4s"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the hung trials were stopped, not waited for"
    );
    let all = trials(&dir.path().join("hung.db"), "hung");
    assert_eq!(all.len(), 3, "{stdout}");
    let (silent, chatty, normal) = (with_x(&all, 1.0), with_x(&all, 2.0), with_x(&all, 3.0));
    assert_eq!(silent.state, TrialState::Fail);
    assert_eq!(
        reason(silent),
        "timed out after 2s without a protocol line (silence_timeout)"
    );
    assert_eq!(chatty.state, TrialState::Fail);
    assert_eq!(reason(chatty), "timed out after 4s (trial_timeout)");
    // Its epoch lines kept the silence clock from running out.
    assert!(chatty.intermediate.len() >= 5, "{:?}", chatty.intermediate);
    assert_eq!(
        (normal.state, normal.value),
        (TrialState::Complete, Some(0.3))
    );
    assert!(
        stdout.contains(&format!(
            "trial {} timed out after 2s without a protocol line (silence_timeout): stopping it",
            silent.number
        )),
        "{stdout}"
    );
    // The trial that ignored SIGTERM got SIGKILL after the grace period: no process is left.
    let left = Command::new("pgrep")
        .args(["-f", &dir.path().join("trial.py").display().to_string()])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "a trial process outlived the sweep");
}

/// A tmpfs of `size` mounted on `at` (root only), unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, options: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Trials: x = 2 fills its trial folder's disk until the write fails (until `freed` exists
/// in `dir`); the others finish.
fn filler(dir: &Path) -> String {
    format!(
        "{PROTOCOL}\
if p['x'] == 2 and not os.path.exists(os.path.join({dir:?}, 'freed')):
    with open(os.path.join(task['trial_dir'], 'filler.bin'), 'wb') as f:
        while True:
            f.write(b'\\0' * 65536)
            f.flush()
epoch(1, p['x'] / 10)
final(p['x'] / 10)
",
        dir = dir.display().to_string()
    )
}

#[test]
fn a_full_disk_stops_the_sweep_and_a_resume_after_freeing_it_continues() {
    let dir = tempfile::tempdir().unwrap();
    let spec = script_spec(
        dir.path(),
        "full",
        &filler(dir.path()),
        "  x: {values: [1, 2, 3, 4]}\n",
        "",
    );
    // The study's trial folders on a 1 MiB disk; the study file elsewhere (as with PostgreSQL).
    let folders = dir.path().join("full");
    let Some(mount) = Mount::tmpfs(&folders, "size=1m") else {
        assert!(
            !is_root(),
            "root could not mount a tmpfs: run the test where it may"
        );
        eprintln!(
            "skipped: not root, so no small disk can be mounted (the refused-writes test covers it)"
        );
        return;
    };
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    let all = trials(&dir.path().join("full.db"), "full");
    // The trial at x = 2 met the full disk: FAIL with the reason, its values queued for the
    // resume (the last trial, WAITING), and no trial started after it.
    let filled = with_x(&all, 2.0);
    assert_eq!(filled.state, TrialState::Fail, "{stdout}");
    let last = all.last().unwrap();
    assert_eq!(
        last.state,
        TrialState::Waiting,
        "its values are queued again"
    );
    assert_eq!(
        last.number,
        filled.number + 1,
        "no trial started after the fault"
    );
    assert!(
        reason(filled).contains("OSError: [Errno 28] No space left on device")
            && reason(filled).ends_with(&format!("; re-queued as trial {}", last.number)),
        "{}",
        reason(filled)
    );
    let finished: Vec<(i64, f64)> = all
        .iter()
        .filter_map(|t| Some((t.number, t.value?)))
        .collect();
    let message = closing(&stdout);
    // Python names no path for a failed write: the trial's folder is where it was writing.
    assert!(
        message.starts_with(&format!("no space left on device: {}/", folders.display()))
            && message.contains(&format!(
                "/trial-{} (met by trial {}: ",
                filled.number, filled.number
            )),
        "names the fault and the path: {message}"
    );
    assert!(stdout.contains("nothing finished is lost"), "{stdout}");

    // Freed, the same command continues: the finished trial is kept, the rest run.
    let filler = std::fs::read_dir(&folders)
        .unwrap()
        .flat_map(|uuid| std::fs::read_dir(uuid.unwrap().path()).unwrap())
        .map(|t| t.unwrap().path().join("filler.bin"))
        .find(|f| f.exists())
        .unwrap();
    std::fs::remove_file(filler).unwrap();
    std::fs::write(dir.path().join("freed"), "").unwrap();
    run_ok(rnnsweep().arg("run").arg(&spec));
    let after = trials(&dir.path().join("full.db"), "full");
    for (number, value) in &finished {
        let t = after.iter().find(|t| t.number == *number).unwrap();
        assert_eq!(
            (t.state, t.value),
            (TrialState::Complete, Some(*value)),
            "a finished trial is kept as it was"
        );
    }
    let mut values: Vec<f64> = after.iter().filter_map(|t| t.value).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(
        values,
        [0.1, 0.2, 0.3, 0.4],
        "the trial the full disk stopped and those it kept from starting ran on resume"
    );
    drop(mount);
}

#[test]
fn a_results_folder_that_refuses_writes_stops_the_sweep_at_its_first_trial() {
    let dir = tempfile::tempdir().unwrap();
    let spec = script_spec(
        dir.path(),
        "refused",
        &format!("{PROTOCOL}epoch(1, 0.5)\nfinal(0.5)\n"),
        "  x: {values: [1, 2, 3]}\n",
        "",
    );
    let folders = dir.path().join("refused");
    // Root writes through permissions: give it a read-only file system instead.
    let mount = if is_root() {
        let m = Mount::tmpfs(&folders, "ro,size=64k");
        assert!(m.is_some(), "root could not mount a read-only tmpfs");
        m
    } else {
        std::fs::create_dir_all(&folders).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&folders, std::fs::Permissions::from_mode(0o555)).unwrap();
        None
    };
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    let all = trials(&dir.path().join("refused.db"), "refused");
    let states: Vec<TrialState> = all.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [TrialState::Fail, TrialState::Waiting],
        "one trial met the fault and was queued again; no other started:\n{stdout}"
    );
    let message = closing(&stdout);
    let fault = if mount.is_some() {
        "read-only file system"
    } else {
        "permission denied"
    };
    assert!(
        message.starts_with(&format!("{fault}: {}/", folders.display()))
            && message.contains("/trial-0 (met by trial 0)\n"),
        "{message}"
    );
    drop(mount);
    if !is_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&folders, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    run_ok(rnnsweep().arg("run").arg(&spec));
    let after = trials(&dir.path().join("refused.db"), "refused");
    assert_eq!(
        count(&after, TrialState::Complete),
        3,
        "resumed once the folder takes writes"
    );
}

#[test]
fn a_trial_killed_from_outside_is_retried_once_with_one_fewer_trial_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // x = 1 writes its pid and waits to be killed (the test plays the out-of-memory killer);
    // the others take a moment and finish.
    let script = format!(
        "{PROTOCOL}\
if p['x'] == 1:
    open(os.path.join({dir:?}, 'pid-%d' % task['number']), 'w').write(str(os.getpid()))
    time.sleep(60)
time.sleep(0.5)
epoch(1, p['x'] / 10)
final(p['x'] / 10)
",
        dir = dir.path().display().to_string()
    );
    let spec = script_spec(
        dir.path(),
        "oomkill",
        &script,
        "  x: {values: [1, 2, 3, 4]}\n",
        "",
    );
    let text_spec = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("trials_per_device: 1", "trials_per_device: 2");
    std::fs::write(&spec, text_spec).unwrap();
    let driver = std::thread::spawn(move || rnnsweep().arg("run").arg(&spec).output().unwrap());
    // Kill each attempt at x = 1 as it starts: the first is retried, the retry is not.
    let mut killed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while killed.len() < 2 && Instant::now() < deadline {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("pid-") && !killed.contains(&name) {
                if let Ok(pid) = std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .parse::<u32>()
                {
                    signal(pid, 9);
                    killed.push(name);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = driver.join().unwrap();
    let (stdout, stderr) = text(&o);
    assert_eq!(killed.len(), 2, "{stdout}\n{stderr}");
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let all = trials(&dir.path().join("oomkill.db"), "oomkill");
    let failed: Vec<_> = all.iter().filter(|t| t.state == TrialState::Fail).collect();
    assert_eq!(failed.len(), 2, "{stdout}");
    let retry = failed[1].number;
    assert_eq!(
        reason(failed[0]),
        format!("killed by signal 9 (probably out of memory); re-queued as trial {retry}")
    );
    assert_eq!(
        reason(failed[1]),
        "killed by signal 9 (probably out of memory)"
    );
    assert_eq!(
        failed[0].params, failed[1].params,
        "the retry ran the same values"
    );
    assert_eq!(count(&all, TrialState::Complete), 3);
    assert_eq!(
        stdout
            .matches("killed from outside (most likely for memory): at most 1 trial(s) at once there from now on")
            .count(),
        1,
        "{stdout}"
    );
}

#[test]
fn the_built_in_trial_on_a_full_disk_says_the_fault_once_and_stops_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let spec = crate::common::real_spec(dir.path());
    // Room for the trial's task file, not for its checkpoint.
    let Some(mount) = Mount::tmpfs(&dir.path().join("out/real"), "size=32k") else {
        assert!(!is_root(), "root could not mount a tmpfs");
        eprintln!("skipped: not root, so no small disk can be mounted");
        return;
    };
    let o = rnnsweep().arg("run").arg(&spec).output().unwrap();
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    let all = trials(&dir.path().join("out/real.db"), "real");
    let states: Vec<TrialState> = all.iter().map(|t| t.state).collect();
    assert_eq!(states, [TrialState::Fail, TrialState::Waiting], "{stdout}");
    let why = reason(&all[0]);
    assert_eq!(why.matches("No space left on device").count(), 1, "{why}");
    // Once in the trial's line, once in the closing message: no summary repeating it.
    assert_eq!(
        stdout.matches("No space left on device").count(),
        2,
        "{stdout}"
    );
    assert!(
        closing(&stdout).starts_with("no space left on device: "),
        "{stdout}"
    );
    drop(mount);
}
