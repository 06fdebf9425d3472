//! Times rnnsweep's training step on the benchmark model of `scripts/bench-trainer.sh`:
//! Embedding(5000, 88) → BiLSTM(U) → BiLSTM(U) → Dense(128, relu) → Dense(1), Adam, on
//! synthetic ids: with no padding (as PyTorch's `nn.LSTM` without packing sees them), or with
//! the real lengths of a data file, post-padded to `--time`.
//!
//! `bench_trainer --units U [--impl auto|fused|reference] [--rows N] [--time T] [--batch B]
//! [--warmup K] [--epochs E] [--cell lstm|gru] [--lengths FILE] [--batching shuffle|bucket]` prints one JSON line;
//! `--lengths` takes one token count per line (its line count sets the rows), `--batching
//! bucket` groups rows of similar length; `--inference` times prediction instead (the `predict`
//! path: no dropout, batches of `--batch`, 1024 by default there). `bench_trainer --peak` prints the f32 matrix
//! multiply rate (2048³, candle's `gemm`) that "% of peak" is measured against. Threads come
//! from `RAYON_NUM_THREADS`. `--device cuda:0` runs it on a GPU (a `cuda` build; `auto`, the
//! default, is the CUDA kernels there, as a trial's `lstm_impl: auto`); every line names its
//! device and batch size.

use std::time::Instant;

use candle_core::Device;
use candle_nn::Optimizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnnsweep_model::config::{Activation, Cell, DenseConfig, LstmImpl, ModelConfig};
use rnnsweep_model::dataset::{bucket_batches, class_weights};
use rnnsweep_model::nn::{IdBatch, Net};
use rnnsweep_model::optim::KerasOptimizer;
use rnnsweep_model::train::train_batch;

