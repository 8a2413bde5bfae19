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
//!
//! A live recording ([`Recording`], `live --record`) is a pipeline of its own, fed the same
//! annotated buffers as the video output (shared, not copied):
//! ```text
//! {appsrc: at most RECORD_QUEUE frames waiting, more are dropped and counted} - {videoconvert}
//!   - ... - {I420 ! x264enc zerolatency ! High profile ! h264parse ! matroskamux streamable | mp4mux fragmented} - {filesink}
//! ```
//! Apart from the display so that it can never hold the display up: no shared queue, clock or
//! latency, its own streaming thread (and x264's threads) at a lower priority, and an error in it
//! (a full disk) ends the recording, not the run. It is written under its own name from the
//! first frame, in a form that plays when cut anywhere, and synced to disk every second, so that
//! a crash or a power cut leaves a playable file up to about then.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use serde::Serialize;

use gst::prelude::*;
use gst_video::prelude::*;

use super::config::{Mode, OutputFormat, SinkSpec};
use super::error::{PipelineError, Result};
use super::frame::{Frame, FrameBuffer, FrameLayout, FrameMask, Timing, BGR, GREY};
use super::latency::Collector;
use super::priority::lower_this_thread;
use super::source::launch;
use crate::output::{OutputError, Pending, PendingDir, PendingFile, Staged};

const APPSRC_NAME: &str = "lightunet_out";

