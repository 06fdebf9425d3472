//! The elementwise gate passes of the LSTM and GRU cells, vectorised.
//!
//! std's `exp` and `tanh` are scalar libm calls: with them the gate pass of one step cost about
//! six times the step's recurrent matrix multiply. Here sigmoid and tanh are branch-free
//! polynomials (Cephes' `expf` and `tanhf`, within a few ulp of std) evaluated over fixed
//! chunks of floats, a loop shape the compiler turns into AVX2 or AVX-512 code. The forward
//! math runs per chunk inside the recurrent kernel's epilogue ([`super::kernel`]); the backward
//! passes run over a whole step, each compiled once per instruction set and picked by the op's
//! [`InstructionSet`], so the binary still runs on a machine without AVX.

use super::isa::InstructionSet;

/// Floats per chunk of a whole-step pass: one AVX-512 register, two AVX2 registers.
pub const LANES: usize = 16;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so `x − n·ln 2` keeps full precision (Cephes' C1, C2).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding 1.5·2²³ rounds to an integer and leaves that integer in the low mantissa bits.
const ROUNDING_MAGIC: f32 = 12_582_912.0;
const ROUNDING_MAGIC_BITS: i32 = 0x4B40_0000;

/// `e^x`, Cephes `expf`. The input is clamped so that `2^n` stays a normal float.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2_E + ROUNDING_MAGIC;
    let n = shifted - ROUNDING_MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * (r * r) + r + 1.0;
    let exponent = (shifted.to_bits() as i32)
        .wrapping_sub(ROUNDING_MAGIC_BITS)
        .wrapping_add(127);
    y * f32::from_bits((exponent << 23) as u32)
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Cephes `tanhf`: an odd polynomial near zero (where `1 − 2/(e^2x + 1)` would cancel), the
/// exponential form elsewhere.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let near_zero =
        ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z
            - 3.333_328e-1)
            * z
            * x
            + x;
    let far = (1.0 - 2.0 / (exp(2.0 * a) + 1.0)).copysign(x);
    if a < 0.625 {
        near_zero
    } else {
        far
    }
}

#[inline(always)]
fn load<const N: usize>(src: &[f32], n: usize) -> [f32; N] {
    let mut chunk = [0.0; N];
    if n == N {
        chunk.copy_from_slice(&src[..N]);
    } else {
        chunk[..n].copy_from_slice(&src[..n]);
    }
    chunk
}

#[inline(always)]
fn store<const N: usize>(dst: &mut [f32], chunk: &[f32; N], n: usize) {
    if n == N {
        dst[..N].copy_from_slice(chunk);
    } else {
        dst[..n].copy_from_slice(&chunk[..n]);
    }
}

/// One forward step of one direction, over the whole batch.
pub struct ForwardStep<'a> {
    /// `[batch, 4U]`: pre-activations in, activations (i, f, g, o) out.
    pub gates: &'a mut [f32],
    /// `[batch, U]` cell and hidden state, updated on real rows.
    pub c: &'a mut [f32],
    pub h: &'a mut [f32],
    /// `[batch, U]`: the cell state before the step and `tanh` of the new one, for backward
    /// (empty without `trace`).
    pub c_prev: &'a mut [f32],
    pub tanh_c: &'a mut [f32],
    /// `[batch, U]`: the step's output, left untouched (zero) on padded rows.
    pub out: &'a mut [f32],
    /// `[batch]`: 1 for a real token.
    pub mask: &'a [u8],
    pub units: usize,
    /// Whether backward will follow: without it the activations and cell states are not
    /// written back (`gates` keeps its pre-activations), which is most of the step's stores.
    pub trace: bool,
}

/// One backward step of one direction, over the whole batch.
pub struct BackwardStep<'a> {
    /// `[batch, 4U]` activations saved by the forward step.
    pub gates: &'a [f32],
    pub c_prev: &'a [f32],
    pub tanh_c: &'a [f32],
    /// `[batch, U]`: the gradient reaching the state after this step.
    pub dh: &'a [f32],
    /// `[batch, U]`: in, the gradient reaching the cell after this step; out, before it.
    pub dc: &'a mut [f32],
    /// The gradient of this step's output: rows of `stride` floats, this direction's `U`
    /// values starting at `offset`.
    pub d_out: Option<(&'a [f32], usize, usize)>,
    /// `[batch, 4U]` out: the gradient of the pre-activations (zero on padded rows).
    pub dz: &'a mut [f32],
    pub mask: &'a [u8],
    pub units: usize,
}

