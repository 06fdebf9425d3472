//! The recurrent multiply `h·R` of the fused CPU layer: our own register-tiled micro-kernel,
//! with the cell's gate math applied to each output tile while it is hot.
//!
//! A general `gemm` call repacks its right-hand side on every call, and R (U × 4U: 256 KB at
//! U = 128) was repacked on every step of both passes. Here R is packed once per sequence
//! ([`Packed`]) into panels that hold, for one block of [`Simd::LANES`] units, the columns of
//! all of that block's gates side by side. One tile of the product (a few rows × every gate of
//! those units) is then exactly what the cell update needs, so the forward step adds the input
//! projection, applies sigmoid/tanh and updates the cell and hidden state for that tile at once
//! ([`lstm_forward`], [`gru_forward`]), instead of writing the whole gate buffer and reading it
//! back in a second pass. The backward pass uses the same kernel for `dz·Rᵀ` with Rᵀ packed
//! once ([`multiply`]).
//!
//! The kernel is written once over the [`Simd`] trait and compiled three times: AVX-512 and
//! AVX2 (each inside a `#[target_feature]` function, so the trait's `#[inline(always)]`
//! intrinsics inline into it) and a portable version of plain arrays. [`InstructionSet`] picks
//! one per op at run time; tests force each one ([`super::isa::with_instruction_set`]).

use super::gates::{self, ForwardStep, GruForwardStep, GruRow, LstmRow};
use super::isa::InstructionSet;

/// Floats in the widest vector any version uses (AVX-512).
pub const MAX_LANES: usize = 16;

/// The vector operations the kernel needs. Every method is a single instruction (or a short
/// loop for [`Portable`]); callers guarantee the pointers are valid for `LANES` floats.
trait Simd {
    type V: Copy;
    const LANES: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a·b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
}

struct Portable;

