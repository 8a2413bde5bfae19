//! Output side: an appsrc fed by the pusher thread, then conversion and an encoder/muxer chosen by
//! the output file's extension, or any gst-launch sink description.
//!
//! ```text
//! {appsrc} - {videoconvert} - {videoscale} - {capsfilter: first frame's size} - {videobox: pad to
//! even} - {identity: output pad probe} - {x264enc ! h264parse ! mp4mux ! filesink | ... | <description>}
//! ```
//! The appsrc caps are `video/x-raw,format=BGR` (annotated frames) or `GRAY8` (masks) at the
//! frame's size; a resolution change mid-stream is scaled back to the first frame's size so that
//! encoders and muxers never renegotiate. 4:2:0 encoders get a 1-px black pad on odd sizes.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gst::prelude::*;
use gst_video::prelude::*;

use super::config::{Mode, OutputFormat, SinkSpec};
use super::error::{PipelineError, Result};
use super::frame::{Frame, FrameBuffer, FrameLayout, Timing, BGR, GREY};
use super::latency::Collector;
use super::source::launch;
use crate::output::{OutputError, Pending, PendingDir, PendingFile, Staged};

const APPSRC_NAME: &str = "lightunet_out";

/// The outputs of a run, by role. Another kind of output (a recording, a metadata stream) is
/// another field here and another step in [`Outputs::push`].
pub struct Outputs {
    /// The annotated frames (BGR).
    pub video: Output,
    /// The masks (GRAY8, 0 or 255), when asked for.
    pub masks: Option<Output>,
}

impl Outputs {
    /// Builds (does not start) the output pipelines; `collector` gets the video output's pad
    /// probe stamps.
    /// File outputs are written under temporary names (see [`crate::output`]): take them with
    /// [`Outputs::take_staged`] and commit them once every output has posted EOS and gone to
    /// `Null`.
    pub fn build(video: &SinkSpec, masks: Option<&SinkSpec>, mode: Mode, collector: Option<Arc<Mutex<Collector>>>) -> Result<Outputs> {
        Ok(Outputs {
            video: build_output(video, "video output", gst_video::VideoFormat::Bgr, mode, collector)?,
            masks: masks.map(|m| build_output(m, "masks output", gst_video::VideoFormat::Gray8, mode, None)).transpose()?,
        })
    }

    /// The file outputs, still under their temporary names: committed, they move into place;
    /// dropped, they are removed.
    pub fn take_staged(&mut self) -> Staged {
        let mut staged = Staged::new();
        for o in [Some(&mut self.video), self.masks.as_mut()].into_iter().flatten() {
            if let Some(p) = o.pending.take() {
                staged.push(p);
            }
        }
        staged
    }

    /// Every output, the video first.
    pub fn iter(&self) -> impl Iterator<Item = &Output> {
        std::iter::once(&self.video).chain(self.masks.as_ref())
    }

    /// Pushes a processed frame: its mask (`width * height` bytes) to the masks output when both
    /// exist, then the frame's own buffer to the video output, without a copy.
    pub fn push(&mut self, frame: Frame, masks: Option<&[u8]>) -> Result<()> {
        let t = frame.timing();
        if let (Some(mask), Some(out)) = (masks, self.masks.as_mut()) {
            out.push(FrameLayout::packed(frame.layout.width, frame.layout.height, GREY)?, mask, t)?;
        }
        self.video.push_frame(frame.data, frame.layout, t)
    }

    pub fn end_of_stream(&self) {
        for o in self.iter() {
            o.end_of_stream();
        }
    }
}

pub struct Output {
    pub pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    size_filter: gst::Element,
    pad: gst::Element,
    pad_to_even: bool,
    format: gst_video::VideoFormat,
    mode: Mode,
    caps_for: Option<(usize, usize, gst::Fraction)>,
    first_size: Option<(usize, usize)>,
    /// A file output under its temporary name (a `%d` sequence: in a temporary folder) until the
    /// run commits it.
    pending: Option<Pending>,
    pub pushed: u64,
}

