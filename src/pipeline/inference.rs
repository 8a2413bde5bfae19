//! The inference step: what the model sees (the ROI, resized, BGR, /255) and the [`Segmenter`]
//! seam that runs it. The seam is a trait so that tests and benchmarks can put a fake (slow,
//! ground-truth, channel-probing) segmenter where the network goes.

use candle_core::{DType, Device, Tensor};

use super::config::Roi;
use super::error::{PipelineError, Result};
use crate::model::UNet;
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
    net: UNet,
}

impl UNetSegmenter {
    pub fn new(net: UNet) -> UNetSegmenter {
        UNetSegmenter { net }
    }
}

impl Segmenter for UNetSegmenter {
    fn segment(&mut self, input: &SegmentInput) -> Result<Vec<f32>> {
        let dev = self.net.device().clone();
        let x = Tensor::from_slice(input.chw, (1, 3, input.height, input.width), &Device::Cpu)
            .and_then(|t| t.to_device(&dev))
            .map_err(crate::Error::from)?;
        let y = self.net.forward(&x)?; // [1, 1, H, W]
        let probs = y.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(crate::Error::from)?;
        Ok(probs)
    }
}

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
}
