//! From the network's probability map to what the original saved: the map resized back to the
//! image (OpenCV bilinear), thresholded at 0.5, reduced to its largest connected component with
//! holes filled, then drawn as a red outline; plus overlay helpers and per-mask measurements.
//! For video, [`MaskScaling`] gives the same measurements and drawings for a model-size mask
//! shown at a larger size, without building the large mask.
//!
//! Std only (like [`crate::metrics`], whose [`Mask`] it uses), so it tests without the crate:
//! a wrapper in /tmp that pulls in both files with `#[path]` is enough.
//!
//! Image buffers are 3 bytes per pixel with a row `stride` in bytes (never assumed to be
//! `width * 3`); colours are written in the buffer's own channel order, so the original's red is
//! `[0, 0, 255]` on a BGR buffer and `[255, 0, 0]` on an RGB one.

use super::metrics::{border, pixel_count, Mask, ShapeError};
pub use crate::resize::resize_bilinear_f32;

/// Lesion where `prob > thr` (strictly; the original used `> 0.5`). NaN is background.
pub fn threshold(probs: &[f32], width: usize, height: usize, thr: f32) -> Result<Mask, ShapeError> {
    Mask::above(probs, width, height, thr)
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
/// 8-connected) into `labels`/`comps`; label 0 is background, components are numbered in raster
/// order of their first pixel. Reads pixels through [`Mask::get`], so a mask whose `data` is
/// shorter than `width * height` cannot make it index out of bounds.
fn label_components(
    mask: &Mask,
    labels: &mut Vec<usize>,
    comps: &mut Vec<Component>,
    stack: &mut Vec<(usize, usize)>,
) {
    let (w, h) = (mask.width, mask.height);
    labels.clear();
    labels.resize(w.saturating_mul(h), 0);
    comps.clear();
    stack.clear();
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
}

/// The component `c` with its holes filled, as a mask over its bounding box (into `inside`,
/// returning the filled area): cell `(x, y)` of the box is set unless it is outside `c` and
/// 4-connected, through pixels outside `c`, to the box's surroundings. Pixels outside the box are
/// never inside `c`'s outline and all connect around the box, so flooding a one-pixel frame
/// around the box is the same as flooding from the image border (the image edge itself counts as
/// outside, like OpenCV's zero frame).
fn filled_in_box(
    labels: &[usize],
    width: usize,
    c: &Component,
    outside: &mut Vec<bool>,
    stack: &mut Vec<(usize, usize)>,
    inside: &mut Vec<bool>,
) -> usize {
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
    outside.clear();
    outside.resize(fw * fh, false);
    stack.clear();
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
    inside.clear();
    inside.reserve(bw * bh);
    let mut area = 0;
    for y in 0..bh {
        for x in 0..bw {
            let filled = !outside[(y + 1) * fw + x + 1];
            inside.push(filled);
            area += usize::from(filled);
        }
    }
    area
}

/// Buffers of [`largest_component_into`], kept between calls so that a video pipeline does not
/// allocate per frame.
#[derive(Default)]
pub struct ComponentScratch {
    labels: Vec<usize>,
    comps: Vec<Component>,
    stack: Vec<(usize, usize)>,
    outside: Vec<bool>,
    inside: Vec<bool>,
    best_inside: Vec<bool>,
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
    let mut out = Mask::new(mask.width, mask.height);
    largest_component_into(mask, &mut ComponentScratch::default(), &mut out);
    out
}

/// [`largest_component`] into `out` (reshaped to the mask's size), reusing `scratch`.
pub fn largest_component_into(mask: &Mask, scratch: &mut ComponentScratch, out: &mut Mask) {
    let ComponentScratch {
        labels,
        comps,
        stack,
        outside,
        inside,
        best_inside,
    } = scratch;
    label_components(mask, labels, comps, stack);
    out.width = mask.width;
    out.height = mask.height;
    out.data.clear();
    out.data
        .resize(mask.width.saturating_mul(mask.height), false);
    let mut best: Option<(usize, usize)> = None; // (filled area, index into comps)
    for (k, c) in comps.iter().enumerate() {
        let box_area = (c.x1 - c.x0 + 1) * (c.y1 - c.y0 + 1);
        // The filled area never exceeds the bounding box: skip boxes that cannot win.
        if best.is_some_and(|(a, _)| box_area <= a) {
            continue;
        }
        let area = filled_in_box(labels, mask.width, c, outside, stack, inside);
        if best.is_none_or(|(a, _)| area > a) {
            best = Some((area, k));
            std::mem::swap(inside, best_inside);
        }
    }
    if let Some((_, k)) = best {
        let c = &comps[k];
        let bw = c.x1 - c.x0 + 1;
        for (i, &v) in best_inside.iter().enumerate() {
            if v {
                out.set(c.x0 + i % bw, c.y0 + i / bw, true);
            }
        }
    }
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
    check_buffer(image, width, height, stride)
}

/// Checks that a 3-byte-per-pixel buffer holds `width x height` pixels at `stride`.
fn check_buffer(
    image: &[u8],
    width: usize,
    height: usize,
    stride: usize,
) -> Result<(), ShapeError> {
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
            blend(&mut image[i..i + 3], color, a, b);
        }
    }
    Ok(())
}

