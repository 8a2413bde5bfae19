//! The training-curve PNG: train and val loss (left), train and val Dice (right) per epoch.
//! Drawn directly with `image` and the public-domain 8x8 bitmap font of `font8x8`, so it needs
//! no system fonts and renders the same everywhere.

use std::path::Path;

use image::{Rgb, RgbImage};

use super::checkpoint::write_atomic;
use super::trainer::EpochRecord;
use crate::error::{Error, Result};

const W: u32 = 960;
const H: u32 = 420;
const BG: Rgb<u8> = Rgb([255, 255, 255]);
const AXIS: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const TRAIN: Rgb<u8> = Rgb([31, 119, 180]);
const VAL: Rgb<u8> = Rgb([255, 127, 14]);

fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, color: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY.get(ch as usize).copied().unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    put(img, x + i as i64 * 8 + col, y + row as i64, color);
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// A 2-pixel-wide line (Bresenham, doubled vertically).
fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        put(img, x, y, c);
        put(img, x, y + 1, c);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// One panel at `(left, top)` of size `pw x ph` with up to two series over epochs.
/// A named, coloured line of `(epoch, value)` points.
type Series<'a> = (&'a str, Rgb<u8>, Vec<(f64, f64)>);

fn panel(img: &mut RgbImage, left: i64, title: &str, series: [Series; 2]) {
    let (top, pw, ph) = (40i64, (W as i64) / 2 - 110, H as i64 - 100);
    let pts = series.iter().flat_map(|s| s.2.iter().copied()).filter(|p| p.1.is_finite());
    let (mut xmax, mut ymin, mut ymax) = (1f64, f64::INFINITY, f64::NEG_INFINITY);
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
    let (ymin, ymax) = (ymin - pad, ymax + pad);
    let px = |x: f64| left + ((x - 1.0).max(0.0) / (xmax - 1.0).max(1.0) * pw as f64).round() as i64;
    let py = |y: f64| top + ph - ((y - ymin) / (ymax - ymin) * ph as f64).round() as i64;
    for k in 0..=4 {
        let y = ymin + (ymax - ymin) * k as f64 / 4.0;
        let yy = py(y);
        line(img, (left, yy), (left + pw, yy), GRID);
        text(img, left - 64, yy - 4, &format!("{y:>7.3}"), AXIS);
    }
    line(img, (left, top), (left, top + ph), AXIS);
    line(img, (left, top + ph), (left + pw, top + ph), AXIS);
    text(img, left, top - 28, title, AXIS);
    text(img, left, top + ph + 12, "1", AXIS);
    let last = format!("{}", xmax as usize);
    text(img, left + pw - 8 * last.len() as i64, top + ph + 12, &last, AXIS);
    text(img, left + pw / 2 - 20, top + ph + 12, "epoch", AXIS);
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let lx = left + 10 + i as i64 * 120;
        line(img, (lx, top + ph + 34), (lx + 20, top + ph + 34), *color);
        text(img, lx + 26, top + ph + 30, name, AXIS);
        let valid: Vec<(i64, i64)> = pts.iter().filter(|p| p.1.is_finite()).map(|&(x, y)| (px(x), py(y))).collect();
        for w in valid.windows(2) {
            line(img, w[0], w[1], *color);
        }
        for &(x, y) in &valid {
            for d in -2..=2 {
                put(img, x + d, y, *color);
                put(img, x, y + d, *color);
            }
        }
    }
}

/// Renders the curves of `history` and writes them atomically to `path` (PNG).
pub fn plot_curves(history: &[EpochRecord], path: &Path) -> Result<()> {
    let mut img = RgbImage::from_pixel(W, H, BG);
    let series = |f: fn(&EpochRecord) -> f64| history.iter().map(|r| (r.epoch as f64, f(r))).collect::<Vec<_>>();
    panel(&mut img, 90, "loss", [("train", TRAIN, series(|r| r.train_loss)), ("val", VAL, series(|r| r.val_loss))]);
    panel(
        &mut img,
        i64::from(W) / 2 + 80,
        "Dice (threshold 0.5)",
        [("train", TRAIN, series(|r| r.train_dice)), ("val", VAL, series(|r| r.val_dice))],
    );
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| Error::Msg(format!("encoding {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}
