//! Typed configuration: what to read, what to write, how to process, and the named pipelines in
//! `pipelines/*.toml`. Everything a user types is validated here, before any pipeline starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::{PipelineError, Result};
use crate::output::OutputPlan;
use crate::phantom::{PhantomConfig, Probe};
use crate::postprocess::Cleanup;

/// Recorded: every frame, blocking queues, original timestamps. Live: the capture side never
/// blocks, the queue drops its oldest frame, output is stamped with the output clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Recorded,
    Live,
}

pub use crate::roi::Roi;

/// Live mode: which frames are shown, and with which mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Show {
    /// Every captured frame, at the source's rate, drawn with the newest mask there is; the
    /// model takes the newest frame whenever it is free (on its own thread). A mask is up to a
    /// model run old; its age is reported.
    #[default]
    LatestMask,
    /// Only frames that went through the model, each with its own mask; the frames that arrive
    /// while the model is busy are dropped (the behaviour before latest-mask).
    Processed,
}

impl Show {
    pub fn name(self) -> &'static str {
        match self {
            Show::LatestMask => "latest-mask",
            Show::Processed => "processed",
        }
    }
}

/// Live, latest-mask: the nice value of the model's threads (and the recording's encoder). The
/// display path (capture, drawing, pushing) stays at the process's own priority, so that on a
/// machine with fewer free cores than busy threads it is scheduled first and the model gets what
/// is left. 10 gives a nice-0 thread about nine times the CPU share of a nice-10 one.
pub const DEFAULT_MODEL_NICE: i32 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OverlayStyle {
    /// Outline (the original: red, 2 px).
    Contour,
    /// Translucent fill.
    Fill,
    /// Fill and outline.
    Both,
    /// No drawing (masks and metadata only).
    None,
}

#[derive(Clone, Debug)]
pub struct OverlayConfig {
    pub style: OverlayStyle,
    /// Colour in BGR order (the frame buffers are BGR). Default the original's red `[0, 0, 255]`.
    pub color_bgr: [u8; 3],
    pub thickness: usize,
    pub fill_alpha: f32,
    /// Frame rate, latency and lesion area written in the top-left corner.
    pub text: bool,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        OverlayConfig { style: OverlayStyle::Contour, color_bgr: [0, 0, 255], thickness: 2, fill_alpha: 0.35, text: false }
    }
}

/// How frames are processed between the input and output pipelines.
#[derive(Clone, Debug)]
pub struct ProcessConfig {
    pub mode: Mode,
    /// Frames the input queue holds (live: at most this many wait; the oldest is dropped).
    pub queue_capacity: usize,
    /// Recorded: up to this many frames already waiting in the queue go through the model in one
    /// run (the queue is made at least this long). Live runs one frame at a time.
    pub batch: usize,
    /// `None`: the whole frame, or the phantom's image region for the phantom source.
    pub roi: Option<Roi>,
    pub overlay: OverlayConfig,
    /// Weight of the previous frames in an exponential moving average of the probability map
    /// (0 = off, 0.5 = half the previous average). Resets when the frame size changes.
    pub smooth: f32,
    /// Which connected component is the lesion (filled); the original's saved masks kept the
    /// largest.
    pub cleanup: Cleanup,
    pub threshold: f32,
    /// Model input size (the original: 256 x 256).
    pub model_size: (usize, usize),
    /// Live: a frame whose capture-to-output latency exceeds this is counted late.
    pub late_after: Duration,
    /// Live: how often the drop/late counters are logged.
    pub report_every: Duration,
    /// Live: finish when no frame has arrived for this long after the first one.
    pub stall_timeout: Duration,
    /// Live: fail when the source has sent no frame at all this long after the start (`None`:
    /// wait forever). A source that never sends (a UDP port nobody streams to, an unplugged
    /// card that still opens) would otherwise wait without end.
    pub first_frame_timeout: Option<Duration>,
    /// Live: every frame with the latest mask, or only processed frames.
    pub show: Show,
    /// Live, latest-mask: threads of the model's own pool (`None`: one per core).
    pub model_threads: Option<usize>,
    /// Live, latest-mask: nice value of the model's threads and of the recording's encoder
    /// (0: as the rest of the process).
    pub model_nice: i32,
    /// Recorded: fail when the input makes no progress (no frame, no message from its pipeline,
    /// and none of its frames waiting for us) for this long (`None`: wait forever). Nothing a
    /// file does may hang the run; a frame every 30 s is slow for any decoder.
    pub input_timeout: Option<Duration>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            mode: Mode::Recorded,
            queue_capacity: 4,
            batch: 4,
            roi: None,
            overlay: OverlayConfig::default(),
            smooth: 0.0,
            cleanup: Cleanup::default(),
            threshold: 0.5,
            model_size: (256, 256),
            late_after: Duration::from_millis(500),
            report_every: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
            first_frame_timeout: Some(DEFAULT_FIRST_FRAME_TIMEOUT),
            show: Show::LatestMask,
            model_threads: None,
            model_nice: DEFAULT_MODEL_NICE,
            input_timeout: Some(DEFAULT_INPUT_TIMEOUT),
        }
    }
}

