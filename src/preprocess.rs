//! What the network sees, made the same way wherever an image comes from (`predict`'s image
//! files, `train`'s data set, a video frame's region of interest in `process`/`live`), as in
//! SPEC.md: 8-bit BGR pixels resized to the model size bilinearly *in 8 bits* (OpenCV's
//! [`resize_bilinear_f32`](crate::resize::resize_bilinear_f32), rounded back to bytes like
//! `cv2.resize` on the original's `uint8` image), then scaled by 1/255, as planes B, G, R
//! (`[3, h, w]`).
//!
//! One resampler, [`Preprocessor`], does it in one pass over the (strided) pixels; it writes the
//! `/255` model input (`f32`) or the rounded bytes themselves (`u8`, the training cache, scaled
//! when batches are made). Both are bit-identical to the two-pass definition (each channel
//! resized as `f32`, rounded, then divided), which the tests keep as the reference.

use crate::error::Result;
use crate::image_io::BgrImage;
use crate::metrics::ShapeError;
use crate::pixel::PixelFormat;
use crate::roi::Roi;
use crate::resize::bilinear_taps;

/// What [`Preprocessor::run`] writes for one sample, made from the sample's value rounded to
/// 8 bits (an integral `f32` in `0..=255`).
pub trait PlaneValue: Copy {
    fn from_level(level: f32) -> Self;
}

/// The model input: the byte scaled to 0..1.
impl PlaneValue for f32 {
    #[inline(always)]
    fn from_level(level: f32) -> f32 {
        level / 255.0
    }
}

/// The byte itself (the training cache).
impl PlaneValue for u8 {
    #[inline(always)]
    fn from_level(level: f32) -> u8 {
        level as u8
    }
}

/// The model input in one pass over the frame: ROI crop, OpenCV bilinear resize, rounding to
/// 8 bits, /255 (or not: [`PlaneValue`]) and BGR planes, read straight from the (strided) frame
/// buffer through per-column and per-row taps computed once per ROI and model size.
/// Bit-identical to resizing each channel with
/// [`resize_bilinear_f32`](crate::resize::resize_bilinear_f32) and rounding (checked by the
/// tests against that two-pass reference); only the two source rows each output row needs are
/// interpolated horizontally.
#[derive(Default)]
pub struct Preprocessor {
    key: Option<(Roi, (usize, usize))>,
    xtaps: Vec<(usize, usize, f32)>,
    ytaps: Vec<(usize, usize, f32)>,
    /// Two horizontally resized source rows, `3 * mw` each, pixel-interleaved BGR.
    rows: Vec<f32>,
}

impl Preprocessor {
    pub fn new() -> Preprocessor {
        Preprocessor::default()
    }

    /// Writes `3 * mw * mh` values (planes B, G, R of `mw x mh`) into `out`, which must have
    /// exactly that length: model inputs for `T = f32`, the rounded bytes for `T = u8`. `data` is
    /// packed BGR ([`Preprocessor::run_format`] for the other formats).
    pub fn run<T: PlaneValue>(
        &mut self,
        data: &[u8],
        stride: usize,
        roi: Roi,
        size: (usize, usize),
        out: &mut [T],
    ) -> Result<()> {
        self.run_px::<T, 3, 0, 2>(data, stride, roi, size, out)
    }

    /// [`Preprocessor::run`] on a frame of any [`PixelFormat`]: the planes are B, G, R whatever
    /// the format's order (the model's input order), and the result for a frame equals that of
    /// the same pixels in BGR. The format is matched once per call; each format has its own
    /// monomorphised loop.
    pub fn run_format<T: PlaneValue>(
        &mut self,
        data: &[u8],
        stride: usize,
        format: PixelFormat,
        roi: Roi,
        size: (usize, usize),
        out: &mut [T],
    ) -> Result<()> {
        match format {
            PixelFormat::Bgr => self.run_px::<T, 3, 0, 2>(data, stride, roi, size, out),
            PixelFormat::Bgrx => self.run_px::<T, 4, 0, 2>(data, stride, roi, size, out),
            PixelFormat::Rgb => self.run_px::<T, 3, 2, 0>(data, stride, roi, size, out),
            PixelFormat::Rgbx => self.run_px::<T, 4, 2, 0>(data, stride, roi, size, out),
        }
    }

