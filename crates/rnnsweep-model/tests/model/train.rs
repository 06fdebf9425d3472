//! Training behaviour a user notices: learning, early stopping, checkpoints, reproducibility,
//! saved models.

use std::path::PathBuf;

use candle_core::Device;
use rnnsweep_model::artifact::TrainedModel;
use rnnsweep_model::config::DenseConfig;
use rnnsweep_model::config::ModelConfig;
use rnnsweep_model::data::{load_csv, Columns, Labels, Table};
use rnnsweep_model::dataset::prepare;
use rnnsweep_model::encoder::Padded;
use rnnsweep_model::metrics::classify;
use rnnsweep_model::optim::OptimizerName;
use rnnsweep_model::train::distill::{DistillSettings, SoftTargets};
use rnnsweep_model::train::evaluate::evaluate_examples;
use rnnsweep_model::train::history::EpochReport;
use rnnsweep_model::train::{fit, Control, FitOptions, StopReason};

fn sample(rows: usize) -> Table {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../experiments/data/sample.csv");
    let mut t = load_csv(&path, &Columns::default(), Labels::Required).unwrap();
    t.rows.truncate(rows);
    t
}

fn small(epochs: usize) -> ModelConfig {
    let mut c = ModelConfig {
        embedding_dim: 16,
        lstm_units: vec![16, 16],
        dense: vec![
            DenseConfig {
                units: 32,
                activation: rnnsweep_model::config::Activation::Relu,
                l2: 0.001,
            },
            DenseConfig {
                units: 16,
                activation: rnnsweep_model::config::Activation::Tanh,
                l2: 0.0,
            },
        ],
        batch_size: 64,
        batch_norm_momentum: 0.9,
        epochs,
        seed: 11,
        ..ModelConfig::default()
    };
    c.optimizer.learning_rate = Some(0.005);
    c
}

fn strip_time(h: &[EpochReport]) -> Vec<EpochReport> {
    h.iter()
        .cloned()
        .map(|mut r| {
            r.seconds = 0.0;
            r
        })
        .collect()
}

#[test]
fn learns_the_sample_far_better_than_chance() {
    let table = sample(4000);
    let cfg = small(5);
    let data = prepare(&table, &cfg).unwrap();
    let out = fit(&cfg, &data, &Device::Cpu, &FitOptions::default(), |_| {
        Control::Continue
    })
    .unwrap();
    let best = out.history.iter().map(|r| r.val_f1).fold(0.0, f64::max);
    // Always predicting "hateful" gives F1 ≈ 0.14 on 7.5 % positives; a bag of words cannot
    // separate the reordered negatives.
    assert!(best > 0.6, "best val F1 {best}: {:#?}", out.history);
    assert!(out.history.last().unwrap().val_roc_auc > 0.9);
}

#[test]
fn same_seed_gives_bitwise_identical_metrics() {
    let table = sample(600);
    let cfg = small(2);
    let data = prepare(&table, &cfg).unwrap();
    let a = fit(&cfg, &data, &Device::Cpu, &FitOptions::default(), |_| {
        Control::Continue
    })
    .unwrap();
    let b = fit(&cfg, &data, &Device::Cpu, &FitOptions::default(), |_| {
        Control::Continue
    })
    .unwrap();
    assert_eq!(strip_time(&a.history), strip_time(&b.history));
    let other = ModelConfig {
        seed: 12,
        ..cfg.clone()
    };
    let c = fit(
        &other,
        &prepare(&table, &other).unwrap(),
        &Device::Cpu,
        &FitOptions::default(),
        |_| Control::Continue,
    )
    .unwrap();
    assert_ne!(strip_time(&a.history), strip_time(&c.history));
}

