//! The fused CPU bidirectional recurrent layer (LSTM or GRU cells): one candle custom op for
//! a whole layer, both directions.
//!
//! On the CPU the op takes the layer's input `x` and both directions' input kernels, and does
//! the input projection of every step (`x·W`, the input dropout mask applied on the way) itself:
//! one multiply per direction, written straight into the op's row order with the bias added,
//! and differentiated by two multiplies per direction in the backward pass. Left to candle, the
//! projection cost more around the multiply than in it: a zero-filled output, the mask's
//! broadcast product, and in backward a zero tensor plus an add per graph node for each
//! `[T, B, G·U]` gradient, all on one thread while the other core waited. (On a CUDA device the
//! caller still projects, with cuBLAS, and hands the op the projections: [`Projection`].)
//! The recurrence is per step one pass of our own micro-kernel ([`super::kernel`]), which
//! multiplies `h·R` with R packed once per sequence and applies the cell's gate math to each
//! output tile as it leaves the registers. The two directions are independent, so each
//! direction's projection and recurrence run on its own rayon task: on a 2-thread pool each
//! gets a core, which the small per-step multiplies could not use well (two threads inside one
//! were no faster). A bigger pool also splits each step's rows among a direction's threads
//! ([`super::split`]). The kernels' instruction set (AVX-512, AVX2 or portable) is fixed when
//! the op is built.
//!
//! A GRU (`reset_after=True`) keeps `h·R` apart from the projection: its reset gate scales the
//! candidate's recurrent part alone, so the gate math combines the two per tile (and keeps the
//! candidate's recurrent part for backward).
//!
//! Backward through time is written out by hand. The activations the forward pass computed are
//! kept inside the op (candle hands `bwd` only the inputs and the output); `dz·Rᵀ` is the same
//! micro-kernel with Rᵀ packed once, and the recurrent weight gradient is one multiply over all
//! steps at the end, `Σₜ hₜ₋₁ᵀ·dzₜ` (the `gemm` crate), instead of one per step. Every buffer is
//! allocated once per call, none per step; in inference nothing per step is kept.
//!
//! Masking is the reference layer's: on a padded step a row keeps its state, emits zeros and
//! passes its gradients through untouched.
//!
//! Padding costs nothing when every row's real tokens are one run at the same end (post or
//! pre padding, any lengths): the op then orders the rows by length, longest first, so the rows
//! with a real token at step `t` are a prefix of the batch in both directions, and each step's
//! multiply and gate pass touch only that prefix ([`Rows`]). Other masks (tokens with holes)
//! run every row at every step, masked.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Storage, Tensor};
use gemm::Parallelism;

use super::gates::{self, BackwardStep, ForwardStep, GruBackwardStep, GruForwardStep};
use super::isa::{self, InstructionSet};
use super::kernel::{self, Packed, Write};
use super::split::{self, RowCursor};
use crate::config::Cell;

/// The fused op for one call, with `G` gate blocks (4 for an LSTM, 3 for a GRU) and `K` bias
/// rows (1; a GRU's recurrent bias makes 2). Its first two inputs depend on [`Projection`]; the
/// third is `recurrent` (`[2, U + K, G·U]`: per direction the recurrent kernel with the bias
/// rows below it: candle's custom ops take at most three inputs). Output: `[T, B, 2U]` (every
/// step, forward then backward units) or `[B, 2U]` (the final states).
pub(crate) struct FusedBiRnn {
    cell: Cell,
    projection: Projection,
    /// `[T, B]`, 1 for a real token, in the op's row order (see `rows`).
    mask: Vec<u8>,
    rows: Rows,
    time: usize,
    batch: usize,
    units: usize,
    return_sequences: bool,
    /// False in inference: nothing is kept for a backward pass.
    keep_trace: bool,
    /// The version of the CPU kernels this op runs, chosen where it was built.
    isa: InstructionSet,
    trace: Mutex<Option<Traces>>,
}

/// Who multiplies the input by the input kernels, and so what the op's first two inputs are.
pub(crate) enum Projection {
    /// The op (the CPU): `x` (`[T, B, I]`) and `kernels` (`[2, I, G·U]`, forward then
    /// backward), with each direction's input keep mask (`[B, I]`, Keras's input dropout: one
    /// mask for every step) held by the op, as it needs no gradient.
    Inside {
        input: usize,
        keep: Option<[Vec<f32>; 2]>,
    },
    /// The caller (a CUDA device): `z_forward`, `z_backward` (`[T, B, G·U]`, the input
    /// projections without bias).
    Given,
}

/// The forward pass's trace, where the op ran.
enum Traces {
    Host([Trace; 2]),
    #[cfg(feature = "cuda")]
    Device(Box<super::cuda::DeviceTraces>),
}

/// What the backward pass of one direction needs from its forward pass.
struct Trace {
    /// `[T, B, G·U]` gate activations (LSTM i, f, g, o; GRU z, r, ĥ).
    gates: Vec<f32>,
    /// `[T, B, U]`: the state before each step.
    h_prev: Vec<f32>,
    cell: CellTrace,
}

/// The cell's own part of a [`Trace`], `[T, B, U]` each.
enum CellTrace {
    /// The cell state before each step and `tanh` of the cell after it.
    Lstm { c_prev: Vec<f32>, tanh_c: Vec<f32> },
    /// The candidate's recurrent part `h·R_h + b'_h`.
    Gru { candidate_recurrent: Vec<f32> },
}

#[derive(Clone, Copy)]
struct Dims {
    cell: Cell,
    time: usize,
    batch: usize,
    units: usize,
}

/// The op's row order and how many rows (a prefix) take part in each step.
#[derive(Debug, Clone, PartialEq)]
struct Rows {
    /// `order[i]` is the caller's row at the op's row `i`.
    order: Vec<usize>,
    /// `[T]`: rows `0..active[t]` have a real token at step `t`; the others are padding.
    active: Vec<usize>,
    /// `[T + 1]`: where step `t`'s rows start in the op's packed `[Σ active, width]` buffers
    /// (the projected input, the gates and their gradients), which hold only the rows a step
    /// runs: padding is neither projected nor differentiated.
    starts: Vec<usize>,
    /// Whether the rows were reordered and cut to prefixes (false: every row, masked).
    prefix: bool,
}

impl Rows {
    /// Orders rows longest first when each row's real tokens are one run at the same end;
    /// otherwise keeps them as they are and runs all of them at every step.
    fn plan(mask: &[u8], time: usize, batch: usize) -> Self {
        let real = |t: usize, r: usize| mask[t * batch + r] == 1;
        let lengths: Vec<usize> = (0..batch)
            .map(|r| (0..time).filter(|&t| real(t, r)).count())
            .collect();
        let post = (0..batch).all(|r| (0..time).all(|t| real(t, r) == (t < lengths[r])));
        let pre = (0..batch).all(|r| (0..time).all(|t| real(t, r) == (t >= time - lengths[r])));
        if !(post || pre) {
            return Self {
                order: (0..batch).collect(),
                active: vec![batch; time],
                starts: (0..=time).map(|t| t * batch).collect(),
                prefix: false,
            };
        }
        let mut order: Vec<usize> = (0..batch).collect();
        order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
        let active: Vec<usize> = (0..time)
            .map(|t| {
                let needed = if post { t + 1 } else { time - t };
                order.iter().take_while(|&&r| lengths[r] >= needed).count()
            })
            .collect();
        let starts = std::iter::once(0)
            .chain(active.iter().scan(0, |sum, &n| {
                *sum += n;
                Some(*sum)
            }))
            .collect();
        Self {
            order,
            active,
            starts,
            prefix: true,
        }
    }

