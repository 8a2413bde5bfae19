//! Input side: a GStreamer pipeline that decodes or captures video and ends in an appsink that
//! hands packed BGR frames to the inference thread.
//!
//! ```text
//! {filesrc ! decodebin | <gst-launch description> | appsrc(phantom)} - {videoconvert} - {appsink}
//! ```
//! The appsink asks for `video/x-raw,format=BGR` (any size and rate); `videoconvert` turns grey,
//! 16-bit and YUV input into it, so grey input is replicated to three channels as the original
//! did. Rows are copied with the buffer's own stride (BGR rows are padded to 4 bytes).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gst_video::prelude::*;

use super::config::{check_printf_location, SourceSpec, PRINTF_LOCATION_ELEMENTS};
use super::error::{PipelineError, Result};
use super::frame::{FrameBuffer, FrameLayout, BGR};
use crate::phantom::{Phantom, PixelLayout};

pub(crate) const APPSINK_NAME: &str = "lightunet_in";

pub fn init() -> Result<()> {
    gst::init().map_err(|e| PipelineError::Init(e.to_string()))?;
    // autovideosink tries every video sink by rank; without a display, DirectFB's (from
    // gstreamer1.0-plugins-bad, Debian 12) crashes the whole process while being tried, where the
    // others just refuse. Nobody picks DirectFB on purpose any more: take it out of the choice,
    // so that a headless `live` gets GStreamer's "no usable video sink" error instead of a
    // segfault. Naming `dfbvideosink` explicitly still works.
    if let Some(f) = gst::ElementFactory::find("dfbvideosink") {
        f.set_rank(gst::Rank::NONE);
    }
    Ok(())
}

/// A `gst::parse::launch` that reports GStreamer's own message (and the description) on failure.
pub(crate) fn launch(description: &str, shown: &str) -> Result<gst::Pipeline> {
    let element = gst::parse::launch(description).map_err(|e| {
        let message = if e.matches(gst::ParseError::NoSuchElement) {
            format!("{} (is the plugin installed? see scripts/setup.sh)", e.message())
        } else {
            e.message().to_string()
        };
        PipelineError::Parse { description: shown.to_string(), message }
    })?;
    let pipeline = element
        .downcast::<gst::Pipeline>()
        .map_err(|_| PipelineError::Parse { description: shown.to_string(), message: "not a pipeline".into() })?;
    check_printf_locations(&pipeline)?;
    Ok(pipeline)
}

/// Refuses a description whose file pattern GStreamer would hand to printf unchecked
/// (`multifilesink location=f_%s.png` crashes the process): see [`FramePattern`](super::config::FramePattern).
fn check_printf_locations(pipeline: &gst::Pipeline) -> Result<()> {
    for element in pipeline.iterate_recurse().into_iter().flatten() {
        let Some(factory) = element.factory() else { continue };
        if !PRINTF_LOCATION_ELEMENTS.contains(&factory.name().as_str()) || element.find_property("location").is_none() {
            continue;
        }
        if let Ok(Some(location)) = element.property_value("location").get::<Option<String>>() {
            check_printf_location(&factory.name(), &location)?;
        }
    }
    Ok(())
}

/// The input pipeline, not yet started.
pub struct Input {
    pub pipeline: gst::Pipeline,
    pub appsink: gst_app::AppSink,
    /// The phantom when it is the source (its ground truth and image region).
    pub phantom: Option<Arc<Phantom>>,
    /// A file whose name is not UTF-8 is read through a link of a UTF-8 name in this private
    /// folder, which lives (and is removed) with the input.
    _alias: Option<tempfile::TempDir>,
    /// A file's frame durations as its container gives them (see [`CodedDurations`]).
    pub coded: CodedDurations,
}