#[test]
fn resuming_a_checkpoint_is_bit_identical_to_an_uninterrupted_run() {
    let table = sample(600);
    let mut cfg = small(4);
    cfg.optimizer.name = OptimizerName::Nadam;
    cfg.early_stopping.enabled = false;
    let data = prepare(&table, &cfg).unwrap();
    let straight = fit(&cfg, &data, &Device::Cpu, &FitOptions::default(), |_| {
        Control::Continue
    })
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let options = FitOptions {
        checkpoint_dir: Some(dir.path().join("ckpt")),
        replay_history: false,
        task: None,
        distill: None,
    };
    // "Killed" after epoch 2: the callback stops, as a pruner or a signal would.
    let first = fit(&cfg, &data, &Device::Cpu, &options, |r| {
        if r.epoch == 2 {
            Control::Stop
        } else {
            Control::Continue
        }
    })
    .unwrap();
    assert_eq!(first.stop, StopReason::Callback);
    assert_eq!(first.history.len(), 2);
    let mut resumed_epochs = Vec::new();
    let resumed = fit(&cfg, &data, &Device::Cpu, &options, |r| {
        resumed_epochs.push(r.epoch);
        Control::Continue
    })
    .unwrap();
    assert_eq!(resumed_epochs, vec![3, 4]);
    assert_eq!(strip_time(&resumed.history), strip_time(&straight.history));
    let (sa, sb) = (straight.net.state().unwrap(), resumed.net.state().unwrap());
    for (name, t) in &sa {
        let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = sb[name].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn early_stopping_restores_the_best_epochs_weights() {
    let table = sample(600);
    let mut cfg = small(12);
    // A learning rate high enough that validation loss turns back up.
    cfg.optimizer.learning_rate = Some(0.05);
    cfg.early_stopping.patience = 2;
    let data = prepare(&table, &cfg).unwrap();
    let out = fit(&cfg, &data, &Device::Cpu, &FitOptions::default(), |_| {
        Control::Continue
    })
    .unwrap();
    assert_eq!(out.stop, StopReason::EarlyStopping, "{:#?}", out.history);
    let losses: Vec<f64> = out.history.iter().map(|r| r.val_loss).collect();
    let best = losses
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
        + 1;
    assert_eq!(out.best_epoch, best);
    assert_eq!(
        out.history.len(),
        best + 2,
        "stops `patience` epochs after the best: {losses:?}"
    );
    let (_, val_loss) = evaluate_examples(&out.net, &data.validation, cfg.batch_size).unwrap();
    assert!(
        (val_loss - losses[best - 1]).abs() < 1e-6,
        "{val_loss} vs {losses:?}"
    );
}

#[test]
fn non_finite_loss_is_an_error_not_a_panic() {
    let table = sample(300);
    let mut cfg = small(3);
    cfg.optimizer.name = OptimizerName::Sgd;
    cfg.optimizer.learning_rate = Some(1e30);
    let data = prepare(&table, &cfg).unwrap();
    let err = fit(&cfg, &data, &Device::Cpu, &FitOptions::default(), |_| {
        Control::Continue
    })
    .err()
    .expect("must diverge");
    assert!(
        err.to_string()
            .starts_with("training diverged: the loss became"),
        "{err}"
    );
}

#[test]
fn a_saved_model_predicts_what_the_trained_one_did_at_the_threshold_chosen_on_training_rows() {
    use rnnsweep_model::threshold::{Threshold, ThresholdMode};
    use rnnsweep_model::train::predict::predict_padded;
    let table = sample(400);
    let cfg = ModelConfig {
        threshold: Threshold {
            mode: ThresholdMode::MaxF1,
            ..Threshold::default()
        },
        calibration_split: 0.25,
        ..small(1)
    };
    let data = prepare(&table, &cfg).unwrap();
    // A quarter of the rows for calibration, 10 % of the file for validation, the rest trains.
    // (Each class is rounded on its own, so each part may be one row off per class.)
    let near = |n: usize, want: usize| n.abs_diff(want) <= 2;
    assert!(near(data.calibration.labels.len(), 100));
    assert!(near(data.validation.labels.len(), 40));
    assert!(near(data.train.labels.len(), 260));
    let mut seen: Vec<usize> = [
        data.calibration.source_rows.as_slice(),
        &data.validation.source_rows,
        &data.train.source_rows,
    ]
    .concat();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..400).collect::<Vec<_>>(),
        "disjoint, and every row used"
    );
    // The final retrain (no validation rows) holds out the same calibration rows.
    let all = rnnsweep_model::dataset::prepare_all(&table, None, &cfg).unwrap();
    assert_eq!(all.calibration.source_rows, data.calibration.source_rows);
    assert_eq!(
        all.train.labels.len(),
        data.train.labels.len() + data.validation.labels.len()
    );
    let out = fit(&cfg, &data, &Device::Cpu, &FitOptions::default(), |_| {
        Control::Continue
    })
    .unwrap();
    let calibration = predict_padded(&out.net, &data.calibration.ids, 64).unwrap();
    let chosen = cfg.threshold.choose(&calibration, &data.calibration.labels);
    assert_eq!(out.threshold, chosen);
    let last = out.history.last().unwrap();
    assert_eq!(
        last.threshold, chosen,
        "validation metrics use the model's threshold"
    );
    let validation = predict_padded(&out.net, &data.validation.ids, 64).unwrap();
    let at = |t: f64| classify(&validation, &data.validation.labels, t as f32).f1;
    assert_eq!(last.val_f1, at(chosen));
    assert_eq!(last.val_f1_at_half, at(0.5));
    let data_calibration_rows = data.calibration.labels.len();
    let model = TrainedModel::from_training(cfg, data, out.net, out.threshold);
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let loaded = TrainedModel::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.threshold.value, chosen);
    assert_eq!(loaded.threshold.calibration_rows, data_calibration_rows);
    let before = model.predict(&table).unwrap();
    let after = loaded.predict(&table).unwrap();
    assert_eq!(before, after);
    assert_eq!(before.len(), 400);
}