    /// The resampler for pixels of `BPP` bytes with blue at byte `B`, green at 1 and red at `R`.
    fn run_px<T: PlaneValue, const BPP: usize, const B: usize, const R: usize>(
        &mut self,
        data: &[u8],
        stride: usize,
        roi: Roi,
        (mw, mh): (usize, usize),
        out: &mut [T],
    ) -> Result<()> {
        if out.len() != 3 * mw * mh {
            return Err(ShapeError::Length { what: "model input buffer", expected: 3 * mw * mh, got: out.len() }.into());
        }
        if roi.w == 0 || roi.h == 0 {
            return Err(ShapeError::Size { what: "ROI (empty)", expected: (1, 1), got: (roi.w, roi.h) }.into());
        }
        let row = (roi.x + roi.w) * BPP;
        if stride < row {
            return Err(ShapeError::Length { what: "frame stride for the ROI", expected: row, got: stride }.into());
        }
        let needed = (roi.y + roi.h - 1) * stride + row;
        if data.len() < needed {
            return Err(ShapeError::Length { what: "frame buffer for the ROI", expected: needed, got: data.len() }.into());
        }
        if self.key != Some((roi, (mw, mh))) {
            bilinear_taps(roi.w, mw, true, &mut self.xtaps);
            bilinear_taps(roi.h, mh, false, &mut self.ytaps);
            self.rows.resize(6 * mw, 0.0);
            self.key = Some((roi, (mw, mh)));
        }
        let n = mw * mh;
        let (r0, r1) = self.rows.split_at_mut(3 * mw);
        let hpass = |sy: usize, dst: &mut [f32]| {
            let row = &data[(roi.y + sy) * stride + roi.x * BPP..(roi.y + sy) * stride + (roi.x + roi.w) * BPP];
            for (d, &(x0, x1, fx)) in dst.chunks_exact_mut(3).zip(&self.xtaps) {
                for c in 0..3 {
                    // Constant after monomorphisation: no per-pixel branch on the format.
                    let o = [B, 1, R][c];
                    // Same expression as `resize_bilinear_f32`'s horizontal pass.
                    d[c] = f32::from(row[x0 * BPP + o]) * (1.0 - fx) + f32::from(row[x1 * BPP + o]) * fx;
                }
            }
        };
        let mut have: (Option<usize>, Option<usize>) = (None, None);
        for (dy, &(y0, y1, fy)) in self.ytaps.iter().enumerate() {
            // Rows advance monotonically: the previous second row is often this first row.
            if have.0 != Some(y0) {
                if have.1 == Some(y0) {
                    r0.copy_from_slice(r1);
                } else {
                    hpass(y0, r0);
                }
                have.0 = Some(y0);
            }
            if have.1 != Some(y1) {
                if y1 == y0 {
                    r1.copy_from_slice(r0);
                } else {
                    hpass(y1, r1);
                }
                have.1 = Some(y1);
            }
            let (b0, b1) = (1.0 - fy, fy);
            let (ob, rest) = out.split_at_mut(n);
            let (og, or) = rest.split_at_mut(n);
            let planes = [&mut ob[dy * mw..(dy + 1) * mw], &mut og[dy * mw..(dy + 1) * mw], &mut or[dy * mw..(dy + 1) * mw]];
            for (dx, (a, b)) in r0.chunks_exact(3).zip(r1.chunks_exact(3)).enumerate() {
                for c in 0..3 {
                    // Rounded back to bytes first, like `cv2.resize` on the original's uint8 image.
                    planes[c][dx] = T::from_level((a[c] * b0 + b[c] * b1).round().clamp(0.0, 255.0));
                }
            }
        }
        Ok(())
    }
}

