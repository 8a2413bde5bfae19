//! Output side: an appsrc fed by the pusher thread, then conversion and an encoder/muxer chosen by
//! the output file's extension, or any gst-launch sink description.
//!
//! ```text
//! {appsrc} - {videoconvert} - {videoscale} - {capsfilter: first frame's size, square pixels; I420
//! for video files} - {videobox: pad} - {identity: output pad probe}
//!   - {I420 ! x264enc ! High profile ! h264parse ! mp4mux faststart | ... | pngenc ! multifilesink | <description>}
//! ```
//! The appsrc caps are `video/x-raw,format=BGR` (annotated frames) or `GRAY8` (masks) at the
//! frame's size. Every file this tool writes plays in ordinary players: video is 4:2:0 (I420;
//! H.264 in High profile, VP8, 4:2:0 Motion JPEG), grey masks included, and MP4/MOV carry their
//! index at the front (`faststart`). Frames smaller than an encoder takes (16 px a side), or of
//! an odd size, are padded with black on the right and bottom. A resolution change mid-stream is
//! scaled to the first frame's size, keeping the picture's aspect ratio with black borders
//! (square pixels, the first frame's rate and colorimetry), so that encoders and muxers never
//! renegotiate: Matroska refuses any caps change and mp4mux one of size.

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
    fit: Fit,
    format: gst_video::VideoFormat,
    mode: Mode,
    /// The size the appsrc caps were last set for.
    caps_for: Option<(usize, usize)>,
    /// The first frame's size and rate: the output keeps them.
    first: Option<(usize, usize, gst::Fraction)>,
    /// A file output under its temporary name (a `%d` sequence: in a temporary folder) until the
    /// run commits it.
    pending: Option<Pending>,
    pub pushed: u64,
}

/// Smallest side the encoders of [`file_chain`] take. Measured with GStreamer 1.22: x264enc into
/// mp4mux, vp8enc and jpegenc into avimux refuse a 2x2 or 18x10 frame (not-negotiated) and take
/// 16x16 and 18x16.
pub const MIN_ENCODED_SIDE: usize = 16;

/// How frames are fitted to what the end of the output takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fit {
    /// As they are (a PNG sequence).
    Any,
    /// Padded to even sides (a description with an encoder: most 4:2:0 encoders need them).
    Even,
    /// A video file of ours: I420 at a fixed colorimetry, padded to even sides of at least
    /// [`MIN_ENCODED_SIDE`].
    Encoded,
}

impl Fit {
    /// The padded size of a `w x h` frame.
    fn padded(self, w: usize, h: usize) -> (usize, usize) {
        let even = |v: usize| v + v % 2;
        match self {
            Fit::Any => (w, h),
            Fit::Even => (even(w), even(h)),
            Fit::Encoded => (even(w).max(MIN_ENCODED_SIDE), even(h).max(MIN_ENCODED_SIDE)),
        }
    }
}

/// The encoder and muxer of a file output, after the common head of [`build_output`].
/// Video is converted to I420 first: from BGR or GRAY8, videoconvert would hand x264enc Y444
/// (High 4:4:4 Predictive, which browsers, QuickTime, Windows' player and hardware decoders do
/// not play), jpegenc RGB (4:4:4 JPEG) and x264enc GRAY8 (4:0:0).
fn file_chain(format: OutputFormat, live: bool) -> String {
    // No B-frames: with them mp4mux shifts the first PTS by the reorder delay, and recorded mode
    // promises the input's timestamps. zerolatency also drops the lookahead for live files.
    let tune = if live { " tune=zerolatency" } else { "" };
    let h264 = format!("video/x-raw,format=I420 ! x264enc speed-preset=veryfast bframes=0{tune} ! video/x-h264,profile=high ! h264parse");
    // faststart: the index (moov) before the data, so that the file plays while it downloads or
    // streams; mp4mux writes the data to a side file (`faststart-file`, set beside the output)
    // and copies it after the index at EOS.
    match format {
        OutputFormat::Mp4 => format!("{h264} ! mp4mux name={MUX_NAME} faststart=true ! filesink name=lightunet_file"),
        OutputFormat::Mov => format!("{h264} ! qtmux name={MUX_NAME} faststart=true ! filesink name=lightunet_file"),
        OutputFormat::Mkv => format!("{h264} ! matroskamux ! filesink name=lightunet_file"),
        OutputFormat::Webm => "video/x-raw,format=I420 ! vp8enc deadline=1 ! webmmux ! filesink name=lightunet_file".into(),
        OutputFormat::Avi => "video/x-raw,format=I420 ! jpegenc ! avimux ! filesink name=lightunet_file".into(),
        OutputFormat::PngSequence => "pngenc ! multifilesink name=lightunet_file".into(),
    }
}