/// Live: how long a source may take to send its first frame. A capture card or a network stream
/// delivers within a second or two of starting; 30 s leaves room for a sender started by hand.
pub const DEFAULT_FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Recorded: how long an input may make no progress at all (see [`ProcessConfig::input_timeout`]).
pub const DEFAULT_INPUT_TIMEOUT: Duration = Duration::from_secs(30);

/// Most frames a queue may hold. Each waiting frame holds a decoded picture (6 MB at 1080p,
/// 100 MB at 8K) and the queue's slots are allocated when it is made; live mode wants 1 (every
/// further frame adds a frame interval of latency) and recorded mode gains nothing from more than
/// one batch waiting.
pub const MAX_QUEUE: usize = 64;

/// Most threads the model's own pool may have: each is an OS thread with its stack, started
/// before the first frame; no machine this runs on has more cores than this.
pub const MAX_MODEL_THREADS: usize = 256;

/// Thickest outline drawn, in pixels: wider than this covers the lesion it outlines.
pub const MAX_THICKNESS: usize = 64;

impl ProcessConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(PipelineError::Config(m));
        if !(1..=MAX_QUEUE).contains(&self.queue_capacity) {
            return bad(format!(
                "the queue holds 1 to {MAX_QUEUE} frames, got {} (each waiting frame is a decoded picture, \
                 6 MB at 1080p; more only adds latency)",
                self.queue_capacity
            ));
        }
        if self.batch == 0 {
            return bad("the batch must be at least 1".into());
        }
        if let Some(n) = self.model_threads.filter(|n| !(1..=MAX_MODEL_THREADS).contains(n)) {
            return bad(format!("--model-threads {n} must be 1 to {MAX_MODEL_THREADS}"));
        }
        if !(0..=super::priority::MAX_NICE).contains(&self.model_nice) {
            return bad(format!("--model-nice {} must be 0 to {}", self.model_nice, super::priority::MAX_NICE));
        }
        if !(0.0..1.0).contains(&self.smooth) {
            return bad(format!("--smooth {} must be in [0, 1)", self.smooth));
        }
        if !(0.0..1.0).contains(&self.threshold) {
            return bad(format!("threshold {} must be in [0, 1)", self.threshold));
        }
        if self.overlay.thickness > MAX_THICKNESS {
            return bad(format!("--thickness {} is above {MAX_THICKNESS} pixels", self.overlay.thickness));
        }
        if !(self.overlay.fill_alpha.is_finite() && (0.0..=1.0).contains(&self.overlay.fill_alpha)) {
            return bad(format!("fill alpha {} must be in [0, 1]", self.overlay.fill_alpha));
        }
        let (w, h) = self.model_size;
        // The batch is checked at the largest it can be: recorded mode runs up to `batch` frames.
        crate::model::check_input(self.batch, h, w).map_err(|e| PipelineError::Config(e.to_string()))?;
        Ok(())
    }
}

/// Where frames come from.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    /// Any file GStreamer can decode (decodebin).
    File(PathBuf),
    /// A gst-launch description whose last element has an unlinked video src pad.
    Launch(String),
    /// The built-in phantom; `frames: None` runs until stopped.
    Phantom { config: PhantomConfig, frames: Option<u64> },
}

