//! The latency plot of `bench pipeline`: per-frame latency over time (end to end, inference,
//! input queue) above a histogram of the end-to-end latency. Drawn with the `image` crate and the
//! built-in pixel font, so no plotting library or system font is needed.

use std::path::Path;

use super::error::{PipelineError, Result};
use super::font::{draw_text_bgr, text_width};
use super::latency::FrameRecord;

const W: usize = 1200;
const H: usize = 820;
const LEFT: usize = 90;
const RIGHT: usize = W - 30;

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.put(x, y, c);
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

    fn rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, c: [u8; 3]) {
        for y in y0..y1.min(H) {
            for x in x0..x1.min(W) {
                self.put(x as i64, y as i64, c);
            }
        }
    }

    fn text(&mut self, x: usize, y: usize, scale: usize, s: &str, c: [u8; 3]) {
        draw_text_bgr(&mut self.px, W, H, W * 3, (x, y), scale, s, c, None);
    }
}

/// A round step for `n` ticks over `0..max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

/// Axes with labelled ticks on a panel `[top, bottom)`; returns the value-to-pixel mappings.
fn axes(c: &mut Canvas, top: usize, bottom: usize, xmax: f64, ymax: f64, xlabel: &str, ylabel: &str) {
    let grey = [210, 210, 210];
    let dark = [40, 40, 40];
    let ys = nice_step(ymax, 5.0);
    let mut v = 0.0;
    while v <= ymax + 1e-9 {
        let y = bottom as f64 - v / ymax * (bottom - top) as f64;
        c.line((LEFT as i64, y as i64), (RIGHT as i64, y as i64), grey);
        let label = format!("{v}");
        c.text(LEFT.saturating_sub(text_width(&label, 2) + 8), y as usize - 6, 2, &label, dark);
        v += ys;
    }
    let xs = nice_step(xmax, 8.0);
    let mut v = 0.0;
    while v <= xmax + 1e-9 {
        let x = LEFT as f64 + v / xmax * (RIGHT - LEFT) as f64;
        c.line((x as i64, top as i64), (x as i64, bottom as i64), grey);
        let label = format!("{}", (v * 1000.0).round() / 1000.0);
        c.text(x as usize - text_width(&label, 2) / 2, bottom + 6, 2, &label, dark);
        v += xs;
    }
    c.line((LEFT as i64, bottom as i64), (RIGHT as i64, bottom as i64), dark);
    c.line((LEFT as i64, top as i64), (LEFT as i64, bottom as i64), dark);
    c.text((LEFT + RIGHT) / 2 - text_width(xlabel, 2) / 2, bottom + 24, 2, xlabel, dark);
    c.text(4, top.saturating_sub(20), 2, ylabel, dark);
}

/// Writes the plot for `records` (needs at least one frame with an end-to-end latency).
pub fn latency_plot(records: &[FrameRecord], path: &Path) -> Result<()> {
    let pts: Vec<(f64, f64, Option<f64>, Option<f64>)> = records
        .iter()
        .filter_map(|r| r.latency_ms.end_to_end.map(|e| (r.t_s, e, r.latency_ms.inference, r.latency_ms.queue)))
        .collect();
    if pts.is_empty() {
        return Err(PipelineError::Config("no frame reached the output: nothing to plot".into()));
    }
    let mut c = Canvas { px: vec![255u8; W * H * 3] };
    let (red, blue, orange, dark) = ([200, 30, 30], [30, 80, 200], [230, 140, 20], [20, 20, 20]);
    c.text(LEFT, 10, 3, &format!("LATENCY PER FRAME ({} FRAMES)", pts.len()), dark);
    let (t0, t1) = (pts[0].0, pts.iter().map(|p| p.0).fold(f64::MIN, f64::max));
    let tmax = (t1 - t0).max(1e-3);
    let ymax = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
    let (top, bottom) = (70, 440);
    axes(&mut c, top, bottom, tmax, ymax, "TIME (S)", "MS");
    let map = |t: f64, v: f64| {
        (
            (LEFT as f64 + (t - t0) / tmax * (RIGHT - LEFT) as f64) as i64,
            (bottom as f64 - v.min(ymax) / ymax * (bottom - top) as f64) as i64,
        )
    };
    for (series, color) in [(3usize, orange), (2, blue), (1, red)] {
        let mut prev = None;
        for p in &pts {
            let v = match series {
                1 => Some(p.1),
                2 => p.2,
                _ => p.3,
            };
            if let Some(v) = v {
                let q = map(p.0, v);
                if let Some(pq) = prev {
                    c.line(pq, q, color);
                }
                c.rect((q.0 - 1).max(0) as usize, (q.1 - 1).max(0) as usize, (q.0 + 2) as usize, (q.1 + 2) as usize, color);
                prev = Some(q);
            }
        }
    }
    for (i, (name, color)) in [("END TO END", red), ("INFERENCE", blue), ("INPUT QUEUE", orange)].iter().enumerate() {
        let x = RIGHT - 200;
        let y = top + 8 + i * 20;
        c.rect(x, y + 4, x + 16, y + 10, *color);
        c.text(x + 22, y, 2, name, dark);
    }

    // Histogram of end to end.
    let (top, bottom) = (530, 770);
    let bins = 40usize;
    let emax = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.05;
    let mut counts = vec![0usize; bins];
    for p in &pts {
        counts[((p.1 / emax * bins as f64) as usize).min(bins - 1)] += 1;
    }
    let cmax = *counts.iter().max().unwrap_or(&1) as f64 * 1.1;
    c.text(LEFT, top - 50, 3, "END-TO-END LATENCY HISTOGRAM", dark);
    axes(&mut c, top, bottom, emax, cmax, "END TO END (MS)", "FRAMES");
    let bw = (RIGHT - LEFT) as f64 / bins as f64;
    for (i, &n) in counts.iter().enumerate() {
        let x0 = LEFT as f64 + i as f64 * bw;
        let y0 = bottom as f64 - n as f64 / cmax * (bottom - top) as f64;
        c.rect(x0 as usize + 1, y0 as usize, (x0 + bw) as usize, bottom, red);
    }
    let img = image::RgbImage::from_raw(W as u32, H as u32, c.px).ok_or_else(|| PipelineError::Config("plot buffer".into()))?;
    img.save(path).map_err(|e| PipelineError::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::latency::StageTimes;

    #[test]
    fn writes_a_png() {
        let records: Vec<FrameRecord> = (0..50)
            .map(|i| FrameRecord {
                frame: i,
                pts_ns: None,
                pts_s: None,
                lesion: false,
                stats: None,
                latency_ms: StageTimes { end_to_end: Some(100.0 + (i % 7) as f64 * 10.0), inference: Some(80.0), queue: Some(5.0), ..Default::default() },
                t_s: i as f64 * 0.04,
            })
            .collect();
        let path = std::env::temp_dir().join(format!("lightunet-plot-{}.png", std::process::id()));
        latency_plot(&records, &path).unwrap();
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), (W as u32, H as u32));
        let _ = std::fs::remove_file(path);
        assert!(latency_plot(&[], Path::new("/nonexistent/x.png")).is_err());
    }
}
