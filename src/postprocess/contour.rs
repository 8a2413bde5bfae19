//! Outlines and drawing on 3-byte-per-pixel images: the contour pixels of a mask (OpenCV's
//! `findContours` pixel set), the original's outline as a band of a given thickness, and the
//! translucent fill; plus the buffer checks every drawing function makes.

use crate::metrics::{border, pixel_count, Mask, ShapeError};

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
    check_buffer(image, width, height, stride, 3)
}

/// Checks that a buffer of `bytes_per_pixel`-byte pixels holds `width x height` of them at
/// `stride`.
pub(super) fn check_buffer(
    image: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    bytes_per_pixel: usize,
) -> Result<(), ShapeError> {
    if width == 0 || height == 0 {
        return Ok(());
    }
    let row = width
        .checked_mul(bytes_per_pixel)
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
/// Only the first three bytes of `px` change (a 4-byte pixel's x byte stays).
#[inline]
pub(super) fn blend(px: &mut [u8], color: [u8; 3], a: f32, b: f32) {
    for (p, &c) in px.iter_mut().zip(&color) {
        let v = f32::from(c) * a + f32::from(*p) * b;
        *p = v.round_ties_even().clamp(0.0, 255.0) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postprocess::test_masks::{art, show};

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
}
