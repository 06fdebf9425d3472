//! The recurrent layer on a device against the f64 oracle (the reference layer) on the CPU:
//! outputs and every gradient, for the reference layer and the fused op (on a GPU, the CUDA
//! kernels), LSTM and GRU, with rows reordered by length and with holes in the mask. The device
//! is `RNNSWEEP_TEST_DEVICE` (`cpu` by default; `scripts/gpu-check.sh` runs this file with
//! `cuda:0`), so the comparison itself is exercised by every test run and the GPU check only
//! changes where the f32 side runs.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnnsweep_model::config::Cell;
use rnnsweep_model::nn::lstm::{time_major_mask, BiLstm, BiOutput, LstmWeights, StepMask};

const BATCH: usize = 6;
const TIME: usize = 7;
const INPUT: usize = 5;
const UNITS: usize = 4;

fn device_under_test() -> Device {
    let name = std::env::var("RNNSWEEP_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    rnnsweep_model::device::open(&name)
        .unwrap_or_else(|e| panic!("RNNSWEEP_TEST_DEVICE={name}: {e}"))
}

fn copy_var(v: &Var, dtype: DType, device: &Device) -> Var {
    Var::from_tensor(
        &v.as_tensor()
            .to_dtype(dtype)
            .unwrap()
            .to_device(device)
            .unwrap(),
    )
    .unwrap()
}

fn copy_layer(layer: &BiLstm, dtype: DType, device: &Device) -> BiLstm {
    let copy = |w: &LstmWeights| LstmWeights {
        kernel: copy_var(&w.kernel, dtype, device),
        recurrent: copy_var(&w.recurrent, dtype, device),
        bias: copy_var(&w.bias, dtype, device),
        units: w.units,
        cell: w.cell,
    };
    BiLstm {
        forward: copy(&layer.forward),
        backward: copy(&layer.backward),
    }
}

/// Post-padded rows of lengths 7, 5, 3, 1, 0 and 6: full rows, padded rows and an empty one
/// (the fused op reorders them longest first).
fn post_padded() -> Vec<u32> {
    let lengths = [7, 5, 3, 1, 0, 6];
    (0..BATCH)
        .flat_map(|r| (0..TIME).map(move |t| u32::from(t < lengths[r])))
        .collect()
}

/// Rows with holes (the fused op then runs every row at every step, masked), and a step that
/// is padding in every row.
fn with_holes() -> Vec<u32> {
    let rows: [[u32; TIME]; BATCH] = [
        [1, 0, 1, 0, 1, 1, 1],
        [1, 1, 1, 0, 0, 1, 0],
        [0, 0, 1, 0, 0, 0, 1],
        [1, 1, 1, 0, 1, 1, 1],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 1, 0, 0],
    ];
    rows.concat()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Layer {
    Reference,
    Fused,
}

struct Run {
    output: Vec<f64>,
    grads: Vec<(String, Vec<f64>)>,
}

struct Setting<'a> {
    ids: &'a [u32],
    sequences: bool,
    kind: Layer,
}

