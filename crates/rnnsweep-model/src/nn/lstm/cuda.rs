//! The fused recurrent op on a CUDA device: the same op as the CPU kernel ([`super::fused`]),
//! with the same inputs, outputs, row order and masking, so `lstm_impl: auto` runs one layer
//! type on either device and a model moves between them unchanged.
//!
//! Per step and direction it launches one cuBLAS multiply (`h·R` over the step's active rows,
//! added into the gate buffer for an LSTM, into its own buffer for a GRU) and one gate kernel
//! (`kernels.cu`), forward and backward; the reference layer launches 13 kernels forward and
//! 60–90 backward for the same step. Everything the steps need is allocated and uploaded once
//! per call, and nothing is read back: the row plan (lengths, active prefixes, which steps are
//! all padding) is the host's, from the mask the op was built with.
//!
//! The trace kept for backward stays on the device. The recurrent weight gradient is one
//! multiply over all steps at the end (padded rows have zero `dz`, so they add nothing), and
//! each bias gradient one multiply by a vector of ones.

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, CudaViewMut, LaunchArgs, PushKernelArg,
};
use candle_core::{CudaDevice, CudaStorage, Layout, Shape};

use crate::config::Cell;
use crate::nn::cuda::{gemm, int, kernel, launch, storage, upload, view, zeros, Operand};

/// What the device passes need of the op: its shape and the host's row plan (the same plan as
/// the CPU kernel's, so both devices order rows and skip padding alike).
pub(super) struct Geometry<'a> {
    pub(super) cell: Cell,
    pub(super) time: usize,
    pub(super) batch: usize,
    pub(super) units: usize,
    /// `[T, B]`, 1 for a real token, in the op's row order.
    pub(super) mask: &'a [u8],
    /// `order[i]` is the caller's row at the op's row `i`.
    pub(super) order: &'a [usize],
    /// `[T]`: rows `0..active[t]` take part in step `t`.
    pub(super) active: &'a [usize],
    /// Whether `order` differs from the caller's (else nothing is gathered back).
    pub(super) moves_rows: bool,
    pub(super) return_sequences: bool,
    pub(super) keep_trace: bool,
}

/// What backward needs from one direction's forward pass, on the device.
pub(super) struct DirectionTrace {
    /// `[T, B, G·U]` gate activations.
    gates: CudaSlice<f32>,
    /// `[T, B, U]` the state before each step.
    h_prev: CudaSlice<f32>,
    /// LSTM: the cell before each step and `tanh` of the cell after it; GRU: the candidate's
    /// recurrent part (the second buffer is unused).
    first: CudaSlice<f32>,
    second: CudaSlice<f32>,
}

/// Both directions' traces with the uploaded row plan, kept between forward and backward.
pub(super) struct DeviceTraces {
    directions: [DirectionTrace; 2],
    mask: CudaSlice<u8>,
    order: CudaSlice<u32>,
    inverse: CudaSlice<u32>,
}

struct Plan<'a> {
    op: &'a Geometry<'a>,
    device: &'a CudaDevice,
    gate_width: usize,
    /// `U + K`: the recurrent kernel's rows with its bias rows below.
    recurrent_rows: usize,
}

