//! The inference step: what the model sees (the ROI, resized, BGR, /255) and the [`Segmenter`]
//! seam that runs it. The seam is a trait so that tests and benchmarks can put a fake (slow,
//! ground-truth, channel-probing) segmenter where the network goes.

use candle_core::{DType, Device, Tensor};

use super::config::Roi;
use super::error::{PipelineError, Result};
use crate::model::InferenceNet;
use crate::postprocess::resize_bilinear_f32;

/// The model input of one frame: `[3, height, width]` planar `f32` in 0..1, channel 0 = blue
/// (the original's OpenCV BGR order), plus the frame's identity for fakes that need it.
pub struct SegmentInput<'a> {
    pub seq: u64,
    pub pts: Option<gst::ClockTime>,
    pub chw: &'a [f32],
    pub width: usize,
    pub height: usize,
    /// Where the input came from in the frame.
    pub roi: Roi,
}

/// Produces a probability map (`width * height` values in 0..1, row-major) for one input.
pub trait Segmenter: Send {
    fn segment(&mut self, input: &SegmentInput) -> Result<Vec<f32>>;

    /// One map per input, in order. Recorded mode hands over every frame already queued, so a
    /// network can run them as one batch (the CPU path is a few percent faster per frame at
    /// batch 2 or more, a GPU much more); the default runs them one by one.
    fn segment_batch(&mut self, inputs: &[SegmentInput]) -> Result<Vec<Vec<f32>>> {
        inputs.iter().map(|i| self.segment(i)).collect()
    }
}

impl<F> Segmenter for F
where
    F: FnMut(&SegmentInput) -> Result<Vec<f32>> + Send,
{
    fn segment(&mut self, input: &SegmentInput) -> Result<Vec<f32>> {
        self(input)
    }
}

/// A Light U-net on a candle device (loaded once; the pipeline moves it into its thread).
pub struct UNetSegmenter {
    net: InferenceNet,
}

impl UNetSegmenter {
    pub fn new(net: InferenceNet) -> UNetSegmenter {
        UNetSegmenter { net }
    }

    /// Runs `x` (`[n, 3, h, w]`, on any device) and returns the `n * h * w` probabilities.
    fn run(&self, x: candle_core::Result<Tensor>) -> Result<Vec<f32>> {
        let x = x.and_then(|t| t.to_device(self.net.device())).map_err(crate::Error::from)?;
        let y = self.net.forward(&x)?; // [n, 1, h, w]
        Ok(y.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(crate::Error::from)?)
    }
}

impl Segmenter for UNetSegmenter {
    fn segment(&mut self, input: &SegmentInput) -> Result<Vec<f32>> {
        // Straight from the caller's buffer to the model's device: one copy on the CPU, one
        // upload on a GPU.
        self.run(Tensor::from_slice(input.chw, (1, 3, input.height, input.width), self.net.device()))
    }

    fn segment_batch(&mut self, inputs: &[SegmentInput]) -> Result<Vec<Vec<f32>>> {
        let Some(first) = inputs.first() else { return Ok(Vec::new()) };
        let (h, w) = (first.height, first.width);
        if inputs.len() == 1 || inputs.iter().any(|i| (i.height, i.width) != (h, w)) {
            return inputs.iter().map(|i| self.segment(i)).collect();
        }
        // One copy gathers the batch; the tensor takes the vector over (no second copy), and a
        // GPU gets it in one upload.
        let mut chw = Vec::with_capacity(inputs.len() * 3 * h * w);
        for i in inputs {
            chw.extend_from_slice(i.chw);
        }
        let probs = self.run(Tensor::from_vec(chw, (inputs.len(), 3, h, w), &Device::Cpu))?;
        Ok(probs.chunks_exact(h * w).map(<[f32]>::to_vec).collect())
    }
}

