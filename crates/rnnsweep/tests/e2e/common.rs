//! Helpers shared by the end-to-end tests: the binary, a stand-in worker, specs, study reads.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rnnsweep_search::store::sqlite::SqliteStore;
use rnnsweep_search::store::{Store, TrialRecord, TrialState};

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Sends a signal to a process (2 = SIGINT, 9 = SIGKILL).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child process id.
    unsafe {
        libc_kill(pid as i32, sig);
    }
}

pub fn rnnsweep() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rnnsweep"));
    c.env("RAYON_NUM_THREADS", "1");
    c
}

pub fn fake_worker() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fake_worker.py")
        .display()
        .to_string()
}

/// A spec whose trials run the stand-in worker: `FakeSpec::new(dir, "name").run_cap(4)
/// .sleep(0.2).params("  x: {values: [1, 2]}\n").write()`. The study file is `<name>.db` in
/// `dir`; every trial appends its start and end to `runs.log` there.
pub struct FakeSpec<'a> {
    dir: &'a Path,
    name: &'a str,
    method: &'a str,
    run_cap: usize,
    sleep: f64,
    params: &'a str,
    top: &'a str,
}

impl<'a> FakeSpec<'a> {
    pub fn new(dir: &'a Path, name: &'a str) -> Self {
        Self {
            dir,
            name,
            method: "random",
            run_cap: 1,
            sleep: 0.0,
            params: "",
            top: "",
        }
    }

    pub fn method(mut self, method: &'a str) -> Self {
        self.method = method;
        self
    }

    pub fn run_cap(mut self, n: usize) -> Self {
        self.run_cap = n;
        self
    }

    /// Seconds each epoch of the stand-in worker sleeps.
    pub fn sleep(mut self, seconds: f64) -> Self {
        self.sleep = seconds;
        self
    }

    /// More parameters (YAML lines under `parameters:`).
    pub fn params(mut self, yaml: &'a str) -> Self {
        self.params = yaml;
        self
    }

    /// More top-level YAML (`resources`, `trial`, `heartbeat_grace`).
    pub fn top(mut self, yaml: &'a str) -> Self {
        self.top = yaml;
        self
    }

    pub fn write(self) -> PathBuf {
        let Self {
            dir,
            name,
            method,
            run_cap,
            sleep,
            params,
            top,
        } = self;
        std::fs::write(dir.join("train.csv"), "id,label,tweet\n1,0,a\n").unwrap();
        let log = dir.join("runs.log");
        let trial = if top.lines().any(|l| l.starts_with("trial:")) {
            String::new()
        } else {
            format!("trial: {{command: [python3, {}]}}\n", fake_worker())
        };
        let text = format!(
            "name: {name}\nstorage: {name}.db\ndata: {{train: train.csv}}\nmethod: {method}\nseed: 3\nrun_cap: {run_cap}\nheartbeat_grace: 2s\n\
             {trial}{top}parameters:\n  sleep: {{value: {sleep}}}\n  log: {{value: \"{log}\"}}\n{params}",
            log = log.display()
        );
        let p = dir.join(format!("{name}.yaml"));
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Runs the command and returns its output, failing the test with both streams if it failed.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{:?} failed ({}):\n{}\n{}",
        cmd,
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

pub fn trials(db: &Path, study: &str) -> Vec<TrialRecord> {
    let store = SqliteStore::open(db).unwrap();
    let id = store.study_id(study).unwrap().unwrap();
    store.trials(id).unwrap()
}

pub fn count(trials: &[TrialRecord], state: TrialState) -> usize {
    trials.iter().filter(|t| t.state == state).count()
}

pub fn param(t: &TrialRecord, name: &str) -> f64 {
    t.params[name].internal
}

/// Starts a driver and returns it once a stdout line satisfies `until`.
pub fn start_until(spec: &Path, until: impl Fn(&str) -> bool) -> (Child, Vec<String>) {
    spawn_until(rnnsweep().arg("run").arg(spec), until)
}

/// Starts any command and returns it once a stdout line satisfies `until`.
pub fn spawn_until(command: &mut Command, until: impl Fn(&str) -> bool) -> (Child, Vec<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Lines arrive through a channel so the deadline holds even when the driver goes silent
    // (a read would block forever); the reader keeps draining so the driver never writes into
    // a closed pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = until(&line);
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!(
                    "the driver printed nothing awaited within 60 s; its output so far:\n{}",
                    lines.join("\n")
                );
            }
        }
    }
    std::thread::spawn(move || rx.into_iter().for_each(drop));
    (child, lines)
}

/// A small real sweep (built-in BiLSTM worker) on the first 600 rows of the sample: 3 trials,
/// 2 epochs each, study `real` in `out/real.db`.
pub fn real_spec(dir: &Path) -> PathBuf {
    let sample =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments/data/sample.csv");
    let text = String::from_utf8_lossy(&std::fs::read(sample).unwrap()).into_owned();
    let head: Vec<&str> = text.lines().take(601).collect();
    std::fs::write(dir.join("sample.csv"), head.join("\n") + "\n").unwrap();
    let spec = dir.join("real.yaml");
    std::fs::write(
        &spec,
        "name: real\nstorage: out/real.db\ndata: {train: sample.csv}\nmethod: random\nseed: 1\nmetric: {name: val_loss}\nrun_cap: 3\n\
         training: {epochs: 2, batch_size: 64, batch_norm_momentum: 0.9, embedding_dim: 8, lstm_units: [8], dense: [{units: 8}]}\n\
         parameters:\n  optimizer: {values: [adam, rmsprop, adagrad]}\n  learning_rate: {distribution: log_uniform_values, min: 0.001, max: 0.01}\n",
    )
    .unwrap();
    spec
}

/// A study of small models on the sample's first 600 rows (written as [`real_spec`] writes
/// them), each with its threshold chosen (max F1) on a calibration slice; `top` adds top-level YAML
/// lines (`final:`, `resources:`). Runs it and returns the study file.
pub fn small_study(dir: &Path, name: &str, top: &str) -> PathBuf {
    real_spec(dir);
    let spec = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &spec,
        format!(
            "name: {name}\nstorage: out/{name}.db\ndata: {{train: sample.csv}}\nmethod: random\nseed: 1\n\
             metric: {{name: val_loss}}\nrun_cap: 3\n{top}\
             training: {{epochs: 2, batch_size: 64, embedding_dim: 8, lstm_units: [8], dense: [{{units: 8}}], \
             threshold: {{mode: max_f1}}}}\n\
             parameters:\n  learning_rate: {{distribution: log_uniform_values, min: 0.001, max: 0.01}}\n"
        ),
    )
    .unwrap();
    run_ok(rnnsweep().arg("run").arg(&spec));
    dir.join(format!("out/{name}.db"))
}

/// `rnnsweep predict --model MODEL --input INPUT --out OUT`; what it wrote.
pub fn predict_text(model: &Path, input: &Path, out: &Path) -> String {
    run_ok(
        rnnsweep()
            .arg("predict")
            .arg("--model")
            .arg(model)
            .arg("--input")
            .arg(input)
            .arg("--out")
            .arg(out),
    );
    std::fs::read_to_string(out).unwrap()
}

/// `rnnsweep best DB --retrain --epochs 3 EXTRA… --out DIR/OUT`.
pub fn retrain_command(db: &Path, dir: &Path, extra: &[&str], out: &str) -> Command {
    let mut c = rnnsweep();
    c.arg("best")
        .arg(db)
        .args(["--retrain", "--epochs", "3"])
        .args(extra)
        .arg("--out")
        .arg(dir.join(out));
    c
}
