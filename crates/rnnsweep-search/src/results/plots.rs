//! Pictures and exports of a study: optimization history, parallel coordinates, learning
//! curves, the best trial's confusion matrix and ROC/PR curves (PNG and SVG, drawn with
//! plotters and an embedded DejaVu Sans so they render the same everywhere), and one row per
//! trial (or per epoch) as CSV or JSON.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use rnnsweep_model::metrics::Direction;
use serde_json::Value;

use crate::predictions::Predictions;
use crate::store::decode_param;
use crate::store::{param_names, TrialRecord, TrialState};

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType font shipped with the crate.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, FONT);
    });
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ReportError {
    pub path: String,
    pub message: String,
}

/// Everything the plots need about one trial.
#[derive(Debug, Clone)]
pub struct TrialData {
    pub record: TrialRecord,
    /// Per-epoch metrics (from `rnnsweep_epochs`).
    pub epochs: Vec<(i64, Value)>,
}

pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 640;

fn err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> ReportError + '_ {
    move |e| ReportError {
        path: path.display().to_string(),
        message: format!("{e:?}"),
    }
}

/// Draws the body into `<dir>/<name>.png` and `<dir>/<name>.svg` (the body is expanded once
/// per backend, with `$root` bound to its drawing area) and returns both paths.
macro_rules! draw_both {
    ($dir:expr, $name:expr, |$root:ident| $body:block) => {{
        register_font();
        let png = $dir.join(format!("{}.png", $name));
        let svg = $dir.join(format!("{}.svg", $name));
        {
            let area = BitMapBackend::new(&png, (WIDTH, HEIGHT)).into_drawing_area();
            area.fill(&WHITE).map_err(err(&png))?;
            let $root = &area;
            let drawn: Result<(), String> = (|| $body)();
            drawn.map_err(err(&png))?;
            area.present().map_err(err(&png))?;
        }
        {
            let area = SVGBackend::new(&svg, (WIDTH, HEIGHT)).into_drawing_area();
            area.fill(&WHITE).map_err(err(&svg))?;
            let $root = &area;
            let drawn: Result<(), String> = (|| $body)();
            drawn.map_err(err(&svg))?;
            area.present().map_err(err(&svg))?;
        }
        Ok(vec![png, svg])
    }};
}

fn e2s<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

/// Objective per completed trial with the best-so-far line.
/// The best value after each point (the history plot's staircase).
fn best_so_far(points: &[(f64, f64)], direction: Direction) -> Vec<(f64, f64)> {
    let mut so_far: Option<f64> = None;
    points
        .iter()
        .map(|&(x, y)| {
            let best = so_far.map_or(y, |b| direction.best(b, y));
            so_far = Some(best);
            (x, best)
        })
        .collect()
}

pub fn optimization_history(
    dir: &Path,
    trials: &[TrialData],
    metric: &str,
    direction: Direction,
) -> Result<Vec<PathBuf>, ReportError> {
    let points: Vec<(f64, f64)> = trials
        .iter()
        .filter(|t| t.record.state == TrialState::Complete)
        .filter_map(|t| Some((t.record.number as f64, t.record.value?)))
        .collect();
    let best = best_so_far(&points, direction);
    let max_x = trials
        .iter()
        .map(|t| t.record.number)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let (lo, hi) = padded_range(points.iter().map(|p| p.1));
    draw_both!(dir, "optimization_history", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("Optimization history ({metric})"),
                ("sans-serif", 26),
            )
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5..max_x + 0.5, lo..hi)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("trial")
            .y_desc(metric)
            .x_label_formatter(&|x: &f64| {
                if x.fract() == 0.0 {
                    format!("{x:.0}")
                } else {
                    String::new()
                }
            })
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(e2s)?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 5, BLUE.filled())),
            )
            .map_err(e2s)?
            .label("objective of a trial")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, BLUE.filled()));
        chart
            .draw_series(LineSeries::new(best.iter().copied(), RED.stroke_width(2)))
            .map_err(e2s)?
            .label("best so far")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(e2s)
    })
}