/// Horizontal or vertical taps of [`resize_bilinear_f32`] for one axis: (first source index,
/// second source index, weight of the second), exactly as it computes them, so that sampling
/// through them gives its bit-identical result.
fn bilinear_taps(src: usize, dst: usize, clamp_weights: bool, out: &mut Vec<(usize, usize, f32)>) {
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

/// The model input in one pass over the frame: ROI crop, OpenCV bilinear resize, rounding to
/// 8 bits, /255 and BGR planes, read straight from the (strided) frame buffer through per-column
/// and per-row taps computed once per ROI and model size. Bit-identical to [`preprocess_bgr`];
/// only the two source rows each output row needs are interpolated horizontally.
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

    /// Writes `3 * mw * mh` values into `out`, which must have exactly that length.
    pub fn run(&mut self, data: &[u8], stride: usize, roi: Roi, (mw, mh): (usize, usize), out: &mut [f32]) -> Result<()> {
        if out.len() != 3 * mw * mh {
            return Err(PipelineError::Config(format!("model input buffer holds {} values, not 3x{mw}x{mh}", out.len())));
        }
        if roi.w == 0 || roi.h == 0 || stride < (roi.x + roi.w) * 3 || data.len() < (roi.y + roi.h - 1) * stride + (roi.x + roi.w) * 3 {
            return Err(PipelineError::Config("frame buffer smaller than the ROI".into()));
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
            let row = &data[(roi.y + sy) * stride + roi.x * 3..(roi.y + sy) * stride + (roi.x + roi.w) * 3];
            for (d, &(x0, x1, fx)) in dst.chunks_exact_mut(3).zip(&self.xtaps) {
                for c in 0..3 {
                    // Same expression as `resize_bilinear_f32`'s horizontal pass.
                    d[c] = f32::from(row[x0 * 3 + c]) * (1.0 - fx) + f32::from(row[x1 * 3 + c]) * fx;
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
                    planes[c][dx] = (a[c] * b0 + b[c] * b1).round().clamp(0.0, 255.0) / 255.0;
                }
            }
        }
        Ok(())
    }
}

/// The two-pass reference for [`Preprocessor`] (a full-ROI plane per channel, then
/// [`resize_bilinear_f32`]); kept for tests.
///
/// Crops `roi` out of a packed BGR frame and resizes each channel to `mw x mh` (OpenCV bilinear,
/// rounded to 8 bits), scaled to 0..1, planar BGR, into `out` (`3 * mw * mh`).
pub fn preprocess_bgr(
    data: &[u8],
    stride: usize,
    roi: Roi,
    (mw, mh): (usize, usize),
    plane: &mut Vec<f32>,
    out: &mut Vec<f32>,
) -> Result<()> {
    if data.len() < (roi.y + roi.h - 1) * stride + (roi.x + roi.w) * 3 {
        return Err(PipelineError::Config("frame buffer smaller than the ROI".into()));
    }
    out.clear();
    for c in 0..3 {
        plane.clear();
        plane.reserve(roi.w * roi.h);
        for y in roi.y..roi.y + roi.h {
            let row = &data[y * stride + roi.x * 3..y * stride + (roi.x + roi.w) * 3];
            plane.extend(row.chunks_exact(3).map(|px| f32::from(px[c])));
        }
        let resized = resize_bilinear_f32(plane, roi.w, roi.h, mw, mh).map_err(|e| PipelineError::Config(e.to_string()))?;
        // Rounded back to bytes first, like `cv2.resize` on the original's uint8 image.
        out.extend(resized.into_iter().map(|v| v.round().clamp(0.0, 255.0) / 255.0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch through the network gives each frame the map it gets alone, in order.
    #[test]
    fn unet_batch_matches_single_frames() -> Result<()> {
        use candle_nn::{VarBuilder, VarMap};
        let map = VarMap::new();
        let net = crate::model::UNet::new(crate::model::Variant::Lighter(1), VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu))?
            .fold(&Device::Cpu, DType::F32)?;
        let mut seg = UNetSegmenter::new(net);
        let (h, w) = (32, 48);
        let frames: Vec<Vec<f32>> =
            (0..3).map(|k| (0..3 * h * w).map(|i| ((i * 7 + k * 13) % 101) as f32 / 100.0).collect()).collect();
        let inputs: Vec<SegmentInput> = frames
            .iter()
            .enumerate()
            .map(|(k, chw)| SegmentInput { seq: k as u64, pts: None, chw, width: w, height: h, roi: Roi::full(w, h) })
            .collect();
        let batch = seg.segment_batch(&inputs)?;
        assert_eq!(batch.len(), 3);
        for (k, input) in inputs.iter().enumerate() {
            let alone = seg.segment(input)?;
            assert_eq!(alone.len(), h * w);
            let d = alone.iter().zip(&batch[k]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d < 1e-5, "frame {k}: batch and single differ by {d}");
        }
        // The frames differ, so the maps must too: the batch is not one frame repeated.
        assert!(batch[0].iter().zip(&batch[1]).any(|(a, b)| (a - b).abs() > 1e-6));
        Ok(())
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
}