impl SourceSpec {
    /// Reads a source argument, deciding in this order (see [`is_launch_description`]):
    /// 1. `phantom` or `phantom:OPTIONS` (`WxH@FPS`, `convex`, `seed=N`, ...): the phantom;
    /// 2. `file:PATH`: the file PATH, taken literally (for a name that would read otherwise);
    /// 3. a path that exists, exactly as typed (spaces, any characters): that file;
    /// 4. a gst-launch description: text with a `!`, or an element name alone or followed by
    ///    `property=value` (`videotestsrc`, `v4l2src device=/dev/video0`);
    /// 5. anything else: a file that does not exist, an error.
    ///
    /// So a file name is never taken for a description; `./phantom` names a file called phantom.
    /// [`SourceSpec::parse`] for a command-line argument: a name that is not UTF-8 can only be a
    /// file (descriptions and `phantom` are text).
    pub fn parse_os(s: &std::ffi::OsStr, frames: Option<u64>) -> Result<SourceSpec> {
        match s.to_str() {
            Some(s) => SourceSpec::parse(s, frames),
            None => {
                let p = PathBuf::from(s);
                if p.exists() { Ok(SourceSpec::File(p)) } else { Err(PipelineError::MissingInput(p)) }
            }
        }
    }

    pub fn parse(s: &str, frames: Option<u64>) -> Result<SourceSpec> {
        let t = s.trim();
        if t == "phantom" || t.starts_with("phantom:") {
            return Ok(SourceSpec::Phantom { config: parse_phantom(t.strip_prefix("phantom").unwrap_or(""))?, frames });
        }
        if let Some(p) = s.strip_prefix("file:") {
            let p = PathBuf::from(p);
            return if p.exists() { Ok(SourceSpec::File(p)) } else { Err(PipelineError::MissingInput(p)) };
        }
        let p = Path::new(s);
        if p.exists() {
            return Ok(SourceSpec::File(p.to_path_buf()));
        }
        if is_launch_description(t) {
            return Ok(SourceSpec::Launch(t.to_string()));
        }
        Err(PipelineError::MissingInput(p.to_path_buf()))
    }
}

impl std::fmt::Display for SourceSpec {
    /// The source as the user gave it: a file's path, a description, or `phantom`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::File(path) => write!(f, "{}", path.display()),
            SourceSpec::Launch(description) => f.write_str(description),
            SourceSpec::Phantom { config, .. } => write!(f, "phantom:{}x{}@{}", config.width, config.height, config.fps),
        }
    }
}

/// Whether a text reads as a gst-launch description: it has a `!`, or it is an element name
/// (ASCII letters, digits, `_`, `-`; no `.` or `/`) alone or followed by `property=value`.
/// `my clip.mp4`, `clip.mp4` and `out/x.mp4` do not; `fakesink`, `autovideosink sync=false` do.
pub fn is_launch_description(text: &str) -> bool {
    let t = text.trim();
    if t.contains('!') {
        return true;
    }
    let ident = |w: &str| {
        w.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let mut words = t.split_whitespace();
    let Some(first) = words.next() else { return false };
    ident(first) && words.next().is_none_or(|w| w.split_once('=').is_some_and(|(k, _)| ident(k)))
}

fn parse_phantom(rest: &str) -> Result<PhantomConfig> {
    let bad = |m: String| PipelineError::Config(format!("phantom source `phantom{rest}`: {m}"));
    let mut cfg = PhantomConfig::default();
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    for (i, part) in rest.split(',').filter(|p| !p.is_empty()).enumerate() {
        if i == 0 && part.contains('x') && part.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            let (size, fps) = match part.split_once('@') {
                Some((s, f)) => (s, Some(f)),
                None => (part, None),
            };
            let (w, h) = size.split_once('x').ok_or_else(|| bad(format!("size `{size}` is not WxH")))?;
            cfg.width = w.parse().map_err(|_| bad(format!("width `{w}`")))?;
            cfg.height = h.parse().map_err(|_| bad(format!("height `{h}`")))?;
            if let Some(f) = fps {
                cfg.fps = f.parse().map_err(|_| bad(format!("fps `{f}`")))?;
            }
            continue;
        }
        match part.split_once('=') {
            Some(("seed", v)) => cfg.seed = v.parse().map_err(|_| bad(format!("seed `{v}`")))?,
            Some(("fps", v)) => cfg.fps = v.parse().map_err(|_| bad(format!("fps `{v}`")))?,
            None if part == "convex" => cfg.probe = Probe::Convex,
            None if part == "linear" => cfg.probe = Probe::Linear,
            None if part == "calipers" => cfg.calipers = true,
            None if part == "notext" => cfg.scanner_text = false,
            None if part == "nolesion" => cfg.lesion = false,
            _ => return Err(bad(format!("unknown option `{part}` (WxH@FPS, seed=N, convex, calipers, notext, nolesion)"))),
        }
    }
    // Sizes and rate are checked here, before a model is loaded for a source that cannot run.
    cfg.validate().map_err(bad)?;
    Ok(cfg)
}

