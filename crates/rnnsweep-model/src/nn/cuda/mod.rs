//! The device side of the crate's own CUDA work (feature `cuda`): the PTX of `kernels.cu`
//! (compiled by build.rs), launching its kernels on candle's stream, row-major cuBLAS
//! multiplies, and moving buffers in and out of candle's storage.
//!
//! Everything runs on the one stream candle gives each device, so ordering with candle's own
//! kernels needs no synchronisation, and nothing here reads back from the device.

use candle_core::cuda_backend::cudarc::cublas::sys::cublasOperation_t;
use candle_core::cuda_backend::cudarc::cublas::{Gemm, GemmConfig};
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, DeviceRepr, LaunchArgs,
    LaunchConfig, ValidAsZeroBits,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaDevice, CudaStorage, Layout};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));
const MODULE: &str = "rnnsweep_kernels";

/// A kernel of `kernels.cu` on the device's stream.
pub(crate) struct Kernel {
    stream: Arc<CudaStream>,
    function: CudaFunction,
}

impl Kernel {
    /// A launch of this kernel; its arguments are pushed in `kernels.cu`'s order.
    pub(crate) fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.function)
    }
}

/// A kernel of `kernels.cu` (the module is loaded once per device).
pub(crate) fn kernel(device: &CudaDevice, name: &str) -> candle_core::Result<Kernel> {
    let function = device
        .get_or_load_custom_func(name, MODULE, PTX)?
        .into_cuda_function();
    Ok(Kernel {
        stream: device.cuda_stream(),
        function,
    })
}

/// Enough blocks for `elements` threads (the kernels loop over what a launch does not cover).
pub(crate) fn launch_config(elements: usize) -> LaunchConfig {
    const THREADS: u32 = 256;
    const MAX_BLOCKS: usize = 65_535;
    let blocks = elements.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches a kernel whose arguments `args` has pushed.
pub(crate) fn launch(mut args: LaunchArgs<'_>, elements: usize) -> candle_core::Result<()> {
    if elements == 0 {
        return Ok(());
    }
    // SAFETY: every caller passes the kernel's arguments in the order and types kernels.cu
    // declares, with buffers sized for the indices the kernel computes from them.
    unsafe { args.launch(launch_config(elements)) }.w()?;
    Ok(())
}

/// A size or index as the kernels take it (`int`).
pub(crate) fn int(n: usize) -> candle_core::Result<i32> {
    i32::try_from(n).map_err(|_| candle_core::Error::Msg(format!("{n} exceeds a CUDA int")))
}

/// The f32 data of a contiguous storage, as a view.
pub(crate) fn view<'a>(
    what: &str,
    storage: &'a CudaStorage,
    layout: &Layout,
) -> candle_core::Result<CudaView<'a, f32>> {
    let slice = storage.as_cuda_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => candle_core::bail!("GPU recurrent layer: {what} must be contiguous"),
    }
}

/// A row-major matrix operand: its data, leading dimension, and whether it is used transposed.
pub(crate) struct Operand<'a, P> {
    pub data: &'a P,
    pub leading: usize,
    pub transposed: bool,
}

/// `c[m×n] = a·b + beta·c` on row-major matrices (`a` is `m×k` after its transposition, `b`
/// `k×n`). cuBLAS is column-major, so it computes `cᵀ = bᵀ·aᵀ`: the operands swap places.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<A: DevicePtr<f32>, B: DevicePtr<f32>, C: DevicePtrMut<f32>>(
    device: &CudaDevice,
    (m, n, k): (usize, usize, usize),
    a: Operand<'_, A>,
    b: Operand<'_, B>,
    beta: f32,
    c: &mut C,
    ldc: usize,
) -> candle_core::Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let op = |transposed: bool| {
        if transposed {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let config = GemmConfig {
        transa: op(b.transposed),
        transb: op(a.transposed),
        m: int(n)?,
        n: int(m)?,
        k: int(k)?,
        alpha: 1.0f32,
        lda: int(b.leading)?,
        ldb: int(a.leading)?,
        beta,
        ldc: int(ldc)?,
    };
    let blas = device.cublas_handle();
    // SAFETY: the callers size `a`, `b` and `c` for these dimensions and leading dimensions.
    unsafe { blas.gemm(config, b.data, a.data, c) }.w()?;
    Ok(())
}

/// A zero-filled device buffer.
pub(crate) fn zeros(device: &CudaDevice, len: usize) -> candle_core::Result<CudaSlice<f32>> {
    device.alloc_zeros::<f32>(len.max(1))
}

/// A host slice copied to the device (one transfer, not one per step).
pub(crate) fn upload<T>(device: &CudaDevice, host: &[T]) -> candle_core::Result<CudaSlice<T>>
where
    T: DeviceRepr + ValidAsZeroBits + 'static,
{
    if host.is_empty() {
        return device.alloc_zeros::<T>(1);
    }
    device.clone_htod(host)
}

/// Wraps a device buffer as candle storage.
pub(crate) fn storage(device: &CudaDevice, data: CudaSlice<f32>) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(data, device.clone())
}