    /// The rows of the packed buffers: every step's active rows.
    fn packed(&self) -> usize {
        self.starts[self.active.len()]
    }

    /// Step `t`'s rows in a packed buffer of `width` columns.
    fn step(&self, t: usize, width: usize) -> std::ops::Range<usize> {
        self.starts[t] * width..self.starts[t + 1] * width
    }

    /// Whether the op's row order differs from the caller's (rows of equal length, as in
    /// unpadded batches, keep their order, and then nothing needs copying).
    fn moves_rows(&self) -> bool {
        self.prefix && self.order.iter().enumerate().any(|(i, &r)| i != r)
    }

    /// `[steps, B, width]` from the caller's row order into the op's.
    fn to_op<'a>(&self, data: &'a [f32], steps: usize, width: usize) -> Cow<'a, [f32]> {
        if !self.moves_rows() {
            return Cow::Borrowed(data);
        }
        let batch = self.order.len();
        let mut out = Vec::with_capacity(data.len());
        for t in 0..steps {
            for &r in &self.order {
                let start = (t * batch + r) * width;
                out.extend_from_slice(&data[start..start + width]);
            }
        }
        Cow::Owned(out)
    }

    /// Steps `steps` of the layer's input `[T, B, I]` as one direction projects them: packed
    /// (each step's active rows, in the op's order), each row scaled by its input keep mask
    /// (`[B, I]`, the caller's rows) when there is one.
    fn input_to_op<'a>(
        &self,
        x: &'a [f32],
        input: usize,
        keep: Option<&[f32]>,
        steps: Range<usize>,
    ) -> Cow<'a, [f32]> {
        let batch = self.order.len();
        let packed = self.starts[steps.end] - self.starts[steps.start];
        if keep.is_none() && !self.moves_rows() && packed == steps.len() * batch {
            return Cow::Borrowed(&x[steps.start * batch * input..steps.end * batch * input]);
        }
        let mut out = Vec::with_capacity(packed * input);
        for t in steps {
            for i in 0..self.active[t] {
                let r = if self.prefix { self.order[i] } else { i };
                let row = &x[(t * batch + r) * input..(t * batch + r + 1) * input];
                match keep {
                    Some(keep) => out.extend(
                        row.iter()
                            .zip(&keep[r * input..(r + 1) * input])
                            .map(|(x, k)| x * k),
                    ),
                    None => out.extend_from_slice(row),
                }
            }
        }
        Cow::Owned(out)
    }

    /// The caller's input gradient `[T, B, I]` from both directions' gradients of their
    /// projected input (packed, as [`Rows::input_to_op`] lays it out), each through its
    /// direction's keep mask: one pass, written in the caller's row order, zero on padding.
    fn input_gradient(
        &self,
        [forward, backward]: [&[f32]; 2],
        input: usize,
        keep: Option<[&[f32]; 2]>,
    ) -> Vec<f32> {
        let batch = self.order.len();
        let mut op_row: Vec<usize> = (0..batch).collect();
        if self.prefix {
            for (i, &r) in self.order.iter().enumerate() {
                op_row[r] = i;
            }
        }
        let mut out = Vec::with_capacity(self.active.len() * batch * input);
        for (t, &n) in self.active.iter().enumerate() {
            for (r, &i) in op_row.iter().enumerate() {
                if i >= n {
                    out.extend(std::iter::repeat_n(0.0, input));
                    continue;
                }
                let at = (self.starts[t] + i) * input..(self.starts[t] + i + 1) * input;
                let (f, b) = (&forward[at.clone()], &backward[at]);
                match keep {
                    None => out.extend(f.iter().zip(b).map(|(f, b)| f + b)),
                    Some([kf, kb]) => {
                        let mask = r * input..(r + 1) * input;
                        out.extend(
                            f.iter()
                                .zip(b)
                                .zip(kf[mask.clone()].iter().zip(&kb[mask]))
                                .map(|((f, b), (kf, kb))| f * kf + b * kb),
                        );
                    }
                }
            }
        }
        out
    }

    /// `[steps, B, width]` from the op's row order back into the caller's.
    fn to_caller(&self, data: Vec<f32>, steps: usize, width: usize) -> Vec<f32> {
        if !self.moves_rows() {
            return data;
        }
        let batch = self.order.len();
        let mut op_row = vec![0; batch];
        for (i, &r) in self.order.iter().enumerate() {
            op_row[r] = i;
        }
        // Built row by row in the caller's order: no zero-filled buffer to overwrite.
        let mut out = Vec::with_capacity(data.len());
        for t in 0..steps {
            for &i in &op_row {
                let start = (t * batch + i) * width;
                out.extend_from_slice(&data[start..start + width]);
            }
        }
        out
    }
}

impl Dims {
    fn gate_width(&self) -> usize {
        self.cell.gates() * self.units
    }

    fn order(&self, reverse: bool) -> Box<dyn Iterator<Item = usize>> {
        if reverse {
            Box::new((0..self.time).rev())
        } else {
            Box::new(0..self.time)
        }
    }
}

impl FusedBiRnn {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cell: Cell,
        projection: Projection,
        mask: Vec<u8>,
        time: usize,
        batch: usize,
        units: usize,
        return_sequences: bool,
        keep_trace: bool,
    ) -> Self {
        let rows = Rows::plan(&mask, time, batch);
        let mask = if rows.prefix {
            // In the op's order a step's real rows are its active prefix.
            (0..time)
                .flat_map(|t| {
                    let n = rows.active[t];
                    std::iter::repeat_n(1, n).chain(std::iter::repeat_n(0, batch - n))
                })
                .collect()
        } else {
            mask
        };
        Self {
            cell,
            projection,
            mask,
            rows,
            time,
            batch,
            units,
            return_sequences,
            keep_trace,
            isa: isa::instruction_set(),
            trace: Mutex::new(None),
        }
    }

    fn dims(&self) -> Dims {
        Dims {
            cell: self.cell,
            time: self.time,
            batch: self.batch,
            units: self.units,
        }
    }

    /// The op's three inputs have the shapes it was built for (see [`FusedBiRnn`]).
    fn check_inputs(&self, l1: &Layout, l2: &Layout, l3: &Layout) -> candle_core::Result<()> {
        let gate_width = self.dims().gate_width();
        let (time, batch) = (self.time, self.batch);
        let recurrent_rows = self.units + self.cell.bias_rows();
        match self.projection {
            Projection::Inside { input, .. } => {
                self.check("the input", l1, &[time, batch, input])?;
                self.check("the input kernels", l2, &[2, input, gate_width])?;
            }
            Projection::Given => {
                self.check("the forward projection", l1, &[time, batch, gate_width])?;
                self.check("the backward projection", l2, &[time, batch, gate_width])?;
            }
        }
        self.check(
            "the recurrent kernels",
            l3,
            &[2, recurrent_rows, gate_width],
        )
    }

    fn check(&self, what: &str, layout: &Layout, expected: &[usize]) -> candle_core::Result<()> {
        if layout.dims() != expected {
            candle_core::bail!(
                "fused recurrent layer: {what} has shape {:?}, expected {expected:?}",
                layout.dims()
            );
        }
        Ok(())
    }
}

fn contiguous<'a>(
    what: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!(
            "fused recurrent layer: {what} must be f32, got {:?}",
            storage.dtype()
        );
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("fused recurrent layer: {what} must be contiguous"),
    }
}