/// One row of an LSTM forward step, for [`lstm_forward_chunk`]; each slice is the row's own.
pub struct LstmRow<'a> {
    /// `[4U]`: the input projection with its bias in, activations (i, f, g, o) out.
    pub z: &'a mut [f32],
    /// The chunk's `h·R` for the four gates: `n` values each, added to `z`'s.
    pub recurrent: [&'a [f32]; 4],
    /// `[U]` each, as in [`ForwardStep`].
    pub c: &'a mut [f32],
    pub h: &'a mut [f32],
    pub c_prev: &'a mut [f32],
    pub tanh_c: &'a mut [f32],
    pub out: &'a mut [f32],
    pub units: usize,
}

/// The LSTM cell update of units `start..start + n` (`n ≤ N`) of one real row; with `TRACE`
/// the activations go back into `z` and the cell states into `c_prev` and `tanh_c`.
#[inline(always)]
pub fn lstm_forward_chunk<const N: usize, const TRACE: bool>(row: LstmRow, start: usize, n: usize) {
    let LstmRow {
        z,
        recurrent: [ri, rf, rg, ro],
        c,
        h,
        c_prev,
        tanh_c,
        out,
        units: u,
    } = row;
    let mut i: [f32; N] = load(&z[start..], n);
    let mut f: [f32; N] = load(&z[u + start..], n);
    let mut g: [f32; N] = load(&z[2 * u + start..], n);
    let mut o: [f32; N] = load(&z[3 * u + start..], n);
    let (ri, rf, rg, ro): ([f32; N], [f32; N], [f32; N], [f32; N]) =
        (load(ri, n), load(rf, n), load(rg, n), load(ro, n));
    let old: [f32; N] = load(&c[start..], n);
    let mut new_c = [0.0; N];
    let mut new_tanh = [0.0; N];
    let mut new_h = [0.0; N];
    for l in 0..N {
        i[l] = sigmoid(i[l] + ri[l]);
        f[l] = sigmoid(f[l] + rf[l]);
        g[l] = tanh(g[l] + rg[l]);
        o[l] = sigmoid(o[l] + ro[l]);
        new_c[l] = f[l] * old[l] + i[l] * g[l];
        new_tanh[l] = tanh(new_c[l]);
        new_h[l] = o[l] * new_tanh[l];
    }
    if TRACE {
        store(&mut z[start..], &i, n);
        store(&mut z[u + start..], &f, n);
        store(&mut z[2 * u + start..], &g, n);
        store(&mut z[3 * u + start..], &o, n);
        store(&mut c_prev[start..], &old, n);
        store(&mut tanh_c[start..], &new_tanh, n);
    }
    store(&mut c[start..], &new_c, n);
    store(&mut h[start..], &new_h, n);
    store(&mut out[start..], &new_h, n);
}

#[inline(always)]
fn backward_body(s: BackwardStep) {
    let u = s.units;
    for (row, &real) in s.mask.iter().enumerate() {
        if real == 0 {
            continue;
        }
        let gates = &s.gates[row * 4 * u..(row + 1) * 4 * u];
        let dz = &mut s.dz[row * 4 * u..(row + 1) * 4 * u];
        let state = row * u..(row + 1) * u;
        let (c_prev, tanh_c) = (&s.c_prev[state.clone()], &s.tanh_c[state.clone()]);
        let (dh, dc) = (&s.dh[state.clone()], &mut s.dc[state]);
        let d_out = s
            .d_out
            .map(|(grad, stride, offset)| &grad[row * stride + offset..row * stride + offset + u]);
        let mut start = 0;
        while start < u {
            let n = LANES.min(u - start);
            let i = load::<LANES>(&gates[start..], n);
            let f = load::<LANES>(&gates[u + start..], n);
            let g = load::<LANES>(&gates[2 * u + start..], n);
            let o = load::<LANES>(&gates[3 * u + start..], n);
            let cp = load::<LANES>(&c_prev[start..], n);
            let tc = load::<LANES>(&tanh_c[start..], n);
            let mut dh_new = load::<LANES>(&dh[start..], n);
            if let Some(d) = d_out {
                let d = load::<LANES>(&d[start..], n);
                for l in 0..LANES {
                    dh_new[l] += d[l];
                }
            }
            let mut dc_chunk = load::<LANES>(&dc[start..], n);
            let (mut di, mut df, mut dg, mut d_o) =
                ([0.0; LANES], [0.0; LANES], [0.0; LANES], [0.0; LANES]);
            for l in 0..LANES {
                let dc_new = dc_chunk[l] + dh_new[l] * o[l] * (1.0 - tc[l] * tc[l]);
                d_o[l] = dh_new[l] * tc[l] * o[l] * (1.0 - o[l]);
                di[l] = dc_new * g[l] * i[l] * (1.0 - i[l]);
                dg[l] = dc_new * i[l] * (1.0 - g[l] * g[l]);
                df[l] = dc_new * cp[l] * f[l] * (1.0 - f[l]);
                dc_chunk[l] = dc_new * f[l];
            }
            store(&mut dz[start..], &di, n);
            store(&mut dz[u + start..], &df, n);
            store(&mut dz[2 * u + start..], &dg, n);
            store(&mut dz[3 * u + start..], &d_o, n);
            store(&mut dc[start..], &dc_chunk, n);
            start += n;
        }
    }
}

