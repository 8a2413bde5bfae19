//! Masks at another size: OpenCV's `INTER_NEAREST` scaling ([`scale_mask_nearest`]), the
//! pixel-centred mapping ([`nearest_centred`]), and [`MaskScaling`], which measures and draws a
//! model-size mask as if it were scaled up to the frame, without building the large mask.

use super::contour::{blend, check_buffer, contour_reach};
use super::stats::{longest_diameter_with, MaskStats};
use crate::metrics::{pixel_count, Mask, ShapeError};
use crate::pixel::PixelFormat;

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

    /// [`draw_contour_rgb`](crate::postprocess::draw_contour_rgb) of the large mask on a
    /// `dst`-sized image of 3-byte pixels, `color` in the buffer's own order: each outline run
    /// widened by [`contour_reach`] and clipped, so only the band around the lesion is touched.
    pub fn draw_contour_rgb(
        &mut self,
        image: &mut [u8],
        stride: usize,
        mask: &Mask,
        color: [u8; 3],
        thickness: usize,
    ) -> Result<(), ShapeError> {
        self.draw_contour(image, stride, PixelFormat::Bgr, mask, color, thickness)
    }

    /// [`MaskScaling::draw_contour_rgb`] on a `dst`-sized image in `format`, `color_bgr` in BGR
    /// order (written in the format's order; a 4-byte pixel's x byte is left as it is). The
    /// format is matched once; each pixel size has its own loop.
    pub fn draw_contour(
        &mut self,
        image: &mut [u8],
        stride: usize,
        format: PixelFormat,
        mask: &Mask,
        color_bgr: [u8; 3],
        thickness: usize,
    ) -> Result<(), ShapeError> {
        let color = format.color_from_bgr(color_bgr);
        match format.bytes_per_pixel() {
            4 => self.draw_contour_px::<4>(image, stride, mask, color, thickness),
            _ => self.draw_contour_px::<3>(image, stride, mask, color, thickness),
        }
    }

    fn draw_contour_px<const BPP: usize>(
        &mut self,
        image: &mut [u8],
        stride: usize,
        mask: &Mask,
        color: [u8; 3],
        thickness: usize,
    ) -> Result<(), ShapeError> {
        self.check(mask)?;
        let (dw, dh) = self.dst;
        check_buffer(image, dw, dh, stride, BPP)?;
        if thickness == 0 {
            return Ok(());
        }
        let r = contour_reach(thickness);
        self.outline(mask);
        for &(x0, y0, x1, y1) in &self.segs {
            let (xa, xb) = (x0.saturating_sub(r), (x1 + r).min(dw - 1));
            for y in y0.saturating_sub(r)..=(y1 + r).min(dh - 1) {
                let row = &mut image[y * stride + xa * BPP..y * stride + (xb + 1) * BPP];
                for px in row.chunks_exact_mut(BPP) {
                    px[..3].copy_from_slice(&color);
                }
            }
        }
        Ok(())
    }

    /// [`fill_translucent_rgb`](crate::postprocess::fill_translucent_rgb) of the large mask on a
    /// `dst`-sized image of 3-byte pixels, `color` in the buffer's own order.
    pub fn fill_translucent_rgb(
        &self,
        image: &mut [u8],
        stride: usize,
        mask: &Mask,
        color: [u8; 3],
        alpha: f32,
    ) -> Result<(), ShapeError> {
        self.fill_translucent(image, stride, PixelFormat::Bgr, mask, color, alpha)
    }

    /// [`MaskScaling::fill_translucent_rgb`] on a `dst`-sized image in `format`, `color_bgr` in
    /// BGR order (a 4-byte pixel's x byte is left as it is).
    pub fn fill_translucent(
        &self,
        image: &mut [u8],
        stride: usize,
        format: PixelFormat,
        mask: &Mask,
        color_bgr: [u8; 3],
        alpha: f32,
    ) -> Result<(), ShapeError> {
        let color = format.color_from_bgr(color_bgr);
        match format.bytes_per_pixel() {
            4 => self.fill_translucent_px::<4>(image, stride, mask, color, alpha),
            _ => self.fill_translucent_px::<3>(image, stride, mask, color, alpha),
        }
    }

    fn fill_translucent_px<const BPP: usize>(
        &self,
        image: &mut [u8],
        stride: usize,
        mask: &Mask,
        color: [u8; 3],
        alpha: f32,
    ) -> Result<(), ShapeError> {
        self.check(mask)?;
        check_buffer(image, self.dst.0, self.dst.1, stride, BPP)?;
        if alpha.is_nan() {
            return Ok(());
        }
        let a = alpha.clamp(0.0, 1.0);
        let b = 1.0 - a;
        self.for_each_block(mask, |_, x0, x1, y0, y1| {
            for y in y0..y1 {
                for px in image[y * stride + x0 * BPP..y * stride + x1 * BPP].chunks_exact_mut(BPP) {
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
    use crate::postprocess::contour::{draw_contour_rgb, fill_translucent_rgb};
    use crate::postprocess::test_masks::{art, show};

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

    /// Drawing on BGRx, RGB and RGBx paints the pixels BGR gets, in the format's channel order,
    /// and never touches the x byte.
    #[test]
    fn every_format_draws_the_bgr_pixels() {
        let m = art(&["......", ".####.", ".###..", "..#...", "......"]);
        let (dw, dh) = (23, 17);
        let mut sc = MaskScaling::new(m.width, m.height, dw, dh);
        let bgr_stride = dw * 3;
        let base: Vec<u8> = (0..bgr_stride * dh).map(|i| (i * 7 % 251) as u8).collect();
        let mut want_c = base.clone();
        sc.draw_contour(&mut want_c, bgr_stride, PixelFormat::Bgr, &m, [1, 2, 3], 2).unwrap();
        let mut want_f = base.clone();
        sc.fill_translucent(&mut want_f, bgr_stride, PixelFormat::Bgr, &m, [0, 0, 255], 0.35).unwrap();
        for format in PixelFormat::ALL {
            let bpp = format.bytes_per_pixel();
            let stride = dw * bpp + 2;
            let mut img = vec![0x5au8; stride * dh];
            for y in 0..dh {
                for x in 0..dw {
                    for (c, &o) in format.bgr_offsets().iter().enumerate() {
                        img[y * stride + x * bpp + o] = base[y * bgr_stride + x * 3 + c];
                    }
                }
            }
            let as_bgr = |img: &[u8]| -> Vec<u8> {
                let mut out = Vec::with_capacity(dw * dh * 3);
                for y in 0..dh {
                    for x in 0..dw {
                        out.extend(format.bgr_offsets().iter().map(|&o| img[y * stride + x * bpp + o]));
                        if bpp == 4 {
                            assert_eq!(img[y * stride + x * bpp + 3], 0x5a, "{format}: x byte written");
                        }
                    }
                }
                out
            };
            let mut c = img.clone();
            sc.draw_contour(&mut c, stride, format, &m, [1, 2, 3], 2).unwrap();
            assert!(as_bgr(&c) == want_c, "{format} contour");
            let mut f = img.clone();
            sc.fill_translucent(&mut f, stride, format, &m, [0, 0, 255], 0.35).unwrap();
            assert!(as_bgr(&f) == want_f, "{format} fill");
            // A stride too small for the format's pixels is refused.
            assert!(sc.draw_contour(&mut c, dw * bpp - 1, format, &m, [1, 2, 3], 2).is_err());
        }
    }
}