/// One vertical axis per parameter (scaled to its range; categoricals by choice), one line
/// per completed trial coloured by its objective.
pub fn parallel_coordinates(
    dir: &Path,
    trials: &[TrialData],
    metric: &str,
) -> Result<Vec<PathBuf>, ReportError> {
    let complete: Vec<&TrialData> = trials
        .iter()
        .filter(|t| t.record.state == TrialState::Complete && t.record.value.is_some())
        .collect();
    let names = param_names(complete.iter().map(|t| &t.record));
    // Per parameter: (low, high) of the stored value; categoricals use their index.
    let ranges: Vec<(f64, f64)> = names
        .iter()
        .map(|n| {
            let vals = complete
                .iter()
                .filter_map(|t| t.record.params.get(n).map(|p| p.internal));
            let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
            if lo < hi {
                (lo, hi)
            } else {
                (lo - 0.5, lo + 0.5)
            }
        })
        .collect();
    let (vlo, vhi) = padded_range(complete.iter().filter_map(|t| t.record.value));
    let axes = names.len() + 1;
    draw_both!(dir, "parallel_coordinates", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("Parallel coordinates (colour: {metric}, dark = low, yellow = high)"),
                ("sans-serif", 22),
            )
            .margin(30)
            .x_label_area_size(60)
            .y_label_area_size(10)
            .build_cartesian_2d(-0.3..(axes as f64 - 0.7), -0.05..1.05)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .y_labels(0)
            .x_labels(axes)
            .x_label_formatter(&|x: &f64| {
                let i = x.round() as usize;
                if (x - i as f64).abs() > 1e-6 {
                    String::new()
                } else if i < names.len() {
                    names[i].clone()
                } else {
                    metric.to_string()
                }
            })
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        for i in 0..axes {
            chart
                .draw_series(LineSeries::new(
                    vec![(i as f64, 0.0), (i as f64, 1.0)],
                    BLACK.stroke_width(1),
                ))
                .map_err(e2s)?;
        }
        // Axis end labels: low at the bottom, high at the top.
        for (i, (lo, hi)) in ranges
            .iter()
            .chain(std::iter::once(&(vlo, vhi)))
            .enumerate()
        {
            let label = |v: f64| {
                if i < names.len() {
                    let d = &complete
                        .iter()
                        .find_map(|t| t.record.params.get(&names[i]))
                        .map(|p| p.distribution_json.clone())
                        .unwrap_or_default();
                    match decode_param(v, d) {
                        Value::String(s) => s,
                        Value::Number(n) => n
                            .as_f64()
                            .map_or(n.to_string(), |f| format!("{}", (f * 1e4).round() / 1e4)),
                        other => other.to_string(),
                    }
                } else {
                    format!("{v:.3}")
                }
            };
            chart
                .draw_series([
                    Text::new(label(*hi), (i as f64 + 0.03, 1.02), ("sans-serif", 13)),
                    Text::new(label(*lo), (i as f64 + 0.03, 0.0), ("sans-serif", 13)),
                ])
                .map_err(e2s)?;
        }
        for t in &complete {
            let v = t.record.value.unwrap_or(vlo);
            let shade = ((v - vlo) / (vhi - vlo)).clamp(0.0, 1.0);
            let colour = ViridisRGB::get_color(shade);
            let mut pts: Vec<(f64, f64)> = Vec::new();
            for (i, n) in names.iter().enumerate() {
                if let Some(p) = t.record.params.get(n) {
                    let (lo, hi) = ranges[i];
                    pts.push((i as f64, (p.internal - lo) / (hi - lo)));
                }
            }
            pts.push((names.len() as f64, shade));
            chart
                .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
                .map_err(e2s)?;
        }
        Ok(())
    })
}

fn series(t: &TrialData, key: &str) -> Vec<(f64, f64)> {
    t.epochs
        .iter()
        .filter_map(|(e, m)| Some((*e as f64, m.get(key)?.as_f64()?)))
        .collect()
}