fn run(layer: &BiLstm, inputs: &[Var], dtype: DType, device: &Device, setting: &Setting) -> Run {
    let Setting {
        ids,
        sequences,
        kind,
    } = *setting;
    let steps: Vec<Tensor> = inputs.iter().map(|v| v.as_tensor().clone()).collect();
    let out = match kind {
        Layer::Reference => {
            let masks = StepMask::from_ids(ids, BATCH, TIME, dtype, device).unwrap();
            match layer.run(&steps, &masks, sequences, None).unwrap() {
                BiOutput::Sequence(per_step) => Tensor::stack(&per_step, 0).unwrap(),
                BiOutput::Last(last) => last,
            }
        }
        Layer::Fused => {
            let x = Tensor::stack(&steps, 0).unwrap();
            let mask = time_major_mask(ids, BATCH, TIME);
            layer.run_fused(&x, &mask, sequences, None, true).unwrap()
        }
    };
    // A loss that weighs every output differently, so a swapped or dropped gradient shows.
    let n = out.elem_count();
    let weights = Tensor::arange(0u32, n as u32, device)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .affine(0.37, 0.1)
        .unwrap()
        .sin()
        .unwrap()
        .reshape(out.shape())
        .unwrap();
    let loss = (out.clone() * weights).unwrap().sum_all().unwrap();
    let grads: GradStore = loss.backward().unwrap();
    let flat = |t: &Tensor| -> Vec<f64> {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let mut named: Vec<(String, &Var)> = Vec::new();
    for (direction, w) in [("forward", &layer.forward), ("backward", &layer.backward)] {
        for (name, var) in w.vars() {
            named.push((format!("{direction} {name}"), var));
        }
    }
    for (t, var) in inputs.iter().enumerate() {
        named.push((format!("input step {t}"), var));
    }
    Run {
        output: flat(&out),
        grads: named
            .into_iter()
            .map(|(name, var)| {
                // An input step that is padding in every row reaches no output: no gradient.
                let g = match grads.get(var.as_tensor()) {
                    Some(g) => flat(g),
                    None if name.starts_with("input") => vec![0.0; var.elem_count()],
                    None => panic!("no gradient for {name}"),
                };
                (name, g)
            })
            .collect(),
    }
}

fn assert_close(what: &str, got: &[f64], oracle: &[f64], tolerance: f64) {
    assert_eq!(got.len(), oracle.len(), "{what}: length");
    for (i, (g, o)) in got.iter().zip(oracle).enumerate() {
        assert!(
            (g - o).abs() <= tolerance * (1.0 + o.abs()),
            "{what}[{i}]: {g} on the device, {o} in f64 on the CPU"
        );
    }
}

#[test]
fn reference_lstm_on_the_device_matches_the_f64_oracle() {
    check_cell_on_the_device(Cell::Lstm, Layer::Reference);
}

#[test]
fn reference_gru_on_the_device_matches_the_f64_oracle() {
    check_cell_on_the_device(Cell::Gru, Layer::Reference);
}

#[test]
fn fused_lstm_on_the_device_matches_the_f64_oracle() {
    check_cell_on_the_device(Cell::Lstm, Layer::Fused);
}

#[test]
fn fused_gru_on_the_device_matches_the_f64_oracle() {
    check_cell_on_the_device(Cell::Gru, Layer::Fused);
}

fn check_cell_on_the_device(cell: Cell, kind: Layer) {
    let device = device_under_test();
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let layer = BiLstm::with_cell(&mut rng, cell, INPUT, UNITS, &Device::Cpu).unwrap();
    let values: Vec<Vec<f64>> = (0..TIME)
        .map(|_| {
            (0..BATCH * INPUT)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect()
        })
        .collect();
    let inputs = |dtype: DType, device: &Device| -> Vec<Var> {
        values
            .iter()
            .map(|v| {
                let t = Tensor::from_vec(v.clone(), (BATCH, INPUT), &Device::Cpu).unwrap();
                Var::from_tensor(&t.to_dtype(dtype).unwrap().to_device(device).unwrap()).unwrap()
            })
            .collect()
    };
    let masks = [("post padding", post_padded()), ("holes", with_holes())];
    for ((mask_name, ids), sequences) in masks.iter().flat_map(|m| [(m, true), (m, false)]) {
        let oracle_layer = copy_layer(&layer, DType::F64, &Device::Cpu);
        let oracle = run(
            &oracle_layer,
            &inputs(DType::F64, &Device::Cpu),
            DType::F64,
            &Device::Cpu,
            &Setting {
                ids,
                sequences,
                kind: Layer::Reference,
            },
        );
        let tested_layer = copy_layer(&layer, DType::F32, &device);
        let tested = run(
            &tested_layer,
            &inputs(DType::F32, &device),
            DType::F32,
            &device,
            &Setting {
                ids,
                sequences,
                kind,
            },
        );
        let mode = format!(
            "{kind:?} {cell:?}, {mask_name}, {}",
            if sequences { "sequences" } else { "last state" }
        );
        assert!(
            oracle.output.iter().any(|v| v.abs() > 1e-3),
            "{mode}: outputs all ~0"
        );
        assert_close(
            &format!("{mode}: output"),
            &tested.output,
            &oracle.output,
            1e-5,
        );
        for ((name, got), (_, want)) in tested.grads.iter().zip(&oracle.grads) {
            assert!(
                name.starts_with("input") || want.iter().any(|v| v.abs() > 1e-6),
                "{mode}: {name}: gradient all 0"
            );
            assert_close(&format!("{mode}: gradient of {name}"), got, want, 1e-4);
        }
    }
}