fn file_chain(format: OutputFormat, live: bool) -> &'static str {
    // No B-frames: with them mp4mux shifts the first PTS by the reorder delay, and recorded mode
    // promises the input's timestamps. zerolatency also drops the lookahead for live files.
    match (format, live) {
        (OutputFormat::Mp4, false) => "x264enc speed-preset=veryfast bframes=0 ! h264parse ! mp4mux ! filesink name=lightunet_file",
        (OutputFormat::Mp4, true) => "x264enc speed-preset=veryfast bframes=0 tune=zerolatency ! h264parse ! mp4mux ! filesink name=lightunet_file",
        (OutputFormat::Mov, _) => "x264enc speed-preset=veryfast bframes=0 ! h264parse ! qtmux ! filesink name=lightunet_file",
        (OutputFormat::Mkv, _) => "x264enc speed-preset=veryfast bframes=0 ! h264parse ! matroskamux ! filesink name=lightunet_file",
        (OutputFormat::Webm, _) => "vp8enc deadline=1 ! webmmux ! filesink name=lightunet_file",
        (OutputFormat::Avi, _) => "jpegenc ! avimux ! filesink name=lightunet_file",
        (OutputFormat::PngSequence, _) => "pngenc ! multifilesink name=lightunet_file",
    }
}