/// One forward step of a GRU direction (Keras `reset_after=True`), over the whole batch.
pub struct GruForwardStep<'a> {
    /// `[batch, 3U]`: in, the input projection with the input bias (update, reset, candidate);
    /// out, the activations `z`, `r`, `ĥ`.
    pub gates: &'a mut [f32],
    /// `[3U]`: the recurrent bias.
    pub recurrent_bias: &'a [f32],
    /// `[batch, U]`: the state, updated on real rows.
    pub h: &'a mut [f32],
    /// `[batch, U]` out: the candidate's recurrent part `h·R_h + b'_h`, before the reset
    /// gate scales it (backward needs it for the reset gate's gradient).
    pub candidate_recurrent: &'a mut [f32],
    /// `[batch, U]`: the step's output, left untouched (zero) on padded rows.
    pub out: &'a mut [f32],
    pub mask: &'a [u8],
    pub units: usize,
}

/// One backward step of a GRU direction, over the whole batch.
pub struct GruBackwardStep<'a> {
    /// `[batch, 3U]` activations `z`, `r`, `ĥ` saved by the forward step.
    pub gates: &'a [f32],
    /// `[batch, U]`: the state before the step and the candidate's recurrent part.
    pub h_prev: &'a [f32],
    pub candidate_recurrent: &'a [f32],
    /// `[batch, U]`: in, the gradient reaching the state after this step; out, on real rows,
    /// the part of the gradient before the step that does not go through `R` (`dh ⊙ z`).
    pub dh: &'a mut [f32],
    /// As [`BackwardStep::d_out`].
    pub d_out: Option<(&'a [f32], usize, usize)>,
    /// `[batch, 3U]` out: the gradients of the input projection and of `h·R + b'` (they differ
    /// in the candidate block only); zero on padded rows.
    pub dz_input: &'a mut [f32],
    pub dz_recurrent: &'a mut [f32],
    pub mask: &'a [u8],
    pub units: usize,
}

/// One row of a GRU forward step, for [`gru_forward_chunk`].
pub struct GruRow<'a> {
    /// `[3U]`: the row's input projection with the input bias in, activations out.
    pub z: &'a mut [f32],
    /// The chunk's `h·R` (without the recurrent bias) for the update, reset and candidate
    /// blocks: `n` values each.
    pub recurrent: [&'a [f32]; 3],
    pub recurrent_bias: &'a [f32],
    /// `[U]` each, as in [`GruForwardStep`].
    pub h: &'a mut [f32],
    pub candidate_recurrent: &'a mut [f32],
    pub out: &'a mut [f32],
    pub units: usize,
}