/// The durations of a file's video frames as its container gives them, by timestamp. Parsers
/// and decoders stamp every frame with the nominal rate's duration; the container's own tells a
/// long frame of a variable-rate file (a phone's, in low light) from frames lost before it.
/// Written by a pad probe on the demuxer's video output, read by the appsink callback.
#[derive(Clone, Default)]
pub struct CodedDurations(Arc<Mutex<VecDeque<(gst::ClockTime, gst::ClockTime)>>>);

/// Frames remembered: more than the parser, the decoder (its reorder and frame-thread delay)
/// and decodebin's queue hold between the demuxer and us.
const CODED_DURATIONS_KEPT: usize = 256;

impl CodedDurations {
    fn record(&self, pts: gst::ClockTime, duration: gst::ClockTime) {
        let mut d = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if d.len() == CODED_DURATIONS_KEPT {
            d.pop_front();
        }
        d.push_back((pts, duration));
    }

    /// The container's duration of the frame at `pts`, if its demuxer gave one.
    pub fn get(&self, pts: gst::ClockTime) -> Option<gst::ClockTime> {
        let d = self.0.lock().unwrap_or_else(|e| e.into_inner());
        d.iter().rev().find(|(p, _)| *p == pts).map(|(_, duration)| *duration)
    }

    /// Watches the video output of the demuxer that `decodebin` plugs into `pipeline`.
    fn watch(&self, pipeline: &gst::Pipeline) {
        let this = self.clone();
        pipeline.connect_deep_element_added(move |_, _, element| {
            let is_demuxer = element.factory().is_some_and(|f| f.metadata(gst::ELEMENT_METADATA_KLASS).is_some_and(|k| k.contains("Demux")));
            if !is_demuxer {
                return;
            }
            let this = this.clone();
            element.connect_pad_added(move |_, pad| {
                let this = this.clone();
                pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                    let video = pad.current_caps().is_some_and(|c| c.structure(0).is_some_and(|s| s.name().starts_with("video/")));
                    if let (true, Some(b)) = (video, info.buffer()) {
                        if let (Some(pts), Some(duration)) = (b.pts(), b.duration()) {
                            this.record(pts, duration);
                        }
                    }
                    gst::PadProbeReturn::Ok
                });
            });
        });
    }
}

/// A private folder holding a link to `path` under a UTF-8 name (with `path`'s extension when
/// that is UTF-8, as a hint for type finding), and the link's path.
fn utf8_alias(path: &Path) -> Result<(tempfile::TempDir, String)> {
    let fail = |e: std::io::Error| PipelineError::Config(format!("input {}: a UTF-8 link to read it through: {e}", path.display()));
    let target = std::path::absolute(path).map_err(fail)?;
    let dir = tempfile::Builder::new().prefix("lightunet-input-").tempdir().map_err(fail)?;
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| format!(".{e}")).unwrap_or_default();
    let link = dir.path().join(format!("input{ext}"));
    std::os::unix::fs::symlink(&target, &link).map_err(fail)?;
    let link = link.to_str().map(str::to_owned).ok_or_else(|| {
        PipelineError::Config(format!("input {}: the temporary folder's name is not UTF-8", path.display()))
    })?;
    Ok((dir, link))
}