impl Plan<'_> {
    fn steps(&self, reverse: bool) -> Vec<usize> {
        if reverse {
            (0..self.op.time).rev().collect()
        } else {
            (0..self.op.time).collect()
        }
    }

    /// Step `t` runs on rows `0..n`; `None` when every one of them is padding.
    fn active(&self, t: usize) -> Option<usize> {
        let (batch, n) = (self.op.batch, self.op.active[t]);
        let mask = &self.op.mask[t * batch..t * batch + n];
        mask.contains(&1).then_some(n)
    }

    fn direction_offset(&self, direction: usize) -> usize {
        direction * self.recurrent_rows * self.gate_width
    }

    /// `dst[t, i] = src[t, index[i]]` (+ `bias`), `steps × batch` rows of `width`.
    fn gather(
        &self,
        mut dst: CudaViewMut<'_, f32>,
        src: CudaView<'_, f32>,
        index: &CudaSlice<u32>,
        bias: Option<&CudaView<'_, f32>>,
        steps: usize,
        width: usize,
    ) -> candle_core::Result<()> {
        let func = kernel(self.device, "rnnsweep_gather_rows")?;
        let mut args = func.builder();
        let (use_bias, steps_i, batch_i, width_i) = (
            i32::from(bias.is_some()),
            int(steps)?,
            int(self.op.batch)?,
            int(width)?,
        );
        args.arg(&mut dst);
        args.arg(&src);
        args.arg(index);
        // The kernel reads the bias only when told to; any valid pointer stands in otherwise.
        match bias {
            Some(b) => args.arg(b),
            None => args.arg(index),
        };
        args.arg(&use_bias);
        args.arg(&steps_i);
        args.arg(&batch_i);
        args.arg(&width_i);
        launch(args, steps * self.op.batch * width)
    }
}

fn order_u32(order: &[usize]) -> Vec<u32> {
    order.iter().map(|&r| r as u32).collect()
}

/// `target = h[..n]·R + beta·target` (`n × G·U`): one step's recurrent multiply.
fn times_recurrent(
    device: &CudaDevice,
    h: &CudaSlice<f32>,
    kernel_r: &CudaView<'_, f32>,
    (n, units, gate_width): (usize, usize, usize),
    beta: f32,
    target: &mut CudaViewMut<'_, f32>,
) -> candle_core::Result<()> {
    gemm(
        device,
        (n, gate_width, units),
        Operand {
            data: &h.slice(..n * units),
            leading: units,
            transposed: false,
        },
        Operand {
            data: kernel_r,
            leading: gate_width,
            transposed: false,
        },
        beta,
        target,
        gate_width,
    )
}

/// The arguments every step kernel shares: where one direction's half of a `[.., B, 2U]`
/// buffer (the output, or its gradient) lies, and the step's geometry after the mask.
struct StepArgs {
    half_step: i64,
    half_stride: i32,
    half_offset: i32,
    t: i32,
    n: i32,
    batch: i32,
    units: i32,
}

impl StepArgs {
    /// `per_step`: the half buffer has a `[B, 2U]` block per step (else one for all steps).
    fn new(
        op: &Geometry<'_>,
        direction: usize,
        per_step: bool,
        t: usize,
        n: usize,
    ) -> candle_core::Result<Self> {
        let half_step = if per_step {
            (op.batch * 2 * op.units) as i64
        } else {
            0
        };
        Ok(Self {
            half_step,
            half_stride: int(2 * op.units)?,
            half_offset: int(direction * op.units)?,
            t: int(t)?,
            n: int(n)?,
            batch: int(op.batch)?,
            units: int(op.units)?,
        })
    }

    fn push_half<'a>(&'a self, args: &mut LaunchArgs<'a>) {
        args.arg(&self.half_step);
        args.arg(&self.half_stride);
        args.arg(&self.half_offset);
    }

    fn push_geometry<'a>(&'a self, args: &mut LaunchArgs<'a>, mask: &'a CudaSlice<u8>) {
        args.arg(mask);
        args.arg(&self.t);
        args.arg(&self.n);
        args.arg(&self.batch);
        args.arg(&self.units);
    }
}