/// One pixel of [`fill_translucent_rgb`]: `color * a + pixel * b`, half to even, saturated.
#[inline]
fn blend(px: &mut [u8], color: [u8; 3], a: f32, b: f32) {
    for (p, &c) in px.iter_mut().zip(&color) {
        let v = f32::from(c) * a + f32::from(*p) * b;
        *p = v.round_ties_even().clamp(0.0, 255.0) as u8;
    }
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

/// Andrew's monotone chain into `hull`; collinear points are dropped. Exact in `i64`. Sorts
/// `pts` in place.
fn convex_hull_into(pts: &mut Vec<(i64, i64)>, hull: &mut Vec<(i64, i64)>) {
    pts.sort_unstable();
    pts.dedup();
    hull.clear();
    if pts.len() < 3 {
        hull.extend_from_slice(pts);
        return;
    }
    let cross = |o: (i64, i64), a: (i64, i64), b: (i64, i64)| -> i64 {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    for pass in 0..2 {
        let start = hull.len();
        for k in 0..pts.len() {
            let p = if pass == 0 {
                pts[k]
            } else {
                pts[pts.len() - 1 - k]
            };
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
}

/// Largest distance between two of `pts`, via their convex hull (a lattice hull in an
/// `N x N` image has O(N^(2/3)) vertices, so all hull pairs are cheap).
fn longest_diameter_with(pts: &mut Vec<(i64, i64)>, hull: &mut Vec<(i64, i64)>) -> f64 {
    convex_hull_into(pts, hull);
    let mut best = 0i64;
    for (i, a) in hull.iter().enumerate() {
        for b in &hull[i + 1..] {
            let (dx, dy) = (a.0 - b.0, a.1 - b.1);
            best = best.max(dx * dx + dy * dy);
        }
    }
    (best as f64).sqrt()
}

fn longest_diameter(points: &[(usize, usize)]) -> f64 {
    let mut pts: Vec<(i64, i64)> = points.iter().map(|&(x, y)| (x as i64, y as i64)).collect();
    longest_diameter_with(&mut pts, &mut Vec::new())
}

/// Pixel-centred nearest mapping of an axis of `src` pixels onto `dst` pixels: destination `d`
/// takes source `floor((d + 0.5) * src / dst)` (OpenCV's `INTER_NEAREST_EXACT`, computed in
/// integers). Centred, unlike [`scale_mask_nearest`], so a mask thresholded at model size and
/// scaled up stays within half a model pixel of the bilinear-then-threshold boundary.
pub fn nearest_centred(src: usize, dst: usize, d: usize) -> usize {
    if src == 0 || dst == 0 {
        return 0;
    }
    ((2 * d + 1) * src / (2 * dst)).min(src - 1)
}

/// A small mask (the model's, e.g. 256x256) seen at a larger size (the ROI's) through
/// [`nearest_centred`] on both axes, without building the large mask: every small pixel is a
/// block of large pixels (empty when downscaling skips it), so statistics, the translucent fill,
/// the outline and the written mask are computed per block or per block edge. Each result equals
/// the plain function applied to [`MaskScaling::scale`] of the mask.
///
/// Tables are rebuilt only when the sizes change; the scratch buffers are kept, so steady-state
/// video frames do not allocate.
#[derive(Debug, Clone, Default)]
pub struct MaskScaling {
    src: (usize, usize),
    dst: (usize, usize),
    /// Large column -> small column, and small column -> its large columns `[start, end)`.
    xs: Vec<usize>,
    cols: Vec<(usize, usize)>,
    ys: Vec<usize>,
    rows: Vec<(usize, usize)>,
    /// Outline runs of the large mask, inclusive `(x0, y0, x1, y1)`, each one row or column.
    segs: Vec<(usize, usize, usize, usize)>,
    row_ends: Vec<(usize, usize)>,
    pts: Vec<(i64, i64)>,
    hull: Vec<(i64, i64)>,
}

fn nearest_axis(src: usize, dst: usize, map: &mut Vec<usize>, spans: &mut Vec<(usize, usize)>) {
    map.clear();
    map.extend((0..dst).map(|d| nearest_centred(src, dst, d)));
    spans.clear();
    let mut d = 0;
    for s in 0..src {
        let start = d;
        while d < dst && map[d] == s {
            d += 1;
        }
        spans.push((start, d));
    }
}

impl MaskScaling {
    /// Maps `sw x sh` masks onto `dw x dh`.
    pub fn new(sw: usize, sh: usize, dw: usize, dh: usize) -> MaskScaling {
        let mut m = MaskScaling::default();
        m.set_sizes(sw, sh, dw, dh);
        m
    }

    /// Re-targets the mapping (cheap when the sizes are unchanged).
    pub fn set_sizes(&mut self, sw: usize, sh: usize, dw: usize, dh: usize) {
        if self.src == (sw, sh)
            && self.dst == (dw, dh)
            && self.cols.len() == sw
            && self.rows.len() == sh
        {
            return;
        }
        nearest_axis(sw, dw, &mut self.xs, &mut self.cols);
        nearest_axis(sh, dh, &mut self.ys, &mut self.rows);
        self.src = (sw, sh);
        self.dst = (dw, dh);
    }

    /// The large size.
    pub fn dst_size(&self) -> (usize, usize) {
        self.dst
    }

    fn check(&self, mask: &Mask) -> Result<(), ShapeError> {
        if (mask.width, mask.height) != self.src {
            return Err(ShapeError::Size {
                what: "mask vs scaling",
                expected: self.src,
                got: (mask.width, mask.height),
            });
        }
        let n = pixel_count(mask.width, mask.height, "mask")?;
        if mask.data.len() != n {
            return Err(ShapeError::Length {
                what: "mask",
                expected: n,
                got: mask.data.len(),
            });
        }
        Ok(())
    }

    /// The large mask itself (what the other methods avoid building).
    pub fn scale(&self, mask: &Mask) -> Mask {
        let (dw, dh) = self.dst;
        let mut out = Mask::new(dw, dh);
        for y in 0..dh {
            for x in 0..dw {
                out.set(x, y, mask.get(self.xs[x], self.ys[y]));
            }
        }
        out
    }

    /// Calls `f(small index, x0, x1, y0, y1)` (half-open large ranges) for every lesion pixel of
    /// the small mask that covers at least one large pixel.
    fn for_each_block(&self, mask: &Mask, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
        let sw = self.src.0;
        for (sy, &(y0, y1)) in self.rows.iter().enumerate() {
            if y0 == y1 {
                continue;
            }
            let row = &mask.data[sy * sw..(sy + 1) * sw];
            for (sx, (&on, &(x0, x1))) in row.iter().zip(&self.cols).enumerate() {
                if on && x0 < x1 {
                    f(sy * sw + sx, x0, x1, y0, y1);
                }
            }
        }
    }

    /// [`MaskStats::compute`] of the large mask, in large pixels; `probs` is the small map
    /// (each small probability counts once per large pixel of its block).
    pub fn stats(&mut self, mask: &Mask, probs: &[f32]) -> Result<Option<MaskStats>, ShapeError> {
        self.check(mask)?;
        if probs.len() != mask.data.len() {
            return Err(ShapeError::Length {
                what: "probabilities vs mask",
                expected: mask.data.len(),
                got: probs.len(),
            });
        }
        let mut area = 0usize;
        let (mut bx0, mut by0, mut bx1, mut by1) = (usize::MAX, usize::MAX, 0, 0);
        // Integer sums of pixel coordinates: exact, so the centroid equals the per-pixel one.
        let (mut sum_x, mut sum_y, mut sum_p) = (0u128, 0u128, 0f64);
        self.for_each_block(mask, |i, x0, x1, y0, y1| {
            let (bw, bh) = (x1 - x0, y1 - y0);
            area += bw * bh;
            bx0 = bx0.min(x0);
            by0 = by0.min(y0);
            bx1 = bx1.max(x1 - 1);
            by1 = by1.max(y1 - 1);
            sum_x += (bh * (x0 + x1 - 1) * bw / 2) as u128;
            sum_y += (bw * (y0 + y1 - 1) * bh / 2) as u128;
            sum_p += f64::from(probs[i]) * (bw * bh) as f64;
        });
        if area == 0 {
            return Ok(None);
        }
        self.outline(mask);
        // The hull of the outline is the hull of each row's leftmost and rightmost outline
        // pixel, so a ragged outline with many runs still sorts at most two points per row.
        let dh = self.dst.1;
        self.row_ends.clear();
        self.row_ends.resize(dh, (usize::MAX, 0));
        for &(x0, y0, x1, y1) in &self.segs {
            for (x, y) in [(x0, y0), (x1, y1)] {
                let e = &mut self.row_ends[y];
                *e = (e.0.min(x), e.1.max(x));
            }
        }
        self.pts.clear();
        for (y, &(lo, hi)) in self.row_ends.iter().enumerate() {
            if lo <= hi {
                self.pts.push((lo as i64, y as i64));
                self.pts.push((hi as i64, y as i64));
            }
        }
        let a = area as f64;
        Ok(Some(MaskStats {
            area_px: area,
            bbox: (bx0, by0, bx1 - bx0 + 1, by1 - by0 + 1),
            centroid: (sum_x as f64 / a, sum_y as f64 / a),
            longest_diameter_px: longest_diameter_with(&mut self.pts, &mut self.hull),
            mean_probability: sum_p / a,
        }))
    }

    /// The [`contour`] pixels of the large mask as runs: a block's edge pixels are outline
    /// exactly where the large pixel beyond that edge is background or off the image (pixels
    /// inside a block have only lesion neighbours).
    fn outline(&mut self, mask: &Mask) {
        let (dw, dh) = self.dst;
        let sw = self.src.0;
        let on = |sx: usize, sy: usize| mask.data[sy * sw + sx];
        let mut segs = std::mem::take(&mut self.segs);
        segs.clear();
        self.for_each_block(mask, |i, x0, x1, y0, y1| {
            let (sx, sy) = (i % sw, i / sw);
            if x0 == 0 || !on(self.xs[x0 - 1], sy) {
                segs.push((x0, y0, x0, y1 - 1));
            }
            if x1 == dw || !on(self.xs[x1], sy) {
                segs.push((x1 - 1, y0, x1 - 1, y1 - 1));
            }
            if y0 == 0 || !on(sx, self.ys[y0 - 1]) {
                segs.push((x0, y0, x1 - 1, y0));
            }
            if y1 == dh || !on(sx, self.ys[y1]) {
                segs.push((x0, y1 - 1, x1 - 1, y1 - 1));
            }
        });
        self.segs = segs;
    }

    /// [`draw_contour_rgb`] of the large mask on a `dst`-sized image: each outline run widened
    /// by [`contour_reach`] and clipped, so only the band around the lesion is touched.
    pub fn draw_contour_rgb(
        &mut self,
        image: &mut [u8],
        stride: usize,
        mask: &Mask,
        color: [u8; 3],
        thickness: usize,
    ) -> Result<(), ShapeError> {
        self.check(mask)?;
        let (dw, dh) = self.dst;
        check_buffer(image, dw, dh, stride)?;
        if thickness == 0 {
            return Ok(());
        }
        let r = contour_reach(thickness);
        self.outline(mask);
        for &(x0, y0, x1, y1) in &self.segs {
            let (xa, xb) = (x0.saturating_sub(r), (x1 + r).min(dw - 1));
            for y in y0.saturating_sub(r)..=(y1 + r).min(dh - 1) {
                let row = &mut image[y * stride + xa * 3..y * stride + (xb + 1) * 3];
                for px in row.chunks_exact_mut(3) {
                    px.copy_from_slice(&color);
                }
            }
        }
        Ok(())
    }

    /// [`fill_translucent_rgb`] of the large mask on a `dst`-sized image.
    pub fn fill_translucent_rgb(
        &self,
        image: &mut [u8],
        stride: usize,
        mask: &Mask,
        color: [u8; 3],
        alpha: f32,
    ) -> Result<(), ShapeError> {
        self.check(mask)?;
        check_buffer(image, self.dst.0, self.dst.1, stride)?;
        if alpha.is_nan() {
            return Ok(());
        }
        let a = alpha.clamp(0.0, 1.0);
        let b = 1.0 - a;
        self.for_each_block(mask, |_, x0, x1, y0, y1| {
            for y in y0..y1 {
                for px in image[y * stride + x0 * 3..y * stride + x1 * 3].chunks_exact_mut(3) {
                    blend(px, color, a, b);
                }
            }
        });
        Ok(())
    }

    /// Writes `value` at the large mask's lesion pixels of a one-byte-per-pixel image (`out`
    /// starts at the large mask's origin, rows `stride` bytes apart); other bytes are untouched.
    pub fn write_mask(
        &self,
        mask: &Mask,
        out: &mut [u8],
        stride: usize,
        value: u8,
    ) -> Result<(), ShapeError> {
        self.check(mask)?;
        let (dw, dh) = self.dst;
        if dw > 0 && dh > 0 && (stride < dw || out.len() < (dh - 1) * stride + dw) {
            return Err(ShapeError::Length {
                what: "mask buffer",
                expected: (dh - 1) * stride + dw,
                got: out.len(),
            });
        }
        self.for_each_block(mask, |_, x0, x1, y0, y1| {
            for y in y0..y1 {
                out[y * stride + x0..y * stride + x1].fill(value);
            }
        });
        Ok(())
    }
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
    fn nearest_centred_mapping() {
        // Upscale 2 -> 5: centres 0.2, 0.6, 1.0, 1.4, 1.8 -> [0, 0, 1, 1, 1].
        let m: Vec<usize> = (0..5).map(|d| nearest_centred(2, 5, d)).collect();
        assert_eq!(m, vec![0, 0, 1, 1, 1]);
        // Downscale 5 -> 2: centres 1.25, 3.75; identity on equal sizes; 256 -> 1080 is
        // monotone, covers every source pixel and ends on the last one.
        assert_eq!((nearest_centred(5, 2, 0), nearest_centred(5, 2, 1)), (1, 3));
        assert!((0..7).all(|d| nearest_centred(7, 7, d) == d));
        let m: Vec<usize> = (0..1080).map(|d| nearest_centred(256, 1080, d)).collect();
        assert!(m.windows(2).all(|w| w[1] == w[0] || w[1] == w[0] + 1));
        assert_eq!((m[0], m[1079]), (0, 255));
        assert_eq!(nearest_centred(0, 3, 1), 0);
    }

    #[test]
    fn mask_scaling_equals_scaled_mask() {
        let mut seed = 11u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let sizes = [
            (8, 6, 31, 17),
            (8, 6, 8, 6),
            (9, 7, 5, 4),
            (12, 10, 37, 9),
            (5, 5, 1, 1),
        ];
        for &(sw, sh, dw, dh) in &sizes {
            let mut sc = MaskScaling::new(sw, sh, dw, dh);
            for trial in 0..40 {
                let mut m = Mask::new(sw, sh);
                let density = 1 + trial % 4;
                for i in 0..sw * sh {
                    m.data[i] = next() % 5 < density;
                }
                let probs: Vec<f32> = (0..sw * sh)
                    .map(|_| (next() % 1000) as f32 / 1000.0)
                    .collect();
                let big = sc.scale(&m);
                let big_probs: Vec<f32> = (0..dw * dh)
                    .map(|i| {
                        probs
                            [nearest_centred(sh, dh, i / dw) * sw + nearest_centred(sw, dw, i % dw)]
                    })
                    .collect();
                let want = MaskStats::compute(&big, &big_probs).unwrap();
                let got = sc.stats(&m, &probs).unwrap();
                match (want, got) {
                    (None, None) => {}
                    (Some(w), Some(g)) => {
                        assert_eq!(
                            (g.area_px, g.bbox, g.centroid, g.longest_diameter_px),
                            (w.area_px, w.bbox, w.centroid, w.longest_diameter_px)
                        );
                        assert!((g.mean_probability - w.mean_probability).abs() < 1e-9);
                    }
                    other => panic!("{other:?}"),
                }
                let stride = dw * 3 + 2;
                for thickness in [0, 1, 2, 3] {
                    let mut a = vec![7u8; stride * dh];
                    let mut b = a.clone();
                    draw_contour_rgb(&mut a, dw, dh, stride, &big, [1, 2, 3], thickness).unwrap();
                    sc.draw_contour_rgb(&mut b, stride, &m, [1, 2, 3], thickness)
                        .unwrap();
                    assert!(a == b, "{sw}x{sh} -> {dw}x{dh}, thickness {thickness}");
                }
                let mut a: Vec<u8> = (0..stride * dh).map(|_| next() as u8).collect();
                let mut b = a.clone();
                fill_translucent_rgb(&mut a, dw, dh, stride, &big, [0, 0, 255], 0.35).unwrap();
                sc.fill_translucent_rgb(&mut b, stride, &m, [0, 0, 255], 0.35)
                    .unwrap();
                assert!(a == b);
                let mut out = vec![0u8; (dw + 1) * dh];
                sc.write_mask(&m, &mut out, dw + 1, 255).unwrap();
                for y in 0..dh {
                    for x in 0..dw {
                        assert_eq!(out[y * (dw + 1) + x] == 255, big.get(x, y));
                    }
                    assert_eq!(out[y * (dw + 1) + dw], 0);
                }
            }
            assert!(sc
                .stats(&Mask::new(sw + 1, sh), &vec![0.0; (sw + 1) * sh])
                .is_err());
        }
        let mut img = vec![0u8; 10];
        assert!(MaskScaling::new(2, 2, 4, 4)
            .draw_contour_rgb(&mut img, 12, &Mask::new(2, 2), [0; 3], 2)
            .is_err());
    }

    /// Timing of the video post-processing on a noisy 256x256 mask shown at 1920x1080:
    /// `cargo test --release --lib postprocess_1080p_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn postprocess_1080p_timing() {
        let mut seed = 3u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let (mw, mh, w, h) = (256, 256, 1920, 1080);
        let probs: Vec<f32> = (0..mw * mh)
            .map(|i| {
                let (x, y) = ((i % mw) as f32 - 128.0, (i / mw) as f32 - 128.0);
                let blob = 1.0 - (x * x + y * y).sqrt() / 100.0;
                blob + ((next() % 1000) as f32 / 1000.0 - 0.5) * 0.8
            })
            .collect();
        let raw = threshold(&probs, mw, mh, 0.5).unwrap();
        let mut scratch = ComponentScratch::default();
        let mut mask = Mask::new(0, 0);
        let mut sc = MaskScaling::new(mw, mh, w, h);
        let stride = w * 3;
        let mut img = vec![0u8; stride * h];
        let n = 50;
        let (mut t_cc, mut t_stats, mut t_draw) = (0.0, 0.0, 0.0);
        for _ in 0..n {
            let t = std::time::Instant::now();
            largest_component_into(&raw, &mut scratch, &mut mask);
            let t1 = std::time::Instant::now();
            let s = sc.stats(&mask, &probs).unwrap();
            let t2 = std::time::Instant::now();
            sc.draw_contour_rgb(&mut img, stride, &mask, [0, 0, 255], 2)
                .unwrap();
            let t3 = std::time::Instant::now();
            assert!(s.is_some());
            t_cc += (t1 - t).as_secs_f64();
            t_stats += (t2 - t1).as_secs_f64();
            t_draw += (t3 - t2).as_secs_f64();
        }
        let ms = |t: f64| t * 1e3 / n as f64;
        println!(
            "raw {} px, kept {} px: components {:.3} ms, stats {:.3} ms, contour {:.3} ms",
            raw.count(),
            mask.count(),
            ms(t_cc),
            ms(t_stats),
            ms(t_draw)
        );
    }

    #[test]
    fn largest_component_reuses_scratch() {
        let mut scratch = ComponentScratch::default();
        let mut out = Mask::new(0, 0);
        let a = art(&["##......", "##..###.", "....###.", "....###.", "#......."]);
        largest_component_into(&a, &mut scratch, &mut out);
        assert_eq!(out, largest_component(&a));
        let b = art(&["#.#", "#.#", "###"]);
        largest_component_into(&b, &mut scratch, &mut out);
        assert_eq!((out.width, out.count()), (3, 7));
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