/// Runs `f` on a CPU f32 tensor's data, copying only if it is not contiguous.
fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(contiguous("tensor", cpu, layout)?)),
        _ => candle_core::bail!("fused recurrent layer: the fused kernel runs on the CPU only"),
    }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, each given by its row and column strides.
#[allow(clippy::too_many_arguments)]
fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    parallelism: Parallelism,
) {
    let last = |rs: usize, cs: usize, rows: usize, cols: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    };
    assert!(
        dst.len() >= last(dst_rs, dst_cs, m, n),
        "gemm: dst too short"
    );
    assert!(
        lhs.len() >= last(lhs_rs, lhs_cs, m, k),
        "gemm: lhs too short"
    );
    assert!(
        rhs.len() >= last(rhs_rs, rhs_cs, k, n),
        "gemm: rhs too short"
    );
    // SAFETY: the asserts above keep every access of the three strided matrices in bounds,
    // and `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The threads one direction's multiplies may use ([`split::direction_threads`]).
fn direction_parallelism() -> Parallelism {
    match split::direction_threads() {
        1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// One direction's input projection: its input, keep mask, input kernel (`[I, G·U]`) and
/// input bias.
struct Projector<'a> {
    rows: &'a Rows,
    x: &'a [f32],
    input: usize,
    keep: Option<&'a [f32]>,
    kernel: &'a [f32],
    bias: &'a [f32],
}

impl Projector<'_> {
    /// Steps `steps`' gate pre-activations, packed (the rows of [`Rows::step`], counted from
    /// the first step's), into `gates`: the projected input times the input kernel, plus the
    /// input bias. The bias is written first and the product added to it, so the buffer is
    /// written once and read once, never zero-filled.
    fn project(&self, steps: Range<usize>, gates: &mut Vec<f32>) {
        let width = self.bias.len();
        let x_op = self
            .rows
            .input_to_op(self.x, self.input, self.keep, steps.clone());
        let rows = self.rows.starts[steps.end] - self.rows.starts[steps.start];
        gates.clear();
        gates.reserve(rows * width);
        for _ in 0..rows {
            gates.extend_from_slice(self.bias);
        }
        matmul(
            (rows, width, self.input),
            gates,
            (width, 1),
            true,
            &x_op,
            (self.input, 1),
            self.kernel,
            (width, 1),
            direction_parallelism(),
        );
    }
}

/// About how many rows of gates inference projects at once.
const INFERENCE_CHUNK_ROWS: usize = 2048;

/// Where a direction's forward pass finds each step's gate pre-activations.
enum Gates<'a> {
    /// Every step's, projected at once and kept in the trace for the backward pass.
    Whole(Vec<f32>),
    /// Inference: a few steps at a time into one reused buffer, so no `[T, B, G·U]` buffer is
    /// allocated. At `predict`'s 1024 rows that buffer is tens of megabytes, which glibc maps
    /// and unmaps on every call from a pool thread (its arena's heaps stop at 64 MiB), and
    /// the page faults cost a tenth of inference.
    Chunked {
        projector: Projector<'a>,
        steps_per_chunk: usize,
        buffer: Vec<f32>,
        chunk: Option<usize>,
    },
}

impl<'a> Gates<'a> {
    fn new(projector: Projector<'a>, keep_trace: bool) -> Self {
        let steps = projector.rows.active.len();
        if keep_trace {
            let mut gates = Vec::new();
            projector.project(0..steps, &mut gates);
            return Gates::Whole(gates);
        }
        let batch = projector.rows.order.len().max(1);
        Gates::Chunked {
            projector,
            steps_per_chunk: INFERENCE_CHUNK_ROWS.div_ceil(batch),
            buffer: Vec::new(),
            chunk: None,
        }
    }

    /// Step `t`'s gates (its active rows), projecting its chunk first when chunked.
    fn step(&mut self, rows: &Rows, t: usize, width: usize) -> &mut [f32] {
        match self {
            Gates::Whole(gates) => &mut gates[rows.step(t, width)],
            Gates::Chunked {
                projector,
                steps_per_chunk,
                buffer,
                chunk,
            } => {
                let c = t / *steps_per_chunk;
                let first = c * *steps_per_chunk;
                if *chunk != Some(c) {
                    let last = (first + *steps_per_chunk).min(rows.active.len());
                    projector.project(first..last, buffer);
                    *chunk = Some(c);
                }
                let base = rows.starts[first] * width;
                let step = rows.step(t, width);
                &mut buffer[step.start - base..step.end - base]
            }
        }
    }

    /// The gates to keep in the trace (none when chunked: inference keeps nothing).
    fn into_kept(self) -> Vec<f32> {
        match self {
            Gates::Whole(gates) => gates,
            Gates::Chunked { .. } => Vec::new(),
        }
    }
}

/// One direction's input-side gradients from its `dz` (packed: `[rows, G·U]`, the rows of
/// [`Rows::step`]): of its input kernel, `x_opᵀ·dz` (`[I, G·U]`), and of its projected input,
/// `dz·Wᵀ` (`[rows, I]`, packed alike, before the keep mask).
fn project_backward(
    x_op: &[f32],
    kernel: &[f32],
    dz: &[f32],
    rows: usize,
    input: usize,
    width: usize,
) -> (Vec<f32>, Vec<f32>) {
    let parallelism = direction_parallelism();
    let mut d_kernel = vec![0.0; input * width];
    matmul(
        (input, width, rows),
        &mut d_kernel,
        (width, 1),
        false,
        x_op,
        (1, input),
        dz,
        (width, 1),
        parallelism,
    );
    let mut d_input = vec![0.0; rows * input];
    matmul(
        (rows, input, width),
        &mut d_input,
        (input, 1),
        false,
        dz,
        (width, 1),
        kernel,
        (1, width),
        parallelism,
    );
    (d_kernel, d_input)
}

