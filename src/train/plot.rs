//! The training-curve PNG: train and val loss (left), train and val Dice (right) per epoch.
//! Drawn with [`crate::raster`].

use std::path::Path;

use super::history::EpochRecord;
use crate::atomic_write::write_atomic;
use crate::error::{Error, Result};
use crate::raster::{Canvas, Panel, INK};

const W: usize = 960;
const H: usize = 420;
const TRAIN: [u8; 3] = [31, 119, 180];
const VAL: [u8; 3] = [255, 127, 14];

/// A named, coloured line of `(epoch, value)` points.
type Series<'a> = (&'a str, [u8; 3], Vec<(f64, f64)>);

/// One panel between `left` and `right` with two series over epochs (non-finite values skipped).
fn panel(c: &mut Canvas, (left, right): (i64, i64), title: &str, series: [Series; 2]) {
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
        let (lx, ly) = (left + 10 + i as i64 * 120, H as i64 - 22);
        c.line((lx, ly), (lx + 20, ly), *color, 2);
        c.text((lx + 26, ly - 4), 1, name, INK);
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
    panel(&mut c, (80, half - 30), "loss", [("train", TRAIN, series(|r| r.train_loss)), ("val", VAL, series(|r| r.val_loss))]);
    panel(
        &mut c,
        (half + 80, W as i64 - 30),
        "Dice (threshold 0.5)",
        [("train", TRAIN, series(|r| r.train_dice)), ("val", VAL, series(|r| r.val_dice))],
    );
    let bytes = c.png().map_err(|reason| Error::Encode { path: path.to_path_buf(), reason })?;
    write_atomic(path, &bytes)
}
