//! `lightunet phantom`: writes a phantom clip and its ground-truth masks through the same output
//! pipelines as `process` (so every output format works for both).

use std::time::Duration;

use gst::prelude::*;

use super::config::{Mode, SinkSpec};
use super::error::{PipelineError, Result};
use super::frame::{FrameLayout, Timing, BGR, GREY};
use super::sink::Outputs;
use super::source::init;
use crate::output::OutputPlan;
use crate::phantom::{Phantom, PhantomConfig, PixelLayout};

/// Writes `frames` phantom frames to `video` (and their masks, 0/255 grey, to `masks`), with
/// PTS `i / fps`. Returns the image region `(x, y, w, h)`.
pub fn write_phantom_clip(
    config: &PhantomConfig,
    frames: u64,
    video: &SinkSpec,
    masks: Option<&SinkSpec>,
) -> Result<(usize, usize, usize, usize)> {
    if frames == 0 {
        return Err(PipelineError::Config("--frames must be at least 1".into()));
    }
    let mut plan = OutputPlan::new();
    video.plan(&mut plan, "video output")?;
    if let Some(m) = masks {
        m.plan(&mut plan, "masks output")?;
    }
    plan.check()?;
    init()?;
    let phantom = Phantom::new(config.clone()).map_err(|e| PipelineError::Config(format!("phantom: {e}")))?;
    let mut outs = Outputs::build(video, masks, Mode::Recorded, None)?;
    // Under temporary names until both outputs are finalised; dropped on an error.
    let staged = outs.take_staged();
    for o in outs.iter() {
        o.pipeline.set_state(gst::State::Playing).map_err(|e| PipelineError::gst("output", e))?;
    }
    let result = (|| -> Result<()> {
        let (w, h) = (config.width, config.height);
        let fps = gst::Fraction::new(config.fps as i32, 1);
        let frame_ns = 1_000_000_000u64 / u64::from(config.fps);
        let (video_layout, mask_layout) = (FrameLayout::packed(w, h, BGR)?, FrameLayout::packed(w, h, GREY)?);
        let mut rgb = vec![0u8; video_layout.min_len(BGR)?];
        let mut mask = vec![0u8; mask_layout.min_len(GREY)?];
        for i in 0..frames {
            phantom.fill_into(i, PixelLayout::Rgb8, &mut rgb, video_layout.stride, Some(&mut mask)).map_err(PipelineError::Phantom)?;
            let pts = Some(gst::ClockTime::from_nseconds(i * frame_ns));
            let t = Timing { fps, pts, duration: Some(gst::ClockTime::from_nseconds(frame_ns)), seq: i };
            outs.video.push(video_layout, &rgb, t)?;
            if let Some(o) = &mut outs.masks {
                o.push(mask_layout, &mask, t)?;
            }
            check_bus(&outs)?;
        }
        outs.end_of_stream();
        for o in outs.iter() {
            wait_eos(&o.pipeline)?;
        }
        Ok(())
    })();
    for o in outs.iter() {
        let _ = o.pipeline.set_state(gst::State::Null);
    }
    result?;
    staged.commit()?;
    Ok(phantom.image_rect())
}

fn check_bus(outs: &Outputs) -> Result<()> {
    for o in outs.iter() {
        if let Some(bus) = o.pipeline.bus() {
            while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                if let gst::MessageView::Error(e) = msg.view() {
                    return Err(PipelineError::Stream { side: "output", message: e.error().to_string(), debug: e.debug().map(|d| d.to_string()) });
                }
            }
        }
    }
    Ok(())
}

fn wait_eos(p: &gst::Pipeline) -> Result<()> {
    let bus = p.bus().ok_or_else(|| PipelineError::gst("output", "no bus"))?;
    let timeout = gst::ClockTime::from_seconds(Duration::from_secs(60).as_secs());
    match bus.timed_pop_filtered(timeout, &[gst::MessageType::Eos, gst::MessageType::Error]) {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(e) => Err(PipelineError::Stream { side: "output", message: e.error().to_string(), debug: e.debug().map(|d| d.to_string()) }),
            _ => Ok(()),
        },
        None => Err(PipelineError::gst("output", "no EOS within 60 s")),
    }
}