/// The forward pass of one direction. `recurrent` is the direction's `[U + K, G·U]` kernel
/// with its bias rows; `gates` its input projection with the input bias, packed (the rows of
/// [`Rows::step`]). Returns the trace
/// (`None` without `keep_trace`), the per-step outputs `[T, B, U]` (empty unless `sequences`)
/// and the final state `[B, U]`.
///
/// Without a trace (inference) nothing per step is kept: the state before the step, the cell
/// states and the candidate's recurrent part live in one step's buffers, reused.
#[allow(clippy::too_many_arguments)]
fn forward_direction(
    dims: &Dims,
    isa: InstructionSet,
    mask: &[u8],
    rows: &Rows,
    mut gates: Gates,
    recurrent: &[f32],
    reverse: bool,
    sequences: bool,
    keep_trace: bool,
) -> (Option<Trace>, Vec<f32>, Vec<f32>) {
    let Dims {
        cell,
        time,
        batch,
        units,
    } = *dims;
    let gate_width = dims.gate_width();
    let step_state = batch * units;
    // R packed once for every step of the sequence.
    let packed = Packed::gate_blocks(isa, &recurrent[..units * gate_width], units, cell.gates());
    let kept = if keep_trace { time } else { 1 };
    // Where step `t`'s saved state starts: its own slot in a trace, else the one reused slot.
    let slot = |t: usize| if keep_trace { t * step_state } else { 0 };
    let mut trace_h = vec![0.0; kept * step_state];
    let out_len = if sequences {
        time * step_state
    } else {
        step_state
    };
    let mut out = vec![0.0; out_len];
    let mut h = vec![0.0; step_state];
    // An LSTM without a trace keeps no cell states at all (see `ForwardStep::trace`).
    let lstm_kept = if keep_trace { time * step_state } else { 0 };
    let (mut c, mut c_prev, mut tanh_c, mut candidate_recurrent) = match cell {
        Cell::Lstm => (
            vec![0.0; step_state],
            vec![0.0; lstm_kept],
            vec![0.0; lstm_kept],
            Vec::new(),
        ),
        Cell::Gru => (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            vec![0.0; kept * step_state],
        ),
    };
    let recurrent_bias = match cell {
        Cell::Lstm => &[][..],
        Cell::Gru => &recurrent[(units + 1) * gate_width..(units + 2) * gate_width],
    };
    let threads = split::direction_threads();
    for t in dims.order(reverse) {
        let n = rows.active[t];
        let step_mask = &mask[t * batch..t * batch + n];
        let saved = slot(t)..slot(t) + step_state;
        trace_h[saved.clone()].copy_from_slice(&h);
        if step_mask.iter().all(|&m| m == 0) {
            continue;
        }
        // Only the step's active rows: a prefix of the batch (all of it when masked).
        let state = slot(t)..slot(t) + n * units;
        let z = gates.step(rows, t, gate_width);
        let h_prev = &trace_h[state.clone()];
        let out_step = if sequences {
            &mut out[t * step_state..t * step_state + n * units]
        } else {
            // Only the final state is wanted; the scratch output row is overwritten each step.
            &mut out[..n * units]
        };
        // Each part of the step's rows (one, unless the pool has threads to spare) gets its
        // own rows of every buffer; the kernels then run on each part as on a whole step.
        let parts = split::row_parts(n, units * gate_width, threads);
        let mut z_rows = RowCursor::new(z, gate_width);
        let mut h_rows = RowCursor::new(&mut h[..n * units], units);
        let mut out_rows = RowCursor::new(out_step, units);
        match cell {
            Cell::Lstm => {
                let mut c_rows = RowCursor::new(&mut c[..n * units], units);
                let (c_prev, tanh_c): (&mut [f32], &mut [f32]) = if keep_trace {
                    (&mut c_prev[state.clone()], &mut tanh_c[state])
                } else {
                    (&mut [], &mut [])
                };
                let mut c_prev_rows = RowCursor::new(c_prev, units);
                let mut tanh_c_rows = RowCursor::new(tanh_c, units);
                let steps: Vec<_> = parts
                    .iter()
                    .map(|p| {
                        let rows = p.len();
                        let step = ForwardStep {
                            gates: z_rows.take(rows),
                            c: c_rows.take(rows),
                            h: h_rows.take(rows),
                            c_prev: c_prev_rows.take(rows),
                            tanh_c: tanh_c_rows.take(rows),
                            out: out_rows.take(rows),
                            mask: &step_mask[p.clone()],
                            units,
                            trace: keep_trace,
                        };
                        (split::rows_of(h_prev, p, units), step)
                    })
                    .collect();
                split::run_parts(steps, |(h_prev, step)| {
                    kernel::lstm_forward(&packed, h_prev, step)
                });
            }
            Cell::Gru => {
                let mut candidate_rows = RowCursor::new(&mut candidate_recurrent[state], units);
                let steps: Vec<_> = parts
                    .iter()
                    .map(|p| {
                        let rows = p.len();
                        let step = GruForwardStep {
                            gates: z_rows.take(rows),
                            recurrent_bias,
                            h: h_rows.take(rows),
                            candidate_recurrent: candidate_rows.take(rows),
                            out: out_rows.take(rows),
                            mask: &step_mask[p.clone()],
                            units,
                        };
                        (split::rows_of(h_prev, p, units), step)
                    })
                    .collect();
                split::run_parts(steps, |(h_prev, step)| {
                    kernel::gru_forward(&packed, h_prev, step)
                });
            }
        }
    }
    let trace = keep_trace.then(|| Trace {
        gates: gates.into_kept(),
        h_prev: trace_h,
        cell: match cell {
            Cell::Lstm => CellTrace::Lstm { c_prev, tanh_c },
            Cell::Gru => CellTrace::Gru {
                candidate_recurrent,
            },
        },
    });
    (trace, if sequences { out } else { Vec::new() }, h)
}

/// The gradient of the op's output, as one direction reads it.
struct OutputGradient<'a> {
    /// `[T, B, 2U]` with `sequences`, else `[B, 2U]`.
    data: &'a [f32],
    sequences: bool,
    /// Where this direction's `U` columns start in each row of `2U`.
    offset: usize,
}

