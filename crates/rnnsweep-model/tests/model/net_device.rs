//! The whole network on the device under test against the same seed on the CPU: logits, every
//! weight's gradient, and every weight after one optimizer step, for every pooling ×
//! `batch_norm` × `embedding_update` × optimizer, LSTM and GRU. The device is
//! `RNNSWEEP_TEST_DEVICE` (`cpu` by default): on the CPU the reference recurrent path is checked
//! against the fused kernel; on a GPU (`scripts/gpu-check.sh`) both the reference path and what
//! `lstm_impl: auto` runs there (the CUDA kernels) are checked against the CPU's fused path, so
//! every op a GPU trial uses is covered; a two-tower (words + characters) network with view
//! dropout too.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rnnsweep_model::config::{
    Activation, Cell, DenseConfig, EmbeddingUpdate, Inputs, LstmImpl, ModelConfig, Pooling,
};
use rnnsweep_model::encoder::ViewShape;
use rnnsweep_model::nn::lstm::isa::{with_instruction_set, InstructionSet};
use rnnsweep_model::nn::{IdBatch, Net};
use rnnsweep_model::optim::{KerasOptimizer, OptimizerConfig, OptimizerName};

const VOCAB: usize = 12;
const BATCH: usize = 5;
const TIME: usize = 6;

/// Rows of lengths 6, 2, 0 and 4 with post padding, and a pre-padded one.
const IDS: [u32; BATCH * TIME] = [
    3, 1, 4, 1, 5, 9, //
    9, 2, 0, 0, 0, 0, //
    0, 0, 0, 0, 0, 0, //
    6, 5, 3, 10, 0, 0, //
    0, 0, 11, 7, 8, 2,
];
const LABELS: [f32; BATCH] = [1.0, 0.0, 1.0, 0.0, 1.0];
const SAMPLE_WEIGHTS: [f32; BATCH] = [1.0, 2.0, 1.0, 0.5, 1.0];

