//! Starting and watching trial processes: spawn a worker in its own process group, read its
//! JSON lines on a thread, keep its stderr, stop it (gracefully, then for good). Also the
//! interrupt flags the dispatcher polls; signals only set them.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::spec::Spec;
use crate::worker::{TrialTask, TRIAL_ENV};

/// What the user asked the sweep to do: 0 nothing, 1 drain (first Ctrl-C: no new trials),
/// 2+ stop now (second Ctrl-C, SIGTERM). Shared, so a test (or a signal handler) can set it.
#[derive(Debug, Clone, Default)]
pub struct Interrupts {
    level: Arc<AtomicUsize>,
    terminated: Arc<AtomicBool>,
}

impl Interrupts {
    pub fn level(&self) -> usize {
        self.level.load(Ordering::SeqCst)
    }

    /// Ctrl-C: the first drains, the second stops.
    pub fn interrupt(&self) {
        self.level.fetch_add(1, Ordering::SeqCst);
    }

    /// SIGTERM: stop now.
    pub fn terminate(&self) {
        self.terminated.store(true, Ordering::SeqCst);
        self.level.fetch_add(2, Ordering::SeqCst);
    }

    /// The signal that stopped the sweep, for the shell's exit code (128 + n): SIGTERM if one
    /// came, else SIGINT.
    pub fn signal(&self) -> i32 {
        if self.terminated.load(Ordering::SeqCst) {
            libc::SIGTERM
        } else {
            libc::SIGINT
        }
    }
}

/// The flags the process's signal handlers set (a handler cannot capture anything).
static SIGNALLED: OnceLock<Interrupts> = OnceLock::new();

extern "C" fn on_sigint(_: libc::c_int) {
    if let Some(i) = SIGNALLED.get() {
        i.interrupt();
    }
}

extern "C" fn on_sigterm(_: libc::c_int) {
    if let Some(i) = SIGNALLED.get() {
        i.terminate();
    }
}

/// Routes SIGINT and SIGTERM of this process to `interrupts` (the first call wins).
pub fn install_signal_handlers(interrupts: &Interrupts) -> Interrupts {
    let target = SIGNALLED.get_or_init(|| interrupts.clone()).clone();
    // SAFETY: the handlers only touch atomics, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t);
    }
    target
}

/// A line from a worker, or the end of its output.
pub enum Line {
    Text(String),
    Closed,
}

/// A running worker process with its output threads.
pub struct Worker {
    pub child: Child,
    reader: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

impl Worker {
    /// Starts the trial's process; its stdout lines go to `lines` tagged with `id`, its
    /// stderr to `stderr.log` in the trial folder.
    pub fn spawn(
        spec: &Spec,
        exe: &Path,
        task: &TrialTask,
        task_path: &Path,
        env: &[(String, String)],
        id: u64,
        lines: mpsc::Sender<(u64, Line)>,
    ) -> std::io::Result<Self> {
        let mut cmd = match &spec.trial {
            crate::spec::TrialKind::Command(argv) if !argv.is_empty() => {
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
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send((id, Line::Text(line))).is_err() {
                    return;
                }
            }
            let _ = lines.send((id, Line::Closed));
        });
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr pipe"))?;
        let log_path = task.trial_dir.join("stderr.log");
        let stderr = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            // Most workers print nothing there; an empty file per trial would only cost inodes.
            if !buf.is_empty() {
                let _ = std::fs::File::create(&log_path).and_then(|mut f| f.write_all(&buf));
            }
            String::from_utf8_lossy(&buf).into_owned()
        });
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

    /// Waits for a worker whose output has ended; returns how it exited and its stderr.
    pub fn reap(mut self) -> (String, String) {
        let how = match self.child.wait() {
            Ok(s) => match s.code() {
                Some(c) => format!("exited with status {c}"),
                None => format!("was killed ({s})"),
            },
            Err(e) => format!("could not be waited for: {e}"),
        };
        self.join_threads(how)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupts_escalate_and_remember_sigterm() {
        let i = Interrupts::default();
        assert_eq!((i.level(), i.signal()), (0, libc::SIGINT));
        i.interrupt();
        assert_eq!(i.level(), 1);
        let seen_elsewhere = i.clone();
        i.terminate();
        assert_eq!(
            (seen_elsewhere.level(), seen_elsewhere.signal()),
            (3, libc::SIGTERM)
        );
    }
}
