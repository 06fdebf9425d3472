//! The device pool: slots on CPUs and GPUs, leased to one trial at a time, and the
//! environment a trial process gets for its lease (thread share, `CUDA_VISIBLE_DEVICES`).

use rnnsweep_model::device::DeviceName;
use serde::{Deserialize, Serialize};

/// Set to `1` (tests only) to run `cuda:N` slots on the CPU while leases and
/// `CUDA_VISIBLE_DEVICES` behave as on real GPUs, in builds without the `cuda` feature.
pub const FAKE_CUDA_ENV: &str = "RNNSWEEP_FAKE_CUDA";

pub fn fake_cuda() -> bool {
    std::env::var(FAKE_CUDA_ENV).is_ok_and(|v| v == "1")
}

/// The spec's `resources` section (key names as in NNI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// `[cpu]`, `[cuda:0, cuda:1]`, …
    pub devices: Vec<String>,
    /// GPU ordinals, another way to list `cuda:N` devices.
    pub gpu_indices: Vec<usize>,
    pub trials_per_device: usize,
    /// CPU threads per trial; default: cores divided by the concurrent trials (a GPU trial's
    /// process works on the host too: batching, its worker, candle's host-side ops).
    pub threads_per_trial: Option<usize>,
    /// A cap on trials running at once over all devices.
    pub trial_concurrency: Option<usize>,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            devices: Vec::new(),
            gpu_indices: Vec::new(),
            trials_per_device: 1,
            threads_per_trial: None,
            trial_concurrency: None,
        }
    }
}

impl Resources {
    /// The listed devices (`cpu` when none is listed), each once, in order.
    pub fn device_names(&self) -> Result<Vec<DeviceName>, String> {
        let mut out: Vec<DeviceName> = Vec::new();
        for d in &self.devices {
            out.push(d.parse()?);
        }
        out.extend(self.gpu_indices.iter().map(|&i| DeviceName::Cuda(i)));
        if out.is_empty() {
            out.push(DeviceName::Cpu);
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|d| seen.insert(*d));
        Ok(out)
    }

    /// Checks what can be checked before anything runs; returns warnings.
    pub fn validate(&self) -> Result<Vec<String>, String> {
        let devices = self.device_names()?;
        if self.trials_per_device == 0 {
            return Err("trials_per_device must be at least 1".into());
        }
        if self.trial_concurrency == Some(0) {
            return Err("trial_concurrency must be at least 1".into());
        }
        if self.threads_per_trial == Some(0) {
            return Err("threads_per_trial must be at least 1".into());
        }
        if devices.iter().any(|d| matches!(d, DeviceName::Cuda(_)))
            && !cfg!(feature = "cuda")
            && !fake_cuda()
        {
            return Err("CUDA devices need a build with the `cuda` feature (cargo build --release --features cuda)".into());
        }
        #[cfg(feature = "cuda")]
        if !fake_cuda() {
            check_cuda_devices(&devices)?;
        }
        let mut warnings = Vec::new();
        let cores = cores();
        let pool = DevicePool::new(self).map_err(|e| e.to_string())?;
        let trials = pool.capacity();
        let threads = pool.cpu_threads;
        if trials * threads > cores {
            warnings.push(format!(
                "{trials} concurrent trial(s) × {threads} thread(s) is more than the {cores} core(s) here: trials will slow each other down"
            ));
        }
        Ok(warnings)
    }
}

/// Every `cuda:N` named must be a device this machine's driver reports.
#[cfg(feature = "cuda")]
fn check_cuda_devices(devices: &[DeviceName]) -> Result<(), String> {
    let ordinals: Vec<usize> = devices
        .iter()
        .filter_map(|d| match d {
            DeviceName::Cuda(n) => Some(*n),
            DeviceName::Cpu => None,
        })
        .collect();
    let Some(&highest) = ordinals.iter().max() else {
        return Ok(());
    };
    let count = rnnsweep_model::cuda_device_count()
        .map_err(|e| format!("cuda:{highest}: the CUDA driver says: {e}"))?;
    if highest >= count {
        return Err(format!(
            "cuda:{highest} is not on this machine: its driver reports {count} CUDA device(s) (cuda:0 … cuda:{})",
            count.saturating_sub(1)
        ));
    }
    Ok(())
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The GPU ids a `CUDA_VISIBLE_DEVICES` value lists, in order (`2,3`, `GPU-5e3…,1`).
fn visible_gpu_ids(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(String::from)
        .collect()
}

/// A leased slot: which device, and which slot of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub slot: usize,
    pub device: DeviceName,
}

#[derive(Debug, Clone)]
pub struct DevicePool {
    slots: Vec<DeviceName>,
    busy: Vec<bool>,
    /// Slots taken out of use (a trial there was killed from outside, likely for memory).
    retired: Vec<bool>,
    cap: usize,
    /// The driver's own `CUDA_VISIBLE_DEVICES`: `cuda:N` is the N-th GPU it lists, so a trial
    /// must be given that GPU's id, not N.
    visible_gpus: Option<Vec<String>>,
    /// Thread share of each CPU trial (GPU trials get the same, for their host work).
    pub cpu_threads: usize,
}

