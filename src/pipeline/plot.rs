//! The latency plot of `bench pipeline`: per-frame latency over time (end to end, inference,
//! input queue) above a histogram of the end-to-end latency, drawn with [`crate::raster`].

use std::path::Path;

use super::error::{PipelineError, Result};
use super::latency::FrameRecord;
use crate::raster::{Canvas, Panel, INK};

const W: usize = 1200;
const H: usize = 820;
const LEFT: i64 = 100;
const RIGHT: i64 = W as i64 - 30;

/// Writes the plot for `records` (needs at least one frame with an end-to-end latency).
pub fn latency_plot(records: &[FrameRecord], path: &Path) -> Result<()> {
    let pts: Vec<(f64, f64, Option<f64>, Option<f64>)> = records
        .iter()
        .filter_map(|r| r.latency_ms.end_to_end.map(|e| (r.t_s, e, r.latency_ms.inference, r.latency_ms.queue)))
        .collect();
    if pts.is_empty() {
        return Err(PipelineError::NothingToPlot);
    }
    let mut c = Canvas::new(W, H);
    let (red, blue, orange) = ([200, 30, 30], [30, 80, 200], [230, 140, 20]);
    c.text((LEFT, 12), 3, &format!("Latency per frame ({} frames)", pts.len()), INK);
    let (t0, t1) = (pts[0].0, pts.iter().map(|p| p.0).fold(f64::MIN, f64::max));
    let ymax = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.1;
    let over_time = Panel { left: LEFT, right: RIGHT, top: 80, bottom: 440, x: (0.0, (t1 - t0).max(1e-3)), y: (0.0, ymax), whole_x: false };
    over_time.axes(&mut c, "time (s)", "ms", 2);
    for (series, color) in [(3usize, orange), (2, blue), (1, red)] {
        let mut prev = None;
        for p in &pts {
            let v = match series {
                1 => Some(p.1),
                2 => p.2,
                _ => p.3,
            };
            if let Some(v) = v {
                let q = over_time.map(p.0 - t0, v);
                if let Some(pq) = prev {
                    c.line(pq, q, color, 1);
                }
                c.rect((q.0 - 1, q.1 - 1), (q.0 + 2, q.1 + 2), color);
                prev = Some(q);
            }
        }
    }
    for (i, (name, color)) in [("end to end", red), ("inference", blue), ("input queue", orange)].iter().enumerate() {
        let (x, y) = (RIGHT - 220, over_time.top + 8 + i as i64 * 22);
        c.rect((x, y + 5), (x + 16, y + 11), *color);
        c.text((x + 24, y), 2, name, INK);
    }

    // Histogram of end to end.
    let bins = 40usize;
    let emax = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.05;
    let mut counts = vec![0usize; bins];
    for p in &pts {
        counts[((p.1 / emax * bins as f64) as usize).min(bins - 1)] += 1;
    }
    let cmax = *counts.iter().max().unwrap_or(&1) as f64 * 1.1;
    let hist = Panel { left: LEFT, right: RIGHT, top: 560, bottom: 760, x: (0.0, emax), y: (0.0, cmax), whole_x: false };
    c.text((LEFT, hist.top - 66), 3, "End-to-end latency histogram", INK);
    hist.axes(&mut c, "end to end (ms)", "frames", 2);
    for (i, &n) in counts.iter().enumerate() {
        let (x0, y0) = hist.map(i as f64 * emax / bins as f64, n as f64);
        let (x1, _) = hist.map((i + 1) as f64 * emax / bins as f64, 0.0);
        c.rect((x0 + 1, y0), (x1, hist.bottom), red);
    }
    let bytes = c.png().map_err(PipelineError::Plot)?;
    std::fs::write(path, bytes).map_err(|e| PipelineError::Io { path: path.to_path_buf(), source: e })
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
                mask: None,
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