/// The forward pass on the device: `inputs` are the op's three (projections and recurrent
/// kernels). Returns the output storage and shape, and the trace when the op keeps one.
pub(super) fn forward(
    op: &Geometry<'_>,
    inputs: [(&CudaStorage, &Layout); 3],
) -> candle_core::Result<(CudaStorage, Shape, Option<DeviceTraces>)> {
    let device = &inputs[0].0.device;
    let (time, batch, units) = (op.time, op.batch, op.units);
    let gate_width = op.cell.gates() * units;
    let plan = Plan {
        op,
        device,
        gate_width,
        recurrent_rows: units + op.cell.bias_rows(),
    };
    let projections = [
        view("the forward projection", inputs[0].0, inputs[0].1)?,
        view("the backward projection", inputs[1].0, inputs[1].1)?,
    ];
    let recurrent = view("the recurrent kernels", inputs[2].0, inputs[2].1)?;
    let mut inverse = vec![0u32; batch];
    for (i, &r) in op.order.iter().enumerate() {
        inverse[r] = i as u32;
    }
    let order = upload(device, &order_u32(op.order))?;
    let inverse = upload(device, &inverse)?;
    let mask = upload(device, op.mask)?;
    let sequences = op.return_sequences;
    let (out_steps, shape): (usize, Shape) = if sequences {
        (time, (time, batch, 2 * units).into())
    } else {
        (1, (batch, 2 * units).into())
    };
    // Written in the op's row order; a padded step leaves its zeros.
    let mut merged = zeros(device, out_steps * batch * 2 * units)?;
    let mut traces = Vec::with_capacity(2);
    for (direction, projection) in projections.iter().enumerate() {
        let reverse = direction == 1;
        let offset = plan.direction_offset(direction);
        let kernel_r = recurrent.slice(offset..offset + units * gate_width);
        let input_bias =
            recurrent.slice(offset + units * gate_width..offset + (units + 1) * gate_width);
        let mut gates = zeros(device, time * batch * gate_width)?;
        plan.gather(
            gates.slice_mut(..),
            projection.slice(..),
            &order,
            Some(&input_bias),
            time,
            gate_width,
        )?;
        let mut h = zeros(device, batch * units)?;
        let mut h_prev = zeros(device, time * batch * units)?;
        let mut first = zeros(device, time * batch * units)?;
        // A GRU keeps one buffer of its own; the LSTM two.
        let second_len = match op.cell {
            Cell::Lstm => time * batch * units,
            Cell::Gru => 1,
        };
        let mut second = zeros(device, second_len)?;
        match op.cell {
            Cell::Lstm => {
                let mut c = zeros(device, batch * units)?;
                let func = kernel(device, "rnnsweep_lstm_forward_step")?;
                for t in plan.steps(reverse) {
                    let Some(n) = plan.active(t) else { continue };
                    let step = t * batch * gate_width;
                    let mut target = gates.slice_mut(step..step + n * gate_width);
                    times_recurrent(
                        device,
                        &h,
                        &kernel_r,
                        (n, units, gate_width),
                        1.0,
                        &mut target,
                    )?;
                    let at = StepArgs::new(op, direction, sequences, t, n)?;
                    let mut args = func.builder();
                    args.arg(&mut gates);
                    args.arg(&mut c);
                    args.arg(&mut h);
                    args.arg(&mut h_prev);
                    args.arg(&mut first);
                    args.arg(&mut second);
                    args.arg(&mut merged);
                    at.push_half(&mut args);
                    at.push_geometry(&mut args, &mask);
                    launch(args, n * units)?;
                }
            }
            Cell::Gru => {
                let recurrent_bias = recurrent
                    .slice(offset + (units + 1) * gate_width..offset + (units + 2) * gate_width);
                let mut h_times_r = zeros(device, batch * gate_width)?;
                let func = kernel(device, "rnnsweep_gru_forward_step")?;
                for t in plan.steps(reverse) {
                    let Some(n) = plan.active(t) else { continue };
                    let mut target = h_times_r.slice_mut(..n * gate_width);
                    times_recurrent(
                        device,
                        &h,
                        &kernel_r,
                        (n, units, gate_width),
                        0.0,
                        &mut target,
                    )?;
                    let at = StepArgs::new(op, direction, sequences, t, n)?;
                    let mut args = func.builder();
                    args.arg(&mut gates);
                    args.arg(&h_times_r);
                    args.arg(&recurrent_bias);
                    args.arg(&mut h);
                    args.arg(&mut h_prev);
                    args.arg(&mut first);
                    args.arg(&mut merged);
                    at.push_half(&mut args);
                    at.push_geometry(&mut args, &mask);
                    launch(args, n * units)?;
                }
            }
        }
        traces.push(DirectionTrace {
            gates,
            h_prev,
            first,
            second,
        });
    }
    let out = if op.moves_rows {
        let mut out = zeros(device, out_steps * batch * 2 * units)?;
        plan.gather(
            out.slice_mut(..),
            merged.slice(..),
            &inverse,
            None,
            out_steps,
            2 * units,
        )?;
        out
    } else {
        merged
    };
    let trace = match (op.keep_trace, <[DirectionTrace; 2]>::try_from(traces)) {
        (true, Ok(directions)) => Some(DeviceTraces {
            directions,
            mask,
            order,
            inverse,
        }),
        _ => None,
    };
    Ok((storage(device, out), shape, trace))
}