impl Simd for Portable {
    type V = [f32; 8];
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self::V {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self::V {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        // SAFETY: the caller guarantees 8 readable floats at `p`.
        unsafe { std::ptr::read_unaligned(p.cast::<[f32; 8]>()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        // SAFETY: the caller guarantees 8 writable floats at `p`.
        unsafe { std::ptr::write_unaligned(p.cast::<[f32; 8]>(), v) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        let mut out = c;
        for l in 0..8 {
            out[l] += a[l] * b[l];
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub(super) struct Avx2;

    // SAFETY (every method): only called from functions compiled with AVX2 and FMA enabled,
    // which run only where `InstructionSet::supported` said the CPU has them; the pointers are
    // the caller's guarantee.
    impl super::Simd for Avx2 {
        type V = __m256;
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
    }

    pub(super) struct Avx512;

    // SAFETY: as for `Avx2`, with AVX-512F.
    impl super::Simd for Avx512 {
        type V = __m512;
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
    }
}

/// A right-hand side packed once for the kernel: `panels` panels, each `depth` rows of
/// `slots` vectors of `lanes` floats, the vectors of one row side by side, so the kernel reads
/// each panel front to back. Which column of the original matrix sits in a slot and lane is the
/// packing's choice ([`Packed::gate_blocks`], [`Packed::transposed`]); lanes past the matrix's
/// last column hold zeros.
pub struct Packed {
    data: Vec<f32>,
    depth: usize,
    slots: usize,
    lanes: usize,
    panels: usize,
    isa: InstructionSet,
}

impl Packed {
    fn build(
        isa: InstructionSet,
        depth: usize,
        slots: usize,
        panels: usize,
        value: impl Fn(usize, usize, usize, usize) -> Option<f32>,
    ) -> Self {
        let lanes = isa.lanes();
        let mut data = Vec::with_capacity(panels * depth * slots * lanes);
        for panel in 0..panels {
            for k in 0..depth {
                for slot in 0..slots {
                    for lane in 0..lanes {
                        data.push(value(panel, k, slot, lane).unwrap_or(0.0));
                    }
                }
            }
        }
        Self {
            data,
            depth,
            slots,
            lanes,
            panels,
            isa,
        }
    }

    /// A recurrent kernel `[U, G·U]` (G gate blocks of U columns) for `h·R`: panel `p` holds
    /// units `p·lanes..(p+1)·lanes` of every gate, gate `g` in slot `g`.
    pub fn gate_blocks(isa: InstructionSet, kernel: &[f32], units: usize, gates: usize) -> Self {
        let lanes = isa.lanes();
        let width = gates * units;
        assert_eq!(kernel.len(), units * width, "recurrent kernel shape");
        Self::build(isa, units, gates, units.div_ceil(lanes), |p, k, g, l| {
            let unit = p * lanes + l;
            (unit < units).then(|| kernel[k * width + g * units + unit])
        })
    }

    /// The transpose `[G·U, U]` of a recurrent kernel `[U, G·U]`, for `dz·Rᵀ`: output columns
    /// (units) in panels of `4·lanes`, four slots of consecutive units.
    pub fn transposed(isa: InstructionSet, kernel: &[f32], units: usize, gates: usize) -> Self {
        const SLOTS: usize = 4;
        let lanes = isa.lanes();
        let width = gates * units;
        assert_eq!(kernel.len(), units * width, "recurrent kernel shape");
        let panels = units.div_ceil(SLOTS * lanes);
        Self::build(isa, width, SLOTS, panels, |p, k, s, l| {
            let unit = (p * SLOTS + s) * lanes + l;
            (unit < units).then(|| kernel[unit * width + k])
        })
    }

    fn panel(&self, panel: usize) -> &[f32] {
        let len = self.depth * self.slots * self.lanes;
        &self.data[panel * len..(panel + 1) * len]
    }
}

/// One row's share of an output tile: `S` vectors (slots), `LANES` of each valid.
type Tile<const S: usize> = [[f32; MAX_LANES]; S];

/// `out[r] = Σₖ a[r·lda + k] · panel[k]` for `MR` rows: the register tile. `MR × S`
/// accumulators stay in registers for the whole depth.
///
/// # Safety
/// `a` must be readable for `MR` rows of `lda` floats (the last `depth` of them at least), `b`
/// for `depth · S · M::LANES` floats; `M`'s instructions must be available.
#[inline(always)]
unsafe fn register_tile<M: Simd, const MR: usize, const S: usize>(
    depth: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    out: &mut [Tile<S>],
) {
    // SAFETY: the caller's bounds; every offset below stays inside them.
    unsafe {
        let mut acc = [[M::zero(); S]; MR];
        let mut bp = b;
        let mut ap = a;
        for _ in 0..depth {
            // MR broadcasts held, one panel vector at a time: MR·S + MR + 1 registers, which
            // is what fits (loading all S vectors first spills an accumulator every step).
            let mut av = [M::zero(); MR];
            for (r, v) in av.iter_mut().enumerate() {
                *v = M::splat(*ap.add(r * lda));
            }
            for s in 0..S {
                let b = M::load(bp.add(s * M::LANES));
                for (row, &a) in acc.iter_mut().zip(&av) {
                    row[s] = M::fma(a, b, row[s]);
                }
            }
            bp = bp.add(S * M::LANES);
            ap = ap.add(1);
        }
        for (row, tile) in acc.iter().zip(out.iter_mut()) {
            for (v, lanes) in row.iter().zip(tile.iter_mut()) {
                M::store(lanes.as_mut_ptr(), *v);
            }
        }
    }
}

/// `a [rows × depth] (row stride lda) · packed`, handing each row's tile of each panel to
/// `epilogue(row, panel, tile)`. Rows go in groups of [`GROUP_BLOCKS`] register blocks, each
/// group through every panel. Before a block of rows is multiplied, `ahead(row, panel)` is
/// called for each row of the next block, so the epilogue's memory can be fetched while the
/// block computes.
#[inline(always)]
fn multiply_tiles<M: Simd, const S: usize, const MR: usize>(
    rows: usize,
    a: &[f32],
    lda: usize,
    packed: &Packed,
    ahead: impl Fn(usize, usize),
    mut epilogue: impl FnMut(usize, usize, &Tile<S>),
) {
    let depth = packed.depth;
    assert!(
        packed.slots == S && packed.lanes == M::LANES && MR <= 8,
        "packed for another kernel"
    );
    if rows == 0 || packed.panels == 0 {
        return;
    }
    assert!(
        lda >= depth && a.len() >= (rows - 1) * lda + depth,
        "left-hand side too short"
    );
    let mut tiles = [[[0.0; MAX_LANES]; S]; MR];
    let group = GROUP_BLOCKS * MR;
    for first in (0..rows).step_by(group) {
        let end = (first + group).min(rows);
        for panel in 0..packed.panels {
            let b = packed.panel(panel).as_ptr();
            let mut row = first;
            while row < end {
                let block = MR.min(end - row);
                let next_block = if row + block < end {
                    (row + block, panel)
                } else {
                    (first, panel + 1)
                };
                for next in next_block.0..(next_block.0 + MR).min(end) {
                    ahead(next, next_block.1.min(packed.panels - 1));
                }
                let a_block = a[row * lda..].as_ptr();
                let out = &mut tiles[..block];
                // SAFETY: rows `row..row + block` of `a` are in bounds (asserted above), the panel
                // holds `depth · S · LANES` floats, `out` has `block` tiles, and the caller runs
                // this only where `M`'s instructions exist.
                unsafe {
                    match block {
                        b_ if b_ == MR => register_tile::<M, MR, S>(depth, a_block, lda, b, out),
                        1 => register_tile::<M, 1, S>(depth, a_block, lda, b, out),
                        2 => register_tile::<M, 2, S>(depth, a_block, lda, b, out),
                        3 => register_tile::<M, 3, S>(depth, a_block, lda, b, out),
                        4 => register_tile::<M, 4, S>(depth, a_block, lda, b, out),
                        5 => register_tile::<M, 5, S>(depth, a_block, lda, b, out),
                        6 => register_tile::<M, 6, S>(depth, a_block, lda, b, out),
                        _ => register_tile::<M, 7, S>(depth, a_block, lda, b, out),
                    }
                }
                for (r, tile) in out.iter().enumerate() {
                    epilogue(row + r, panel, tile);
                }
                row += block;
            }
        }
    }
}

/// Row blocks taken together through every panel: a panel is read from L1 this many times in
/// a row, and the group's rows of the epilogue's buffers stay in L1 from one panel to the
/// next (two panels of AVX2 share each cache line).
const GROUP_BLOCKS: usize = 8;

/// One LSTM forward step on its active rows: `h_prev · R` tile by tile, each tile added to the
/// input projection by the gate math and the cell update at once. `h_prev` is `[rows, U]`
/// (never the `step.h` being written).
#[inline(always)]
fn lstm_forward_body<M: Simd, const MR: usize, const W: usize>(
    packed: &Packed,
    h_prev: &[f32],
    step: ForwardStep,
) {
    if step.trace {
        lstm_forward_tiles::<M, MR, W, true>(packed, h_prev, step)
    } else {
        lstm_forward_tiles::<M, MR, W, false>(packed, h_prev, step)
    }
}

#[inline(always)]
fn lstm_forward_tiles<M: Simd, const MR: usize, const W: usize, const TRACE: bool>(
    packed: &Packed,
    h_prev: &[f32],
    step: ForwardStep,
) {
    let ForwardStep {
        gates: z,
        c,
        h,
        c_prev,
        tanh_c,
        out,
        mask,
        units: u,
        trace: _,
    } = step;
    // The projection is read once per step, row by row, a few floats of each gate at a
    // time: a pattern the hardware prefetcher misses, so the next rows' floats are asked for.
    let projection = z.as_ptr();
    let ahead = |row: usize, panel: usize| {
        for g in 0..4 {
            prefetch(projection.wrapping_add(row * 4 * u + g * u + panel * W));
        }
    };
    multiply_tiles::<M, 4, MR>(mask.len(), h_prev, u, packed, ahead, |row, panel, tile| {
        if mask[row] == 0 {
            return;
        }
        let start = panel * W;
        let n = W.min(u - start);
        let state = row * u..(row + 1) * u;
        let (c_prev, tanh_c): (&mut [f32], &mut [f32]) = if TRACE {
            (&mut c_prev[state.clone()], &mut tanh_c[state.clone()])
        } else {
            (&mut [], &mut [])
        };
        gates::lstm_forward_chunk::<W, TRACE>(
            LstmRow {
                z: &mut z[row * 4 * u..(row + 1) * 4 * u],
                recurrent: [&tile[0][..n], &tile[1][..n], &tile[2][..n], &tile[3][..n]],
                c: &mut c[state.clone()],
                h: &mut h[state.clone()],
                c_prev,
                tanh_c,
                out: &mut out[state],
                units: u,
            },
            start,
            n,
        );
    });
}

/// One GRU forward step on its active rows: `h_prev · R` tile by tile, each tile combined with
/// the input projection and the recurrent bias by the cell's gate math at once.
#[inline(always)]
fn gru_forward_body<M: Simd, const MR: usize, const W: usize>(
    packed: &Packed,
    h_prev: &[f32],
    step: GruForwardStep,
) {
    let GruForwardStep {
        gates: z,
        recurrent_bias,
        h,
        candidate_recurrent,
        out,
        mask,
        units: u,
    } = step;
    let projection = z.as_ptr();
    let ahead = |row: usize, panel: usize| {
        for g in 0..3 {
            prefetch(projection.wrapping_add(row * 3 * u + g * u + panel * W));
        }
    };
    multiply_tiles::<M, 3, MR>(mask.len(), h_prev, u, packed, ahead, |row, panel, tile| {
        if mask[row] == 0 {
            return;
        }
        let start = panel * W;
        let n = W.min(u - start);
        let state = row * u..(row + 1) * u;
        gates::gru_forward_chunk::<W>(
            GruRow {
                z: &mut z[row * 3 * u..(row + 1) * 3 * u],
                recurrent: [&tile[0][..n], &tile[1][..n], &tile[2][..n]],
                recurrent_bias,
                h: &mut h[state.clone()],
                candidate_recurrent: &mut candidate_recurrent[state.clone()],
                out: &mut out[state],
                units: u,
            },
            start,
            n,
        );
    });
}

/// Asks for the cache line holding `p` (a hint: never faults, whatever `p` is).
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that does not access memory architecturally; SSE is part
    // of x86-64's baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How [`multiply`] writes its product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// `dst = product` on real rows; padded rows keep what they had.
    Store,
    /// `dst += product` on real rows.
    Add,
}

/// `dst [rows × N] (row stride N)` from `a [rows × depth] (row stride lda) · packed` (packed
/// by [`Packed::transposed`]), on the rows `mask` marks real.
#[inline(always)]
fn multiply_body<M: Simd, const MR: usize, const W: usize>(
    packed: &Packed,
    a: &[f32],
    lda: usize,
    dst: &mut [f32],
    columns: usize,
    mask: &[u8],
    write: Write,
) {
    let panel_width = 4 * W;
    multiply_tiles::<M, 4, MR>(
        mask.len(),
        a,
        lda,
        packed,
        |_, _| {},
        |row, panel, tile| {
            if mask[row] == 0 {
                return;
            }
            let dst = &mut dst[row * columns..(row + 1) * columns];
            for (s, values) in tile.iter().enumerate() {
                let start = panel * panel_width + s * W;
                if start >= columns {
                    break;
                }
                let n = W.min(columns - start);
                let dst = &mut dst[start..start + n];
                match write {
                    Write::Store => dst.copy_from_slice(&values[..n]),
                    Write::Add => {
                        for (d, v) in dst.iter_mut().zip(values) {
                            *d += v;
                        }
                    }
                }
            }
        },
    );
}

/// Defines a kernel entry that runs the generic body compiled for the packing's instruction
/// set (`$mr_avx512`, `$mr_avx2`: rows per register tile; with 4 slots AVX2's 16 registers hold
/// 3 rows × 4 accumulators + 4 operands, AVX-512's 32 hold 6 × 4).
macro_rules! dispatched {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) => $body:ident, $mr_avx512:literal, $mr_avx2:literal) => {
        $(#[$doc])*
        pub fn $name(packed: &Packed, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512(packed: &Packed, $($arg: $ty),*) {
                    $body::<x86::Avx512, $mr_avx512, 16>(packed, $($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2(packed: &Packed, $($arg: $ty),*) {
                    $body::<x86::Avx2, $mr_avx2, 8>(packed, $($arg),*)
                }
                match packed.isa {
                    // SAFETY: a packing's instruction set came from `instruction_set` or
                    // `with_instruction_set`, which only hand out what the CPU supports.
                    InstructionSet::Avx512 => return unsafe { avx512(packed, $($arg),*) },
                    InstructionSet::Avx2 => return unsafe { avx2(packed, $($arg),*) },
                    InstructionSet::Portable => {}
                }
            }
            $body::<Portable, $mr_avx2, 8>(packed, $($arg),*)
        }
    };
}

dispatched!(
    /// One LSTM forward step (see `lstm_forward_body`), with `packed` from
    /// [`Packed::gate_blocks`].
    lstm_forward(h_prev: &[f32], step: ForwardStep) => lstm_forward_body, 6, 3
);
dispatched!(
    /// One GRU forward step (see `gru_forward_body`), with `packed` from
    /// [`Packed::gate_blocks`].
    gru_forward(h_prev: &[f32], step: GruForwardStep) => gru_forward_body, 8, 4
);
dispatched!(
    /// `dst (=|+=) a · packed` on real rows (see `multiply_body`), with `packed` from
    /// [`Packed::transposed`].
    multiply(a: &[f32], lda: usize, dst: &mut [f32], columns: usize, mask: &[u8], write: Write)
        => multiply_body, 6, 3
);

impl Packed {
    pub fn instruction_set(&self) -> InstructionSet {
        self.isa
    }
}

#[cfg(test)]
mod tests {
    use super::super::isa::{instruction_set, with_instruction_set};
    use super::*;
    use rand::{Rng, SeedableRng};

    fn values(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// `dz·Rᵀ` through the packed kernel against a plain triple loop, on every instruction set
    /// this CPU has, for shapes that leave partial row blocks and partial panels.
    #[test]
    fn transposed_multiply_matches_a_plain_loop_on_every_instruction_set() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (rows, units, gates) in [(1, 1, 4), (7, 17, 4), (13, 33, 3), (20, 70, 4)] {
            let width = gates * units;
            let kernel = values(&mut rng, units * width);
            let a = values(&mut rng, rows * width);
            let before = values(&mut rng, rows * units);
            let mask: Vec<u8> = (0..rows).map(|r| u8::from(r % 3 != 1)).collect();
            let (mut expected, mut expected_added) = (before.clone(), before.clone());
            for r in (0..rows).filter(|&r| mask[r] == 1) {
                for u in 0..units {
                    let sum: f32 = (0..width)
                        .map(|k| a[r * width + k] * kernel[u * width + k])
                        .sum();
                    expected[r * units + u] = sum;
                    expected_added[r * units + u] += sum;
                }
            }
            for isa in InstructionSet::ALL.into_iter().filter(|i| i.supported()) {
                let packed = Packed::transposed(isa, &kernel, units, gates);
                let mut got = before.clone();
                multiply(&packed, &a, width, &mut got, units, &mask, Write::Store);
                for (g, e) in got.iter().zip(&expected) {
                    assert!((g - e).abs() < 1e-5, "{isa:?} {rows}×{units}: {g} vs {e}");
                }
                let mut added = before.clone();
                multiply(&packed, &a, width, &mut added, units, &mask, Write::Add);
                for (g, e) in added.iter().zip(&expected_added) {
                    assert!((g - e).abs() < 1e-5, "{isa:?} add: {g} vs {e}");
                }
            }
        }
    }

    #[test]
    fn a_forced_instruction_set_is_seen_on_this_thread_only_and_then_restored() {
        let before = instruction_set();
        assert_eq!(
            with_instruction_set(InstructionSet::Portable, || {
                let inner = instruction_set();
                let other = std::thread::spawn(instruction_set).join().unwrap();
                (inner, other)
            }),
            Some((InstructionSet::Portable, before))
        );
        assert_eq!(instruction_set(), before);
    }
}
