//! The interrupt flags the dispatcher polls. Signals only set them, so the loop decides what
//! an interrupt means (drain, then stop) at a point where the store is consistent.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

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