const VOCAB: usize = 5000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the rnnsweep binary does: the trainer is timed as users run it.
    rnnsweep_model::alloc::keep_freed_memory();
    let mut units = 128;
    let mut lstm_impl = LstmImpl::Auto;
    let (mut rows, mut time, mut batch, mut warmup, mut epochs) = (31_962, 37, 256, 3, 1);
    let mut lengths: Option<Vec<usize>> = None;
    let mut bucket = false;
    let mut inference = false;
    let mut device_name = "cpu".to_string();
    let mut cell = Cell::Lstm;
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--peak") {
        return matmul_peak();
    }
    while let Some(flag) = args.next() {
        if flag == "--inference" {
            inference = true;
            batch = 1024;
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--units" => units = value.parse()?,
            "--device" => device_name = value,
            "--rows" => rows = value.parse()?,
            "--time" => time = value.parse()?,
            "--batch" => batch = value.parse()?,
            "--warmup" => warmup = value.parse()?,
            "--epochs" => epochs = value.parse()?,
            "--lengths" => {
                let text = std::fs::read_to_string(&value)?;
                lengths = Some(
                    text.lines()
                        .map(|l| l.trim().parse::<usize>())
                        .collect::<Result<_, _>>()?,
                );
            }
            "--batching" => {
                bucket = match value.as_str() {
                    "shuffle" => false,
                    "bucket" => true,
                    other => return Err(format!("--batching {other}: shuffle or bucket").into()),
                }
            }
            "--cell" => {
                cell = match value.as_str() {
                    "lstm" => Cell::Lstm,
                    "gru" => Cell::Gru,
                    other => return Err(format!("--cell {other}: use lstm or gru").into()),
                }
            }
            "--impl" => {
                lstm_impl = match value.as_str() {
                    "auto" => LstmImpl::Auto,
                    "fused" => LstmImpl::Fused,
                    "reference" => LstmImpl::Reference,
                    other => {
                        return Err(format!("--impl {other}: use auto, fused or reference").into())
                    }
                }
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let device = rnnsweep_model::device::open(&device_name)?;
    // LSTM lines keep their names; a GRU's say so.
    let cell_tag = match cell {
        Cell::Lstm => "",
        Cell::Gru => "gru-",
    };
    let cfg = ModelConfig {
        embedding_dim: 88,
        lstm_units: vec![units, units],
        lstm_dropout: 0.0,
        batch_norm: false,
        dense: vec![DenseConfig {
            units: 128,
            activation: Activation::Relu,
            l2: 0.0,
        }],
        dense_dropout: 0.0,
        batch_size: batch,
        lstm_impl,
        cell,
        ..ModelConfig::default()
    };
    if let Some(l) = &lengths {
        rows = l.len();
    }
    // Real lengths are capped at `time` and kept ≥ 1 (as packed PyTorch needs).
    let row_lengths: Vec<usize> = match &lengths {
        Some(l) => l.iter().map(|&n| n.clamp(1, time)).collect(),
        None => vec![time; rows],
    };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let ids: Vec<u32> = (0..rows * time)
        .map(|i| {
            if i % time < row_lengths[i / time] {
                rng.random_range(1..VOCAB as u32)
            } else {
                0
            }
        })
        .collect();
    let labels: Vec<u8> = (0..rows).map(|_| u8::from(rng.random_bool(0.07))).collect();
    // The trainer's own class weights, as `fit` would use them.
    let class_weights = class_weights(&labels);
    let weights: Vec<f32> = labels
        .iter()
        .map(|&y| class_weights[usize::from(y)])
        .collect();
    let labels: Vec<f32> = labels.into_iter().map(f32::from).collect();

    let net = Net::new(&cfg, VOCAB, &device)?;
    if inference {
        let padded = rnnsweep_model::encoder::Padded {
            ids: ids.clone(),
            rows,
            len: time,
        };
        rnnsweep_model::train::predict::predict_logits(&net, &padded, batch)?;
        let started = Instant::now();
        for _ in 0..epochs {
            rnnsweep_model::train::predict::predict_logits(&net, &padded, batch)?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let batches = rows.div_ceil(batch) * epochs;
        println!(
            "{{\"trainer\": \"rnnsweep-{cell_tag}{}-infer\", \"units\": {units}, \"batch\": {batch}, \"device\": \"{device_name}\", \"threads\": {}, \"batches\": {batches}, \
             \"seconds\": {seconds:.3}, \"samples_per_s\": {:.1}}}",
            if net.fused_lstm { "fused" } else { "reference" },
            candle_core::utils::get_num_threads(),
            (rows * epochs) as f64 / seconds,
        );
        return Ok(());
    }
    let vars = net.trainable().into_iter().map(|(_, v)| v).collect();
    let mut optimizer = KerasOptimizer::new(vars, cfg.optimizer.clone())?;
    let all: Vec<usize> = (0..rows).collect();
    let batches: Vec<Vec<usize>> = if bucket {
        bucket_batches(&all, &row_lengths, batch, 50, 7, 0)
    } else {
        all.chunks(batch).map(<[usize]>::to_vec).collect()
    };
    let mut step = |rows_of_batch: &[usize], rng: &mut ChaCha8Rng| {
        let mut batch_ids = Vec::with_capacity(rows_of_batch.len() * time);
        for &r in rows_of_batch {
            batch_ids.extend_from_slice(&ids[r * time..(r + 1) * time]);
        }
        let pick = |v: &[f32]| rows_of_batch.iter().map(|&r| v[r]).collect::<Vec<f32>>();
        let id_batch = IdBatch {
            ids: &batch_ids,
            batch: rows_of_batch.len(),
            time,
        };
        train_batch(
            &net,
            &mut optimizer,
            &id_batch,
            &pick(&labels),
            &pick(&weights),
            rng,
        )
    };
    for b in batches.iter().cycle().take(warmup) {
        step(b, &mut rng)?;
    }
    let mut per_batch = Vec::new();
    let mut loss = 0.0;
    let started = Instant::now();
    for _ in 0..epochs {
        for b in &batches {
            let t = Instant::now();
            loss = step(b, &mut rng)?.loss;
            per_batch.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let samples = rows * epochs;
    per_batch.sort_by(f64::total_cmp);
    let variant = match (&lengths, bucket) {
        (None, _) => "",
        (Some(_), false) => "-real",
        (Some(_), true) => "-real-bucket",
    };
    println!(
        "{{\"trainer\": \"rnnsweep-{cell_tag}{}{variant}\", \"units\": {units}, \"batch\": {batch}, \"device\": \"{device_name}\", \"threads\": {}, \"batches\": {}, \
         \"seconds\": {seconds:.3}, \"samples_per_s\": {:.1}, \"ms_per_batch_median\": {:.2}, \
         \"ms_per_batch_min\": {:.2}, \"last_loss\": {loss:.5}}}",
        if net.fused_lstm { "fused" } else { "reference" },
        candle_core::utils::get_num_threads(),
        per_batch.len(),
        samples as f64 / seconds,
        per_batch[per_batch.len() / 2],
        per_batch[0],
    );
    Ok(())
}

/// The best of several 2048³ multiplies, in GFLOP/s.
fn matmul_peak() -> Result<(), Box<dyn std::error::Error>> {
    let n = 2048;
    let values: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let a = candle_core::Tensor::from_vec(values, (n, n), &Device::Cpu)?;
    let b = a.t()?.contiguous()?;
    let mut best = f64::INFINITY;
    for _ in 0..6 {
        let t = Instant::now();
        a.matmul(&b)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"peak_gflops\": {:.1}, \"threads\": {}}}",
        2.0 * (n as f64).powi(3) / best / 1e9,
        candle_core::utils::get_num_threads()
    );
    Ok(())
}
