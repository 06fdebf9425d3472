//! Embedding lookup: rows of a table by id, differentiable in the table.
//!
//! On the CPU this is candle's `index_select`. On a CUDA device candle's backward
//! (`index_add`) parallelises over the embedding width only and walks every id of the batch
//! one after another, so here the gradient is a kernel of its own: the batch's positions are
//! grouped by id on the host (ids and positions are host data already), and one thread per
//! (distinct id, column) sums its rows in position order — deterministic, and as parallel as
//! the batch has distinct ids.

use candle_core::Tensor;

use crate::error::Result;

/// `table[ids]`: `[ids.len(), E]`.
pub fn lookup(table: &Tensor, ids: Vec<u32>) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if table.device().is_cuda() {
        return Ok(table.apply_op1(device::Lookup { ids })?);
    }
    let n = ids.len();
    let index = Tensor::from_vec(ids, n, table.device())?;
    Ok(table.index_select(&index, 0)?)
}

#[cfg(feature = "cuda")]
mod device {
    use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, Shape, Tensor};

    use crate::nn::cuda::{int, kernel, launch, storage, upload, view, zeros};

    pub(super) struct Lookup {
        pub(super) ids: Vec<u32>,
    }

    fn host_only(name: &str) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{name}: the device lookup ran on the CPU")
    }

    impl CustomOp1 for Lookup {
        fn name(&self) -> &'static str {
            "embedding-lookup"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            host_only(self.name())
        }

        fn cuda_fwd(
            &self,
            table: &CudaStorage,
            layout: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let device = &table.device;
            let (vocab, width) = layout.shape().dims2()?;
            if let Some(&id) = self.ids.iter().find(|&&id| id as usize >= vocab) {
                candle_core::bail!(
                    "embedding lookup: id {id} is outside the table of {vocab} rows"
                );
            }
            let table = view("the embedding table", table, layout)?;
            let n = self.ids.len();
            let ids = upload(device, &self.ids)?;
            let mut out = zeros(device, n * width)?;
            let func = kernel(device, "rnnsweep_gather_rows")?;
            let (steps, rows, width_i, no_bias) = (1i32, int(n)?, int(width)?, 0i32);
            let mut args = func.builder();
            args.arg(&mut out);
            args.arg(&table);
            args.arg(&ids);
            args.arg(&ids);
            args.arg(&no_bias);
            args.arg(&steps);
            args.arg(&rows);
            args.arg(&width_i);
            launch(args, n * width)?;
            Ok((storage(device, out), Shape::from((n, width))))
        }

        fn bwd(
            &self,
            table: &Tensor,
            _: &Tensor,
            d_out: &Tensor,
        ) -> candle_core::Result<Option<Tensor>> {
            let gradient = Gradient {
                ids: &self.ids,
                vocab: table.dim(0)?,
            };
            Ok(Some(d_out.contiguous()?.apply_op1_no_bwd(&gradient)?))
        }
    }

    /// The table's gradient from the lookup's output gradient `[n, E]`.
    struct Gradient<'a> {
        ids: &'a [u32],
        vocab: usize,
    }

    /// Positions grouped by id: the distinct ids (ascending), where each one's positions start
    /// in `positions` (one more entry than ids), and the positions, ascending within an id.
    pub(super) fn group_by_id(ids: &[u32]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let mut positions: Vec<u32> = (0..ids.len() as u32).collect();
        positions.sort_by_key(|&p| ids[p as usize]);
        let mut distinct = Vec::new();
        let mut starts = Vec::new();
        for (k, &p) in positions.iter().enumerate() {
            let id = ids[p as usize];
            if distinct.last() != Some(&id) {
                distinct.push(id);
                starts.push(k as u32);
            }
        }
        starts.push(positions.len() as u32);
        (distinct, starts, positions)
    }

    impl CustomOp1 for Gradient<'_> {
        fn name(&self) -> &'static str {
            "embedding-gradient"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            host_only(self.name())
        }

        fn cuda_fwd(
            &self,
            d_out: &CudaStorage,
            layout: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let device = &d_out.device;
            let (_, width) = layout.shape().dims2()?;
            let d_out = view("the lookup's gradient", d_out, layout)?;
            let (distinct, starts, positions) = group_by_id(self.ids);
            let count = distinct.len();
            let (distinct, starts, positions) = (
                upload(device, &distinct)?,
                upload(device, &starts)?,
                upload(device, &positions)?,
            );
            let mut d_table = zeros(device, self.vocab * width)?;
            let func = kernel(device, "rnnsweep_embedding_backward")?;
            let (count_i, width_i) = (int(count)?, int(width)?);
            let mut args = func.builder();
            args.arg(&mut d_table);
            args.arg(&d_out);
            args.arg(&distinct);
            args.arg(&starts);
            args.arg(&positions);
            args.arg(&count_i);
            args.arg(&width_i);
            launch(args, count * width)?;
            Ok((storage(device, d_table), Shape::from((self.vocab, width))))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::group_by_id;

        #[test]
        fn positions_are_grouped_by_id_in_order() {
            let (distinct, starts, positions) = group_by_id(&[7, 0, 7, 3, 0, 7]);
            assert_eq!(distinct, vec![0, 3, 7]);
            assert_eq!(starts, vec![0, 2, 3, 6]);
            assert_eq!(positions, vec![1, 4, 3, 0, 2, 5]);
        }
    }
}