/// The backward pass of one direction. Returns the gradients of the projection (packed, the
/// rows of [`Rows::step`]: `[Σ active, G·U]`) and of the recurrent kernel with its bias rows
/// `[U + K, G·U]`.
#[allow(clippy::too_many_arguments)]
fn backward_direction(
    dims: &Dims,
    isa: InstructionSet,
    mask: &[u8],
    rows: &Rows,
    trace: &Trace,
    recurrent: &[f32],
    reverse: bool,
    d_output: OutputGradient,
) -> (Vec<f32>, Vec<f32>) {
    let OutputGradient {
        data: d_output,
        sequences,
        offset,
    } = d_output;
    let Dims {
        cell,
        time,
        batch,
        units,
    } = *dims;
    let gate_width = dims.gate_width();
    let step_state = batch * units;
    let active = &rows.active;
    // Rᵀ packed once for every step.
    let kernel_t = Packed::transposed(isa, &recurrent[..units * gate_width], units, cell.gates());
    let mut dz = vec![0.0; rows.packed() * gate_width];
    let mut dh = vec![0.0; step_state];
    let is_gru = cell == Cell::Gru;
    // LSTM: the cell's gradient.
    let mut dc = if is_gru {
        Vec::new()
    } else {
        vec![0.0; step_state]
    };
    // GRU: the gradient of `h·R + b'`, which differs from `dz` in the candidate block.
    let mut dz_recurrent = if is_gru {
        vec![0.0; rows.packed() * gate_width]
    } else {
        Vec::new()
    };
    if !sequences {
        for (row, dh_row) in dh.chunks_exact_mut(units).enumerate() {
            let start = row * 2 * units + offset;
            dh_row.copy_from_slice(&d_output[start..start + units]);
        }
    }
    let threads = split::direction_threads();
    for t in dims.order(!reverse) {
        let n = active[t];
        let step_mask = &mask[t * batch..t * batch + n];
        if step_mask.iter().all(|&m| m == 0) {
            continue;
        }
        let state = t * step_state..t * step_state + n * units;
        let step = rows.step(t, gate_width);
        let gates_step = &trace.gates[step.clone()];
        let parts = split::row_parts(n, units * gate_width, threads);
        // The gradient of the part's outputs: rows of `2U`, this direction's from `offset`.
        let d_out = |p: &Range<usize>| {
            sequences.then(|| {
                let first_row = t * batch + p.start;
                (&d_output[first_row * 2 * units..], 2 * units, offset)
            })
        };
        let mut dh_rows = RowCursor::new(&mut dh[..n * units], units);
        let mut dz_rows = RowCursor::new(&mut dz[step.clone()], gate_width);
        match &trace.cell {
            CellTrace::Lstm { c_prev, tanh_c } => {
                let (c_prev, tanh_c) = (&c_prev[state.clone()], &tanh_c[state]);
                let mut dc_rows = RowCursor::new(&mut dc[..n * units], units);
                let work: Vec<_> = parts
                    .iter()
                    .map(|p| {
                        let rows = p.len();
                        (
                            p,
                            dh_rows.take(rows),
                            dc_rows.take(rows),
                            dz_rows.take(rows),
                        )
                    })
                    .collect();
                split::run_parts(work, |(p, dh, dc, dz)| {
                    let mask = &step_mask[p.clone()];
                    gates::backward_step(
                        isa,
                        BackwardStep {
                            gates: split::rows_of(gates_step, p, gate_width),
                            c_prev: split::rows_of(c_prev, p, units),
                            tanh_c: split::rows_of(tanh_c, p, units),
                            dh,
                            dc,
                            d_out: d_out(p),
                            dz,
                            mask,
                            units,
                        },
                    );
                    // dh before the step = dz·Rᵀ on real rows; padded rows pass theirs
                    // through.
                    kernel::multiply(&kernel_t, dz, gate_width, dh, units, mask, Write::Store);
                });
            }
            CellTrace::Gru {
                candidate_recurrent,
            } => {
                let (h_prev, candidate_recurrent) =
                    (&trace.h_prev[state.clone()], &candidate_recurrent[state]);
                let mut dz_recurrent_rows = RowCursor::new(&mut dz_recurrent[step], gate_width);
                let work: Vec<_> = parts
                    .iter()
                    .map(|p| {
                        let rows = p.len();
                        let dh = dh_rows.take(rows);
                        (p, dh, dz_rows.take(rows), dz_recurrent_rows.take(rows))
                    })
                    .collect();
                split::run_parts(work, |(p, dh, dz, dz_recurrent)| {
                    let mask = &step_mask[p.clone()];
                    // Leaves dh ⊙ z in dh on real rows, then adds dz_recurrent·Rᵀ; a padded
                    // row's dz_recurrent is zero, so its dh passes through.
                    gates::gru_backward_step(
                        isa,
                        GruBackwardStep {
                            gates: split::rows_of(gates_step, p, gate_width),
                            h_prev: split::rows_of(h_prev, p, units),
                            candidate_recurrent: split::rows_of(candidate_recurrent, p, units),
                            dh,
                            d_out: d_out(p),
                            dz_input: dz,
                            dz_recurrent,
                            mask,
                            units,
                        },
                    );
                    kernel::multiply(
                        &kernel_t,
                        dz_recurrent,
                        gate_width,
                        dh,
                        units,
                        mask,
                        Write::Add,
                    );
                });
            }
        }
    }
    let bias_rows = cell.bias_rows();
    let mut d_recurrent = vec![0.0; (units + bias_rows) * gate_width];
    let (d_kernel, d_bias) = d_recurrent.split_at_mut(units * gate_width);
    let d_through_kernel = if is_gru { &dz_recurrent } else { &dz };
    if active.iter().all(|&n| n == batch) {
        matmul(
            (units, gate_width, time * batch),
            d_kernel,
            (gate_width, 1),
            false,
            &trace.h_prev,
            (1, units),
            d_through_kernel,
            (gate_width, 1),
            direction_parallelism(),
        );
    } else {
        // Σₜ over each step's active rows only (dz is packed so already): the states packed
        // alike into one multiply, which is faster than one per step and sums in the same order
        // as the full one.
        let mut h_packed = Vec::with_capacity(rows.packed() * units);
        for (t, &n) in active.iter().enumerate() {
            h_packed.extend_from_slice(&trace.h_prev[t * step_state..t * step_state + n * units]);
        }
        matmul(
            (units, gate_width, rows.packed()),
            d_kernel,
            (gate_width, 1),
            false,
            &h_packed,
            (1, units),
            d_through_kernel,
            (gate_width, 1),
            direction_parallelism(),
        );
    }
    let (d_input_bias, d_recurrent_bias) = d_bias.split_at_mut(gate_width);
    for row in dz.chunks_exact(gate_width) {
        for (db, d) in d_input_bias.iter_mut().zip(row) {
            *db += d;
        }
    }
    for row in dz_recurrent.chunks_exact(gate_width) {
        for (db, d) in d_recurrent_bias.iter_mut().zip(row) {
            *db += d;
        }
    }
    (dz, d_recurrent)
}