/// Train and validation loss, and the objective, per epoch for the given (top) trials.
pub fn learning_curves(
    dir: &Path,
    top: &[&TrialData],
    metric: &str,
) -> Result<Vec<PathBuf>, ReportError> {
    let max_epoch = top
        .iter()
        .flat_map(|t| t.epochs.iter().map(|e| e.0))
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let (llo, lhi) = padded_range(top.iter().flat_map(|t| {
        series(t, "train_loss")
            .into_iter()
            .chain(series(t, "val_loss"))
            .map(|p| p.1)
    }));
    let (mlo, mhi) = padded_range(
        top.iter()
            .flat_map(|t| series(t, metric).into_iter().map(|p| p.1)),
    );
    draw_both!(dir, "learning_curves", |root| {
        let (left, right) = root.split_horizontally(WIDTH / 2);
        let mut loss = ChartBuilder::on(&left)
            .caption(
                "Loss per epoch (solid: train, dashed: validation)",
                ("sans-serif", 18),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(1.0..max_epoch, llo..lhi)
            .map_err(e2s)?;
        loss.configure_mesh()
            .x_desc("epoch")
            .y_desc("loss")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        let mut score = ChartBuilder::on(&right)
            .caption(format!("{metric} per epoch"), ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(1.0..max_epoch, mlo..mhi)
            .map_err(e2s)?;
        score
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(metric)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        for (k, t) in top.iter().enumerate() {
            let colour = Palette99::pick(k).to_rgba();
            let label = format!("trial {}", t.record.number);
            loss.draw_series(LineSeries::new(
                series(t, "train_loss"),
                colour.stroke_width(2),
            ))
            .map_err(e2s)?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
            loss.draw_series(DashedLineSeries::new(
                series(t, "val_loss"),
                6,
                4,
                colour.stroke_width(2),
            ))
            .map_err(e2s)?;
            score
                .draw_series(LineSeries::new(series(t, metric), colour.stroke_width(2)))
                .map_err(e2s)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        loss.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        score
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        Ok(())
    })
}

/// The best trial's validation confusion matrix at threshold 0.5.
pub fn confusion_matrix(
    dir: &Path,
    number: i64,
    probs: &[f32],
    labels: &[u8],
) -> Result<Vec<PathBuf>, ReportError> {
    let c = rnnsweep_model::metrics::classify(probs, labels, 0.5);
    let [tn, fp, fneg, tp] = c.confusion;
    let cells = [[tn, fp], [fneg, tp]];
    let max = *c.confusion.iter().max().unwrap_or(&1).max(&1) as f64;
    draw_both!(dir, "confusion_matrix", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("Confusion matrix, trial {number} (validation, threshold 0.5)"),
                ("sans-serif", 22),
            )
            .margin(30)
            .x_label_area_size(50)
            .y_label_area_size(90)
            .build_cartesian_2d(0.0..2.0, 0.0..2.0)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(5)
            .y_labels(5)
            .x_desc("predicted")
            .y_desc("actual")
            .x_label_formatter(&|x: &f64| {
                if (*x - 0.5).abs() < 0.3 {
                    "0 (not hateful)".into()
                } else if (*x - 1.5).abs() < 0.3 {
                    "1 (hateful)".into()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|y: &f64| {
                if (*y - 1.5).abs() < 0.3 {
                    "0".into()
                } else if (*y - 0.5).abs() < 0.3 {
                    "1".into()
                } else {
                    String::new()
                }
            })
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(e2s)?;
        for (actual, row) in cells.iter().enumerate() {
            for (pred, &n) in row.iter().enumerate() {
                let y0 = 1.0 - actual as f64;
                let shade = (n as f64 / max).sqrt();
                let colour = RGBColor(
                    (255.0 - 200.0 * shade) as u8,
                    (255.0 - 120.0 * shade) as u8,
                    255,
                );
                chart
                    .draw_series([Rectangle::new(
                        [(pred as f64, y0), (pred as f64 + 1.0, y0 + 1.0)],
                        colour.filled(),
                    )])
                    .map_err(e2s)?;
                let name = ["TN", "FP", "FN", "TP"][actual * 2 + pred];
                chart
                    .draw_series([Text::new(
                        format!("{name} {n}"),
                        (pred as f64 + 0.38, y0 + 0.55),
                        ("sans-serif", 28).into_font().color(&BLACK),
                    )])
                    .map_err(e2s)?;
            }
        }
        Ok(())
    })
}

/// A K-class trial's validation confusion matrix (rows: actual, columns: predicted by
/// argmax), each cell shaded by its share of the actual class's rows.
pub fn class_confusion_matrix(
    dir: &Path,
    number: i64,
    p: &Predictions,
) -> Result<Vec<PathBuf>, ReportError> {
    let k = p.classes.len();
    let m =
        rnnsweep_model::metrics::classify_multiclass(&p.probabilities, &p.labels, &p.classes, None);
    let names = p.classes.clone();
    let kf = k as f64;
    draw_both!(dir, "confusion_matrix", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("Confusion matrix, trial {number} (validation, argmax)"),
                ("sans-serif", 22),
            )
            .margin(30)
            .x_label_area_size(50)
            .y_label_area_size(120)
            .build_cartesian_2d(0.0..kf, 0.0..kf)
            .map_err(e2s)?;
        let at = |v: f64, flip: bool| {
            let i = v.floor() as usize;
            let centred = (v - v.floor() - 0.5).abs() < 0.02;
            match (centred, flip) {
                (true, false) => names.get(i).cloned().unwrap_or_default(),
                (true, true) => names.get(k - 1 - i).cloned().unwrap_or_default(),
                _ => String::new(),
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(4 * k + 1)
            .y_labels(4 * k + 1)
            .x_desc("predicted")
            .y_desc("actual")
            .x_label_formatter(&|x: &f64| at(*x, false))
            .y_label_formatter(&|y: &f64| at(*y, true))
            .label_style(("sans-serif", 16))
            .draw()
            .map_err(e2s)?;
        for (actual, row) in m.confusion.iter().enumerate() {
            let total = row.iter().sum::<u64>().max(1) as f64;
            for (pred, &n) in row.iter().enumerate() {
                let y0 = kf - 1.0 - actual as f64;
                let shade = (n as f64 / total).sqrt();
                let colour = RGBColor(
                    (255.0 - 200.0 * shade) as u8,
                    (255.0 - 120.0 * shade) as u8,
                    255,
                );
                chart
                    .draw_series([Rectangle::new(
                        [(pred as f64, y0), (pred as f64 + 1.0, y0 + 1.0)],
                        colour.filled(),
                    )])
                    .map_err(e2s)?;
                chart
                    .draw_series([Text::new(
                        n.to_string(),
                        (pred as f64 + 0.42, y0 + 0.55),
                        ("sans-serif", 24).into_font().color(&BLACK),
                    )])
                    .map_err(e2s)?;
            }
        }
        Ok(())
    })
}

/// Precision–recall curves of each class (or label) against the rest, with its average
/// precision in the legend.
pub fn class_pr_curves(
    dir: &Path,
    number: i64,
    p: &Predictions,
) -> Result<Vec<PathBuf>, ReportError> {
    let k = p.classes.len().max(1);
    let curves: Vec<ClassCurve> = p
        .classes
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let scores: Vec<f32> = p.probabilities.iter().skip(c).step_by(k).copied().collect();
            let truth: Vec<u8> = if p.multi_label {
                p.labels.iter().skip(c).step_by(k).copied().collect()
            } else {
                p.labels
                    .iter()
                    .map(|&y| u8::from(usize::from(y) == c))
                    .collect()
            };
            let ap = rnnsweep_model::metrics::average_precision(&scores, &truth);
            (name.clone(), curves(&scores, &truth).1, ap)
        })
        .collect();
    draw_both!(dir, "pr_curves", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("Precision–recall per class, trial {number} (validation)"),
                ("sans-serif", 22),
            )
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..1.0, 0.0..1.02)
            .map_err(e2s)?;
        chart
            .configure_mesh()
            .x_desc("recall")
            .y_desc("precision")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        for (i, (name, points, ap)) in curves.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(e2s)?
                .label(format!("{name} (AP {ap:.3})"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(e2s)?;
        Ok(())
    })
}

