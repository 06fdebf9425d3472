//! Which instruction set the fused CPU layer's kernels run with ([`super::kernel`] and the
//! gate passes of [`super::gates`]): chosen once per op where it is built, from what the CPU
//! has, an environment override for benchmarks, or a test's forced choice.

use std::cell::Cell as StdCell;
use std::sync::OnceLock;

/// The instruction set a fused op runs its kernels with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstructionSet {
    Avx512,
    Avx2,
    /// Plain Rust arrays, for any CPU (the compiler vectorises them for the baseline target).
    Portable,
}

impl InstructionSet {
    pub const ALL: [InstructionSet; 3] = [Self::Avx512, Self::Avx2, Self::Portable];

    /// Whether this CPU can run this version.
    pub fn supported(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => {
                Self::Avx2.supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Portable => "portable",
        }
    }

    /// Floats per vector, which is also the width of a packed panel's unit block.
    pub fn lanes(self) -> usize {
        match self {
            Self::Avx512 => 16,
            Self::Avx2 | Self::Portable => 8,
        }
    }
}

thread_local! {
    static FORCED: StdCell<Option<InstructionSet>> = const { StdCell::new(None) };
}

/// The version a fused op built on this thread uses: one forced by [`with_instruction_set`],
/// else `RNNSWEEP_CPU_KERNEL` (`avx512`, `avx2` or `portable`; for benchmarks and for running a
/// whole test suite on one version) when this CPU supports it, else the best this CPU has.
pub fn instruction_set() -> InstructionSet {
    if let Some(forced) = FORCED.with(StdCell::get) {
        return forced;
    }
    static CHOSEN: OnceLock<InstructionSet> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let best = InstructionSet::ALL
            .into_iter()
            .find(|isa| isa.supported())
            .unwrap_or(InstructionSet::Portable);
        let Ok(wanted) = std::env::var("RNNSWEEP_CPU_KERNEL") else {
            return best;
        };
        match InstructionSet::ALL
            .into_iter()
            .find(|isa| isa.name() == wanted.trim())
        {
            Some(isa) if isa.supported() => isa,
            Some(_) => {
                tracing::warn!(
                    "RNNSWEEP_CPU_KERNEL={wanted}: this CPU lacks it; using {}",
                    best.name()
                );
                best
            }
            None => {
                tracing::warn!(
                    "RNNSWEEP_CPU_KERNEL={wanted} is not one of avx512, avx2, portable; using {}",
                    best.name()
                );
                best
            }
        }
    })
}

/// Runs `f` with every fused op built on this thread using `isa`; `None` (and `f` not run)
/// when this CPU cannot run it.
pub fn with_instruction_set<R>(isa: InstructionSet, f: impl FnOnce() -> R) -> Option<R> {
    if !isa.supported() {
        return None;
    }
    struct Restore(Option<InstructionSet>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|forced| forced.set(self.0));
        }
    }
    let _restore = Restore(FORCED.with(|forced| forced.replace(Some(isa))));
    Some(f())
}
