//! From the network's probability map to what the original saved: the map resized back to the
//! image (OpenCV bilinear), thresholded at 0.5, reduced to its largest connected component with
//! holes filled, then drawn as a red outline; plus overlay helpers and per-mask measurements.
//!
//! Std only (like [`crate::metrics`], whose [`Mask`] it uses), so it tests without the crate:
//! a wrapper in /tmp that pulls in both files with `#[path]` is enough.
//!
//! Image buffers are 3 bytes per pixel with a row `stride` in bytes (never assumed to be
//! `width * 3`); colours are written in the buffer's own channel order, so the original's red is
//! `[0, 0, 255]` on a BGR buffer and `[255, 0, 0]` on an RGB one.

use super::metrics::{border, pixel_count, Mask, ShapeError};

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

/// Lesion where `prob > thr` (strictly; the original used `> 0.5`). NaN is background.
pub fn threshold(probs: &[f32], width: usize, height: usize, thr: f32) -> Result<Mask, ShapeError> {
    let n = pixel_count(width, height, "probability map")?;
    if probs.len() != n {
        return Err(ShapeError::Length {
            what: "probability map",
            expected: n,
            got: probs.len(),
        });
    }
    Ok(Mask {
        width,
        height,
        data: probs.iter().map(|&p| p > thr).collect(),
    })
}

/// The original's saved mask: the probability map (`pw x ph`, usually 256x256) resized to the
/// image (`width x height`), thresholded at 0.5, then [`largest_component`].
pub fn final_mask(
    probs: &[f32],
    pw: usize,
    ph: usize,
    width: usize,
    height: usize,
) -> Result<Mask, ShapeError> {
    let resized = resize_bilinear_f32(probs, pw, ph, width, height)?;
    let mask = threshold(&resized, width, height, 0.5)?;
    Ok(largest_component(&mask))
}

/// One 8-connected component: its label and bounding box (inclusive corners).
struct Component {
    label: usize,
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

/// Labels the 8-connected components (OpenCV's `findContours` treats lesion pixels as
/// 8-connected); label 0 is background, components are numbered in raster order of their first
/// pixel. Reads pixels through [`Mask::get`], so a mask whose `data` is shorter than
/// `width * height` cannot make it index out of bounds.
fn label_components(mask: &Mask) -> (Vec<usize>, Vec<Component>) {
    let (w, h) = (mask.width, mask.height);
    let mut labels = vec![0usize; w.saturating_mul(h)];
    let mut comps = Vec::new();
    let mut stack = Vec::new();
    for sy in 0..h {
        for sx in 0..w {
            if !mask.get(sx, sy) || labels[sy * w + sx] != 0 {
                continue;
            }
            let label = comps.len() + 1;
            let mut c = Component {
                label,
                x0: sx,
                y0: sy,
                x1: sx,
                y1: sy,
            };
            labels[sy * w + sx] = label;
            stack.push((sx, sy));
            while let Some((x, y)) = stack.pop() {
                c.x0 = c.x0.min(x);
                c.x1 = c.x1.max(x);
                c.y0 = c.y0.min(y);
                c.y1 = c.y1.max(y);
                for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                        let i = ny * w + nx;
                        if mask.get(nx, ny) && labels[i] == 0 {
                            labels[i] = label;
                            stack.push((nx, ny));
                        }
                    }
                }
            }
            comps.push(c);
        }
    }
    (labels, comps)
}