/// The backward pass on the device. Returns one flat buffer: the forward projection's gradient
/// `[T, B, G·U]`, the backward projection's, then the recurrent kernels' `[2, U + K, G·U]`.
pub(super) fn backward(
    op: &Geometry<'_>,
    traces: &DeviceTraces,
    d_output: (&CudaStorage, &Layout),
    recurrent: (&CudaStorage, &Layout),
) -> candle_core::Result<(CudaStorage, Shape)> {
    let device = &d_output.0.device;
    let (time, batch, units) = (op.time, op.batch, op.units);
    let gate_width = op.cell.gates() * units;
    let plan = Plan {
        op,
        device,
        gate_width,
        recurrent_rows: units + op.cell.bias_rows(),
    };
    let sequences = op.return_sequences;
    let out_steps = if sequences { time } else { 1 };
    let recurrent = view("the recurrent kernels", recurrent.0, recurrent.1)?;
    let d_output = view("the output gradient", d_output.0, d_output.1)?;
    let moves_rows = op.moves_rows;
    // In the op's row order (the order is the identity when no row moves).
    let mut d_output_op = zeros(device, out_steps * batch * 2 * units)?;
    plan.gather(
        d_output_op.slice_mut(..),
        d_output.slice(..),
        &traces.order,
        None,
        out_steps,
        2 * units,
    )?;
    let projection = time * batch * gate_width;
    let total = 2 * projection + 2 * plan.recurrent_rows * gate_width;
    let mut packed = zeros(device, total)?;
    let ones = upload(device, &vec![1.0f32; time * batch])?;
    let (batch_i, units_i, stride_i) = (int(batch)?, int(units)?, int(2 * units)?);
    let has_d_out = i32::from(sequences);
    for (direction, trace) in traces.directions.iter().enumerate() {
        let reverse = direction == 1;
        let offset = plan.direction_offset(direction);
        let kernel_r = recurrent.slice(offset..offset + units * gate_width);
        let mut dz = zeros(device, projection)?;
        let mut dh = zeros(device, batch * units)?;
        let d_offset = int(direction * units)?;
        if !sequences {
            let func = kernel(device, "rnnsweep_copy_columns")?;
            let mut args = func.builder();
            args.arg(&mut dh);
            args.arg(&d_output_op);
            args.arg(&batch_i);
            args.arg(&units_i);
            args.arg(&stride_i);
            args.arg(&d_offset);
            launch(args, batch * units)?;
        }
        // dh += dz_t·Rᵀ over the step's rows, after the gate kernel left dh as it should be
        // without R's part.
        let add_through_kernel =
            |dh: &mut CudaSlice<f32>, dz: &CudaSlice<f32>, t: usize, n: usize| {
                let step = t * batch * gate_width;
                gemm(
                    device,
                    (n, units, gate_width),
                    Operand {
                        data: &dz.slice(step..step + n * gate_width),
                        leading: gate_width,
                        transposed: false,
                    },
                    Operand {
                        data: &kernel_r,
                        leading: gate_width,
                        transposed: true,
                    },
                    1.0,
                    &mut dh.slice_mut(..n * units),
                    units,
                )
            };
        let dz_recurrent = match op.cell {
            Cell::Lstm => {
                let mut dc = zeros(device, batch * units)?;
                let func = kernel(device, "rnnsweep_lstm_backward_step")?;
                for t in plan.steps(!reverse) {
                    let Some(n) = plan.active(t) else { continue };
                    let at = StepArgs::new(op, direction, true, t, n)?;
                    let mut args = func.builder();
                    args.arg(&trace.gates);
                    args.arg(&trace.first);
                    args.arg(&trace.second);
                    args.arg(&mut dh);
                    args.arg(&mut dc);
                    args.arg(&d_output_op);
                    args.arg(&has_d_out);
                    at.push_half(&mut args);
                    args.arg(&mut dz);
                    at.push_geometry(&mut args, &traces.mask);
                    launch(args, n * units)?;
                    add_through_kernel(&mut dh, &dz, t, n)?;
                }
                None
            }
            Cell::Gru => {
                let mut dz_recurrent = zeros(device, projection)?;
                let func = kernel(device, "rnnsweep_gru_backward_step")?;
                for t in plan.steps(!reverse) {
                    let Some(n) = plan.active(t) else { continue };
                    let at = StepArgs::new(op, direction, true, t, n)?;
                    let mut args = func.builder();
                    args.arg(&trace.gates);
                    args.arg(&trace.h_prev);
                    args.arg(&trace.first);
                    args.arg(&mut dh);
                    args.arg(&d_output_op);
                    args.arg(&has_d_out);
                    at.push_half(&mut args);
                    args.arg(&mut dz);
                    args.arg(&mut dz_recurrent);
                    at.push_geometry(&mut args, &traces.mask);
                    launch(args, n * units)?;
                    add_through_kernel(&mut dh, &dz_recurrent, t, n)?;
                }
                Some(dz_recurrent)
            }
        };
        let rows = time * batch;
        let d_recurrent = 2 * projection + offset;
        // d_kernel [U, G·U] = Σₜ hₜ₋₁ᵀ·dzₜ: one multiply over every step's rows.
        gemm(
            device,
            (units, gate_width, rows),
            Operand {
                data: &trace.h_prev,
                leading: units,
                transposed: true,
            },
            Operand {
                data: dz_recurrent.as_ref().unwrap_or(&dz),
                leading: gate_width,
                transposed: false,
            },
            0.0,
            &mut packed.slice_mut(d_recurrent..d_recurrent + units * gate_width),
            gate_width,
        )?;
        // Each bias row's gradient: a row of ones times the gradients it was added to.
        let mut bias_gradients = vec![&dz];
        bias_gradients.extend(dz_recurrent.as_ref());
        for (k, gradient) in bias_gradients.into_iter().enumerate() {
            let row = d_recurrent + (units + k) * gate_width;
            gemm(
                device,
                (1, gate_width, rows),
                Operand {
                    data: &ones,
                    leading: rows,
                    transposed: false,
                },
                Operand {
                    data: gradient,
                    leading: gate_width,
                    transposed: false,
                },
                0.0,
                &mut packed.slice_mut(row..row + gate_width),
                gate_width,
            )?;
        }
        let start = direction * projection;
        let mut target = packed.slice_mut(start..start + projection);
        if moves_rows {
            plan.gather(
                target,
                dz.slice(..),
                &traces.inverse,
                None,
                time,
                gate_width,
            )?;
        } else {
            device.memcpy_dtod(&dz, &mut target)?;
        }
    }
    Ok((storage(device, packed), Shape::from(total)))
}
