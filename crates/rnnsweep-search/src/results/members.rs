//! A final model's members trained at once on the spec's device slots, as trials are: one
//! process per member, each with its slot's device and thread share (the same environment a
//! trial's worker gets), its lines passed on with the member's name in front. A member's
//! process writes what it trained beside its checkpoint ([`Retrained::save_member`]); the
//! caller reads it back once every process has exited. A failed member stops the others and
//! names itself; the members' checkpoints stay, so running the command again resumes them.
//!
//! [`Retrained::save_member`]: crate::results::retrain::Retrained::save_member

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::devices::{DevicePool, Lease};
use crate::results::error::StudyError;
use crate::run::process::{forward_output, Line};

/// One member's process: its name in output (`member 2 of 3`) and its arguments, to which
/// `--device D` is added for the slot it gets.
pub struct MemberProcess {
    pub label: String,
    pub args: Vec<OsString>,
}

struct Running {
    index: usize,
    child: Child,
    lease: Lease,
    stderr: Option<JoinHandle<String>>,
}

/// Runs every member's process on the pool's slots, at most its capacity at once, in order;
/// `print` gets each output line with the member's label in front. Returns when all have
/// exited successfully, or at the first failure (after stopping the rest).
pub fn train_on_slots(
    exe: &Path,
    members: &[MemberProcess],
    pool: &mut DevicePool,
    print: &mut dyn FnMut(&str),
) -> Result<(), StudyError> {
    let (tx, rx) = mpsc::channel::<(u64, Line)>();
    let mut running: Vec<Running> = Vec::new();
    let mut next = 0;
    let mut finished = 0;
    while finished < members.len() {
        while next < members.len() {
            let Some(lease) = pool.lease(None) else {
                break;
            };
            match spawn(exe, &members[next], pool, &lease, next, tx.clone()) {
                Ok((child, stderr)) => running.push(Running {
                    index: next,
                    child,
                    lease,
                    stderr: Some(stderr),
                }),
                Err(e) => {
                    stop_all(&mut running);
                    return Err(StudyError::Invalid {
                        at: members[next].label.clone(),
                        message: format!("cannot start its process ({}): {e}", exe.display()),
                    });
                }
            }
            next += 1;
        }
        let Ok((id, line)) = rx.recv() else {
            break;
        };
        let index = id as usize;
        match line {
            Line::Text(text) => print(&format!("{}: {text}", members[index].label)),
            Line::Closed => {
                let Some(at) = running.iter().position(|r| r.index == index) else {
                    continue;
                };
                let mut done = running.swap_remove(at);
                pool.release(&done.lease);
                let status = done.child.wait();
                let stderr = done
                    .stderr
                    .take()
                    .and_then(|h| h.join().ok())
                    .unwrap_or_default();
                match status {
                    Ok(s) if s.success() => finished += 1,
                    other => {
                        stop_all(&mut running);
                        let how = match other {
                            Ok(s) => s.to_string(),
                            Err(e) => e.to_string(),
                        };
                        return Err(StudyError::Invalid {
                            at: members[index].label.clone(),
                            message: format!("its process {how}: {}", last_lines(&stderr, 5)),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

fn spawn(
    exe: &Path,
    member: &MemberProcess,
    pool: &DevicePool,
    lease: &Lease,
    index: usize,
    lines: mpsc::Sender<(u64, Line)>,
) -> std::io::Result<(Child, JoinHandle<String>)> {
    let (env, device) = pool.worker_env(lease);
    let mut cmd = Command::new(exe);
    cmd.args(&member.args)
        .arg("--device")
        .arg(device)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: only an async-signal-safe call between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // A member must not outlive a parent killed with SIGKILL: run again, the
                // parent resumes the member from its checkpoint, which only one process may
                // write.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn()?;
    // The stdout thread ends with the child; only stderr's text is waited for.
    let (_, stderr) = forward_output(&mut child, index as u64, lines, None)?;
    Ok((child, stderr))
}

fn stop_all(running: &mut Vec<Running>) {
    for r in running.iter_mut() {
        let _ = r.child.kill();
    }
    for mut r in running.drain(..) {
        let _ = r.child.wait();
    }
}

/// The end of a process's stderr, for the one message a failure gets.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        "(it printed nothing on stderr)".into()
    } else {
        tail.join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::Resources;

    fn pool(slots: usize) -> DevicePool {
        DevicePool::new(&Resources {
            trials_per_device: slots,
            threads_per_trial: Some(1),
            ..Resources::default()
        })
        .unwrap()
    }

    fn shell(label: &str, script: &str) -> MemberProcess {
        MemberProcess {
            label: label.into(),
            args: vec!["-c".into(), script.into(), "member".into()],
        }
    }

    #[test]
    fn members_run_at_once_on_their_slots_with_the_slots_environment() {
        let dir = tempfile::tempdir().unwrap();
        // Each member waits for the other's file: they finish only if both run at once.
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let script = |mine: &Path, theirs: &Path| {
            format!(
                "touch {}; for i in $(seq 100); do [ -e {} ] && break; sleep 0.05; done; \
                 [ -e {} ] || exit 7; echo \"threads $RAYON_NUM_THREADS device $1\"",
                mine.display(),
                theirs.display(),
                theirs.display()
            )
        };
        // `sh -c SCRIPT member --device cpu`: the device lands in $1 after `member` ($0).
        let members = [
            shell("member 1 of 2", &script(&a, &b).replace("$1", "$2")),
            shell("member 2 of 2", &script(&b, &a).replace("$1", "$2")),
        ];
        let mut lines = Vec::new();
        let mut pool = pool(2);
        train_on_slots(Path::new("/bin/sh"), &members, &mut pool, &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
        lines.sort();
        assert_eq!(
            lines,
            [
                "member 1 of 2: threads 1 device cpu",
                "member 2 of 2: threads 1 device cpu"
            ]
        );
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn a_failed_member_stops_the_others_and_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let never = dir.path().join("never");
        let members = [
            shell(
                "member 1 of 3",
                "echo trying; echo 'out of disk' >&2; exit 3",
            ),
            shell(
                "member 2 of 3",
                &format!("sleep 30; touch {}", never.display()),
            ),
            shell("member 3 of 3", &format!("touch {}", never.display())),
        ];
        let started = std::time::Instant::now();
        let mut lines = Vec::new();
        let err = train_on_slots(Path::new("/bin/sh"), &members, &mut pool(2), &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("member 1 of 3")
                && err.contains("exit status: 3")
                && err.contains("out of disk"),
            "{err}"
        );
        assert_eq!(lines, ["member 1 of 3: trying"]);
        assert!(started.elapsed().as_secs() < 20, "member 2 was stopped");
        assert!(!never.exists(), "member 3 never started");
    }
}