/// Where annotated frames (or masks) go.
#[derive(Clone, Debug)]
pub enum SinkSpec {
    /// A file whose extension picks the encoder and container (see [`OutputFormat`]).
    File { path: PathBuf, overwrite: bool },
    /// A gst-launch description whose first element has an unlinked sink pad.
    Launch(String),
}

impl SinkSpec {
    /// Reads a sink argument: `file:PATH` (taken literally); text that does not read as a
    /// gst-launch description ([`is_launch_description`]): a file name (`out.mp4`, `my clip.mp4`,
    /// `frames_%05d.png`: an output file always has an extension, so it never reads as a bare
    /// element); text with a `!` that names an existing file: that file; else the description
    /// (`fakesink` is the element even beside a file of that name; `file:fakesink` is the file).
    pub fn parse(s: &str, overwrite: bool) -> SinkSpec {
        if let Some(p) = s.strip_prefix("file:") {
            return SinkSpec::File { path: PathBuf::from(p), overwrite };
        }
        if !is_launch_description(s) || (s.contains('!') && Path::new(s).exists()) {
            return SinkSpec::File { path: PathBuf::from(s), overwrite };
        }
        SinkSpec::Launch(s.trim().to_string())
    }
}

/// Output encodings chosen by file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// `.mp4` / `.m4v`: H.264 (x264, High profile, 4:2:0) in MP4, index first (faststart).
    Mp4,
    /// `.mov`: H.264 in QuickTime, index first.
    Mov,
    /// `.mkv`: H.264 in Matroska.
    Mkv,
    /// `.webm`: VP8 in WebM.
    Webm,
    /// `.avi`: Motion JPEG (4:2:0) in AVI.
    Avi,
    /// `name_%05d.png`: one lossless PNG per frame.
    PngSequence,
}

impl OutputFormat {
    pub fn from_path(path: &Path) -> Result<OutputFormat> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
        let name = path.to_string_lossy();
        Ok(match ext.as_str() {
            "mp4" | "m4v" => OutputFormat::Mp4,
            "mov" => OutputFormat::Mov,
            "mkv" => OutputFormat::Mkv,
            "webm" => OutputFormat::Webm,
            "avi" => OutputFormat::Avi,
            "png" if name.contains('%') => {
                FramePattern::parse(&name)?;
                OutputFormat::PngSequence
            }
            "png" => {
                return Err(PipelineError::Config(format!(
                    "{name}: a PNG sequence needs a frame-number pattern, e.g. frames_%05d.png"
                )))
            }
            other => {
                return Err(PipelineError::Config(format!(
                    "{name}: unknown output extension `{other}` (mp4, m4v, mov, mkv, webm, avi, or a PNG pattern like frames_%05d.png)"
                )))
            }
        })
    }

    /// An encoded video file (4:2:0: even sides of at least 16 px, padded with black when the
    /// frames are not); a PNG sequence takes frames as they are.
    pub fn is_video(self) -> bool {
        self != OutputFormat::PngSequence
    }
}

/// A file pattern as GStreamer's `multifilesink` (and `multifilesrc`, `splitmuxsink`, ...) uses
/// it: the whole location goes to C's printf with the frame number as its only argument. So it
/// may hold exactly one integer conversion, `%d` or `%0Nd`, and `%%` for a literal `%`; anything
/// else reads memory that is not there (`%s` crashes, `%n` aborts, `%p` and `%x` write addresses
/// into file names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramePattern {
    prefix: String,
    /// Digits of zero padding (`%05d`: 5; `%d`: 0).
    width: usize,
    suffix: String,
}

/// Widest zero padding accepted: the frame number is a 32-bit counter (10 digits).
const MAX_PATTERN_WIDTH: usize = 10;