/// The component `c` with its holes filled, as a mask over its bounding box: cell `(x, y)` of
/// the box is set unless it is outside `c` and 4-connected, through pixels outside `c`, to the
/// box's surroundings. Pixels outside the box are never inside `c`'s outline and all connect
/// around the box, so flooding a one-pixel frame around the box is the same as flooding from the
/// image border (the image edge itself counts as outside, like OpenCV's zero frame).
fn filled_in_box(labels: &[usize], width: usize, c: &Component) -> (usize, Vec<bool>) {
    let (bw, bh) = (c.x1 - c.x0 + 1, c.y1 - c.y0 + 1);
    let (fw, fh) = (bw + 2, bh + 2);
    // Frame coordinates: (fx, fy) = (x - x0 + 1, y - y0 + 1).
    let wall = |fx: usize, fy: usize| -> bool {
        fx >= 1
            && fy >= 1
            && fx <= bw
            && fy <= bh
            && labels[(c.y0 + fy - 1) * width + c.x0 + fx - 1] == c.label
    };
    let mut outside = vec![false; fw * fh];
    let mut stack = Vec::new();
    for fy in 0..fh {
        for fx in 0..fw {
            if fx == 0 || fy == 0 || fx == fw - 1 || fy == fh - 1 {
                outside[fy * fw + fx] = true;
                stack.push((fx, fy));
            }
        }
    }
    while let Some((fx, fy)) = stack.pop() {
        let mut visit = |nx: usize, ny: usize| {
            let i = ny * fw + nx;
            if !outside[i] && !wall(nx, ny) {
                outside[i] = true;
                stack.push((nx, ny));
            }
        };
        if fx > 0 {
            visit(fx - 1, fy);
        }
        if fx + 1 < fw {
            visit(fx + 1, fy);
        }
        if fy > 0 {
            visit(fx, fy - 1);
        }
        if fy + 1 < fh {
            visit(fx, fy + 1);
        }
    }
    let mut inside = vec![false; bw * bh];
    let mut area = 0;
    for y in 0..bh {
        for x in 0..bw {
            let filled = !outside[(y + 1) * fw + x + 1];
            inside[y * bw + x] = filled;
            area += usize::from(filled);
        }
    }
    (area, inside)
}

/// The original's clean-up: keep the largest 8-connected component and fill it, like
/// `findContours(RETR_EXTERNAL)`, `max(contours, key=contourArea)` and
/// `drawContours(..., thickness=-1)`.
///
/// "Largest" is by filled pixel area (component plus its holes), which ranks like OpenCV's
/// polygon `contourArea` of the outer contour except between near-equal shapes of different
/// perimeter (the polygon through boundary-pixel centres is about half a perimeter smaller).
/// Ties go to the component met first in raster order. Filling covers every pixel not
/// 4-connected to the image border outside the component, so anything inside its holes
/// (including other components) becomes lesion, as the filled outer contour does.
pub fn largest_component(mask: &Mask) -> Mask {
    let (labels, comps) = label_components(mask);
    let mut out = Mask::new(mask.width, mask.height);
    let mut best: Option<(usize, &Component, Vec<bool>)> = None;
    for c in &comps {
        let box_area = (c.x1 - c.x0 + 1) * (c.y1 - c.y0 + 1);
        // The filled area never exceeds the bounding box: skip boxes that cannot win.
        if best.as_ref().is_some_and(|(a, _, _)| box_area <= *a) {
            continue;
        }
        let (area, inside) = filled_in_box(&labels, mask.width, c);
        if best.as_ref().is_none_or(|(a, _, _)| area > *a) {
            best = Some((area, c, inside));
        }
    }
    if let Some((_, c, inside)) = best {
        let bw = c.x1 - c.x0 + 1;
        for (i, &v) in inside.iter().enumerate() {
            if v {
                out.set(c.x0 + i % bw, c.y0 + i / bw, true);
            }
        }
    }
    out
}

/// Outline pixels `(x, y)` in raster order (not walked along the curve): lesion pixels with a
/// background or out-of-image pixel among their four edge neighbours. For a filled blob this is
/// exactly the pixel set of OpenCV's `findContours(..., CHAIN_APPROX_NONE)` contour (and of
/// medpy's surface). A 4x4 square has 12.
pub fn contour(mask: &Mask) -> Vec<(usize, usize)> {
    let b = border(mask);
    (0..b.height)
        .flat_map(|y| (0..b.width).map(move |x| (x, y)))
        .filter(|&(x, y)| b.get(x, y))
        .collect()
}