impl CustomOp3 for FusedBiRnn {
    fn name(&self) -> &'static str {
        match self.cell {
            Cell::Lstm => "fused-bilstm",
            Cell::Gru => "fused-bigru",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = self.dims();
        let Dims {
            time, batch, units, ..
        } = dims;
        let gate_width = dims.gate_width();
        self.check_inputs(l1, l2, l3)?;
        let Projection::Inside { input, keep } = &self.projection else {
            candle_core::bail!("fused recurrent layer: on the CPU the op projects its input itself")
        };
        let input = *input;
        let x = contiguous("the input", s1, l1)?;
        let kernels = contiguous("the input kernels", s2, l2)?;
        let recurrent = contiguous("the recurrent kernels", s3, l3)?;
        let (k_forward, k_backward) = kernels.split_at(kernels.len() / 2);
        let (r_forward, r_backward) = recurrent.split_at(recurrent.len() / 2);
        let seq = self.return_sequences;
        let (mask, rows, isa, keep_trace) = (&self.mask, &self.rows, self.isa, self.keep_trace);
        let direction = |kernel: &[f32], recurrent: &[f32], d: usize, reverse: bool| {
            let input_bias = &recurrent[units * gate_width..(units + 1) * gate_width];
            let keep = keep.as_ref().map(|k| &k[d][..]);
            let projector = Projector {
                rows,
                x,
                input,
                keep,
                kernel,
                bias: input_bias,
            };
            let gates = Gates::new(projector, keep_trace);
            forward_direction(
                &dims, isa, mask, rows, gates, recurrent, reverse, seq, keep_trace,
            )
        };
        let ((trace_f, out_f, last_f), (trace_b, out_b, last_b)) = rayon::join(
            || direction(k_forward, r_forward, 0, false),
            || direction(k_backward, r_backward, 1, true),
        );
        let (forward_half, backward_half, shape, steps): (_, _, Shape, _) = if seq {
            (out_f, out_b, (time, batch, 2 * units).into(), time)
        } else {
            (last_f, last_b, (batch, 2 * units).into(), 1)
        };
        let mut merged = Vec::with_capacity(forward_half.len() * 2);
        for (f, b) in forward_half
            .chunks_exact(units)
            .zip(backward_half.chunks_exact(units))
        {
            merged.extend_from_slice(f);
            merged.extend_from_slice(b);
        }
        let merged = rows.to_caller(merged, steps, 2 * units);
        if let (Some(trace_f), Some(trace_b)) = (trace_f, trace_b) {
            let mut slot = self.trace.lock().map_err(|_| poisoned())?;
            *slot = Some(Traces::Host([trace_f, trace_b]));
        }
        Ok((CpuStorage::F32(merged), shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.check_inputs(l1, l2, l3)?;
        let geometry = self.geometry();
        let (out, shape, trace) = super::cuda::forward(&geometry, [(s1, l1), (s2, l2), (s3, l3)])?;
        if let Some(trace) = trace {
            *self.trace.lock().map_err(|_| poisoned())? = Some(Traces::Device(Box::new(trace)));
        }
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        kernels: &Tensor,
        recurrent: &Tensor,
        _output: &Tensor,
        d_output: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let traces = self
            .trace
            .lock()
            .map_err(|_| poisoned())?
            .take()
            .ok_or_else(|| {
                candle_core::Error::Msg(
                "fused recurrent layer: no forward trace (run in inference mode, or backward twice)"
                    .into(),
            )
            })?;
        // Without the `cuda` feature the host is the only arm.
        #[allow(clippy::infallible_destructuring_match)]
        let [trace_f, trace_b] = match traces {
            Traces::Host(traces) => traces,
            #[cfg(feature = "cuda")]
            Traces::Device(traces) => return self.device_bwd(&traces, recurrent, d_output),
        };
        let Projection::Inside { input, keep } = &self.projection else {
            candle_core::bail!("fused recurrent layer: on the CPU the op projects its input itself")
        };
        let input = *input;
        let dims = self.dims();
        let Dims {
            time, batch, units, ..
        } = dims;
        let gate_width = dims.gate_width();
        let d_output = d_output.to_dtype(DType::F32)?;
        let seq = self.return_sequences;
        let (mask, rows) = (&self.mask, &self.rows);
        let keep = keep.as_ref().map(|[f, b]| [&f[..], &b[..]]);
        let ((dx_f, dk_f, dr_f), (dx_b, dk_b, dr_b)) = with_data(x, |x| {
            with_data(kernels, |k| {
                let (k_forward, k_backward) = k.split_at(k.len() / 2);
                with_data(recurrent, |r| {
                    let (r_forward, r_backward) = r.split_at(r.len() / 2);
                    with_data(&d_output, |d| {
                        let d = rows.to_op(d, if seq { time } else { 1 }, 2 * units);
                        let d = &*d;
                        let direction =
                            |trace: &Trace, kernel: &[f32], recurrent: &[f32], which: usize| {
                                let (dz, d_recurrent) = backward_direction(
                                    &dims,
                                    self.isa,
                                    mask,
                                    rows,
                                    trace,
                                    recurrent,
                                    which == 1,
                                    OutputGradient {
                                        data: d,
                                        sequences: seq,
                                        offset: which * units,
                                    },
                                );
                                let x_op =
                                    rows.input_to_op(x, input, keep.map(|k| k[which]), 0..time);
                                let (d_kernel, d_input) = project_backward(
                                    &x_op,
                                    kernel,
                                    &dz,
                                    rows.packed(),
                                    input,
                                    gate_width,
                                );
                                (d_input, d_kernel, d_recurrent)
                            };
                        rayon::join(
                            || direction(&trace_f, k_forward, r_forward, 0),
                            || direction(&trace_b, k_backward, r_backward, 1),
                        )
                    })
                })
            })
        })????;
        let d_input = rows.input_gradient([&dx_f, &dx_b], input, keep);
        let device = recurrent.device();
        let kernels_shape = (2, input, gate_width);
        let recurrent_shape = (2, units + self.cell.bias_rows(), gate_width);
        Ok((
            Some(Tensor::from_vec(d_input, (time, batch, input), device)?),
            Some(Tensor::from_vec(
                [dk_f, dk_b].concat(),
                kernels_shape,
                device,
            )?),
            Some(Tensor::from_vec(
                [dr_f, dr_b].concat(),
                recurrent_shape,
                device,
            )?),
        ))
    }
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::Msg("fused recurrent layer: trace lock poisoned".into())
}

#[cfg(feature = "cuda")]
impl FusedBiRnn {
    fn geometry(&self) -> super::cuda::Geometry<'_> {
        super::cuda::Geometry {
            cell: self.cell,
            time: self.time,
            batch: self.batch,
            units: self.units,
            mask: &self.mask,
            order: &self.rows.order,
            active: &self.rows.active,
            moves_rows: self.rows.moves_rows(),
            return_sequences: self.return_sequences,
            keep_trace: self.keep_trace,
        }
    }

    /// Backward on the device: one op over the output gradient and the recurrent kernels
    /// (candle's custom ops hand back one tensor), split into the three gradients.
    fn device_bwd(
        &self,
        traces: &super::cuda::DeviceTraces,
        recurrent: &Tensor,
        d_output: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d_output = d_output.to_dtype(DType::F32)?.contiguous()?;
        let recurrent = recurrent.contiguous()?;
        let packed = d_output.apply_op2_no_bwd(&recurrent, &DeviceBackward { op: self, traces })?;
        let gate_width = self.dims().gate_width();
        let projection = self.time * self.batch * gate_width;
        let recurrent_rows = self.units + self.cell.bias_rows();
        let projection_shape = (self.time, self.batch, gate_width);
        Ok((
            Some(packed.narrow(0, 0, projection)?.reshape(projection_shape)?),
            Some(
                packed
                    .narrow(0, projection, projection)?
                    .reshape(projection_shape)?,
            ),
            Some(
                packed
                    .narrow(0, 2 * projection, 2 * recurrent_rows * gate_width)?
                    .reshape((2, recurrent_rows, gate_width))?,
            ),
        ))
    }
}

/// The device backward pass as an op of (output gradient, recurrent kernels).
#[cfg(feature = "cuda")]
struct DeviceBackward<'a> {
    op: &'a FusedBiRnn,
    traces: &'a super::cuda::DeviceTraces,
}