impl FramePattern {
    /// Parses and checks `pattern`; the error says what is wrong and what is accepted.
    pub fn parse(pattern: &str) -> Result<FramePattern> {
        let bad = |why: String| {
            PipelineError::Config(format!(
                "file pattern `{pattern}`: {why} (a pattern holds exactly one frame number, `%d` or `%0Nd` \
                 such as `%05d`, and `%%` for a literal %)"
            ))
        };
        let mut parts = [String::new(), String::new()];
        let mut conversion: Option<usize> = None;
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let part = usize::from(conversion.is_some());
            if c != '%' {
                parts[part].push(c);
                continue;
            }
            let mut spec = String::new();
            while let Some(&d) = chars.peek() {
                if !d.is_ascii_digit() {
                    break;
                }
                spec.push(d);
                chars.next();
            }
            match chars.next() {
                Some('%') if spec.is_empty() => parts[part].push('%'),
                Some('d') if spec.is_empty() || (spec.starts_with('0') && spec.len() > 1) => {
                    if conversion.is_some() {
                        return Err(bad("more than one `%d`".into()));
                    }
                    let width: usize = spec.parse().unwrap_or(0);
                    if width > MAX_PATTERN_WIDTH {
                        return Err(bad(format!("`%{spec}d` pads to more than {MAX_PATTERN_WIDTH} digits")));
                    }
                    conversion = Some(width);
                }
                Some(other) => return Err(bad(format!("`%{spec}{other}` is not allowed"))),
                None => return Err(bad("it ends with a lone `%`".into())),
            }
        }
        let Some(width) = conversion else { return Err(bad("no frame number".into())) };
        let [prefix, suffix] = parts;
        Ok(FramePattern { prefix, width, suffix })
    }

    /// The file for frame `index` (`frames_%05d.png`, 0 -> `frames_00000.png`).
    pub fn file(&self, index: u64) -> PathBuf {
        PathBuf::from(format!("{}{:0width$}{}", self.prefix, index, self.suffix, width = self.width))
    }
}

/// The first file a `%d`-style pattern produces (`frames_%05d.png` -> `frames_00000.png`); the
/// pattern itself when it is not a valid one (see [`FramePattern`]).
pub fn first_pattern_file(pattern: &str) -> PathBuf {
    FramePattern::parse(pattern).map(|p| p.file(0)).unwrap_or_else(|_| PathBuf::from(pattern))
}

/// GStreamer elements that format their `location` with printf and a counter.
pub const PRINTF_LOCATION_ELEMENTS: [&str; 6] =
    ["multifilesink", "multifilesrc", "splitmuxsink", "hlssink", "hlssink2", "imagesequencesrc"];

/// Checks the `location` of an element that formats it with printf (see
/// [`PRINTF_LOCATION_ELEMENTS`]); `element` names it in the message.
pub fn check_printf_location(element: &str, location: &str) -> Result<()> {
    FramePattern::parse(location)
        .map(|_| ())
        .map_err(|e| PipelineError::Config(format!("{element}: {e}")))
}

impl SinkSpec {
    /// Adds a file output to `plan` as `role` (a `%d` pattern as a sequence), to be checked with
    /// the run's other inputs and outputs; a description writes nothing this tool can check.
    pub fn plan(&self, plan: &mut OutputPlan, role: &str) -> Result<()> {
        if let SinkSpec::File { path, overwrite } = self {
            if OutputFormat::from_path(path)? == OutputFormat::PngSequence {
                plan.sequence(role, path, *overwrite);
            } else {
                plan.file(role, path, *overwrite);
            }
        }
        Ok(())
    }
}

/// One `pipelines/<name>.toml`: a source and a sink description with `${var}` placeholders.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedPipeline {
    #[serde(skip)]
    pub name: String,
    pub description: String,
    /// gst-launch description ending in a video src pad, or `phantom[:WxH@FPS]`.
    pub source: String,
    /// gst-launch description starting with a sink pad.
    pub sink: String,
    /// Frames the live queue holds.
    pub queue: Option<usize>,
    /// `x,y,w,h`.
    pub roi: Option<String>,
    /// Defaults for the `${var}` placeholders; `--set var=value` overrides them.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// A file in a pipelines folder that could not be loaded (`live --list` shows it flagged).
#[derive(Clone, Debug)]
pub struct InvalidPipeline {
    pub name: String,
    pub path: PathBuf,
    pub error: String,
}