/// The model input of a whole image: `[3, size, size]`, B G R planes, 0..1.
pub fn model_input(img: &BgrImage, size: usize) -> Result<Vec<f32>> {
    let mut out = vec![0f32; 3 * size * size];
    Preprocessor::new().run(&img.data, img.stride(), Roi::full(img.width, img.height), (size, size), &mut out)?;
    Ok(out)
}

/// A whole image at `size x size` as bytes, `[3, size, size]`, B G R planes: [`model_input`]
/// before the `/255` (what the training cache keeps).
pub fn resize_planar_u8(img: &BgrImage, size: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; 3 * size * size];
    Preprocessor::new().run(&img.data, img.stride(), Roi::full(img.width, img.height), (size, size), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::resize::resize_bilinear_f32;

    /// The two-pass reference for [`Preprocessor`] (a full-ROI plane per channel, then
    /// [`resize_bilinear_f32`]).
    ///
    /// Crops `roi` out of a packed BGR frame and resizes each channel to `mw x mh` (OpenCV bilinear,
    /// rounded to 8 bits), scaled to 0..1, planar BGR, into `out` (`3 * mw * mh`).
    fn preprocess_bgr(
        data: &[u8],
        stride: usize,
        roi: Roi,
        (mw, mh): (usize, usize),
        plane: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        if data.len() < (roi.y + roi.h - 1) * stride + (roi.x + roi.w) * 3 {
            return Err(Error::Input("frame buffer smaller than the ROI".into()));
        }
        out.clear();
        for c in 0..3 {
            plane.clear();
            plane.reserve(roi.w * roi.h);
            for y in roi.y..roi.y + roi.h {
                let row = &data[y * stride + roi.x * 3..y * stride + (roi.x + roi.w) * 3];
                plane.extend(row.chunks_exact(3).map(|px| f32::from(px[c])));
            }
            let resized = resize_bilinear_f32(plane, roi.w, roi.h, mw, mh)?;
            // Rounded back to bytes first, like `cv2.resize` on the original's uint8 image.
            out.extend(resized.into_iter().map(|v| v.round().clamp(0.0, 255.0) / 255.0));
        }
        Ok(())
    }

    /// What `predict` and the training cache computed before this module (each channel of the
    /// whole image resized with `resize_bilinear_f32`, rounded to bytes; `/255` for the model).
    fn two_pass_planar_u8(img: &BgrImage, size: usize) -> Vec<u8> {
        let plane = img.width * img.height;
        let mut out = Vec::with_capacity(3 * size * size);
        for ch in 0..3 {
            let src: Vec<f32> = (0..plane).map(|i| f32::from(img.data[i * 3 + ch])).collect();
            let resized = resize_bilinear_f32(&src, img.width, img.height, size, size).unwrap();
            out.extend(resized.iter().map(|v| v.round().clamp(0.0, 255.0) as u8));
        }
        out
    }

    #[test]
    fn whole_images_match_the_two_pass_definition_bit_for_bit() {
        let mut seed = 21u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        };
        for (w, h) in [(97, 61), (61, 97), (1, 1), (1, 7), (13, 1), (256, 256), (255, 257), (33, 20)] {
            let img = BgrImage { width: w, height: h, data: (0..w * h * 3).map(|_| next()).collect() };
            for size in [16, 31, 32, 77, 256] {
                let want = two_pass_planar_u8(&img, size);
                assert!(resize_planar_u8(&img, size).unwrap() == want, "{w}x{h} -> {size} bytes");
                let unit: Vec<f32> = want.iter().map(|&v| f32::from(v) / 255.0).collect();
                let got = model_input(&img, size).unwrap();
                assert!(got.iter().zip(&unit).all(|(a, b)| a.to_bits() == b.to_bits()), "{w}x{h} -> {size} model input");
            }
        }
        let empty = BgrImage { width: 0, height: 0, data: Vec::new() };
        assert!(matches!(model_input(&empty, 16), Err(Error::Shape(_))));
    }

    #[test]
    fn crop_keeps_bgr_order_and_position() {
        // 4x2 frame, stride padded to 16; pixel (2,1) is pure red (B=0, G=0, R=255).
        let (w, h, stride) = (4, 2, 16);
        let mut data = vec![0u8; stride * h];
        data[stride + 2 * 3 + 2] = 255;
        let (mut plane, mut out) = (Vec::new(), Vec::new());
        preprocess_bgr(&data, stride, Roi { x: 2, y: 1, w: 1, h: 1 }, (1, 1), &mut plane, &mut out).unwrap();
        assert_eq!(out, vec![0.0, 0.0, 1.0]);
        preprocess_bgr(&data, stride, Roi::full(w, h), (4, 2), &mut plane, &mut out).unwrap();
        assert_eq!(out[2 * 8 + 4 + 2], 1.0); // R plane, row 1, column 2
        assert_eq!(out.iter().filter(|&&v| v > 0.0).count(), 1);
    }

    #[test]
    fn one_pass_matches_two_pass_bit_for_bit() {
        let mut seed = 9u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let (w, h) = (97, 61);
        let stride = w * 3 + 5;
        let data: Vec<u8> = (0..stride * h).map(|_| next() as u8).collect();
        let mut pre = Preprocessor::new();
        let (mut plane, mut want, mut got) = (Vec::new(), Vec::new(), Vec::new());
        let rois = [Roi::full(w, h), Roi { x: 3, y: 7, w: 40, h: 50 }, Roi { x: 90, y: 60, w: 7, h: 1 }];
        for roi in rois {
            for size in [(16, 16), (64, 32), (5, 120), (1, 1), (roi.w, roi.h)] {
                preprocess_bgr(&data, stride, roi, size, &mut plane, &mut want).unwrap();
                got.resize(3 * size.0 * size.1, f32::NAN);
                pre.run(&data, stride, roi, size, &mut got).unwrap();
                assert!(want == got, "{roi:?} -> {size:?}");
            }
        }
        got.resize(3 * 8 * 8, 0.0);
        assert!(pre.run(&data[..stride * 10], stride, Roi::full(w, h), (8, 8), &mut got).is_err());
        assert!(pre.run(&data, stride, Roi::full(w, h), (8, 9), &mut got).is_err(), "wrong output length");
    }


    /// Every pixel format gives the model exactly the input of the same pixels in BGR (the
    /// planes are B, G, R whatever the byte order; the x byte is never read).
    #[test]
    fn every_format_matches_bgr_bit_for_bit() {
        let mut seed = 5u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        };
        let (w, h) = (53, 37);
        let bgr_stride = w * 3 + 1;
        let bgr: Vec<u8> = (0..bgr_stride * h).map(|_| next()).collect();
        let roi = Roi { x: 4, y: 3, w: 41, h: 30 };
        let mut want = vec![0f32; 3 * 24 * 16];
        Preprocessor::new().run(&bgr, bgr_stride, roi, (24, 16), &mut want).unwrap();
        for format in PixelFormat::ALL {
            let bpp = format.bytes_per_pixel();
            let stride = w * bpp + 3;
            // The x byte holds noise: a loop that read it would change the result.
            let mut data: Vec<u8> = (0..stride * h).map(|_| next()).collect();
            for y in 0..h {
                for x in 0..w {
                    for (c, &o) in format.bgr_offsets().iter().enumerate() {
                        data[y * stride + x * bpp + o] = bgr[y * bgr_stride + x * 3 + c];
                    }
                }
            }
            let mut got = vec![f32::NAN; want.len()];
            Preprocessor::new().run_format(&data, stride, format, roi, (24, 16), &mut got).unwrap();
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{format}");
            assert!(Preprocessor::new().run_format(&data[..stride * 20], stride, format, roi, (24, 16), &mut got).is_err());
        }
    }
}
