//! How one step of one direction shares its rows among threads.
//!
//! The two directions of a layer run on their own rayon tasks, which keeps a 2-thread pool
//! busy. A bigger pool (a trial given 8 threads, `predict` on a workstation) would leave the
//! rest idle through the recurrence, so inside a step each direction also splits its active
//! rows into parts, one per thread it may use. A row's gate math and its `h·R` (or `dz·Rᵀ`)
//! depend on that row alone, and each part runs the same kernel over its rows, so the results
//! are the same bits as one part's. Parts are cut at multiples of [`ROW_ALIGN`] rows (every
//! kernel version's register tile divides it), and only when each part has enough work to pay
//! for the hand-off between threads: a step is microseconds, and on a 2-thread pool splitting
//! was measured no faster, which is why a direction gets a second thread only from a pool of 4.

use std::ops::Range;

/// Every kernel version's register-tile height (3 and 6 rows for the LSTM, 4 and 8 for the
/// GRU) divides this, so no part ends in a partial tile that a whole step would not have.
pub const ROW_ALIGN: usize = 24;

/// The fewest multiply-adds one part must do: about 15 µs of one core, against the few
/// microseconds rayon takes to wake a thread and join it.
pub const MIN_PART_WORK: usize = 1 << 19;

/// The threads one direction may use: half the pool, as the two directions run at once.
pub fn direction_threads() -> usize {
    (rayon::current_num_threads() / 2).max(1)
}

/// Rows `0..rows` of a step cut into at most `threads` parts of about equal size, in order,
/// each starting at a multiple of [`ROW_ALIGN`], with about [`MIN_PART_WORK`] multiply-adds
/// or more each at `work_per_row`. One part, the whole step, when splitting would not pay.
pub fn row_parts(rows: usize, work_per_row: usize, threads: usize) -> Vec<Range<usize>> {
    let min_rows = MIN_PART_WORK
        .div_ceil(work_per_row.max(1))
        .next_multiple_of(ROW_ALIGN);
    let parts = threads.min(rows / min_rows).max(1);
    let cut = |i: usize| match i {
        0 => 0,
        i if i == parts => rows,
        i => (rows * i / parts + ROW_ALIGN / 2) / ROW_ALIGN * ROW_ALIGN,
    };
    (0..parts).map(|i| cut(i)..cut(i + 1)).collect()
}

/// Rows `rows` of a `[_, width]` buffer.
pub fn rows_of<'a, T>(data: &'a [T], rows: &Range<usize>, width: usize) -> &'a [T] {
    &data[rows.start * width..rows.end * width]
}

/// Hands out consecutive rows of a `[rows, width]` buffer, front to back, as disjoint mutable
/// slices, one per part. An empty buffer (a cell state that is not kept) hands out empty
/// slices.
pub struct RowCursor<'a, T> {
    rest: &'a mut [T],
    width: usize,
}

impl<'a, T> RowCursor<'a, T> {
    pub fn new(buffer: &'a mut [T], width: usize) -> Self {
        RowCursor {
            rest: buffer,
            width,
        }
    }

    /// The next `rows` rows.
    pub fn take(&mut self, rows: usize) -> &'a mut [T] {
        let rest = std::mem::take(&mut self.rest);
        let cut = (rows * self.width).min(rest.len());
        let (front, back) = rest.split_at_mut(cut);
        self.rest = back;
        front
    }
}

/// Runs `work` on every part: on this thread when there is one, else on the pool.
pub fn run_parts<P: Send>(parts: Vec<P>, work: impl Fn(P) + Sync + Send) {
    use rayon::prelude::*;
    if parts.len() == 1 {
        parts.into_iter().for_each(work);
    } else {
        parts.into_par_iter().for_each(work);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A plan of one part is a list of one range, which is what these asserts mean.
    #[allow(clippy::single_range_in_vec_init)]
    #[test]
    fn a_step_is_split_only_where_every_part_has_enough_work() {
        // U = 64 LSTM: 64 × 256 multiply-adds a row, so a part needs 32 rows, aligned to 48.
        let per_row = 64 * 256;
        assert_eq!(row_parts(100, per_row, 1), [0..100]);
        assert_eq!(row_parts(100, per_row, 2), [0..48, 48..100]);
        assert_eq!(row_parts(100, per_row, 4), [0..48, 48..100]);
        assert_eq!(row_parts(150, per_row, 4), [0..48, 48..96, 96..150]);
        assert_eq!(row_parts(95, per_row, 4), [0..95]);
        assert_eq!(
            row_parts(1024, per_row, 4),
            [0..264, 264..504, 504..768, 768..1024]
        );
        // Small units need more rows a part; tiny steps are never split.
        assert_eq!(row_parts(1024, 8 * 32, 4), [0..1024]);
        assert_eq!(row_parts(0, per_row, 4), [0..0]);
        assert_eq!(row_parts(5, 0, 4), [0..5]);
    }

    #[test]
    fn the_cursor_hands_out_consecutive_rows_and_empty_slices_from_an_empty_buffer() {
        let mut data: Vec<u32> = (0..10).collect();
        let mut cursor = RowCursor::new(&mut data, 2);
        assert_eq!(cursor.take(2), &[0, 1, 2, 3]);
        assert_eq!(cursor.take(3), &[4, 5, 6, 7, 8, 9]);
        let mut empty: Vec<u32> = Vec::new();
        let mut cursor = RowCursor::new(&mut empty, 2);
        assert!(cursor.take(2).is_empty());
        assert!(cursor.take(1).is_empty());
    }
}