#[cfg(feature = "cuda")]
impl candle_core::CustomOp2 for DeviceBackward<'_> {
    fn name(&self) -> &'static str {
        "fused-recurrent-backward"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("fused recurrent layer: the device backward pass ran on the CPU")
    }

    fn cuda_fwd(
        &self,
        d_output: &candle_core::CudaStorage,
        d_output_layout: &Layout,
        recurrent: &candle_core::CudaStorage,
        recurrent_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::backward(
            &self.op.geometry(),
            self.traces,
            (d_output, d_output_layout),
            (recurrent, recurrent_layout),
        )
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::super::{time_major_mask, BiLstm, BiOutput, LstmWeights, StepMask};
    use super::{isa, split, InstructionSet};
    use crate::config::Cell;

    #[test]
    fn rows_are_ordered_longest_first_and_steps_cut_to_their_real_prefix() {
        // Post padding, lengths 2, 0, 3, 1 (time-major mask, batch 4).
        let lengths = [2usize, 0, 3, 1];
        let post: Vec<u8> = (0..3)
            .flat_map(|t| lengths.map(|l| u8::from(t < l)))
            .collect();
        let rows = super::Rows::plan(&post, 3, 4);
        assert!(rows.prefix);
        assert_eq!(rows.order, vec![2, 0, 3, 1]);
        assert_eq!(rows.active, vec![3, 2, 1]);
        // Pre padding: the same rows end at the last step.
        let pre: Vec<u8> = (0..3)
            .flat_map(|t| lengths.map(|l| u8::from(t >= 3 - l)))
            .collect();
        let rows = super::Rows::plan(&pre, 3, 4);
        assert_eq!(
            (rows.order.clone(), rows.active.clone()),
            (vec![2, 0, 3, 1], vec![1, 2, 3])
        );
        // Reordering and back leaves data as it was.
        let data: Vec<f32> = (0..24).map(|x| x as f32).collect();
        assert_eq!(
            rows.to_caller(rows.to_op(&data, 3, 2).into_owned(), 3, 2),
            data
        );
        // The input as a direction projects it: each step's real rows only (1, 2 and 3 of
        // them), in the op's order (the caller's rows 2, 0, 3), each scaled by its caller row's
        // keep mask (`[B, I]`).
        assert_eq!(rows.starts, vec![0, 1, 3, 6]);
        let keep: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let x_op = rows.input_to_op(&data, 2, Some(&keep), 0..3);
        let expected_x = [
            20.0, 30.0, 60.0, 78.0, 8.0, 18.0, 100.0, 126.0, 16.0, 34.0, 154.0, 184.0,
        ];
        assert_eq!(&x_op[..], &expected_x[..]);
        // Both directions' packed input gradients back in the caller's order, each through
        // its direction's mask (the second's all ones), zero on every padded step.
        let g: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let ones = vec![1.0f32; 8];
        let d_input = rows.input_gradient([&g, &g], 2, Some([&keep, &ones]));
        let expected_d = [
            0.0, 0.0, 0.0, 0.0, 0.0, 7.0, 0.0, 0.0, // step 0: only the caller's row 2
            8.0, 15.0, 0.0, 0.0, 12.0, 21.0, 0.0, 0.0, // step 1: rows 0 and 2
            16.0, 27.0, 0.0, 0.0, 36.0, 49.0, 80.0, 99.0, // step 2: rows 0, 2 and 3
        ];
        assert_eq!(d_input, expected_d);
        assert_eq!(
            rows.input_gradient([&g, &g], 2, None)[4..6],
            [2.0 * 0.0, 2.0 * 1.0]
        );
        // Rows of one length keep their order: nothing is copied either way.
        let full = vec![1u8; 6];
        let rows = super::Rows::plan(&full, 3, 2);
        assert!(rows.prefix && !rows.moves_rows());
        assert!(matches!(
            rows.to_op(&data[..12], 3, 2),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(matches!(
            rows.input_to_op(&data[..12], 2, None, 0..3),
            std::borrow::Cow::Borrowed(_)
        ));
        // A hole, or post and pre padding mixed: every row runs at every step, masked.
        let holes = vec![1, 1, 0, 1, 1, 1];
        let rows = super::Rows::plan(&holes, 3, 2);
        assert!(!rows.prefix);
        assert_eq!(rows.active, vec![2, 2, 2]);
        let mixed = vec![1, 0, 0, 0, 0, 1];
        assert!(!super::Rows::plan(&mixed, 3, 2).prefix);
    }

    #[derive(Clone, Copy, Debug)]
    enum Padding {
        None,
        Post,
        Pre,
        /// Padding anywhere, including rows that are all padding.
        Holes,
    }

    #[derive(Debug)]
    struct Case {
        cell: Cell,
        time: usize,
        batch: usize,
        input: usize,
        units: usize,
        padding: Padding,
        sequences: bool,
        dropout: bool,
    }

    fn ids(case: &Case, rng: &mut ChaCha8Rng) -> Vec<u32> {
        let (b, t) = (case.batch, case.time);
        let mut ids = vec![0u32; b * t];
        for r in 0..b {
            // Row 0 is always full length, so no column is padding in every row.
            let len = if r == 0 { t } else { rng.random_range(0..=t) };
            for s in 0..t {
                let real = match case.padding {
                    Padding::None => true,
                    Padding::Post => s < len,
                    Padding::Pre => s >= t - len,
                    Padding::Holes => r == 0 || rng.random_bool(0.6),
                };
                if real {
                    ids[r * t + s] = rng.random_range(1..100);
                }
            }
        }
        ids
    }

    fn uniform(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| rng.random_range(-scale..scale)).collect()
    }

    fn var(values: &[f64], shape: &[usize], dtype: DType) -> Var {
        let t = Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap();
        Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
    }

    fn weights(rng: &mut ChaCha8Rng, cell: Cell, input: usize, units: usize) -> [Vec<f64>; 3] {
        let w = match cell {
            Cell::Lstm => LstmWeights::new(rng, input, units, &Device::Cpu),
            Cell::Gru => LstmWeights::gru(rng, input, units, &Device::Cpu),
        }
        .unwrap();
        let flat = |v: &Var| -> Vec<f64> {
            v.as_tensor()
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        // A non-trivial bias (both of a GRU's), so its gradient is tested away from the
        // initial values.
        let bias = uniform(rng, cell.bias_rows() * cell.gates() * units, 0.5);
        [flat(&w.kernel), flat(&w.recurrent), bias]
    }

    fn layer(
        w: &[[Vec<f64>; 3]; 2],
        cell: Cell,
        input: usize,
        units: usize,
        dtype: DType,
    ) -> BiLstm {
        let width = cell.gates() * units;
        let bias_shape: Vec<usize> = match cell {
            Cell::Lstm => vec![width],
            Cell::Gru => vec![2, width],
        };
        let direction = |w: &[Vec<f64>; 3]| LstmWeights {
            cell,
            kernel: var(&w[0], &[input, width], dtype),
            recurrent: var(&w[1], &[units, width], dtype),
            bias: var(&w[2], &bias_shape, dtype),
            units,
        };
        BiLstm {
            forward: direction(&w[0]),
            backward: direction(&w[1]),
        }
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// max |got − expected| / max |expected|.
    fn relative_error(got: &[f64], expected: &[f64]) -> f64 {
        assert_eq!(got.len(), expected.len());
        let scale = expected.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
        got.iter()
            .zip(expected)
            .fold(0f64, |m, (g, e)| m.max((g - e).abs()))
            / scale
    }

    fn check(case: &Case, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (t, b, i, u) = (case.time, case.batch, case.input, case.units);
        let ids = ids(case, &mut rng);
        let x = uniform(&mut rng, t * b * i, 1.0);
        let w = [
            weights(&mut rng, case.cell, i, u),
            weights(&mut rng, case.cell, i, u),
        ];
        let keep: Option<[Vec<f64>; 2]> = case.dropout.then(|| {
            let mut mask = || -> Vec<f64> {
                (0..b * i)
                    .map(|_| if rng.random_bool(0.3) { 0.0 } else { 1.0 / 0.7 })
                    .collect()
            };
            [mask(), mask()]
        });
        let out_len = if case.sequences {
            t * b * 2 * u
        } else {
            b * 2 * u
        };
        let coefficients = uniform(&mut rng, out_len, 1.0);

        // The reference layer in f64: the oracle.
        let reference = layer(&w, case.cell, i, u, DType::F64);
        let x64 = var(&x, &[t, b, i], DType::F64);
        let steps: Vec<Tensor> = (0..t).map(|s| x64.as_tensor().get(s).unwrap()).collect();
        let masks = StepMask::from_ids(&ids, b, t, DType::F64, &Device::Cpu).unwrap();
        let keep64 = keep.as_ref().map(|k| {
            k.clone()
                .map(|m| Tensor::from_vec(m, (b, i), &Device::Cpu).unwrap())
        });
        let expected = match reference
            .run(
                &steps,
                &masks,
                case.sequences,
                keep64.as_ref().map(|[f, w]| (f, w)),
            )
            .unwrap()
        {
            BiOutput::Sequence(s) => Tensor::stack(&s, 0).unwrap(),
            BiOutput::Last(l) => l,
        };

        // The fused kernel in f32.
        let fused = layer(&w, case.cell, i, u, DType::F32);
        let x32 = var(&x, &[t, b, i], DType::F32);
        let keep32 = keep.as_ref().map(|k| {
            k.clone().map(|m| {
                Tensor::from_vec(m, (b, i), &Device::Cpu)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
            })
        });
        let run = |keep_trace| {
            fused
                .run_fused(
                    x32.as_tensor(),
                    &time_major_mask(&ids, b, t),
                    case.sequences,
                    keep32.as_ref().map(|[f, w]| (f, w)),
                    keep_trace,
                )
                .unwrap()
        };
        let got = run(true);
        assert_eq!(got.dims(), expected.dims(), "{case:?}");
        let err = relative_error(&flat(&got), &flat(&expected));
        assert!(err < 1e-5, "{case:?}: outputs differ by {err:e}");
        // Inference projects a few steps at a time (at 64 rows, 32 steps a chunk: the longest
        // case crosses a chunk in both directions) and keeps nothing: the same outputs.
        let err = relative_error(&flat(&run(false)), &flat(&got));
        assert!(err < 1e-6, "{case:?}: inference differs by {err:e}");

        let loss = |out: &Tensor, dtype| {
            let c = Tensor::from_vec(coefficients.clone(), out.shape(), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            out.mul(&c).unwrap().sum_all().unwrap()
        };
        let g64 = loss(&expected, DType::F64).backward().unwrap();
        let g32 = loss(&got, DType::F32).backward().unwrap();
        let mut pairs = vec![("input".to_string(), x64.clone(), x32.clone())];
        for (dir, r, f) in [
            ("forward", &reference.forward, &fused.forward),
            ("backward", &reference.backward, &fused.backward),
        ] {
            for ((name, rv), (_, fv)) in r.vars().into_iter().zip(f.vars()) {
                pairs.push((format!("{dir}.{name}"), rv.clone(), fv.clone()));
            }
        }
        for (name, r, f) in pairs {
            let expected = flat(g64.get(r.as_tensor()).unwrap());
            let got = flat(g32.get(f.as_tensor()).unwrap());
            let err = relative_error(&got, &expected);
            assert!(
                err < 1e-4,
                "{case:?}: gradient of {name} differs by {err:e}"
            );
        }
    }

    #[test]
    fn fused_layer_matches_the_reference_layer_outputs_and_gradients() {
        let shapes = [
            (1, 1, 1, 1),
            (5, 3, 4, 3),
            (7, 4, 6, 17),
            (9, 6, 10, 33),
            (4, 2, 3, 16),
            (37, 64, 12, 16),
        ];
        check_every_case(Cell::Lstm, &shapes, 0);
    }

    #[test]
    fn fused_gru_layer_matches_the_reference_gru_outputs_and_gradients() {
        let shapes = [
            (1, 1, 1, 1),
            (5, 3, 4, 3),
            (7, 4, 6, 17),
            (9, 6, 10, 33),
            (37, 64, 12, 16),
        ];
        check_every_case(Cell::Gru, &shapes, 1000);
    }

    /// Every padding, output form and dropout setting for each `(time, batch, input, units)`,
    /// on every version of the CPU kernels this CPU can run (AVX-512 is skipped, and said so,
    /// where the CPU lacks it; AVX2 and the portable version run on any x86-64 CI machine).
    fn check_every_case(cell: Cell, shapes: &[(usize, usize, usize, usize)], seed: u64) {
        for version in InstructionSet::ALL {
            let ran = isa::with_instruction_set(version, || check_shapes(cell, shapes, seed));
            if ran.is_none() {
                let name = version.name();
                eprintln!("{cell:?}: this CPU cannot run the {name} kernels; not checked");
            }
        }
    }

    fn check_shapes(cell: Cell, shapes: &[(usize, usize, usize, usize)], mut seed: u64) {
        for &shape in shapes {
            for case in cases(cell, shape) {
                seed += 1;
                check(&case, seed);
            }
        }
    }

    /// Every padding, output form and dropout setting of one `(time, batch, input, units)`.
    fn cases(
        cell: Cell,
        (time, batch, input, units): (usize, usize, usize, usize),
    ) -> impl Iterator<Item = Case> {
        [Padding::None, Padding::Post, Padding::Pre, Padding::Holes]
            .into_iter()
            .flat_map(|padding| [true, false].map(|sequences| (padding, sequences)))
            .flat_map(|(padding, sequences)| {
                [false, true].map(|dropout| (padding, sequences, dropout))
            })
            .map(move |(padding, sequences, dropout)| Case {
                cell,
                time,
                batch,
                input,
                units,
                padding,
                sequences,
                dropout,
            })
    }

    /// A pool of 4 gives each direction 2 threads, so a step of 100 rows at U = 64 runs in
    /// two parts. Split, the op must still match the reference layer in every case and
    /// instruction set, and give exactly what it gives on one thread.
    #[test]
    fn steps_split_across_threads_match_the_reference_layer_and_one_thread() {
        let (time, batch, input, units) = (4, 100, 5, 64);
        let split_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for (cell, seed) in [(Cell::Lstm, 2000), (Cell::Gru, 3000)] {
            let work_per_row = units * cell.gates() * units;
            assert_eq!(
                split_pool.install(|| split::row_parts(
                    batch,
                    work_per_row,
                    split::direction_threads()
                )),
                [0..48, 48..100],
                "{cell:?}: the test no longer splits its steps"
            );
            split_pool.install(|| check_every_case(cell, &[(time, batch, input, units)], seed));
            for case in cases(cell, (time, batch, input, units)) {
                let split = split_pool.install(|| fused_outputs_and_gradients(&case, seed));
                let whole = one_thread.install(|| fused_outputs_and_gradients(&case, seed));
                assert!(
                    split == whole,
                    "{case:?}: split steps differ from one thread's"
                );
            }
        }
    }

    /// The fused op's outputs, then the gradients of its input and of every weight, of a
    /// weighted sum of its outputs.
    fn fused_outputs_and_gradients(case: &Case, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (t, b, i, u) = (case.time, case.batch, case.input, case.units);
        let ids = ids(case, &mut rng);
        let x = var(&uniform(&mut rng, t * b * i, 1.0), &[t, b, i], DType::F32);
        let w = [
            weights(&mut rng, case.cell, i, u),
            weights(&mut rng, case.cell, i, u),
        ];
        let keep: [Tensor; 2] = [0, 1].map(|_| {
            let mask: Vec<f32> = (0..b * i)
                .map(|_| if rng.random_bool(0.3) { 0.0 } else { 1.0 / 0.7 })
                .collect();
            Tensor::from_vec(mask, (b, i), &Device::Cpu).unwrap()
        });
        let fused = layer(&w, case.cell, i, u, DType::F32);
        let keep = case.dropout.then_some((&keep[0], &keep[1]));
        let mask = time_major_mask(&ids, b, t);
        let out = fused
            .run_fused(x.as_tensor(), &mask, case.sequences, keep, true)
            .unwrap();
        let coefficients = uniform(&mut rng, out.elem_count(), 1.0);
        let c = Tensor::from_vec(coefficients, out.shape(), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let grads = out.mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
        let mut values = vec![flat(&out), flat(grads.get(x.as_tensor()).unwrap())];
        for direction in [&fused.forward, &fused.backward] {
            for (_, v) in direction.vars() {
                values.push(flat(grads.get(v.as_tensor()).unwrap()));
            }
        }
        values
    }

    #[test]
    fn inference_keeps_no_trace_and_refuses_backward() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let w = [
            weights(&mut rng, Cell::Lstm, 2, 3),
            weights(&mut rng, Cell::Lstm, 2, 3),
        ];
        let fused = layer(&w, Cell::Lstm, 2, 3, DType::F32);
        let x = Tensor::ones((2, 1, 2), DType::F32, &Device::Cpu).unwrap();
        let out = fused.run_fused(&x, &[1, 1], false, None, false).unwrap();
        let err = out.sum_all().unwrap().backward().unwrap_err().to_string();
        assert!(err.contains("no forward trace"), "{err}");
    }
}