/// Checks a 3-byte-per-pixel buffer and a mask against `width x height` and `stride`.
fn check_image(
    image: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    mask: &Mask,
) -> Result<(), ShapeError> {
    if mask.width != width || mask.height != height {
        return Err(ShapeError::Size {
            what: "mask vs image",
            expected: (width, height),
            got: (mask.width, mask.height),
        });
    }
    let n = pixel_count(width, height, "mask")?;
    if mask.data.len() != n {
        return Err(ShapeError::Length {
            what: "mask",
            expected: n,
            got: mask.data.len(),
        });
    }
    if width == 0 || height == 0 {
        return Ok(());
    }
    let row = width
        .checked_mul(3)
        .ok_or(ShapeError::Overflow { what: "image row" })?;
    if stride < row {
        return Err(ShapeError::Length {
            what: "image stride",
            expected: row,
            got: stride,
        });
    }
    let needed = (height - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(row))
        .ok_or(ShapeError::Overflow { what: "image" })?;
    if image.len() < needed {
        return Err(ShapeError::Length {
            what: "image buffer",
            expected: needed,
            got: image.len(),
        });
    }
    Ok(())
}

/// How far (in pixels, square brush) `cv2.drawContours` spreads a `thickness` outline from the
/// contour pixels: 0 for 1, then `(thickness + 1) / 2`, measured on OpenCV 5.0 (2 -> 1 px each
/// side, 3 and 4 -> 2, 5 and 6 -> 3).
pub fn contour_reach(thickness: usize) -> usize {
    if thickness <= 1 {
        0
    } else {
        thickness.div_ceil(2)
    }
}

/// The pixels [`draw_contour_rgb`] paints: the [`contour`] pixels dilated by a
/// `(2r + 1) x (2r + 1)` square, `r = contour_reach(thickness)`, clipped to the image;
/// `thickness == 0` paints nothing.
///
/// Against `cv2.drawContours(img, [outer contour], -1, color, thickness)` (OpenCV 5.0):
/// identical for thickness 1; for thickness 2 (the original's) a 3-px band, 1 px either side of
/// the contour ring, which covers every pixel OpenCV paints plus some diagonal pixels at convex
/// corners that its round line caps leave out (0.3-0.8 % extra pixels on random blobs, none
/// missing). Larger thicknesses approximate OpenCV's round brush with a square one.
pub fn contour_band(mask: &Mask, thickness: usize) -> Mask {
    let (w, h) = (mask.width, mask.height);
    if thickness == 0 {
        return Mask::new(w, h);
    }
    let r = contour_reach(thickness);
    let ring = border(mask);
    if r == 0 {
        return ring;
    }
    // Separable square dilation: rows, then columns.
    let mut rows = Mask::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let lo = x.saturating_sub(r);
            let hi = (x + r).min(w - 1);
            rows.set(x, y, (lo..=hi).any(|sx| ring.get(sx, y)));
        }
    }
    let mut out = Mask::new(w, h);
    for y in 0..h {
        let lo = y.saturating_sub(r);
        let hi = (y + r).min(h - 1);
        for x in 0..w {
            out.set(x, y, (lo..=hi).any(|sy| rows.get(x, sy)));
        }
    }
    out
}

/// Paints the outline of `mask` (see [`contour_band`] for exactly which pixels) in `color` on a
/// 3-byte-per-pixel image. The original: red, thickness 2.
pub fn draw_contour_rgb(
    image: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    mask: &Mask,
    color: [u8; 3],
    thickness: usize,
) -> Result<(), ShapeError> {
    check_image(image, width, height, stride, mask)?;
    let band = contour_band(mask, thickness);
    for y in 0..height {
        for x in 0..width {
            if band.get(x, y) {
                let i = y * stride + x * 3;
                image[i..i + 3].copy_from_slice(&color);
            }
        }
    }
    Ok(())
}