/// The outputs of a run, by role. Another kind of output (a metadata stream) is another field
/// here and another step in [`Outputs::push`].
pub struct Outputs {
    /// The annotated frames (BGR).
    pub video: Output,
    /// The masks (GRAY8, 0 or 255), when asked for.
    pub masks: Option<Output>,
    /// Live: the annotated frames recorded as they are shown ([`Outputs::add_recording`]).
    pub record: Option<Recording>,
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
            record: None,
        })
    }

    /// Adds a live recording of the annotated frames to `path` (see [`Recording`]); its
    /// streaming threads run at `nice`. Returns what the run watches of it.
    pub fn add_recording(&mut self, path: &Path, overwrite: bool, nice: i32) -> Result<RecordingHandle> {
        let r = Recording::build(path, overwrite, nice)?;
        let handle = r.handle();
        self.record = Some(r);
        Ok(handle)
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

    /// Every output, the video first (the recording last).
    pub fn iter(&self) -> impl Iterator<Item = &Output> {
        self.required().chain(self.record.as_ref().map(|r| &r.output))
    }

    /// The outputs whose failure fails the run (all but the recording).
    pub fn required(&self) -> impl Iterator<Item = &Output> {
        std::iter::once(&self.video).chain(self.masks.as_ref())
    }

    /// Pushes a processed frame: its mask to the masks output when both exist, then the frame's
    /// own buffer to the recording (shared) and the video output, without a copy.
    pub fn push(&mut self, frame: Frame, masks: Option<&FrameMask>) -> Result<()> {
        let t = frame.timing();
        if let (Some(mask), Some(out)) = (masks, self.masks.as_mut()) {
            out.push_keyed(mask.key, FrameLayout::packed(frame.layout.width, frame.layout.height, GREY)?, &mask.data, t)?;
        }
        let buffer = self.video.frame_buffer(frame.data, frame.layout, t)?;
        if let Some(r) = self.record.as_mut() {
            r.offer(&buffer, frame.layout, t);
        }
        self.video.push_buffer(buffer, t)
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
    /// The last buffer made by [`Output::push_keyed`], with its key.
    keyed: Option<(u64, gst::Buffer)>,
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
    Ok(Output { pipeline, appsrc, size_filter, pad, fit, format, mode, caps_for: None, first: None, pending, keyed: None, pushed: 0 })
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
        let buffer = self.frame_buffer(frame, layout, t)?;
        self.push_buffer(buffer, t)
    }

    /// A captured frame's own buffer, checked against this output's layout, ready to push.
    fn frame_buffer(&mut self, frame: FrameBuffer, layout: FrameLayout, t: Timing) -> Result<gst::Buffer> {
        let info = self.layout_for(layout.size(), t.fps)?;
        if self.format != gst_video::VideoFormat::Bgr || info.stride()[0] as usize != layout.stride || frame.len() != info.size() {
            let FrameLayout { width, height, stride } = layout;
            return Err(PipelineError::gst("output", format!("frame buffer layout ({width}x{height}, stride {stride}) does not match the output's")));
        }
        Ok(frame.0.into_buffer())
    }

    /// [`Output::push`], but a frame whose `key` is the previous one's pushes the buffer made for
    /// it again (its pixels shared, no copy).
    pub fn push_keyed(&mut self, key: u64, layout: FrameLayout, data: &[u8], t: Timing) -> Result<()> {
        let buffer = match &self.keyed {
            Some((k, b)) if *k == key && self.caps_for.is_some_and(|(w, h)| (w, h) == layout.size()) => b.copy(),
            _ => {
                let b = self.buffer_from(layout, data, t)?;
                self.keyed = Some((key, b.copy()));
                b
            }
        };
        self.push_buffer(buffer, t)
    }

    /// Pushes a copy of one frame of `data` in `layout` (3 or 1 bytes per pixel, the output's
    /// format).
    pub fn push(&mut self, layout: FrameLayout, data: &[u8], t: Timing) -> Result<()> {
        let buffer = self.buffer_from(layout, data, t)?;
        self.push_buffer(buffer, t)
    }

    /// A new buffer in this output's layout holding a copy of `data` (in `layout`).
    fn buffer_from(&mut self, layout: FrameLayout, data: &[u8], t: Timing) -> Result<gst::Buffer> {
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
        Ok(buffer)
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

/// Frames the recording may hold waiting for its encoder before newer ones are dropped (and
/// counted): a burst of about a quarter second at 30 fps rides through, a disk or an encoder
/// that falls behind for longer costs recorded frames, never displayed ones. Each waiting frame
/// is a reference to a frame buffer already made (6 MB at 1080p), not a copy.
pub const RECORD_QUEUE: u64 = 8;

/// How often the recording is synced to disk: what a power cut can take from it.
const RECORD_SYNC_EVERY: Duration = Duration::from_secs(1);

/// A recording's containers: both play when cut anywhere.
fn record_chain(path: &Path) -> Result<&'static str> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    // 4:2:0 in High profile, as every file output (see `file_chain`): what players take.
    // No B-frames and no lookahead (zerolatency): a frame is written as soon as it is encoded, so
    // a cut loses only what the encoder and the muxer hold. A keyframe every 2 s at 30 fps.
    // Unbuffered: each write goes to the kernel at once (a crash of this process loses nothing
    // written); the sync thread then puts it on the disk.
    Ok(match ext.as_str() {
        // streamable: clusters are written as they fill and nothing is rewritten at the end, so
        // the file is a valid Matroska stream at every cluster boundary.
        "mkv" => "video/x-raw,format=I420 ! x264enc speed-preset=veryfast tune=zerolatency bframes=0 key-int-max=60 ! video/x-h264,profile=high ! h264parse ! matroskamux streamable=true ! filesink name=lightunet_file buffer-mode=unbuffered",
        // Fragmented: the header first, then a fragment (moof + mdat) per second; a player reads
        // the file up to its last whole fragment.
        "mp4" | "m4v" => "video/x-raw,format=I420 ! x264enc speed-preset=veryfast tune=zerolatency bframes=0 key-int-max=60 ! video/x-h264,profile=high ! h264parse ! mp4mux fragment-duration=1000 streamable=true ! filesink name=lightunet_file buffer-mode=unbuffered",
        other => {
            return Err(PipelineError::Config(format!(
                "recording {}: `.{other}` is not a recording format: use .mkv (Matroska, written as it goes) or .mp4 (fragmented MP4, 1 s fragments); both play when cut",
                path.display()
            )))
        }
    })
}

/// Checks a recording's file name (its format) before anything starts.
pub fn check_recording(path: &Path) -> Result<()> {
    record_chain(path).map(|_| ())
}

/// What the run and the report see of a recording, shared with the thread that feeds it.
#[derive(Debug, Default)]
struct RecordState {
    /// The regular file this run created (or truncated, with `--overwrite`) for the recording:
    /// removed if it gets no frame. `None` for an existing FIFO or device, written in place and
    /// never removed.
    owned_file: Mutex<Option<PathBuf>>,
    /// Frames handed to the recording's pipeline.
    recorded: AtomicU64,
    /// Frames dropped because RECORD_QUEUE frames were still waiting for the encoder.
    dropped: AtomicU64,
    /// Frames not offered any more because the recording had failed.
    after_failure: AtomicU64,
    failed: AtomicBool,
    error: Mutex<Option<String>>,
}

impl RecordState {
    /// Removes the file this run made for the recording if it got no frame (see `owned_file`).
    fn remove_if_empty(&self) {
        if self.recorded.load(Ordering::SeqCst) > 0 {
            return;
        }
        let owned = self.owned_file.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(path) = owned {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("recording {}: cannot remove the empty file: {e}", path.display());
            }
        }
    }
}

