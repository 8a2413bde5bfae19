//! The inference step: the [`Segmenter`] seam that runs the model on what it sees (the ROI,
//! resized, BGR, /255: [`crate::preprocess`]). The seam is a trait so that tests and benchmarks can put a fake (slow,
//! ground-truth, channel-probing) segmenter where the network goes.

use candle_core::{DType, Device, Tensor};

use super::config::Roi;
use super::error::Result;
use crate::model::InferenceNet;

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
}