const MUX_NAME: &str = "lightunet_mux";

/// Builds (does not start) one output pipeline. `collector` gets the output pad probe's stamps.
fn build_output(
    spec: &SinkSpec,
    role: &str,
    format: gst_video::VideoFormat,
    mode: Mode,
    collector: Option<Arc<Mutex<Collector>>>,
) -> Result<Output> {
    let live = mode == Mode::Live;
    let (chain, shown, fit, format_of_file) = match spec {
        SinkSpec::File { path, .. } => {
            let f = OutputFormat::from_path(path)?;
            let fit = if f.is_video() { Fit::Encoded } else { Fit::Any };
            (file_chain(f, live), path.display().to_string(), fit, Some(f))
        }
        SinkSpec::Launch(desc) => (desc.clone(), desc.clone(), if desc.contains("enc") { Fit::Even } else { Fit::Any }, None),
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
            let mut file = PendingFile::create(role, path, *overwrite)?;
            if let Some(mux) = pipeline.by_name(MUX_NAME) {
                // Beside the output, not in the system's temporary folder (often a RAM disk): it
                // holds all the video until EOS. The muxer removes it when it stops; a second
                // Ctrl-C, which stops nothing, removes it with the output.
                if let Some(side) = file.side_file(".faststart") {
                    let side = side.to_str().ok_or_else(|| OutputError::NotUtf8 { role: role.into(), path: path.clone() })?;
                    mux.set_property("faststart-file", side);
                }
            }
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
    Ok(Output { pipeline, appsrc, size_filter, pad, fit, format, mode, caps_for: None, first: None, pending, pushed: 0 })
}

impl Output {
    /// Sets the appsrc caps for a `w x h` frame when its size changes (the first frame fixes the
    /// output's size, rate and padding) and returns the frame's layout.
    fn layout_for(&mut self, (w, h): (usize, usize), fps: gst::Fraction) -> Result<gst_video::VideoInfo> {
        let fps = if fps.numer() > 0 && fps.denom() > 0 { fps } else { gst::Fraction::new(0, 1) };
        // The rate stays the first frame's: the timestamps carry the timing, and a rate in the
        // caps that changed would make the encoder renegotiate.
        let (_, _, fps) = *self.first.get_or_insert((w, h, fps));
        let info = gst_video::VideoInfo::builder(self.format, w as u32, h as u32)
            .fps(fps)
            .build()
            .map_err(|e| PipelineError::gst("output", e))?;
        if self.caps_for != Some((w, h)) {
            if self.caps_for.is_none() {
                self.fix_output_size(w, h)?;
                if self.mode == Mode::Recorded {
                    self.appsrc.set_max_bytes(3 * info.size() as u64);
                }
            } else if self.first.is_some_and(|(fw, fh, _)| (fw, fh) != (w, h)) {
                tracing::warn!("output: frame size changed to {w}x{h}; scaled to the first frame's size, with black borders where the aspect ratio differs");
            }
            let caps = info.to_caps().map_err(|e| PipelineError::gst("output", e))?;
            self.appsrc.set_caps(Some(&caps));
            self.caps_for = Some((w, h));
        }
        Ok(info)
    }

    /// Fixes what reaches the encoder from the first frame (`w x h`): its size with square pixels
    /// (videoscale then keeps the aspect ratio of later sizes with borders), for a video file
    /// also I420 and the colorimetry GStreamer gives that size (without it, a later size could
    /// change the colorimetry, and with it the caps), and the padding.
    fn fix_output_size(&mut self, w: usize, h: usize) -> Result<()> {
        let mut caps = gst::Caps::builder("video/x-raw")
            .field("width", w as i32)
            .field("height", h as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
        if self.fit == Fit::Encoded {
            let yuv = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, w as u32, h as u32)
                .build()
                .map_err(|e| PipelineError::gst("output", e))?;
            caps = caps.field("format", "I420").field("colorimetry", yuv.colorimetry().to_string());
        }
        self.size_filter.set_property("caps", caps.build());
        let (pw, ph) = self.fit.padded(w, h);
        if (pw, ph) != (w, h) {
            if self.fit == Fit::Encoded && (w < MIN_ENCODED_SIDE || h < MIN_ENCODED_SIDE) {
                tracing::warn!("output: {w}x{h} frames are below the encoder's {MIN_ENCODED_SIDE} px a side: padded to {pw}x{ph} with black");
            }
            self.pad.set_property("right", -((pw - w) as i32));
            self.pad.set_property("bottom", -((ph - h) as i32));
        }
        Ok(())
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