/// One class's name, its `(recall, precision)` points and its average precision.
type ClassCurve = (String, Vec<(f64, f64)>, f64);

type Curve = Vec<(f64, f64)>;

/// The ROC curve `(false positive rate, true positive rate)` from `(0, 0)` and the
/// precision–recall curve `(recall, precision)`, one point per distinct score, highest first.
fn curves(scores: &[f32], labels: &[u8]) -> (Curve, Curve) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = labels.iter().filter(|&&l| l == 1).count().max(1) as f64;
    let neg = (labels.len() as f64 - pos).max(1.0);
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut roc = vec![(0.0, 0.0)];
    let mut pr = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let score = scores[order[i]];
        while i < order.len() && scores[order[i]] == score {
            if labels[order[i]] == 1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        roc.push((fp / neg, tp / pos));
        pr.push((tp / pos, tp / (tp + fp)));
    }
    (roc, pr)
}

/// ROC and precision–recall curves of the best trial on its validation set.
pub fn roc_pr(
    dir: &Path,
    number: i64,
    probs: &[f32],
    labels: &[u8],
) -> Result<Vec<PathBuf>, ReportError> {
    let (roc, pr) = curves(probs, labels);
    let auc = rnnsweep_model::metrics::roc_auc(probs, labels);
    let ap = rnnsweep_model::metrics::average_precision(probs, labels);
    draw_both!(dir, "roc_pr", |root| {
        let (left, right) = root.split_horizontally(WIDTH / 2);
        let mut a = ChartBuilder::on(&left)
            .caption(
                format!("ROC, trial {number} (AUC {auc:.4})"),
                ("sans-serif", 18),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..1.0, 0.0..1.02)
            .map_err(e2s)?;
        a.configure_mesh()
            .x_desc("false positive rate")
            .y_desc("true positive rate")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        a.draw_series(DashedLineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            5,
            5,
            BLACK.mix(0.4).stroke_width(1),
        ))
        .map_err(e2s)?;
        a.draw_series(LineSeries::new(roc.clone(), BLUE.stroke_width(2)))
            .map_err(e2s)?;
        let mut b = ChartBuilder::on(&right)
            .caption(format!("Precision–recall (AP {ap:.4})"), ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..1.0, 0.0..1.02)
            .map_err(e2s)?;
        b.configure_mesh()
            .x_desc("recall")
            .y_desc("precision")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(e2s)?;
        b.draw_series(LineSeries::new(pr.clone(), RED.stroke_width(2)))
            .map_err(e2s)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures;

    fn trial(number: i64, state: TrialState, value: Option<f64>) -> TrialData {
        TrialData {
            record: fixtures::trial(number, state, value, 32.0),
            epochs: vec![
                (1, serde_json::json!({"val_f1": 0.25})),
                (2, serde_json::json!({"val_f1": 0.5})),
            ],
        }
    }

    #[test]
    fn the_history_staircase_keeps_the_best_so_far_in_the_studys_direction() {
        let points = [(0.0, 0.5), (1.0, 0.25), (2.0, 0.75), (3.0, 0.5)];
        let up: Vec<f64> = best_so_far(&points, Direction::Maximize)
            .iter()
            .map(|p| p.1)
            .collect();
        let down: Vec<f64> = best_so_far(&points, Direction::Minimize)
            .iter()
            .map(|p| p.1)
            .collect();
        assert_eq!(up, [0.5, 0.5, 0.75, 0.75]);
        assert_eq!(down, [0.5, 0.25, 0.25, 0.25]);
    }

    #[test]
    fn roc_and_pr_curves_step_once_per_distinct_score() {
        // Scores 0.9 (pos), 0.8 (neg), 0.8 (pos), 0.1 (neg): the tie is one step.
        let (roc, pr) = curves(&[0.9, 0.8, 0.8, 0.1], &[1, 0, 1, 0]);
        assert_eq!(roc, [(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        assert_eq!(pr, [(0.5, 1.0), (1.0, 2.0 / 3.0), (1.0, 0.5)]);
    }

    #[test]
    fn each_plot_is_written_as_png_and_svg_with_its_caption() {
        let dir = tempfile::tempdir().unwrap();
        let trials = [
            trial(0, TrialState::Complete, Some(0.5)),
            trial(1, TrialState::Fail, None),
            trial(2, TrialState::Complete, Some(0.75)),
        ];
        let top: Vec<&TrialData> = trials.iter().collect();
        let files = [
            optimization_history(dir.path(), &trials, "val_f1", Direction::Maximize).unwrap(),
            learning_curves(dir.path(), &top, "val_f1").unwrap(),
            confusion_matrix(dir.path(), 2, &[0.9, 0.2, 0.6], &[1, 0, 0]).unwrap(),
            roc_pr(dir.path(), 2, &[0.9, 0.2, 0.6], &[1, 0, 0]).unwrap(),
        ];
        let captions = [
            "Optimization history (val_f1)",
            "val_f1 per epoch",
            "Confusion matrix, trial 2",
            "ROC, trial 2",
        ];
        for (paths, caption) in files.iter().zip(captions) {
            assert_eq!(paths.len(), 2);
            let png = std::fs::read(&paths[0]).unwrap();
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", paths[0].display());
            let svg = std::fs::read_to_string(&paths[1]).unwrap();
            assert!(svg.starts_with("<svg"), "{}", paths[1].display());
            assert!(
                svg.contains(caption),
                "{caption} not in {}",
                paths[1].display()
            );
        }
    }
}
