//! OpenCV's bilinear resize (`cv2.resize(..., INTER_LINEAR)`), bit for bit, on one-channel
//! `f32` images: the model input is made with it ([`crate::preprocess`]) and the probability map
//! is brought back to the image with it ([`crate::postprocess`]). Its sampling taps are exposed
//! to the crate so that a one-pass resampler can reproduce it exactly.
//!
//! A leaf: it uses only [`crate::metrics`]' size checks.

use crate::metrics::{pixel_count, ShapeError};

/// `cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR)` on a one-channel `f32` image.
///
/// OpenCV's half-pixel mapping (`align_corners=False`): source x = `(dx + 0.5) * scale - 0.5`,
/// with `scale = 1 / (dw / sw)` as OpenCV computes it. Like OpenCV's generic float path,
/// columns past either edge are clamped *and* get weight 0 for the missing neighbour, while rows
/// past either edge are clamped but keep their weights, and the horizontal pass runs first in
/// `f32`. The result is bit-identical to `cv2.resize` with `cv2.setUseOptimized(False)`; the
/// optimised (SIMD/IPP) build differs from it by a few ulp (under 1e-5 on a [0, 1] map, checked on
/// 300 random sizes incl. 256x256 to ~900x900). OpenCV also switches an exact 2x downscale to
/// `INTER_AREA`, which gives the same averages up to `f32` rounding, so that is not copied.
///
/// An empty destination gives an empty vector; an empty source with a non-empty destination is
/// an error, as there is nothing to sample.
pub fn resize_bilinear_f32(
    src: &[f32],
    sw: usize,
    sh: usize,
    dw: usize,
    dh: usize,
) -> Result<Vec<f32>, ShapeError> {
    let n_src = pixel_count(sw, sh, "resize source")?;
    if src.len() != n_src {
        return Err(ShapeError::Length {
            what: "resize source",
            expected: n_src,
            got: src.len(),
        });
    }
    let n_dst = pixel_count(dw, dh, "resize destination")?;
    if n_dst == 0 {
        return Ok(Vec::new());
    }
    if n_src == 0 {
        return Err(ShapeError::Size {
            what: "resize source (empty)",
            expected: (1, 1),
            got: (sw, sh),
        });
    }

    // Horizontal taps: (left column, weight of the right column).
    let scale_x = 1.0 / (dw as f64 / sw as f64);
    let xtaps: Vec<(usize, f32)> = (0..dw)
        .map(|dx| {
            let f = ((dx as f64 + 0.5) * scale_x - 0.5) as f32;
            let sx = f.floor();
            let frac = f - sx;
            if sx < 0.0 {
                (0, 0.0)
            } else if sx as usize >= sw - 1 {
                (sw - 1, 0.0)
            } else {
                (sx as usize, frac)
            }
        })
        .collect();

    // Each destination column of every source row, computed once per source row.
    let mut rows = vec![0f32; pixel_count(dw, sh, "resize intermediate")?];
    for sy in 0..sh {
        let srow = &src[sy * sw..(sy + 1) * sw];
        let drow = &mut rows[sy * dw..(sy + 1) * dw];
        for (d, &(sx, fx)) in drow.iter_mut().zip(&xtaps) {
            let right = srow[(sx + 1).min(sw - 1)];
            *d = srow[sx] * (1.0 - fx) + right * fx;
        }
    }

    let scale_y = 1.0 / (dh as f64 / sh as f64);
    let mut out = vec![0f32; n_dst];
    for dy in 0..dh {
        let f = ((dy as f64 + 0.5) * scale_y - 0.5) as f32;
        let sy = f.floor();
        let fy = f - sy;
        let clamp = |y: f32| -> usize { (y.max(0.0) as usize).min(sh - 1) };
        let (y0, y1) = (clamp(sy), clamp(sy + 1.0));
        let (b0, b1) = (1.0 - fy, fy);
        let r0 = &rows[y0 * dw..(y0 + 1) * dw];
        let r1 = &rows[y1 * dw..(y1 + 1) * dw];
        for ((o, &a), &b) in out[dy * dw..(dy + 1) * dw].iter_mut().zip(r0).zip(r1) {
            *o = a * b0 + b * b1;
        }
    }
    Ok(out)
}

/// Horizontal or vertical taps of [`resize_bilinear_f32`] for one axis: (first source index,
/// second source index, weight of the second), exactly as it computes them, so that sampling
/// through them gives its bit-identical result.
pub(crate) fn bilinear_taps(src: usize, dst: usize, clamp_weights: bool, out: &mut Vec<(usize, usize, f32)>) {
    out.clear();
    let scale = 1.0 / (dst as f64 / src as f64);
    out.extend((0..dst).map(|d| {
        let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let s = f.floor();
        let frac = f - s;
        if clamp_weights {
            // Columns: past either edge, clamped and the missing neighbour weighted 0.
            if s < 0.0 {
                (0, 0, 0.0)
            } else if s as usize >= src - 1 {
                (src - 1, src - 1, 0.0)
            } else {
                (s as usize, s as usize + 1, frac)
            }
        } else {
            // Rows: clamped, weights kept.
            let clamp = |y: f32| -> usize { (y.max(0.0) as usize).min(src - 1) };
            (clamp(s), clamp(s + 1.0), frac)
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-6
    }

    #[test]
    fn resize_matches_opencv() {
        // src = np.array([[0, 1, 2], [3, 4, 5]], np.float32)
        // cv2.resize(src, (5, 4), interpolation=cv2.INTER_LINEAR)  (OpenCV 5.0)
        let src = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let up = resize_bilinear_f32(&src, 3, 2, 5, 4).unwrap();
        #[rustfmt::skip]
        let want = [
            0.0, 0.4, 1.0, 1.6, 2.0,
            0.75, 1.15, 1.75, 2.35, 2.75,
            2.25, 2.65, 3.25, 3.85, 4.25,
            3.0, 3.4, 4.0, 4.6, 5.0,
        ];
        assert_eq!(up.len(), want.len());
        for (g, w) in up.iter().zip(&want) {
            assert!(close(*g, *w), "{up:?}");
        }
        // cv2.resize(np.arange(12, dtype=np.float32).reshape(3, 4), (3, 2)) ->
        // [[1.1666666, 2.5, 3.8333333], [7.1666665, 8.5, 9.833333]]
        let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let down = resize_bilinear_f32(&src, 4, 3, 3, 2).unwrap();
        let want = [1.1666666, 2.5, 3.8333333, 7.1666665, 8.5, 9.833333];
        for (g, w) in down.iter().zip(&want) {
            assert!(close(*g, *w), "{down:?}");
        }
        // Same size is a copy; 1x1 spreads everywhere.
        assert_eq!(resize_bilinear_f32(&src, 4, 3, 4, 3).unwrap(), src);
        assert_eq!(
            resize_bilinear_f32(&[0.7], 1, 1, 3, 2).unwrap(),
            vec![0.7; 6]
        );
        assert!(resize_bilinear_f32(&src, 5, 3, 2, 2).is_err());
        assert!(resize_bilinear_f32(&[], 0, 0, 2, 2).is_err());
        assert_eq!(
            resize_bilinear_f32(&src, 4, 3, 0, 5).unwrap(),
            Vec::<f32>::new()
        );
    }
}