impl DevicePool {
    pub fn new(res: &Resources) -> Result<Self, String> {
        let devices = res.device_names()?;
        let slots: Vec<DeviceName> = devices
            .iter()
            .flat_map(|d| std::iter::repeat_n(*d, res.trials_per_device.max(1)))
            .collect();
        let cap = res
            .trial_concurrency
            .unwrap_or(slots.len())
            .min(slots.len())
            .max(1);
        // Every concurrent trial, on the CPU or a GPU, shares the host's cores: four trials on
        // one GPU that each took every core would spend their host work fighting for them.
        let cpu_threads = res
            .threads_per_trial
            .unwrap_or_else(|| (cores() / cap).max(1));
        Ok(Self {
            busy: vec![false; slots.len()],
            retired: vec![false; slots.len()],
            visible_gpus: std::env::var("CUDA_VISIBLE_DEVICES")
                .ok()
                .map(|v| visible_gpu_ids(&v)),
            slots,
            cap,
            cpu_threads,
        })
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn in_use(&self) -> usize {
        self.busy.iter().filter(|b| **b).count()
    }

    fn active(&self) -> usize {
        self.retired.iter().filter(|r| !**r).count()
    }

    pub fn has_free(&self) -> bool {
        self.in_use() < self.cap.min(self.active())
            && (0..self.slots.len()).any(|i| !self.busy[i] && !self.retired[i])
    }

    /// Runs one fewer trial at once on `device` from now on (a trial there was killed from
    /// outside, most likely by the out-of-memory killer), as long as the pool keeps a slot.
    /// Returns how many trials may now run at once on that device, or `None` when no slot
    /// could be given up.
    pub fn retire_slot(&mut self, device: DeviceName) -> Option<usize> {
        if self.active() <= 1 {
            return None;
        }
        let on_device = |pool: &Self, i: usize| pool.slots[i] == device && !pool.retired[i];
        // A free slot if there is one, so no running trial loses its lease.
        let slot = (0..self.slots.len())
            .filter(|&i| on_device(self, i))
            .max_by_key(|&i| (!self.busy[i], i))?;
        self.retired[slot] = true;
        Some(
            (0..self.slots.len())
                .filter(|&i| on_device(self, i))
                .count(),
        )
    }

    /// Leases a free slot, preferring one not on `avoid` (a device a trial just ran out of
    /// memory on) and the least-loaded device.
    pub fn lease(&mut self, avoid: Option<DeviceName>) -> Option<Lease> {
        if !self.has_free() {
            return None;
        }
        let load = |d: DeviceName, busy: &[bool], slots: &[DeviceName]| {
            slots
                .iter()
                .zip(busy)
                .filter(|(s, b)| **s == d && **b)
                .count()
        };
        let slot = (0..self.slots.len())
            .filter(|&i| !self.busy[i] && !self.retired[i])
            .min_by_key(|&i| {
                (
                    Some(self.slots[i]) == avoid,
                    load(self.slots[i], &self.busy, &self.slots),
                    i,
                )
            })?;
        self.busy[slot] = true;
        Some(Lease {
            slot,
            device: self.slots[slot],
        })
    }

    pub fn release(&mut self, lease: &Lease) {
        if let Some(b) = self.busy.get_mut(lease.slot) {
            *b = false;
        }
    }

    /// The environment for a trial on this lease, and the device name the worker should use.
    pub fn worker_env(&self, lease: &Lease) -> (Vec<(String, String)>, String) {
        let threads = self.cpu_threads.to_string();
        let mut env = vec![
            ("RAYON_NUM_THREADS".to_string(), threads.clone()),
            ("CANDLE_NUM_THREADS".to_string(), threads),
        ];
        let device = match lease.device {
            DeviceName::Cpu => "cpu".to_string(),
            DeviceName::Cuda(ordinal) => {
                let id = self
                    .visible_gpus
                    .as_ref()
                    .and_then(|ids| ids.get(ordinal).cloned())
                    .unwrap_or_else(|| ordinal.to_string());
                env.push(("CUDA_VISIBLE_DEVICES".to_string(), id));
                // The trial sees only its own GPU, as cuda:0.
                if fake_cuda() {
                    "cpu".to_string()
                } else {
                    "cuda:0".to_string()
                }
            }
        };
        (env, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(devices: &[&str], per: usize, concurrency: Option<usize>) -> Resources {
        Resources {
            devices: devices.iter().map(|s| s.to_string()).collect(),
            trials_per_device: per,
            trial_concurrency: concurrency,
            ..Resources::default()
        }
    }

    #[test]
    fn under_a_drivers_cuda_visible_devices_a_trial_gets_the_gpu_it_names() {
        let mut pool = DevicePool::new(&res(&["cuda:0", "cuda:1"], 1, None)).unwrap();
        pool.visible_gpus = Some(visible_gpu_ids("2, 3"));
        let gpu = |pool: &mut DevicePool| {
            let lease = pool.lease(None).unwrap();
            let (env, _) = pool.worker_env(&lease);
            let id = env
                .iter()
                .find(|(k, _)| k == "CUDA_VISIBLE_DEVICES")
                .map(|(_, v)| v.clone());
            (lease.device, id)
        };
        assert_eq!(gpu(&mut pool), (DeviceName::Cuda(0), Some("2".into())));
        assert_eq!(gpu(&mut pool), (DeviceName::Cuda(1), Some("3".into())));
        pool.visible_gpus = None;
        pool.busy = vec![false; 2];
        assert_eq!(gpu(&mut pool), (DeviceName::Cuda(0), Some("0".into())));
    }

    #[test]
    fn a_retired_slot_is_never_leased_again_and_the_last_slot_is_kept() {
        let mut pool = DevicePool::new(&res(&["cpu"], 2, None)).unwrap();
        let a = pool.lease(None).unwrap();
        assert_eq!(pool.retire_slot(DeviceName::Cpu), Some(1));
        // The free slot went, not the one in use.
        assert!(!pool.has_free());
        pool.release(&a);
        assert!(pool.has_free());
        let b = pool.lease(None).unwrap();
        assert_eq!(b.slot, a.slot);
        assert!(!pool.has_free());
        assert_eq!(pool.retire_slot(DeviceName::Cpu), None);
        pool.release(&b);
        assert!(pool.has_free());
    }

    #[test]
    fn slots_are_leased_once_and_spread_over_devices() {
        let mut pool = DevicePool::new(&res(&["cuda:0", "cuda:1"], 2, None)).unwrap();
        assert_eq!(pool.capacity(), 4);
        let a = pool.lease(None).unwrap();
        let b = pool.lease(None).unwrap();
        assert_ne!(a.device, b.device, "the least-loaded device first");
        let c = pool.lease(None).unwrap();
        let d = pool.lease(None).unwrap();
        assert!(pool.lease(None).is_none());
        let slots: std::collections::HashSet<usize> = [a.slot, b.slot, c.slot, d.slot].into();
        assert_eq!(slots.len(), 4);
        pool.release(&c);
        assert_eq!(pool.lease(None).unwrap().slot, c.slot);
    }

    #[test]
    fn a_device_to_avoid_is_avoided_while_another_is_free() {
        let mut pool = DevicePool::new(&res(&["cuda:0", "cuda:1"], 1, None)).unwrap();
        assert_eq!(
            pool.lease(Some(DeviceName::Cuda(0))).unwrap().device,
            DeviceName::Cuda(1)
        );
        assert_eq!(
            pool.lease(Some(DeviceName::Cuda(0))).unwrap().device,
            DeviceName::Cuda(0)
        );
    }

    #[test]
    fn concurrency_caps_the_pool_and_threads_share_the_cores() {
        let mut pool = DevicePool::new(&res(&["cpu"], 4, Some(2))).unwrap();
        assert_eq!(pool.capacity(), 2);
        assert_eq!(pool.cpu_threads, (cores() / 2).max(1));
        pool.lease(None).unwrap();
        pool.lease(None).unwrap();
        assert!(pool.lease(None).is_none());
        let (env, device) = pool.worker_env(&Lease {
            slot: 0,
            device: DeviceName::Cuda(3),
        });
        assert!(env.contains(&("CUDA_VISIBLE_DEVICES".to_string(), "3".to_string())));
        assert_eq!(device, if fake_cuda() { "cpu" } else { "cuda:0" });
    }

    #[test]
    fn trials_sharing_a_gpu_share_the_cores_too() {
        let pool = DevicePool::new(&res(&["cuda:0"], 4, None)).unwrap();
        assert_eq!(pool.capacity(), 4);
        assert_eq!(pool.cpu_threads, (cores() / 4).max(1));
        let (env, _) = pool.worker_env(&Lease {
            slot: 2,
            device: DeviceName::Cuda(0),
        });
        let threads = (cores() / 4).max(1).to_string();
        assert!(env.contains(&("RAYON_NUM_THREADS".to_string(), threads)));
        let mixed = DevicePool::new(&res(&["cpu", "cuda:0"], 2, None)).unwrap();
        assert_eq!(mixed.cpu_threads, (cores() / 4).max(1));
    }

    #[test]
    fn device_names_parse() {
        assert_eq!("cuda:2".parse::<DeviceName>(), Ok(DeviceName::Cuda(2)));
        assert_eq!("cpu".parse::<DeviceName>(), Ok(DeviceName::Cpu));
        assert!("tpu:0".parse::<DeviceName>().is_err());
        let r = Resources {
            gpu_indices: vec![1, 0],
            devices: vec!["cuda:1".into()],
            ..Resources::default()
        };
        assert_eq!(
            r.device_names().unwrap(),
            vec![DeviceName::Cuda(1), DeviceName::Cuda(0)]
        );
        assert!(res(&["cpu"], 0, None)
            .validate()
            .unwrap_err()
            .contains("trials_per_device"));
    }
}