/// What a pipelines folder holds: the pipelines that load, and the files that do not.
#[derive(Clone, Debug, Default)]
pub struct PipelineListing {
    pub valid: Vec<NamedPipeline>,
    pub invalid: Vec<InvalidPipeline>,
}

impl NamedPipeline {
    /// Checks that `name` is a pipeline name, not a path: letters, digits, `-`, `_` and `.`, not
    /// starting with a dot (`../Cargo` would read a file outside the pipelines folder). A trailing
    /// `.toml` is allowed and ignored.
    pub fn check_name(name: &str) -> Result<&str> {
        let stem = name.strip_suffix(".toml").unwrap_or(name);
        let ok = !stem.is_empty()
            && !stem.starts_with('.')
            && stem.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(stem)
        } else {
            Err(PipelineError::Config(format!(
                "`{name}` is not a pipeline name (letters, digits, `-`, `_`, `.`; not a path): put the file \
                 in a pipelines folder and pass its name, or point --pipelines-dir at its folder"
            )))
        }
    }

    /// The pipeline `<dir>/<name>.toml` (`name` is a name, see [`NamedPipeline::check_name`]).
    pub fn load(dir: &Path, name: &str) -> Result<NamedPipeline> {
        let stem = Self::check_name(name)?;
        let path = dir.join(format!("{stem}.toml"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                let known = Self::list(dir).map(|l| l.valid).unwrap_or_default().into_iter().map(|p| p.name).collect::<Vec<_>>();
                PipelineError::Config(format!("no pipeline named `{stem}` in {} (known: {})", dir.display(), known.join(", ")))
            } else {
                PipelineError::Io { path: path.clone(), source: e }
            }
        })?;
        Self::from_toml(stem, &path.display().to_string(), &text)
    }

    /// A pipeline from the text of its TOML file (a file, or one embedded in the binary:
    /// `crate::assets::pipelines`); `origin` names it in errors. Also checks its `queue` and
    /// `roi`, so that a bad value is found when the file is read, not when a run starts.
    pub fn from_toml(name: &str, origin: &str, text: &str) -> Result<NamedPipeline> {
        let bad = |m: String| PipelineError::Config(format!("{origin}: {m}"));
        let mut p: NamedPipeline = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        p.name = name.to_string();
        if let Some(q) = p.queue {
            if !(1..=MAX_QUEUE).contains(&q) {
                return Err(bad(format!("queue = {q}: a queue holds 1 to {MAX_QUEUE} frames")));
            }
        }
        if let Some(roi) = &p.roi {
            roi.parse::<Roi>().map_err(bad)?;
        }
        Ok(p)
    }

    /// Every `.toml` file in `dir`, sorted by name: those that load, and those that do not with
    /// their error (one bad file does not hide the others).
    pub fn list(dir: &Path) -> Result<PipelineListing> {
        let rd = std::fs::read_dir(dir).map_err(|e| PipelineError::Io { path: dir.to_path_buf(), source: e })?;
        let mut paths: Vec<PathBuf> =
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
        paths.sort();
        let mut listing = PipelineListing::default();
        for path in paths {
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let loaded = std::fs::read_to_string(&path)
                .map_err(|e| PipelineError::Io { path: path.clone(), source: e })
                .and_then(|text| Self::from_toml(&name, &path.display().to_string(), &text));
            match loaded {
                Ok(p) => listing.valid.push(p),
                Err(e) => listing.invalid.push(InvalidPipeline { name, path, error: e.to_string() }),
            }
        }
        Ok(listing)
    }

    /// Source and sink with every `${var}` replaced (`overrides` first, then the file's `vars`).
    pub fn resolve(&self, overrides: &BTreeMap<String, String>) -> Result<(String, String)> {
        let mut vars = self.vars.clone();
        vars.extend(overrides.clone());
        Ok((substitute(&self.source, &vars, &self.name)?, substitute(&self.sink, &vars, &self.name)?))
    }
}

