//! The training-curve PNG: train and val loss (left), train and val Dice (right) per epoch; and
//! the comparison of several runs (val loss and val Dice of each). Drawn with [`crate::raster`].

use std::path::Path;

use super::history::EpochRecord;
use crate::atomic_write::write_atomic;
use crate::error::{Error, Result};
use crate::raster::{text_width, Canvas, Panel, INK};

const W: usize = 960;
const H: usize = 420;
const TRAIN: [u8; 3] = [31, 119, 180];
const VAL: [u8; 3] = [255, 127, 14];

/// A named, coloured line of `(epoch, value)` points.
type Series<'a> = (&'a str, [u8; 3], Vec<(f64, f64)>);

/// Line colours for several runs (matplotlib's tab10, which people read as distinct).
const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// Where a legend entry's name starts, from the start of its line.
const LEGEND_TEXT_AT: i64 = 26;

/// The width of the legend entry for `name`.
fn legend_width(name: &str) -> i64 {
    LEGEND_TEXT_AT + text_width(name, 1) as i64
}

/// A legend entry (a short line in `color`, then `name`) starting at `(lx, ly)`.
fn legend(c: &mut Canvas, (lx, ly): (i64, i64), name: &str, color: [u8; 3]) {
    c.line((lx, ly), (lx + 20, ly), color, 2);
    c.text((lx + LEGEND_TEXT_AT, ly - 4), 1, name, INK);
}

/// Encodes `c` and writes it atomically to `path`.
fn write_png(c: Canvas, path: &Path) -> Result<()> {
    let bytes = c.png().map_err(|reason| Error::Encode { path: path.to_path_buf(), reason })?;
    write_atomic(path, &bytes)
}

/// One panel between `left` and `right` with series over epochs (non-finite values skipped);
/// with `own_legend`, each series' name is drawn below the panel.
fn panel(c: &mut Canvas, (left, right): (i64, i64), title: &str, series: &[Series], own_legend: bool) {
    let pts = series.iter().flat_map(|s| s.2.iter().copied()).filter(|p| p.1.is_finite());
    let (mut xmax, mut ymin, mut ymax) = (2f64, f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in pts {
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    if !ymin.is_finite() {
        (ymin, ymax) = (0.0, 1.0);
    }
    if ymax - ymin < 1e-9 {
        ymax = ymin + 1e-3;
    }
    let pad = (ymax - ymin) * 0.05;
    let p = Panel { left, right, top: 40, bottom: H as i64 - 70, x: (1.0, xmax), y: (ymin - pad, ymax + pad), whole_x: true };
    p.axes(c, "epoch", title, 1);
    for (i, (name, color, pts)) in series.iter().enumerate() {
        if own_legend {
            legend(c, (left + 10 + i as i64 * 120, H as i64 - 22), name, *color);
        }
        let valid: Vec<(i64, i64)> = pts.iter().filter(|p| p.1.is_finite()).map(|&(x, y)| p.map(x, y)).collect();
        for w in valid.windows(2) {
            c.line(w[0], w[1], *color, 2);
        }
        for &(x, y) in &valid {
            c.rect((x - 2, y), (x + 3, y + 1), *color);
            c.rect((x, y - 2), (x + 1, y + 3), *color);
        }
    }
}

/// Renders the curves of `history` and writes them atomically to `path` (PNG).
pub fn plot_curves(history: &[EpochRecord], path: &Path) -> Result<()> {
    let mut c = Canvas::new(W, H);
    let series = |f: fn(&EpochRecord) -> f64| history.iter().map(|r| (r.epoch as f64, f(r))).collect::<Vec<_>>();
    let half = W as i64 / 2;
    panel(&mut c, (80, half - 30), "loss", &[("train", TRAIN, series(|r| r.train_loss)), ("val", VAL, series(|r| r.val_loss))], true);
    panel(
        &mut c,
        (half + 80, W as i64 - 30),
        "Dice (threshold 0.5)",
        &[("train", TRAIN, series(|r| r.train_dice)), ("val", VAL, series(|r| r.val_dice))],
        true,
    );
    write_png(c, path)
}

/// Renders the validation curves of several runs side by side (val loss left, val Dice right,
/// one colour per run, the names along the bottom) and writes them atomically to `path` (PNG).
/// Colours repeat after ten runs.
pub fn plot_runs(runs: &[(&str, &[EpochRecord])], path: &Path) -> Result<()> {
    let mut c = Canvas::new(W, H);
    let series = |f: fn(&EpochRecord) -> f64| -> Vec<Series> {
        runs.iter()
            .enumerate()
            .map(|(i, (name, history))| (*name, PALETTE[i % PALETTE.len()], history.iter().map(|r| (r.epoch as f64, f(r))).collect()))
            .collect()
    };
    let half = W as i64 / 2;
    // Each run's loss is its own (dice or BCE + Dice), so the left panel compares shapes.
    panel(&mut c, (80, half - 30), "val loss (each run's own)", &series(|r| r.val_loss), false);
    panel(&mut c, (half + 80, W as i64 - 30), "val Dice (threshold 0.5)", &series(|r| r.val_dice), false);
    // The names along the bottom, wrapping to a second row (and on) where they do not fit.
    let (mut x, mut y) = (20i64, H as i64 - 34);
    for (i, (name, _)) in runs.iter().enumerate() {
        let width = legend_width(name);
        if x > 20 && x + width > W as i64 - 10 {
            (x, y) = (20, y + 14);
        }
        legend(&mut c, (x, y), name, PALETTE[i % PALETTE.len()]);
        x += width + 24;
    }
    write_png(c, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, val_loss: f64, val_dice: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            steps: epoch as u64,
            train_loss: val_loss,
            train_dice: val_dice,
            val_loss,
            val_dice,
            lr: 1e-4,
            seconds: 1.0,
            best: false,
            ema_val_loss: None,
            ema_val_dice: None,
            selected: None,
        }
    }

    /// Each run is drawn in its own colour; a run with a NaN epoch is drawn without it.
    #[test]
    fn runs_are_drawn_in_their_own_colours() {
        let a: Vec<EpochRecord> = (1..=5).map(|e| record(e, 1.0 / e as f64, 0.1 * e as f64)).collect();
        let mut b: Vec<EpochRecord> = (1..=3).map(|e| record(e, 0.9 / e as f64, 0.15 * e as f64)).collect();
        b[1].val_loss = f64::NAN;
        let path = std::env::temp_dir().join(format!("lightunet-plot-runs-{}.png", std::process::id()));
        plot_runs(&[("seed", &a), ("bce-dice", &b)], &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let _ = std::fs::remove_file(&path);
        assert_eq!((img.width(), img.height()), (W as u32, H as u32));
        let count = |rgb: [u8; 3]| img.pixels().filter(|p| p.0 == rgb).count();
        for colour in [PALETTE[0], PALETTE[1]] {
            assert!(count(colour) > 200, "colour {colour:?}: {} pixels", count(colour));
        }
        assert_eq!(count(PALETTE[2]), 0, "a third colour appears with two runs");
    }
}
