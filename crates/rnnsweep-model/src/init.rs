//! Seeded weight initialisers (Keras's defaults). candle's CPU RNG cannot be seeded, so every
//! draw comes from a ChaCha generator and is copied into a tensor.

use candle_core::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::Result;

pub fn uniform(
    rng: &mut ChaCha8Rng,
    shape: (usize, usize),
    limit: f32,
    device: &Device,
) -> Result<Tensor> {
    let data: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| rng.random_range(-limit..limit))
        .collect();
    Ok(Tensor::from_vec(data, shape, device)?)
}

/// Keras `glorot_uniform` for a `[fan_in, fan_out]` kernel.
pub fn glorot_uniform(
    rng: &mut ChaCha8Rng,
    fan_in: usize,
    fan_out: usize,
    device: &Device,
) -> Result<Tensor> {
    let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
    uniform(rng, (fan_in, fan_out), limit, device)
}

/// Keras `orthogonal` for a `[rows, cols]` matrix: Gram–Schmidt on a normal matrix, taken
/// along the smaller dimension so the result has orthonormal rows or columns.
pub fn orthogonal(
    rng: &mut ChaCha8Rng,
    rows: usize,
    cols: usize,
    device: &Device,
) -> Result<Tensor> {
    let (n, m) = if rows < cols {
        (rows, cols)
    } else {
        (cols, rows)
    };
    // n orthonormal vectors of length m.
    let mut vectors: Vec<Vec<f64>> = Vec::with_capacity(n);
    while vectors.len() < n {
        let mut v: Vec<f64> = (0..m).map(|_| StandardNormal.sample(rng)).collect();
        for u in &vectors {
            let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-6 {
            v.iter_mut().for_each(|a| *a /= norm);
            vectors.push(v);
        }
    }
    let mut data = vec![0f32; rows * cols];
    for (i, v) in vectors.iter().enumerate() {
        for (j, &x) in v.iter().enumerate() {
            let (r, c) = if rows < cols { (i, j) } else { (j, i) };
            data[r * cols + c] = x as f32;
        }
    }
    Ok(Tensor::from_vec(data, (rows, cols), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn orthogonal_columns_are_orthonormal() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let w = orthogonal(&mut rng, 8, 32, &Device::Cpu).unwrap();
        let wwt: Vec<Vec<f32>> = w.matmul(&w.t().unwrap()).unwrap().to_vec2().unwrap();
        for (i, row) in wwt.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((x - want).abs() < 1e-5, "({i},{j}) = {x}");
            }
        }
    }

    #[test]
    fn glorot_respects_its_limit_and_seed() {
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let mut b = ChaCha8Rng::seed_from_u64(3);
        let x = glorot_uniform(&mut a, 10, 6, &Device::Cpu).unwrap();
        let y = glorot_uniform(&mut b, 10, 6, &Device::Cpu).unwrap();
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(xs, y.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert!(xs.iter().all(|v| v.abs() <= (6.0f32 / 16.0).sqrt()));
    }
}