impl Drop for RecordState {
    /// A run that ended before its first frame (an error while starting) leaves no empty file.
    fn drop(&mut self) {
        self.remove_if_empty();
    }
}

/// A recording's outcome, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct RecordingReport {
    pub path: PathBuf,
    /// Frames handed to the recording (all of them are in the file unless it failed).
    pub recorded: u64,
    /// Frames left out because the encoder was behind (the display had them).
    pub dropped: u64,
    /// Frames after the recording failed.
    pub after_failure: u64,
    /// Why the recording stopped before the end (the display went on).
    pub error: Option<String>,
}

/// The run's handle on a recording: its pipeline and bus (watched apart from the other
/// outputs: its failure ends the recording, not the run) and its counters.
#[derive(Clone)]
pub struct RecordingHandle {
    pub pipeline: gst::Pipeline,
    pub bus: gst::Bus,
    path: PathBuf,
    state: Arc<RecordState>,
}

impl RecordingHandle {
    /// The recording failed: it is stopped (set to `Null`) and fed no more frames; the run goes
    /// on. The first error is kept.
    pub fn fail(&self, message: String) {
        tracing::error!("recording {}: {message}; the recording stops here, the display goes on", self.path.display());
        let mut e = self.state.error.lock().unwrap_or_else(|e| e.into_inner());
        e.get_or_insert(message);
        self.state.failed.store(true, Ordering::SeqCst);
        let _ = self.pipeline.set_state(gst::State::Null);
    }

    /// Removes the file (a recording that got no frame; call once its pipeline is `Null`).
    /// Removes nothing once it got a frame, nor a FIFO or device it was written into; once only.
    pub fn remove_file(&self) {
        self.state.remove_if_empty();
    }

    pub fn failed(&self) -> bool {
        self.state.failed.load(Ordering::SeqCst)
    }