#[test]
fn fused_and_reference_lstm_give_the_same_loss_curve_and_share_weights() {
    use rnnsweep_model::config::LstmImpl;
    use rnnsweep_model::nn::Net;
    use rnnsweep_model::train::predict::predict_logits;

    let table = sample(4000);
    let config = |lstm_impl| ModelConfig {
        lstm_impl,
        // Input dropout, batch normalisation and padding all take part.
        lstm_dropout: 0.3,
        batch_norm: true,
        ..small(3)
    };
    let mut curves = Vec::new();
    let mut nets = Vec::new();
    for lstm_impl in [LstmImpl::Reference, LstmImpl::Fused] {
        let cfg = config(lstm_impl);
        let data = prepare(&table, &cfg).unwrap();
        let out = fit(&cfg, &data, &Device::Cpu, &FitOptions::default(), |_| {
            Control::Continue
        })
        .unwrap();
        assert_eq!(out.net.fused_lstm, lstm_impl == LstmImpl::Fused);
        curves.push(out.history);
        nets.push((out.net, data));
    }
    let (reference, fused) = (&curves[0], &curves[1]);
    assert_eq!(reference.len(), fused.len());
    for (r, f) in reference.iter().zip(fused) {
        for (what, a, b) in [
            ("train loss", r.train_loss, f.train_loss),
            ("val loss", r.val_loss, f.val_loss),
        ] {
            // Float rounding differs (the fused kernel sums in another order) and training
            // amplifies it, about tenfold an epoch here (1e-7, 1e-6, 1e-5 relative); a wrong
            // gradient would move the curve by far more.
            assert!(
                (a - b).abs() <= 5e-4 * a.abs(),
                "epoch {}: {what} {a} (reference) vs {b} (fused)",
                r.epoch
            );
        }
    }

    // Same weight layout: the fused model's weights, loaded into a reference network, predict
    // the same logits.
    let (fused_net, data) = &nets[1];
    let vocab = fused_net.towers[0].embedding.as_tensor().dims()[0];
    let as_reference = Net::new(&config(LstmImpl::Reference), vocab, &Device::Cpu).unwrap();
    as_reference
        .load_state(&fused_net.state().unwrap(), "fused")
        .unwrap();
    let a = predict_logits(fused_net, &data.validation.ids, 128).unwrap();
    let b = predict_logits(&as_reference, &data.validation.ids, 128).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

#[test]
fn the_fused_kernel_is_the_default_on_the_cpu() {
    let net = rnnsweep_model::nn::Net::new(&small(1), 100, &Device::Cpu).unwrap();
    assert!(net.fused_lstm);
}

#[test]
fn a_gru_learns_the_sample_and_its_saved_model_predicts_the_same() {
    let table = sample(2000);
    let cfg = ModelConfig {
        cell: rnnsweep_model::config::Cell::Gru,
        lstm_units: vec![16],
        ..small(4)
    };
    let data = prepare(&table, &cfg).unwrap();
    let out = fit(&cfg, &data, &Device::Cpu, &FitOptions::default(), |_| {
        Control::Continue
    })
    .unwrap();
    assert!(
        out.net.fused_lstm,
        "a GRU runs on the fused kernel on the CPU"
    );
    let auc = out.history.last().unwrap().val_roc_auc;
    assert!(auc > 0.85, "val ROC-AUC {auc}: {:#?}", out.history);
    let (probs, _) = evaluate_examples(&out.net, &data.validation, cfg.batch_size).unwrap();
    let dir = tempfile::tempdir().unwrap();
    TrainedModel::from_training(cfg.clone(), data.clone(), out.net, out.threshold)
        .save(dir.path())
        .unwrap();
    let config = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(config.contains("\"cell\": \"gru\""), "{config}");
    let loaded = TrainedModel::load(dir.path(), &Device::Cpu).unwrap();
    let (again, _) = evaluate_examples(&loaded.net, &data.validation, cfg.batch_size).unwrap();
    assert_eq!(probs, again);
    // The fused kernel's GRU weights, loaded into a reference network, predict the same.
    let reference = ModelConfig {
        lstm_impl: rnnsweep_model::config::LstmImpl::Reference,
        ..cfg
    };
    let vocab = loaded.net.towers[0].embedding.as_tensor().dims()[0];
    let as_reference = rnnsweep_model::nn::Net::new(&reference, vocab, &Device::Cpu).unwrap();
    assert!(!as_reference.fused_lstm);
    as_reference
        .load_state(&loaded.net.state().unwrap(), "fused")
        .unwrap();
    use rnnsweep_model::train::predict::predict_logits;
    let a = predict_logits(&loaded.net, &data.validation.ids, 128).unwrap();
    let b = predict_logits(&as_reference, &data.validation.ids, 128).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

/// A teacher that says the opposite of each row's label: 0.8 for a negative, 0.2 for a positive.
fn contrary(labels: &[u8]) -> Vec<f32> {
    labels
        .iter()
        .map(|&y| if y == 1 { 0.2 } else { 0.8 })
        .collect()
}

#[test]
fn a_distilled_student_learns_what_its_teacher_says_from_labelled_and_unlabelled_rows() {
    let table = sample(1600);
    let mut cfg = small(4);
    cfg.early_stopping.enabled = false;
    let mut labelled = table.clone();
    labelled.rows.truncate(800);
    let data = prepare(&labelled, &cfg).unwrap();
    let last_auc = |options: &FitOptions| {
        let out = fit(&cfg, &data, &Device::Cpu, options, |_| Control::Continue).unwrap();
        out.history.last().unwrap().val_roc_auc
    };
    let no_rows = Padded {
        ids: Vec::new(),
        rows: 0,
        len: data.train.ids.len,
    };
    // Taught by the contrary teacher alone (alpha 0), the student ranks the held-out rows
    // backwards, where the labels alone rank them well.
    let taught =
        |train: Vec<f32>, unlabelled: Padded, unlabelled_probabilities: Vec<f32>| FitOptions {
            distill: Some(SoftTargets {
                settings: DistillSettings {
                    alpha: 0.0,
                    temperature: 1.0,
                },
                train,
                unlabelled,
                unlabelled_probabilities,
            }),
            ..FitOptions::default()
        };
    let from_labels = last_auc(&FitOptions::default());
    let contrary_on_labelled = last_auc(&taught(
        contrary(&data.train.labels),
        no_rows.clone(),
        Vec::new(),
    ));
    assert!(from_labels > 0.8, "labels alone: AUC {from_labels}");
    assert!(
        contrary_on_labelled < 0.3,
        "the contrary teacher on the labelled rows: AUC {contrary_on_labelled}"
    );
    // A teacher that says nothing on the labelled rows (0.5 everywhere) and the contrary on
    // 800 unlabelled rows: what the student learns comes from the unlabelled rows alone.
    let others: Vec<_> = table.rows[800..].to_vec();
    let texts: Vec<&str> = others.iter().map(|r| r.text.as_str()).collect();
    let unlabelled = data.encoder.encode(&texts);
    let their_labels: Vec<u8> = others.iter().map(|r| r.label.unwrap()).collect();
    let contrary_on_unlabelled = last_auc(&taught(
        vec![0.5; data.train.labels.len()],
        unlabelled,
        contrary(&their_labels),
    ));
    assert!(
        contrary_on_unlabelled < 0.4,
        "the contrary teacher on unlabelled rows only: AUC {contrary_on_unlabelled}"
    );
    // Teacher probabilities that do not match the rows are refused before training.
    let wrong = taught(vec![0.5; 3], no_rows, Vec::new());
    let err = fit(&cfg, &data, &Device::Cpu, &wrong, |_| Control::Continue)
        .err()
        .unwrap();
    assert!(err.to_string().contains("3 probabilities"), "{err}");
}