fn substitute(text: &str, vars: &BTreeMap<String, String>, name: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| PipelineError::Config(format!("pipeline `{name}`: unclosed `${{` in `{text}`")))?;
        let key = &after[..end];
        let value = vars.get(key).ok_or_else(|| {
            PipelineError::Config(format!("pipeline `{name}` needs a value for `{key}`: pass --set {key}=..."))
        })?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantom_specs() {
        let SourceSpec::Phantom { config, .. } = SourceSpec::parse("phantom:320x240@30,convex,seed=3", None).unwrap() else {
            panic!()
        };
        assert_eq!((config.width, config.height, config.fps, config.seed, config.probe), (320, 240, 30, 3, Probe::Convex));
        assert!(SourceSpec::parse("phantom:foo", None).is_err());
    }

    #[test]
    fn files_are_never_descriptions() {
        let d = std::env::temp_dir().join(format!("lightunet-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for name in ["my clip.mp4", "fakesink", "-dash.mp4", "é ü.mp4", "a ! b.mp4"] {
            let p = d.join(name);
            std::fs::write(&p, b"x").unwrap();
            let text = p.to_str().unwrap();
            assert!(matches!(SourceSpec::parse(text, None), Ok(SourceSpec::File(f)) if f == p), "{name}");
            assert!(matches!(SinkSpec::parse(text, false), SinkSpec::File { path, .. } if path == p), "{name}");
        }
        let _ = std::fs::remove_dir_all(&d);
        // Missing files stay files: an error for a source, a new file for a sink.
        assert!(matches!(SourceSpec::parse("my clip.mp4", None), Err(PipelineError::MissingInput(_))));
        assert!(matches!(SourceSpec::parse("out/clip.mp4", None), Err(PipelineError::MissingInput(_))));
        assert!(matches!(SinkSpec::parse("my out.mp4", false), SinkSpec::File { .. }));
        assert!(matches!(SinkSpec::parse("file:fakesink", false), SinkSpec::File { path, .. } if path == Path::new("fakesink")));
        // Descriptions.
        for d in ["videotestsrc", "v4l2src device=/dev/video0", "videotestsrc ! videoconvert", "filesrc location=\"a b.mp4\" ! decodebin"] {
            assert!(matches!(SourceSpec::parse(d, None), Ok(SourceSpec::Launch(_))), "{d}");
        }
        for d in ["fakesink", "autovideosink sync=false", "x264enc ! mp4mux ! filesink location=o.mp4"] {
            assert!(matches!(SinkSpec::parse(d, false), SinkSpec::Launch(_)), "{d}");
        }
    }

    #[test]
    fn patterns_and_formats() {
        assert_eq!(first_pattern_file("out/f_%05d.png"), PathBuf::from("out/f_00000.png"));
        assert!(OutputFormat::from_path(Path::new("a.png")).is_err());
        assert_eq!(OutputFormat::from_path(Path::new("a.MP4")).unwrap(), OutputFormat::Mp4);
    }

    /// File patterns reach printf: only `%d`, `%0Nd` and `%%` pass, once each for the number.
    #[test]
    fn frame_patterns_take_one_integer_and_nothing_else() {
        for (ok, first) in [
            ("f_%05d.png", "f_00000.png"),
            ("f%d.png", "f0.png"),
            ("100%%_%03d.png", "100%_000.png"),
            ("out/%%%d%%.png", "out/%0%.png"),
        ] {
            assert_eq!(FramePattern::parse(ok).unwrap().file(0), PathBuf::from(first), "{ok}");
            assert_eq!(first_pattern_file(ok), PathBuf::from(first));
        }
        assert_eq!(FramePattern::parse("f_%03d.png").unwrap().file(1234), PathBuf::from("f_1234.png"));
        for (bad, why) in [
            ("fr_%s.png", "`%s` is not allowed"),
            ("fr_%n.png", "`%n` is not allowed"),
            ("leak_%d_%p_%x.png", "`%p` is not allowed"),
            ("a_%d_%d.png", "more than one"),
            ("a_%5d.png", "`%5d` is not allowed"),
            ("a_%0999d.png", "more than 10 digits"),
            ("a_%.png", "`%.` is not allowed"),
            ("a_%d%", "lone `%`"),
            ("a_%%.png", "no frame number"),
            ("a_%ld.png", "`%l` is not allowed"),
        ] {
            let e = FramePattern::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("`%d` or `%0Nd`"), "{bad}: {e}");
        }
        // Where sink specs are checked: a PNG output with a bad pattern never reaches GStreamer.
        for bad in ["fr_%s.png", "x/%n.png"] {
            let e = OutputFormat::from_path(Path::new(bad)).unwrap_err().to_string();
            assert!(e.contains("file pattern"), "{e}");
            let mut plan = OutputPlan::new();
            assert!(SinkSpec::File { path: bad.into(), overwrite: false }.plan(&mut plan, "-o").is_err());
        }
        assert!(check_printf_location("multifilesink", "%05d").is_ok());
        assert!(check_printf_location("multifilesink", "f_%s").unwrap_err().to_string().starts_with("multifilesink: "));
    }

    /// Every user number of a run is bounded before anything is allocated: the queue, the model
    /// input (alone and times the batch), the outline.
    #[test]
    fn huge_numbers_are_refused_with_the_limit() {
        let with = |f: &dyn Fn(&mut ProcessConfig)| {
            let mut c = ProcessConfig::default();
            f(&mut c);
            c.validate().map_err(|e| e.to_string())
        };
        assert!(with(&|_| {}).is_ok());
        let e = with(&|c| c.queue_capacity = 100_000_000).unwrap_err();
        assert!(e.contains("1 to 64 frames") && e.contains("100000000"), "{e}");
        let e = with(&|c| c.model_size = (100_000, 100_000)).unwrap_err();
        assert!(e.contains("limit of 1024 per side") && e.contains("memory grows"), "{e}");
        let e = with(&|c| c.batch = usize::MAX).unwrap_err();
        assert!(e.contains("input pixels per pass"), "{e}");
        let e = with(&|c| {
            c.batch = 5;
            c.model_size = (1024, 1024)
        })
        .unwrap_err();
        assert!(e.contains("a batch of 5 at 1024x1024"), "{e}");
        assert!(with(&|c| c.model_size = (8, 256)).unwrap_err().contains("at least 16x16"));
        assert!(with(&|c| c.overlay.thickness = 1_000_000_000).unwrap_err().contains("--thickness"));
        assert!(with(&|c| c.smooth = f32::NAN).is_err());
        assert!(with(&|c| c.threshold = f32::NAN).is_err());
    }

    /// A pipeline name is a name: no path reaches the file system. A bad file in the folder is
    /// listed as invalid without hiding the others, and bad `queue`/`roi` values are found when
    /// the file is read.
    #[test]
    fn pipeline_names_and_listing() {
        let dir = std::env::temp_dir().join(format!("lightunet-pipelines-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let good = "description = \"ok\"\nsource = \"phantom\"\nsink = \"fakesink\"\n";
        std::fs::write(dir.join("good.toml"), good).unwrap();
        std::fs::write(dir.join("broken.toml"), "description = \"no source\"\nsink = 3\n").unwrap();
        std::fs::write(dir.join("huge-queue.toml"), format!("{good}queue = 100000000\n")).unwrap();
        std::fs::write(dir.join("bad-roi.toml"), format!("{good}roi = \"1,2,3\"\n")).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a pipeline").unwrap();

        let listing = NamedPipeline::list(&dir).unwrap();
        assert_eq!(listing.valid.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["good"]);
        let invalid: Vec<&str> = listing.invalid.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(invalid, ["bad-roi", "broken", "huge-queue"]);
        assert!(listing.invalid[0].error.contains("expected four numbers"), "{:?}", listing.invalid[0]);
        assert!(listing.invalid[2].error.contains("queue = 100000000"), "{:?}", listing.invalid[2]);

        assert_eq!(NamedPipeline::load(&dir, "good").unwrap().name, "good");
        assert_eq!(NamedPipeline::load(&dir, "good.toml").unwrap().name, "good");
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        for path in ["../good", "../good.toml", "/etc/passwd", ".hidden", "a/b", "..", "", "sub\\..\\good"] {
            let e = NamedPipeline::load(&sub, path).unwrap_err().to_string();
            assert!(e.contains("is not a pipeline name"), "{path}: {e}");
        }
        let e = NamedPipeline::load(&dir, "nope").unwrap_err().to_string();
        assert!(e.contains("no pipeline named `nope`") && e.contains("known: good"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn substitution() {
        let vars = BTreeMap::from([("port".to_string(), "5000".to_string())]);
        assert_eq!(substitute("udpsrc port=${port}", &vars, "x").unwrap(), "udpsrc port=5000");
        assert!(substitute("a ${nope}", &vars, "x").is_err());
    }
}