/// The GRU cell update (Keras `reset_after=True`) of units `start..start + n` (`n ≤ N`) of one
/// real row.
#[inline(always)]
pub fn gru_forward_chunk<const N: usize>(row: GruRow, start: usize, n: usize) {
    let GruRow {
        z,
        recurrent: [ru, rr, rc],
        recurrent_bias: b,
        h,
        candidate_recurrent,
        out,
        units: u,
    } = row;
    let mut update: [f32; N] = load(&z[start..], n);
    let mut reset: [f32; N] = load(&z[u + start..], n);
    let mut candidate: [f32; N] = load(&z[2 * u + start..], n);
    let (ru, rr, rc): ([f32; N], [f32; N], [f32; N]) = (load(ru, n), load(rr, n), load(rc, n));
    let (bu, br, bc): ([f32; N], [f32; N], [f32; N]) = (
        load(&b[start..], n),
        load(&b[u + start..], n),
        load(&b[2 * u + start..], n),
    );
    let old: [f32; N] = load(&h[start..], n);
    let mut hc = [0.0; N];
    let mut new_h = [0.0; N];
    for l in 0..N {
        update[l] = sigmoid(update[l] + ru[l] + bu[l]);
        reset[l] = sigmoid(reset[l] + rr[l] + br[l]);
        hc[l] = rc[l] + bc[l];
        candidate[l] = tanh(candidate[l] + reset[l] * hc[l]);
        new_h[l] = candidate[l] + update[l] * (old[l] - candidate[l]);
    }
    store(&mut z[start..], &update, n);
    store(&mut z[u + start..], &reset, n);
    store(&mut z[2 * u + start..], &candidate, n);
    store(&mut candidate_recurrent[start..], &hc, n);
    store(&mut h[start..], &new_h, n);
    store(&mut out[start..], &new_h, n);
}

#[inline(always)]
fn gru_backward_body(s: GruBackwardStep) {
    let u = s.units;
    for (row, &real) in s.mask.iter().enumerate() {
        if real == 0 {
            continue;
        }
        let gates = &s.gates[row * 3 * u..(row + 1) * 3 * u];
        let dx = &mut s.dz_input[row * 3 * u..(row + 1) * 3 * u];
        let dr = &mut s.dz_recurrent[row * 3 * u..(row + 1) * 3 * u];
        let state = row * u..(row + 1) * u;
        let (h_prev, hc) = (
            &s.h_prev[state.clone()],
            &s.candidate_recurrent[state.clone()],
        );
        let dh = &mut s.dh[state];
        let d_out = s
            .d_out
            .map(|(grad, stride, offset)| &grad[row * stride + offset..row * stride + offset + u]);
        let mut start = 0;
        while start < u {
            let n = LANES.min(u - start);
            let update = load::<LANES>(&gates[start..], n);
            let reset = load::<LANES>(&gates[u + start..], n);
            let candidate = load::<LANES>(&gates[2 * u + start..], n);
            let (hp, hcs) = (
                load::<LANES>(&h_prev[start..], n),
                load::<LANES>(&hc[start..], n),
            );
            let mut dh_new = load::<LANES>(&dh[start..], n);
            if let Some(d) = d_out {
                let d = load::<LANES>(&d[start..], n);
                for l in 0..LANES {
                    dh_new[l] += d[l];
                }
            }
            let (mut du, mut drx, mut dcx, mut dch, mut dh_direct) = (
                [0.0; LANES],
                [0.0; LANES],
                [0.0; LANES],
                [0.0; LANES],
                [0.0; LANES],
            );
            for l in 0..LANES {
                // h' = ĥ + z ⊙ (h − ĥ)
                let d_candidate = dh_new[l] * (1.0 - update[l]);
                du[l] = dh_new[l] * (hp[l] - candidate[l]) * update[l] * (1.0 - update[l]);
                dh_direct[l] = dh_new[l] * update[l];
                // ĥ = tanh(x_h + r ⊙ hc)
                dcx[l] = d_candidate * (1.0 - candidate[l] * candidate[l]);
                dch[l] = dcx[l] * reset[l];
                drx[l] = dcx[l] * hcs[l] * reset[l] * (1.0 - reset[l]);
            }
            store(&mut dx[start..], &du, n);
            store(&mut dx[u + start..], &drx, n);
            store(&mut dx[2 * u + start..], &dcx, n);
            store(&mut dr[start..], &du, n);
            store(&mut dr[u + start..], &drx, n);
            store(&mut dr[2 * u + start..], &dch, n);
            store(&mut dh[start..], &dh_direct, n);
            start += n;
        }
    }
}