/// Builds (does not start) one output pipeline. `collector` gets the output pad probe's stamps.
fn build_output(
    spec: &SinkSpec,
    role: &str,
    format: gst_video::VideoFormat,
    mode: Mode,
    collector: Option<Arc<Mutex<Collector>>>,
) -> Result<Output> {
    let live = mode == Mode::Live;
    let (chain, shown, pad_to_even, format_of_file) = match spec {
        SinkSpec::File { path, .. } => {
            let f = OutputFormat::from_path(path)?;
            (file_chain(f, live).to_string(), path.display().to_string(), f.needs_even_size(), Some(f))
        }
        SinkSpec::Launch(desc) => (desc.clone(), desc.clone(), desc.contains("enc"), None),
    };
    let description = format!(
        "appsrc name={APPSRC_NAME} ! videoconvert ! videoscale ! capsfilter name=lightunet_size ! videobox name=lightunet_pad ! identity name=lightunet_probe ! {chain}"
    );
    let pipeline = launch(&description, &shown)?;
    let mut pending = None;
    if let (SinkSpec::File { path, overwrite }, Some(f)) = (spec, format_of_file) {
        // The sink writes under a temporary name beside the output (a sequence: into a temporary
        // folder beside its files); the run moves it into place after EOS has finalised it.
        let (staged, location): (Pending, _) = if f == OutputFormat::PngSequence {
            let pattern = path.file_name().ok_or_else(|| OutputError::NotAFileName { role: role.into(), path: path.clone() })?;
            let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let dir = PendingDir::files_into(role, folder, *overwrite)?;
            let location = dir.path().join(pattern);
            (dir.into(), location)
        } else {
            let file = PendingFile::create(role, path, *overwrite)?;
            let location = file.path().to_path_buf();
            (file.into(), location)
        };
        let location = location.to_str().ok_or_else(|| OutputError::NotUtf8 { role: role.into(), path: path.clone() })?;
        let sink = pipeline.by_name("lightunet_file").ok_or_else(|| PipelineError::gst("output", "file sink missing"))?;
        sink.set_property("location", location);
        pending = Some(staged);
    }
    let get = |name: &str| pipeline.by_name(name).ok_or_else(|| PipelineError::gst("output", format!("{name} missing")));
    let appsrc = get(APPSRC_NAME)?
        .downcast::<gst_app::AppSrc>()
        .map_err(|_| PipelineError::gst("output", "not an appsrc"))?;
    appsrc.set_format(gst::Format::Time);
    appsrc.set_stream_type(gst_app::AppStreamType::Stream);
    if live {
        // Stamped with the output pipeline's clock on push: shown now, not at the input's time.
        appsrc.set_is_live(true);
        appsrc.set_do_timestamp(true);
        appsrc.set_property_from_str("leaky-type", "downstream");
        // A live basesrc answers the latency query with max 0 ("cannot buffer"), so every synced
        // sink warned "Pipeline construction is invalid, please add queues" for its 20 ms
        // processing deadline. Frames wait upstream of the appsrc, in our queue; no limit here.
        appsrc.set_latency(gst::ClockTime::ZERO, gst::ClockTime::NONE);
    } else {
        appsrc.set_block(true);
    }
    let size_filter = get("lightunet_size")?;
    let pad = get("lightunet_pad")?;
    if let Some(collector) = collector {
        let probe = get("lightunet_probe")?;
        let srcpad = probe.static_pad("src").ok_or_else(|| PipelineError::gst("output", "identity without src pad"))?;
        srcpad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer() {
                let now = Instant::now();
                if let Ok(mut c) = collector.lock() {
                    c.at_sink(buffer.offset(), now);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    Ok(Output { pipeline, appsrc, size_filter, pad, pad_to_even, format, mode, caps_for: None, first_size: None, pending, pushed: 0 })
}

impl Output {
    /// Sets the appsrc caps for a `w x h` frame at `fps` when they change (the first frame's size
    /// also fixes the output size) and returns the frame's layout.
    fn layout_for(&mut self, (w, h): (usize, usize), fps: gst::Fraction) -> Result<gst_video::VideoInfo> {
        let fps = if fps.numer() > 0 && fps.denom() > 0 { fps } else { gst::Fraction::new(0, 1) };
        let info = gst_video::VideoInfo::builder(self.format, w as u32, h as u32)
            .fps(fps)
            .build()
            .map_err(|e| PipelineError::gst("output", e))?;
        if self.caps_for != Some((w, h, fps)) {
            if self.first_size.is_none() {
                self.first_size = Some((w, h));
                let caps = gst_video::VideoCapsBuilder::new().width(w as i32).height(h as i32).build();
                self.size_filter.set_property("caps", &caps);
                if self.pad_to_even {
                    self.pad.set_property("right", -((w % 2) as i32));
                    self.pad.set_property("bottom", -((h % 2) as i32));
                }
                if self.mode == Mode::Recorded {
                    self.appsrc.set_max_bytes(3 * info.size() as u64);
                }
            } else if self.first_size != Some((w, h)) {
                tracing::warn!("output: frame size changed to {w}x{h}; scaling to the first frame's size");
            }
            let caps = info.to_caps().map_err(|e| PipelineError::gst("output", e))?;
            self.appsrc.set_caps(Some(&caps));
            self.caps_for = Some((w, h, fps));
        }
        Ok(info)
    }

    /// Stamps and pushes a buffer. Blocks in recorded mode while the appsrc queue is full.
    fn push_buffer(&mut self, mut buffer: gst::Buffer, t: Timing) -> Result<()> {
        {
            let b = buffer.get_mut().ok_or_else(|| PipelineError::gst("output", "frame buffer not writable"))?;
            if self.mode == Mode::Recorded {
                b.set_pts(t.pts);
            }
            b.set_duration(t.duration);
            b.set_offset(t.seq);
        }
        self.appsrc.push_buffer(buffer).map_err(|e| PipelineError::gst("output", format!("push: {e:?}")))?;
        self.pushed += 1;
        Ok(())
    }

    /// Pushes a captured frame's own buffer (BGR, GStreamer's default strides), without a copy.
    pub fn push_frame(&mut self, frame: FrameBuffer, layout: FrameLayout, t: Timing) -> Result<()> {
        let info = self.layout_for(layout.size(), t.fps)?;
        if self.format != gst_video::VideoFormat::Bgr || info.stride()[0] as usize != layout.stride || frame.len() != info.size() {
            let FrameLayout { width, height, stride } = layout;
            return Err(PipelineError::gst("output", format!("frame buffer layout ({width}x{height}, stride {stride}) does not match the output's")));
        }
        self.push_buffer(frame.0.into_buffer(), t)
    }

    /// Pushes a copy of one frame of `data` in `layout` (3 or 1 bytes per pixel, the output's
    /// format).
    pub fn push(&mut self, layout: FrameLayout, data: &[u8], t: Timing) -> Result<()> {
        let bpp = self.format_bpp();
        layout.check("frame to push", data.len(), bpp)?;
        let info = self.layout_for(layout.size(), t.fps)?;
        let mut buffer = gst::Buffer::with_size(info.size()).map_err(|e| PipelineError::gst("output", e))?;
        {
            let b = buffer.get_mut().ok_or_else(|| PipelineError::gst("output", "new buffer not writable"))?;
            let mut vf =
                gst_video::VideoFrameRef::from_buffer_ref_writable(b, &info).map_err(|e| PipelineError::gst("output", e))?;
            let out = FrameLayout { stride: vf.plane_stride()[0] as usize, ..layout };
            let dst = vf.plane_data_mut(0).map_err(|e| PipelineError::gst("output", e))?;
            out.check("output buffer", dst.len(), bpp)?;
            let row = layout.row_bytes(bpp)?;
            for y in 0..layout.height {
                dst[y * out.stride..y * out.stride + row].copy_from_slice(&data[y * layout.stride..y * layout.stride + row]);
            }
        }
        self.push_buffer(buffer, t)
    }

    fn format_bpp(&self) -> usize {
        if self.format == gst_video::VideoFormat::Gray8 {
            GREY
        } else {
            BGR
        }
    }

    pub fn end_of_stream(&self) {
        let _ = self.appsrc.end_of_stream();
    }
}