pub fn build_input(spec: &SourceSpec, live: bool) -> Result<Input> {
    // No dithering: grey and 16-bit input must reach the model as three equal channels.
    let tail = format!("videoconvert dither=none ! appsink name={APPSINK_NAME}");
    let mut alias = None;
    let coded = CodedDurations::default();
    let (pipeline, phantom) = match spec {
        SourceSpec::File(path) => {
            if !path.exists() {
                return Err(PipelineError::MissingInput(path.clone()));
            }
            if !path.is_file() {
                return Err(PipelineError::InputNotAFile(path.clone()));
            }
            let p = launch(&format!("filesrc name=lightunet_file ! decodebin ! {tail}"), &path.display().to_string())?;
            let src = p.by_name("lightunet_file").ok_or_else(|| PipelineError::gst("input", "filesrc missing"))?;
            // GStreamer's `location` is a UTF-8 string: a lossy name would open another file or
            // none, so a name that is not UTF-8 is read through a link with a UTF-8 name.
            match path.to_str() {
                Some(location) => src.set_property("location", location),
                None => {
                    let (dir, link) = utf8_alias(path)?;
                    src.set_property("location", link.as_str());
                    alias = Some(dir);
                }
            }
            coded.watch(&p);
            (p, None)
        }
        SourceSpec::Launch(desc) => (launch(&format!("{desc} ! {tail}"), desc)?, None),
        SourceSpec::Phantom { config, frames } => {
            let phantom = Arc::new(Phantom::new(config.clone()).map_err(|e| PipelineError::Config(format!("phantom: {e}")))?);
            let p = launch(&format!("appsrc name=lightunet_phantom ! {tail}"), "phantom")?;
            let src = p
                .by_name("lightunet_phantom")
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
                .ok_or_else(|| PipelineError::gst("input", "phantom appsrc missing"))?;
            setup_phantom(&src, phantom.clone(), *frames)?;
            (p, Some(phantom))
        }
    };
    let appsink = pipeline
        .by_name(APPSINK_NAME)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| PipelineError::gst("input", "appsink missing"))?;
    // Grey input stays grey (16-bit is reduced to 8 by videoconvert) and is replicated to three
    // channels here, exactly, as the original did; videoconvert's own GRAY->RGB path goes through
    // YUV and can leave G one level off R and B.
    let formats = [gst_video::VideoFormat::Bgr, gst_video::VideoFormat::Gray8];
    appsink.set_caps(Some(&gst_video::VideoCapsBuilder::new().format_list(formats).build()));
    // Live: the appsink waits for each frame's time, so a file plays at its real rate and a live
    // source's frames arrive as captured. Recorded: as fast as the consumer takes them.
    appsink.set_sync(live);
    appsink.set_property("enable-last-sample", false);
    Ok(Input { pipeline, appsink, phantom, _alias: alias, coded })
}

/// Whether the input reads a container (a demuxer is in it): then its duration comes from the
/// container, not estimated from an elementary stream's bitrate.
pub(crate) fn has_demuxer(pipeline: &gst::Pipeline) -> bool {
    demuxers(pipeline).next().is_some()
}

/// A demuxer that reads in pull mode, has stopped its task and made no output pad: it gave up on
/// the file without a stream (its error may have been dropped: see `run::InputProgress`).
pub(crate) fn silent_demuxer(pipeline: &gst::Pipeline) -> Option<String> {
    demuxers(pipeline)
        .find(|e| {
            e.src_pads().is_empty()
                && e.sink_pads().iter().any(|p| p.mode() == gst::PadMode::Pull && p.task_state() == gst::TaskState::Paused)
        })
        .map(|e| e.name().to_string())
}

fn demuxers(pipeline: &gst::Pipeline) -> impl Iterator<Item = gst::Element> {
    pipeline.iterate_recurse().into_iter().flatten().filter(|e| {
        e.factory().is_some_and(|f| f.metadata(gst::ELEMENT_METADATA_KLASS).is_some_and(|k| k.contains("Demux")))
    })
}

/// The phantom as an appsrc: frame `i` is rendered on demand, straight into the buffer, with
/// PTS `i / fps`; EOS after `frames` frames.
fn setup_phantom(src: &gst_app::AppSrc, phantom: Arc<Phantom>, frames: Option<u64>) -> Result<()> {
    let cfg = phantom.config();
    let fps = gst::Fraction::new(cfg.fps as i32, 1);
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Bgr, cfg.width as u32, cfg.height as u32)
        .fps(fps)
        .build()
        .map_err(|e| PipelineError::gst("input", e))?;
    let caps = info.to_caps().map_err(|e| PipelineError::gst("input", e))?;
    src.set_caps(Some(&caps));
    src.set_format(gst::Format::Time);
    src.set_is_live(false);
    let frame_ns = 1_000_000_000u64 / u64::from(cfg.fps);
    let mut index = 0u64;
    src.set_callbacks(
        gst_app::AppSrcCallbacks::builder()
            .need_data(move |src, _| {
                if frames.is_some_and(|n| index >= n) {
                    let _ = src.end_of_stream();
                    return;
                }
                match render(&phantom, &info, index, frame_ns) {
                    Ok(buffer) => {
                        if src.push_buffer(buffer).is_err() {
                            return; // flushing or shutting down
                        }
                        index += 1;
                    }
                    Err(msg) => {
                        gst::element_error!(src, gst::CoreError::Failed, ("phantom frame {}: {}", index, msg));
                    }
                }
            })
            .build(),
    );
    Ok(())
}

