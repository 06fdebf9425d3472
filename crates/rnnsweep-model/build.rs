//! With the `cuda` feature, compiles the crate's own CUDA kernels (`src/nn/cuda/kernels.cu`) to
//! PTX with the toolkit's `nvcc`, as candle compiles its own: the PTX is embedded in the binary
//! and loaded by the driver at run time. The virtual architecture comes from
//! `CUDA_COMPUTE_CAP` (as candle reads it; 90 when unset), and PTX made by a toolkit is loaded
//! only by drivers of that CUDA version or newer, which is why scripts/cuda-env.sh pins it.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/nn/cuda/kernels.cu";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=NVCC");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("kernels.ptx");
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=compute_{cap}"))
        .arg(SOURCE)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{nvcc} failed on {SOURCE} ({s}); see its output above"),
        Err(e) => panic!(
            "the `cuda` feature needs nvcc to compile {SOURCE}: {e} (source scripts/cuda-env.sh)"
        ),
    }
}