fn device_under_test() -> Device {
    let name = std::env::var("RNNSWEEP_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    rnnsweep_model::device::open(&name)
        .unwrap_or_else(|e| panic!("RNNSWEEP_TEST_DEVICE={name}: {e}"))
}

fn config(
    cell: Cell,
    pooling: Pooling,
    batch_norm: bool,
    update: EmbeddingUpdate,
    lstm_impl: LstmImpl,
) -> ModelConfig {
    ModelConfig {
        cell,
        embedding_dim: 5,
        lstm_units: vec![4, 3],
        dense: vec![DenseConfig {
            units: 4,
            activation: Activation::Tanh,
            l2: 0.01,
        }],
        batch_norm,
        embedding_dropout: 0.2,
        pooling,
        lstm_impl,
        embedding_update: update,
        seed: 21,
        ..ModelConfig::default()
    }
}

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Logits and the gradient of a fixed weighted sum of them for every weight (the sparse
/// embedding's row gradient scattered into the table), from one training forward pass.
fn logits_and_grads(net: &Net) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let batch = IdBatch {
        ids: &IDS,
        batch: BATCH,
        time: TIME,
    };
    let (logits, rows) = net.forward_rows(&batch, Some(&mut rng)).unwrap();
    let mix = Tensor::new(&[0.3f32, -1.1, 0.7, 2.0, -0.4], logits.device()).unwrap();
    let grads = logits
        .mul(&mix)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut out = Vec::new();
    for (name, var) in net.trainable() {
        let sparse = rows
            .iter()
            .find(|r| name == format!("{}embedding", net.towers[r.tower].prefix));
        let g = match sparse {
            Some(r) => {
                let g = host(grads.get(r.rows.as_tensor()).unwrap());
                let e = g.len() / r.ids.len().max(1);
                let mut table = vec![0f32; var.elem_count()];
                for (k, &id) in r.ids.iter().enumerate() {
                    let id = id as usize;
                    table[id * e..(id + 1) * e].copy_from_slice(&g[k * e..(k + 1) * e]);
                }
                table
            }
            _ => grads
                .get(var.as_tensor())
                .map(host)
                .unwrap_or_else(|| vec![0.0; var.elem_count()]),
        };
        out.push((name, g));
    }
    (host(&logits), out)
}

/// Every weight after one training step with `optimizer`.
fn weights_after_a_step(net: &Net, optimizer: OptimizerName) -> Vec<(String, Vec<f32>)> {
    let config = OptimizerConfig {
        name: optimizer,
        learning_rate: Some(0.05),
        // A larger epsilon than Keras's 1e-7: adaptive steps divide by √v + ε, so with a
        // gradient near zero f32 rounding alone could flip a step of ±lr; with 1e-3 two
        // gradients within rounding give steps within 1e-4·lr.
        epsilon: Some(1e-3),
        ..Default::default()
    };
    let vars = net.trainable().into_iter().map(|(_, v)| v).collect();
    let mut opt = <KerasOptimizer as candle_nn::Optimizer>::new(vars, config).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    rnnsweep_model::train::train_batch(
        net,
        &mut opt,
        &IdBatch {
            ids: &IDS,
            batch: BATCH,
            time: TIME,
        },
        &LABELS,
        &SAMPLE_WEIGHTS,
        &mut rng,
    )
    .unwrap();
    net.trainable()
        .into_iter()
        .map(|(name, v)| (name, host(v.as_tensor())))
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tolerance: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (k, (x, y)) in got.iter().zip(want).enumerate() {
        assert!(
            (x - y).abs() <= tolerance * scale,
            "{what}[{k}]: {x} vs {y} (scale {scale})"
        );
    }
}

#[test]
fn the_whole_network_on_the_device_matches_the_cpu_for_every_setting() {
    let device = device_under_test();
    let poolings = [
        Pooling::Last,
        Pooling::Max,
        Pooling::Mean,
        Pooling::MaxMean,
        Pooling::Attention,
    ];
    let optimizers = OptimizerName::ALL;
    // On a GPU `auto` is the CUDA kernel; on the CPU it is the oracle itself.
    let subjects: &[LstmImpl] = if device.is_cuda() {
        &[LstmImpl::Reference, LstmImpl::Auto]
    } else {
        &[LstmImpl::Reference]
    };
    // The fused CPU kernels in every version this CPU runs, in turn across the settings (the
    // layer's own oracle checks each version on every case).
    let versions: Vec<InstructionSet> = InstructionSet::ALL
        .into_iter()
        .filter(|isa| isa.supported())
        .collect();
    let mut checked = 0;
    for (&subject_impl, cell) in subjects
        .iter()
        .flat_map(|s| [(s, Cell::Lstm), (s, Cell::Gru)])
    {
        for pooling in poolings {
            for batch_norm in [true, false] {
                for update in [EmbeddingUpdate::Dense, EmbeddingUpdate::Sparse] {
                    let settings = (cell, pooling, batch_norm, update);
                    let isa = versions[checked / optimizers.len() % versions.len()];
                    with_instruction_set(isa, || {
                        check_one(&device, settings, subject_impl, &optimizers, Views::One)
                    })
                    .expect("a supported version");
                    checked += optimizers.len();
                }
            }
        }
    }
    assert_eq!(checked, subjects.len() * 2 * 5 * 2 * 2 * 8);
}

/// The network's towers: one over each whole row, or two (words, then characters or an n-gram
/// bag) over its first and last three columns, with view dropout.
#[derive(Debug, Clone, Copy)]
enum Views {
    One,
    Two,
    WordAndBag,
}

impl Views {
    fn net(self, cfg: ModelConfig, device: &Device) -> Net {
        match self {
            Views::One => Net::new(&cfg, VOCAB, device).unwrap(),
            Views::Two | Views::WordAndBag => {
                let bag = matches!(self, Views::WordAndBag);
                let cfg = ModelConfig {
                    inputs: if bag {
                        "word+ngram".parse().unwrap()
                    } else {
                        Inputs::word_and_char()
                    },
                    view_dropout: 0.5,
                    ..cfg
                };
                let half = ViewShape {
                    vocab: VOCAB,
                    width: TIME / 2,
                    bag: false,
                };
                let second = ViewShape { bag, ..half };
                Net::for_views(&cfg, &[half, second], 1, false, device).unwrap()
            }
        }
    }
}

/// Words with characters, and words with an n-gram bag (no recurrent layer in the second tower).
#[test]
fn a_two_tower_network_on_the_device_matches_the_cpu() {
    let device = device_under_test();
    let subjects: &[LstmImpl] = if device.is_cuda() {
        &[LstmImpl::Reference, LstmImpl::Auto]
    } else {
        &[LstmImpl::Reference]
    };
    for &subject_impl in subjects {
        for (cell, pooling, update) in [
            (Cell::Lstm, Pooling::MaxMean, EmbeddingUpdate::Sparse),
            (Cell::Lstm, Pooling::Attention, EmbeddingUpdate::Dense),
            (Cell::Gru, Pooling::Last, EmbeddingUpdate::Sparse),
        ] {
            for views in [Views::Two, Views::WordAndBag] {
                check_one(
                    &device,
                    (cell, pooling, true, update),
                    subject_impl,
                    &[OptimizerName::Adam, OptimizerName::Sgd],
                    views,
                );
            }
        }
    }
}

fn check_one(
    device: &Device,
    (cell, pooling, batch_norm, update): (Cell, Pooling, bool, EmbeddingUpdate),
    subject_impl: LstmImpl,
    optimizers: &[OptimizerName],
    views: Views,
) {
    let what = format!(
        "{views:?} {subject_impl:?} {cell:?} {pooling:?} batch_norm={batch_norm} {update:?}"
    );
    // The oracle: the fused CPU kernel; the subject: the path under test on the device (on the
    // CPU, two different implementations of one network).
    let oracle = || {
        views.net(
            config(cell, pooling, batch_norm, update, LstmImpl::Fused),
            &Device::Cpu,
        )
    };
    let subject = || {
        views.net(
            config(cell, pooling, batch_norm, update, subject_impl),
            device,
        )
    };
    let (lo, go) = logits_and_grads(&oracle());
    let (ls, gs) = logits_and_grads(&subject());
    assert_close(&format!("{what} logits"), &ls, &lo, 1e-4);
    assert_eq!(go.len(), gs.len(), "{what}: the same weights");
    for ((name, want), (_, got)) in go.iter().zip(&gs) {
        assert_close(&format!("{what} d{name}"), got, want, 1e-3);
    }
    assert!(
        go.iter().all(|(_, g)| g.iter().any(|v| *v != 0.0)),
        "{what}: every weight gets a gradient"
    );
    for &optimizer in optimizers {
        let before = oracle();
        let initial: Vec<Vec<f32>> = before
            .trainable()
            .iter()
            .map(|(_, v)| host(v.as_tensor()))
            .collect();
        let want = weights_after_a_step(&before, optimizer);
        let got = weights_after_a_step(&subject(), optimizer);
        for ((name, w), (_, g)) in want.iter().zip(&got) {
            assert_close(&format!("{what} {optimizer:?} {name}"), g, w, 1e-4);
        }
        assert!(
            want.iter().zip(&initial).any(|((_, w), w0)| w != w0),
            "{what} {optimizer:?}: the step moved the weights"
        );
    }
}