fn render(phantom: &Phantom, info: &gst_video::VideoInfo, index: u64, frame_ns: u64) -> Result<gst::Buffer, String> {
    let mut buffer = gst::Buffer::with_size(info.size()).map_err(|e| e.to_string())?;
    {
        let b = buffer.get_mut().ok_or("new buffer not writable")?;
        b.set_pts(gst::ClockTime::from_nseconds(index * frame_ns));
        b.set_duration(gst::ClockTime::from_nseconds(frame_ns));
        b.set_offset(index);
        let mut vf = gst_video::VideoFrameRef::from_buffer_ref_writable(b, info).map_err(|e| e.to_string())?;
        let stride = vf.plane_stride()[0] as usize;
        let data = vf.plane_data_mut(0).map_err(|e| e.to_string())?;
        phantom.fill_into(index, PixelLayout::Rgb8, data, stride, None)?;
    }
    Ok(buffer)
}

/// A frame as the appsink delivered it, copied into a buffer of our own.
pub(crate) struct Captured {
    /// BGR with GStreamer's default strides.
    pub layout: FrameLayout,
    pub fps: gst::Fraction,
    pub data: FrameBuffer,
}

/// Copies a BGR or GRAY8 sample (grey replicated to three channels) into a new BGR buffer with
/// GStreamer's default strides, ready to be drawn on and pushed out.
pub(crate) fn capture_bgr(sample: &gst::Sample) -> Result<Captured, String> {
    let caps = sample.caps().ok_or("sample without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| format!("caps {caps}: {e}"))?;
    let grey = match info.format() {
        gst_video::VideoFormat::Bgr => false,
        gst_video::VideoFormat::Gray8 => true,
        other => return Err(format!("expected BGR or GRAY8, got {other:?}")),
    };
    let buffer = sample.buffer().ok_or("sample without buffer")?;
    let vf = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).map_err(|e| e.to_string())?;
    let (w, h) = (info.width() as usize, info.height() as usize);
    let src_stride = vf.plane_stride()[0] as usize;
    let src = vf.plane_data(0).map_err(|e| e.to_string())?;
    let out_info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Bgr, w as u32, h as u32).build().map_err(|e| e.to_string())?;
    let layout = FrameLayout { width: w, height: h, stride: out_info.stride()[0] as usize };
    let mut data = gst::Buffer::with_size(out_info.size())
        .map_err(|e| e.to_string())?
        .into_mapped_buffer_writable()
        .map_err(|_| "cannot map a new buffer")?;
    let dst = data.as_mut_slice();
    // Every output row below is then in bounds (a callback must not panic).
    layout.check("new frame buffer", dst.len(), BGR).map_err(|e| e.to_string())?;
    let stride = layout.stride;
    let row = if grey { w } else { w * 3 };
    for y in 0..h {
        let line = src.get(y * src_stride..y * src_stride + row).ok_or("short video buffer")?;
        let out = &mut dst[y * stride..y * stride + w * 3];
        if grey {
            for (o, &v) in out.chunks_exact_mut(3).zip(line) {
                o.fill(v);
            }
        } else {
            out.copy_from_slice(line);
        }
    }
    Ok(Captured { layout, fps: info.fps(), data: FrameBuffer(data) })
}