/// Tints the lesion pixels: `color * alpha + pixel * (1 - alpha)`, rounded half to even and
/// saturated, as `cv2.addWeighted(overlay, alpha, image, 1 - alpha, 0)` does with `f32`
/// weights. `alpha` is clamped to `[0, 1]`; NaN leaves the image unchanged.
pub fn fill_translucent_rgb(
    image: &mut [u8],
    width: usize,
    height: usize,
    stride: usize,
    mask: &Mask,
    color: [u8; 3],
    alpha: f32,
) -> Result<(), ShapeError> {
    check_image(image, width, height, stride, mask)?;
    if alpha.is_nan() {
        return Ok(());
    }
    let a = alpha.clamp(0.0, 1.0);
    let b = 1.0 - a;
    for y in 0..height {
        for x in 0..width {
            if !mask.get(x, y) {
                continue;
            }
            let i = y * stride + x * 3;
            for (p, &c) in image[i..i + 3].iter_mut().zip(&color) {
                let v = f32::from(c) * a + f32::from(*p) * b;
                *p = v.round_ties_even().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(())
}

/// `cv2.resize(mask, (dw, dh), interpolation=cv2.INTER_NEAREST)`: destination pixel `dx` takes
/// source column `min(floor(dx * sw / dw), sw - 1)` (OpenCV's nearest is *not* half-pixel
/// centred), rows likewise. An empty source gives an all-background result.
pub fn scale_mask_nearest(mask: &Mask, dw: usize, dh: usize) -> Mask {
    let (sw, sh) = (mask.width, mask.height);
    let mut out = Mask::new(dw, dh);
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
        return out;
    }
    let ifx = 1.0 / (dw as f64 / sw as f64);
    let ify = 1.0 / (dh as f64 / sh as f64);
    let xs: Vec<usize> = (0..dw)
        .map(|dx| ((dx as f64 * ifx).floor() as usize).min(sw - 1))
        .collect();
    for dy in 0..dh {
        let sy = ((dy as f64 * ify).floor() as usize).min(sh - 1);
        for (dx, &sx) in xs.iter().enumerate() {
            out.set(dx, dy, mask.get(sx, sy));
        }
    }
    out
}

/// Measurements of one lesion mask, in pixels of that mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskStats {
    /// Lesion pixels.
    pub area_px: usize,
    /// `(x, y, w, h)` of the smallest box holding every lesion pixel (`cv2.boundingRect`).
    pub bbox: (usize, usize, usize, usize),
    /// Mean `(x, y)` of the lesion pixel centres (image moments m10/m00, m01/m00 of the mask).
    pub centroid: (f64, f64),
    /// Largest distance between two outline pixel centres (calipers on the convex hull of the
    /// [`contour`] points). Centre to centre: a 4x5-pixel rectangle, whose corner centres are
    /// 3 and 4 apart, measures 5; a single pixel measures 0.
    pub longest_diameter_px: f64,
    /// Mean of `probs` over the lesion pixels.
    pub mean_probability: f64,
}

impl MaskStats {
    /// `Ok(None)` for an empty mask; `probs` must be the probability map at the mask's size.
    pub fn compute(mask: &Mask, probs: &[f32]) -> Result<Option<MaskStats>, ShapeError> {
        let n = pixel_count(mask.width, mask.height, "mask")?;
        if mask.data.len() != n || probs.len() != n {
            return Err(ShapeError::Length {
                what: "probabilities vs mask",
                expected: n,
                got: if mask.data.len() != n {
                    mask.data.len()
                } else {
                    probs.len()
                },
            });
        }
        let mut area = 0usize;
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        let (mut sum_x, mut sum_y, mut sum_p) = (0f64, 0f64, 0f64);
        for y in 0..mask.height {
            for x in 0..mask.width {
                let i = y * mask.width + x;
                if !mask.data[i] {
                    continue;
                }
                area += 1;
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
                sum_x += x as f64;
                sum_y += y as f64;
                sum_p += f64::from(probs[i]);
            }
        }
        if area == 0 {
            return Ok(None);
        }
        let a = area as f64;
        Ok(Some(MaskStats {
            area_px: area,
            bbox: (x0, y0, x1 - x0 + 1, y1 - y0 + 1),
            centroid: (sum_x / a, sum_y / a),
            longest_diameter_px: longest_diameter(&contour(mask)),
            mean_probability: sum_p / a,
        }))
    }
}

/// Andrew's monotone chain; collinear points are dropped. Exact in `i64`.
fn convex_hull(points: &[(usize, usize)]) -> Vec<(i64, i64)> {
    let mut pts: Vec<(i64, i64)> = points.iter().map(|&(x, y)| (x as i64, y as i64)).collect();
    pts.sort_unstable();
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let cross = |o: (i64, i64), a: (i64, i64), b: (i64, i64)| -> i64 {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut hull: Vec<(i64, i64)> = Vec::with_capacity(2 * pts.len());
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(i64, i64)>> = if pass == 0 {
            Box::new(pts.iter())
        } else {
            Box::new(pts.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0
            {
                hull.pop();
            }
            hull.push(p);
        }
        // The last point of each chain is the first of the other.
        hull.pop();
    }
    hull
}

/// Largest distance between two of `points`, via their convex hull (a lattice hull in an
/// `N x N` image has O(N^(2/3)) vertices, so all hull pairs are cheap).
fn longest_diameter(points: &[(usize, usize)]) -> f64 {
    let hull = convex_hull(points);
    let mut best = 0i64;
    for (i, a) in hull.iter().enumerate() {
        for b in &hull[i + 1..] {
            let (dx, dy) = (a.0 - b.0, a.1 - b.1);
            best = best.max(dx * dx + dy * dy);
        }
    }
    (best as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a mask from rows of `#` (lesion) and `.` (background).
    fn art(rows: &[&str]) -> Mask {
        let h = rows.len();
        let w = rows.first().map_or(0, |r| r.len());
        let data = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| b == b'#'))
            .collect();
        Mask::from_vec(w, h, data).unwrap()
    }

    fn show(m: &Mask) -> Vec<String> {
        (0..m.height)
            .map(|y| {
                (0..m.width)
                    .map(|x| if m.get(x, y) { '#' } else { '.' })
                    .collect()
            })
            .collect()
    }

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

    #[test]
    fn threshold_is_strict() {
        let m = threshold(&[0.5, 0.51, 0.49, 1.0], 2, 2, 0.5).unwrap();
        assert_eq!(m.data, vec![false, true, false, true]);
        assert!(threshold(&[0.5; 3], 2, 2, 0.5).is_err());
    }

    #[test]
    fn largest_of_two_blobs_is_kept() {
        let m = art(&[
            "##......", //
            "##..###.", //
            "....###.", //
            "....###.", //
            "#.......", //
        ]);
        let kept = largest_component(&m);
        assert_eq!(
            show(&kept),
            vec!["........", "....###.", "....###.", "....###.", "........"]
        );
        assert!(largest_component(&Mask::new(4, 3)).is_empty());
    }

    #[test]
    fn diagonal_pixels_are_one_component() {
        // 8-connectivity: the diagonal chain (4 px) beats the 3-px bar.
        let m = art(&[
            "#.......", //
            ".#......", //
            "..#..###", //
            "...#....", //
        ]);
        assert_eq!(largest_component(&m).count(), 4);
    }

    #[test]
    fn ring_becomes_filled_disc() {
        let ring = art(&[
            ".......", //
            "..###..", //
            ".#...#.", //
            ".#...#.", //
            ".#...#.", //
            "..###..", //
            ".......", //
        ]);
        let filled = largest_component(&ring);
        assert_eq!(
            show(&filled),
            vec![".......", "..###..", ".#####.", ".#####.", ".#####.", "..###..", "......."]
        );
        // A ring with a speck inside: the speck is covered by the fill, as drawContours(-1)
        // would; a hole open to the image edge (a bay) is not a hole.
        let m = art(&[
            "#####...", //
            "#...#...", //
            "#.#.#...", //
            "#...#...", //
            "#####...", //
            "........", //
            "##.##...", //
            "#...#...", //
        ]);
        let kept = largest_component(&m);
        assert_eq!(kept.count(), 25);
        let bay = art(&[
            "#.#", //
            "#.#", //
            "###", //
        ]);
        assert_eq!(largest_component(&bay).count(), 7);
    }

    #[test]
    fn ranking_uses_filled_area() {
        // The ring (16 px, 25 filled) outranks the solid 4x5 block (20 px), like contourArea.
        let m = art(&[
            "#####........", //
            "#...#...####.", //
            "#...#...####.", //
            "#...#...####.", //
            "#####...####.", //
            "........####.", //
        ]);
        let kept = largest_component(&m);
        assert_eq!(kept.count(), 25);
        assert!(kept.get(2, 2));
    }

    #[test]
    fn contour_of_square() {
        let m = art(&[
            "......", //
            ".####.", //
            ".####.", //
            ".####.", //
            ".####.", //
            "......", //
        ]);
        let c = contour(&m);
        assert_eq!(c.len(), 12);
        assert_eq!(c[0], (1, 1));
        assert!(!c.contains(&(2, 2)));
        // At the image edge the edge pixels are outline too.
        assert_eq!(contour(&art(&["###", "###", "###"])).len(), 8);
    }

    #[test]
    fn contour_band_thickness() {
        let m = art(&[
            "........", //
            "........", //
            "..####..", //
            "..####..", //
            "..####..", //
            "..####..", //
            "........", //
            "........", //
        ]);
        assert_eq!(contour_band(&m, 0).count(), 0);
        assert_eq!(contour_band(&m, 1).count(), 12);
        // Thickness 2: the ring, one pixel outside it (a 6x6 box) and the 2x2 inside: all 36
        // pixels of the 6x6 box. (cv2.drawContours(..., 2) paints the same box less its four
        // corner pixels.)
        let band = contour_band(&m, 2);
        assert_eq!(
            show(&band),
            vec![
                "........", ".######.", ".######.", ".######.", ".######.", ".######.", ".######.",
                "........"
            ]
        );
        assert_eq!(
            (contour_reach(2), contour_reach(3), contour_reach(4)),
            (1, 2, 2)
        );
    }

    #[test]
    fn draws_with_stride_and_checks_sizes() {
        let m = art(&[
            "....", //
            ".##.", //
            ".##.", //
            "....", //
        ]);
        // Stride 14 (12 bytes of pixels + 2 padding), padding must stay untouched.
        let mut img = vec![7u8; 14 * 4];
        draw_contour_rgb(&mut img, 4, 4, 14, &m, [0, 0, 255], 1).unwrap();
        assert_eq!(&img[14 + 3..14 + 6], &[0, 0, 255]);
        assert_eq!(&img[0..3], &[7, 7, 7]);
        assert_eq!(&img[12..14], &[7, 7]);
        let mut img = vec![0u8; 14 * 4];
        draw_contour_rgb(&mut img, 4, 4, 14, &m, [0, 0, 255], 2).unwrap();
        // Thickness 2 reaches the corner (0, 0) through the square brush.
        assert_eq!(&img[0..3], &[0, 0, 255]);
        assert!(draw_contour_rgb(&mut img, 4, 4, 11, &m, [1, 2, 3], 2).is_err());
        assert!(draw_contour_rgb(&mut img[..40], 4, 4, 14, &m, [1, 2, 3], 2).is_err());
        assert!(draw_contour_rgb(&mut img, 5, 4, 15, &m, [1, 2, 3], 2).is_err());
    }

    #[test]
    fn translucent_fill() {
        let m = art(&["#.", ".."]);
        let mut img = vec![100u8; 12];
        fill_translucent_rgb(&mut img, 2, 2, 6, &m, [0, 0, 255], 0.3).unwrap();
        // 0 * 0.3 + 100 * 0.7 = 70; 255 * 0.3 + 100 * 0.7 = 146.5 -> 146 (half to even).
        assert_eq!(&img[0..3], &[70, 70, 146]);
        assert_eq!(&img[3..6], &[100, 100, 100]);
        let mut img2 = vec![100u8; 12];
        fill_translucent_rgb(&mut img2, 2, 2, 6, &m, [0, 0, 255], 2.0).unwrap();
        assert_eq!(&img2[0..3], &[0, 0, 255]);
        fill_translucent_rgb(&mut img2, 2, 2, 6, &m, [9, 9, 9], f32::NAN).unwrap();
        assert_eq!(&img2[0..3], &[0, 0, 255]);
    }

    #[test]
    fn nearest_scaling_like_opencv() {
        // cv2.resize(np.array([[0, 255, 0]], np.uint8), (7, 2), interpolation=INTER_NEAREST)
        // -> [[0, 0, 0, 255, 255, 0, 0]] on both rows (floor(dx * 3 / 7)).
        let m = art(&[".#."]);
        let s = scale_mask_nearest(&m, 7, 2);
        assert_eq!(show(&s), vec!["...##..", "...##.."]);
        // Downscale 4 -> 2 picks columns 0 and 2.
        let m = art(&["#.#.", "....", "#...", "...."]);
        assert_eq!(show(&scale_mask_nearest(&m, 2, 2)), vec!["##", "#."]);
        assert_eq!(scale_mask_nearest(&Mask::new(0, 0), 3, 3).count(), 0);
    }

    #[test]
    fn stats_of_rectangle() {
        // A 4x5-pixel rectangle at (2, 1): corner centres are 3 and 4 apart -> diameter 5.
        let mut m = Mask::new(8, 8);
        for y in 1..6 {
            for x in 2..6 {
                m.set(x, y, true);
            }
        }
        let probs: Vec<f32> = (0..64)
            .map(|i| if i % 2 == 0 { 0.6 } else { 1.0 })
            .collect();
        let s = MaskStats::compute(&m, &probs).unwrap().unwrap();
        assert_eq!(s.area_px, 20);
        assert_eq!(s.bbox, (2, 1, 4, 5));
        assert_eq!(s.centroid, (3.5, 3.0));
        assert_eq!(s.longest_diameter_px, 5.0);
        assert!((s.mean_probability - 0.8).abs() < 1e-6);
        assert_eq!(
            MaskStats::compute(&Mask::new(3, 3), &[0.0; 9]).unwrap(),
            None
        );
        assert!(MaskStats::compute(&m, &probs[..10]).is_err());
        let dot = art(&["...", ".#.", "..."]);
        let s = MaskStats::compute(&dot, &[1.0; 9]).unwrap().unwrap();
        assert_eq!((s.longest_diameter_px, s.bbox), (0.0, (1, 1, 1, 1)));
    }

    #[test]
    fn hull_diameter_matches_brute_force() {
        let mut seed = 5u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..200 {
            let n = 1 + next() % 40;
            let pts: Vec<(usize, usize)> = (0..n).map(|_| (next() % 30, next() % 30)).collect();
            let mut brute = 0usize;
            for a in &pts {
                for b in &pts {
                    let (dx, dy) = (a.0.abs_diff(b.0), a.1.abs_diff(b.1));
                    brute = brute.max(dx * dx + dy * dy);
                }
            }
            assert_eq!(longest_diameter(&pts), (brute as f64).sqrt());
        }
    }

    #[test]
    fn final_mask_chain() {
        // A 5x5 map with a bright 2x2 block and a lone bright corner pixel, upscaled to 10x10:
        // both survive the threshold (the corner as a 2x2 patch: 0.25 * 0 + 0.75 * 0.9 > 0.5
        // at its inner edge), and only the block, the larger component, is kept.
        #[rustfmt::skip]
        let probs = [
            0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.9, 0.9, 0.0, 0.0,
            0.0, 0.9, 0.9, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.9,
        ];
        let resized = resize_bilinear_f32(&probs, 5, 5, 10, 10).unwrap();
        assert!(threshold(&resized, 10, 10, 0.5).unwrap().get(9, 9));
        let m = final_mask(&probs, 5, 5, 10, 10).unwrap();
        assert!(m.get(3, 3) && m.get(4, 4));
        assert!(!m.get(9, 9) && !m.get(0, 0));
        assert!(final_mask(&probs, 5, 4, 10, 10).is_err());
    }
}
