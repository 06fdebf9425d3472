//! Starting and watching trial processes: spawn one in its own process group, read its JSON
//! lines on a thread, keep its stderr, stop it (gracefully, then for good).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::run::protocol::{TrialTask, TRIAL_ENV};
use crate::run::wandb;
use crate::spec::TrialKind;

/// A child's output on two threads: each stdout line to `lines` tagged with `id`, then
/// [`Line::Closed`]; its stderr read to the end (so a full pipe never blocks it) and, when there
/// is any and `log` is given, written there too.
pub(crate) fn forward_output(
    child: &mut Child,
    id: u64,
    lines: mpsc::Sender<(u64, Line)>,
    log: Option<std::path::PathBuf>,
) -> std::io::Result<(JoinHandle<()>, JoinHandle<String>)> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| std::io::Error::other("no stderr pipe"))?;
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send((id, Line::Text(line))).is_err() {
                return;
            }
        }
        let _ = lines.send((id, Line::Closed));
    });
    let stderr = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        // Most workers print nothing there; an empty file per trial would only cost inodes.
        if let Some(path) = log.filter(|_| !buf.is_empty()) {
            let _ = std::fs::File::create(&path).and_then(|mut f| f.write_all(&buf));
        }
        String::from_utf8_lossy(&buf).into_owned()
    });
    Ok((reader, stderr))
}

/// A line from a worker, or the end of its output.
pub enum Line {
    Text(String),
    Closed,
}

/// How a finished trial process ended.
pub struct Reaped {
    /// `exited with status 3`, `was killed (signal: 9 (SIGKILL))`.
    pub how: String,
    pub signal: Option<i32>,
    pub stderr: String,
}

/// A running trial process with its output threads.
pub struct TrialProcess {
    pub child: Child,
    reader: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

impl TrialProcess {
    /// Starts the trial's process; its stdout lines go to `lines` tagged with `id`, its
    /// stderr to `stderr.log` in the trial folder.
    pub fn spawn(
        trial: &TrialKind,
        exe: &Path,
        task: &TrialTask,
        task_path: &Path,
        env: &[(String, String)],
        id: u64,
        lines: mpsc::Sender<(u64, Line)>,
    ) -> std::io::Result<Self> {
        let mut python_path = None;
        let mut cmd = match trial {
            TrialKind::Program(program) => {
                let argv = wandb::command_line(program, &task.params, &task.trial_dir)?;
                if program.shim {
                    python_path = Some(wandb::install_shim(&task.trial_dir)?);
                }
                let (first, rest) = argv
                    .split_first()
                    .ok_or_else(|| std::io::Error::other("the command is empty"))?;
                let mut c = Command::new(first);
                c.args(rest);
                c
            }
            TrialKind::Command(argv) if !argv.is_empty() => {
                let params = serde_json::to_string(&task.params).unwrap_or_default();
                let fill = |a: &String| {
                    a.replace("{params_json}", &params)
                        .replace("{trial_file}", &task_path.display().to_string())
                        .replace("{number}", &task.number.to_string())
                        .replace("{device}", &task.device)
                };
                let mut c = Command::new(fill(&argv[0]));
                c.args(argv[1..].iter().map(fill));
                c
            }
            _ => {
                let mut c = Command::new(exe);
                c.arg("worker");
                c
            }
        };
        if let Some(dir) = python_path {
            // The stand-in `wandb` first; the script's own modules still resolve after it.
            let mut paths = vec![dir];
            paths.extend(
                std::env::var_os("PYTHONPATH")
                    .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .unwrap_or_default(),
            );
            cmd.env(
                "PYTHONPATH",
                std::env::join_paths(paths).map_err(std::io::Error::other)?,
            );
        }
        cmd.env(TRIAL_ENV, task_path)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    // Own process group: Ctrl-C reaches the driver, which decides about the
                    // worker.
                    libc::setpgid(0, 0);
                    // A worker must not outlive a driver killed with SIGKILL.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn()?;
        let (reader, stderr) = forward_output(
            &mut child,
            id,
            lines,
            Some(task.trial_dir.join("stderr.log")),
        )?;
        Ok(Self {
            child,
            reader: Some(reader),
            stderr: Some(stderr),
        })
    }

    /// Sends `signal` to the worker's whole process group.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: a plain signal send to the worker's own process group.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), signal);
        }
    }

    /// Waits for a worker whose output has ended: how it exited, the signal that ended it (if
    /// one did) and its stderr.
    pub fn reap(mut self) -> Reaped {
        use std::os::unix::process::ExitStatusExt;
        let (how, signal) = match self.child.wait() {
            Ok(s) => match s.code() {
                Some(c) => (format!("exited with status {c}"), None),
                None => (format!("was killed ({s})"), s.signal()),
            },
            Err(e) => (format!("could not be waited for: {e}"), None),
        };
        let (how, stderr) = self.join_threads(how);
        Reaped {
            how,
            signal,
            stderr,
        }
    }

    /// Waits until `deadline`, then kills the process group; returns its stderr.
    pub fn stop(mut self, deadline: Instant) -> String {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.join_threads(String::new()).1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_threads(String::new()).1
    }

    fn join_threads(&mut self, how: String) -> (String, String) {
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (how, stderr)
    }
}