/// Defines a whole-step pass that runs the version of `isa`.
macro_rules! multiversioned {
    ($name:ident, $step:ident, $body:ident) => {
        pub fn $name(isa: InstructionSet, step: $step) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512(step: $step) {
                    $body(step)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2(step: $step) {
                    $body(step)
                }
                match isa {
                    // SAFETY: an op's instruction set comes from `isa::instruction_set` or
                    // `isa::with_instruction_set`, which only hand out what the CPU has.
                    InstructionSet::Avx512 => return unsafe { avx512(step) },
                    InstructionSet::Avx2 => return unsafe { avx2(step) },
                    InstructionSet::Portable => {}
                }
            }
            $body(step)
        }
    };
}

multiversioned!(backward_step, BackwardStep, backward_body);
multiversioned!(gru_backward_step, GruBackwardStep, gru_backward_body);

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-200_000..=200_000)
            .map(|k| k as f32 * 1e-4)
            .chain([-1e30, -100.0, -88.5, 88.5, 100.0, 1e30, 1e-30, -1e-30, 0.0])
    }

    /// Each instruction set's backward passes compute what the plain build of the same code
    /// computes, and leave padded rows alone.
    #[test]
    fn every_instruction_set_agrees_with_the_plain_backward_passes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (batch, units) = (5, 37);
        let mut values =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-4.0..4.0)).collect() };
        let mask = [1, 0, 1, 1, 0];
        let lstm_gates = values(batch * 4 * units);
        let gru_gates = values(batch * 3 * units);
        let state = values(batch * units);
        let d_out = values(batch * 2 * units);
        let dh = values(batch * units);
        let lstm = |isa: Option<InstructionSet>| {
            let (mut dc, mut dz) = (state.clone(), vec![0.0; batch * 4 * units]);
            let step = BackwardStep {
                gates: &lstm_gates,
                c_prev: &state,
                tanh_c: &dh,
                dh: &dh,
                dc: &mut dc,
                d_out: Some((&d_out, 2 * units, units)),
                dz: &mut dz,
                mask: &mask,
                units,
            };
            match isa {
                Some(isa) => backward_step(isa, step),
                None => backward_body(step),
            }
            [dc, dz]
        };
        let gru = |isa: Option<InstructionSet>| {
            let mut dh = dh.clone();
            let (mut dx, mut dr) = (vec![0.0; batch * 3 * units], vec![0.0; batch * 3 * units]);
            let step = GruBackwardStep {
                gates: &gru_gates,
                h_prev: &state,
                candidate_recurrent: &d_out[..batch * units],
                dh: &mut dh,
                d_out: Some((&d_out, 2 * units, units)),
                dz_input: &mut dx,
                dz_recurrent: &mut dr,
                mask: &mask,
                units,
            };
            match isa {
                Some(isa) => gru_backward_step(isa, step),
                None => gru_backward_body(step),
            }
            [dh, dx, dr]
        };
        for isa in InstructionSet::ALL.into_iter().filter(|i| i.supported()) {
            let pairs = lstm(Some(isa)).into_iter().zip(lstm(None));
            for (a, b) in pairs.chain(gru(Some(isa)).into_iter().zip(gru(None))) {
                for (x, y) in a.iter().zip(&b) {
                    assert!(
                        (x - y).abs() <= 1e-6 * (1.0 + y.abs()),
                        "{isa:?}: {x} vs {y}"
                    );
                }
            }
        }
        // Padded rows: no gradient, and the state's gradient passes through untouched.
        let [dc, dz] = lstm(Some(InstructionSet::Portable));
        assert!(dz[4 * units..8 * units].iter().all(|&v| v == 0.0));
        assert_eq!(dc[units..2 * units], state[units..2 * units]);
        let [dh_after, ..] = gru(Some(InstructionSet::Portable));
        assert_eq!(dh_after[units..2 * units], dh[units..2 * units]);
    }

    #[test]
    fn sigmoid_matches_std_within_a_few_ulp() {
        for x in grid() {
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            let got = sigmoid(x) as f64;
            assert!(
                (got - exact).abs() <= 3e-7 * exact.max(1e-30) + 1e-38,
                "sigmoid({x}) = {got}, expected {exact}"
            );
        }
    }

    #[test]
    fn tanh_matches_std_within_a_few_ulp() {
        for x in grid() {
            let exact = (x as f64).tanh();
            let got = tanh(x) as f64;
            assert!(
                (got - exact).abs() <= 3e-7 * exact.abs() + 1e-38,
                "tanh({x}) = {got}, expected {exact}"
            );
        }
    }
}