    pub fn report(&self) -> RecordingReport {
        let s = &self.state;
        RecordingReport {
            path: self.path.clone(),
            recorded: s.recorded.load(Ordering::SeqCst),
            dropped: s.dropped.load(Ordering::SeqCst),
            after_failure: s.after_failure.load(Ordering::SeqCst),
            error: s.error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }
}

/// A live recording of the annotated frames (see the module comment).
pub struct Recording {
    pub output: Output,
    path: PathBuf,
    state: Arc<RecordState>,
    /// Syncs the file to disk every RECORD_SYNC_EVERY; stopped and joined on drop.
    sync: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Recording {
    /// Creates the file under its own name (an existing one only with `overwrite`, checked by
    /// the output plan first) and builds the pipeline; its streaming threads start at `nice`.
    fn build(path: &Path, overwrite: bool, nice: i32) -> Result<Recording> {
        let chain = record_chain(path)?;
        let location = path
            .to_str()
            .ok_or_else(|| OutputError::NotUtf8 { role: "recording".into(), path: path.to_path_buf() })?;
        // Written under its own name, not staged: a crash must leave it where the user looks.
        // An existing FIFO or device (as for the other outputs: a stream, not stored data) is
        // written in place: not created, not synced, never removed.
        let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir());
        let file = if special {
            None
        } else {
            // Claimed before GStreamer opens it: without --overwrite, a file that appeared since
            // the plan was checked is not replaced.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(overwrite)
                .create_new(!overwrite)
                .open(path)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => OutputError::Exists { role: "recording".into(), path: path.to_path_buf() },
                    _ => OutputError::io("recording", path, e),
                })?;
            Some(f)
        };
        let state = Arc::new(RecordState::default());
        *state.owned_file.lock().unwrap_or_else(|e| e.into_inner()) = file.as_ref().map(|_| path.to_path_buf());
        let output = build_output(&SinkSpec::Launch(chain.into()), "recording", gst_video::VideoFormat::Bgr, Mode::Live, None)?;
        let sink = output.pipeline.by_name("lightunet_file").ok_or_else(|| PipelineError::gst("recording", "file sink missing"))?;
        sink.set_property("location", location);
        // The display output's appsrc drops when one frame waits (live: the newest matters);
        // the recording wants every frame it can encode: no limit there, RECORD_QUEUE here.
        output.appsrc.set_property_from_str("leaky-type", "none");
        output.appsrc.set_max_bytes(0);
        if nice > 0 {
            let bus = output.pipeline.bus().ok_or_else(|| PipelineError::gst("recording", "no bus"))?;
            // GStreamer announces each streaming thread from inside it as it starts: lower it
            // there. x264's threads are started by that thread and inherit its priority.
            bus.set_sync_handler(move |_, msg| {
                if let gst::MessageView::StreamStatus(s) = msg.view() {
                    if s.get().0 == gst::StreamStatusType::Enter {
                        if let Err(e) = lower_this_thread(nice) {
                            tracing::debug!("recording: cannot lower a streaming thread's priority: {e}");
                        }
                    }
                }
                gst::BusSyncReply::Pass
            });
        }
        let sync = file.map(|f| spawn_sync(f, path.to_path_buf(), state.clone())).transpose()?;
        Ok(Recording { output, path: path.to_path_buf(), state, sync })
    }

    fn handle(&self) -> RecordingHandle {
        RecordingHandle {
            pipeline: self.output.pipeline.clone(),
            // build_output made the pipeline from a description, which always has a bus.
            bus: self.output.pipeline.bus().unwrap_or_default(),
            path: self.path.clone(),
            state: self.state.clone(),
        }
    }

    /// Offers a frame (its pixels shared with the display's buffer): pushed when fewer than
    /// RECORD_QUEUE frames wait for the encoder, else dropped and counted. Never blocks; a push
    /// that fails ends the recording, not the run.
    fn offer(&mut self, buffer: &gst::Buffer, layout: FrameLayout, t: Timing) {
        let s = &self.state;
        if s.failed.load(Ordering::SeqCst) {
            s.after_failure.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // In bytes: the level in buffers needs GStreamer 1.20's API.
        if self.output.appsrc.current_level_bytes() >= RECORD_QUEUE * buffer.size() as u64 {
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // A new buffer header over the same memory: the display's buffer is untouched.
        let copy = buffer.copy();
        let pushed = self.output.layout_for(layout.size(), t.fps).and_then(|_| self.output.push_buffer(copy, t));
        match pushed {
            Ok(()) => {
                s.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.handle().fail(e.to_string()),
        }
    }
}

impl Drop for Recording {
    /// Stops the sync thread (it syncs once more) and joins it.
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.sync.take() {
            drop(stop);
            if handle.join().is_err() {
                tracing::error!("recording {}: the sync thread panicked", self.path.display());
            }
        }
    }
}

/// The thread that syncs the recording to disk every RECORD_SYNC_EVERY until `stop` closes, and
/// once more then. A sync that fails (the disk is gone) is the recording's error.
fn spawn_sync(file: File, path: PathBuf, state: Arc<RecordState>) -> Result<(Sender<()>, JoinHandle<()>)> {
    let (tx, rx) = bounded::<()>(0);
    let handle = std::thread::Builder::new()
        .name("lightunet-record-sync".into())
        .spawn(move || {
            // The new name itself must reach the disk too, once: a power cut could otherwise
            // leave synced data under no name (POSIX asks for the folder to be synced).
            let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if let Err(e) = File::open(folder).and_then(|d| d.sync_all()) {
                tracing::warn!("recording {}: cannot sync its folder: {e}", path.display());
            }
            loop {
                let last = !matches!(rx.recv_timeout(RECORD_SYNC_EVERY), Err(RecvTimeoutError::Timeout));
                if let Err(e) = file.sync_data() {
                    let mut err = state.error.lock().unwrap_or_else(|e| e.into_inner());
                    if err.is_none() {
                        tracing::error!("recording {}: cannot sync to disk: {e}", path.display());
                        *err = Some(format!("cannot sync to disk: {e}"));
                    }
                }
                if last {
                    return;
                }
            }
        })
        .map_err(|source| PipelineError::ThreadSpawn { thread: "recording sync", source })?;
    Ok((tx, handle))
}
