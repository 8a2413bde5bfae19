//! Typed configuration: what to read, what to write, how to process, and the named pipelines in
//! `pipelines/*.toml`. Everything a user types is validated here, before any pipeline starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::error::{PipelineError, Result};
use crate::phantom::{PhantomConfig, Probe};

/// Recorded: every frame, blocking queues, original timestamps. Live: the capture side never
/// blocks, the queue drops its oldest frame, output is stamped with the output clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Recorded,
    Live,
}

pub use crate::roi::Roi;

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
    /// Keep only the largest connected component, filled (the original's saved masks).
    pub largest_component: bool,
    pub threshold: f32,
    /// Model input size (the original: 256 x 256).
    pub model_size: (usize, usize),
    /// Live: a frame whose capture-to-output latency exceeds this is counted late.
    pub late_after: Duration,
    /// Live: how often the drop/late counters are logged.
    pub report_every: Duration,
    /// Live: finish when no frame has arrived for this long after the first one.
    pub stall_timeout: Duration,
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
            largest_component: true,
            threshold: 0.5,
            model_size: (256, 256),
            late_after: Duration::from_millis(500),
            report_every: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
        }
    }
}

impl ProcessConfig {
    pub fn validate(&self) -> Result<()> {
        if self.queue_capacity == 0 {
            return Err(PipelineError::Config("the queue capacity must be at least 1".into()));
        }
        if self.batch == 0 {
            return Err(PipelineError::Config("the batch must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.smooth) {
            return Err(PipelineError::Config(format!("--smooth {} must be in [0, 1)", self.smooth)));
        }
        if !(0.0..1.0).contains(&self.threshold) {
            return Err(PipelineError::Config(format!("threshold {} must be in [0, 1)", self.threshold)));
        }
        if self.model_size.0 < 16 || self.model_size.1 < 16 {
            return Err(PipelineError::Config("model input must be at least 16x16".into()));
        }
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
    /// `phantom`, `phantom:WxH`, `phantom:WxH@FPS` (also `,convex`, `,seed=N`, `,calipers`),
    /// an existing file, or else a gst-launch description.
    pub fn parse(s: &str, frames: Option<u64>) -> Result<SourceSpec> {
        let t = s.trim();
        if t == "phantom" || t.starts_with("phantom:") {
            return Ok(SourceSpec::Phantom { config: parse_phantom(t.strip_prefix("phantom").unwrap_or(""))?, frames });
        }
        let p = Path::new(t);
        if !t.contains('!') && !t.contains(' ') {
            if p.exists() {
                return Ok(SourceSpec::File(p.to_path_buf()));
            }
            if p.extension().is_some() || t.contains('/') {
                return Err(PipelineError::MissingInput(p.to_path_buf()));
            }
        }
        Ok(SourceSpec::Launch(t.to_string()))
    }
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
    if cfg.fps == 0 {
        return Err(bad("fps must be positive".into()));
    }
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

/// Output encodings chosen by file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// `.mp4` / `.m4v`: H.264 (x264) in MP4.
    Mp4,
    /// `.mov`: H.264 in QuickTime.
    Mov,
    /// `.mkv`: H.264 in Matroska.
    Mkv,
    /// `.webm`: VP8 in WebM.
    Webm,
    /// `.avi`: Motion JPEG in AVI.
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
            "png" if name.contains('%') => OutputFormat::PngSequence,
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

    /// 4:2:0 encoders need even frame sizes; the frame is padded by one black row/column.
    pub fn needs_even_size(self) -> bool {
        matches!(self, OutputFormat::Mp4 | OutputFormat::Mov | OutputFormat::Mkv | OutputFormat::Webm)
    }
}

/// The first file a `%d`-style pattern produces (`frames_%05d.png` -> `frames_00000.png`).
pub fn first_pattern_file(pattern: &str) -> PathBuf {
    let Some(start) = pattern.find('%') else { return PathBuf::from(pattern) };
    let rest = &pattern[start + 1..];
    let Some(d) = rest.find('d') else { return PathBuf::from(pattern) };
    let spec = &rest[..d];
    let width: usize = spec.trim_start_matches('0').parse().unwrap_or(0);
    let pad = if spec.starts_with('0') { "0".repeat(width.saturating_sub(1)) } else { String::new() };
    PathBuf::from(format!("{}{}0{}", &pattern[..start], pad, &rest[d + 1..]))
}

impl SinkSpec {
    /// A file sink must not overwrite without permission and needs an existing folder.
    pub fn check(&self) -> Result<()> {
        if let SinkSpec::File { path, overwrite } = self {
            let format = OutputFormat::from_path(path)?;
            let probe = if format == OutputFormat::PngSequence { first_pattern_file(&path.to_string_lossy()) } else { path.clone() };
            if probe.exists() && !overwrite {
                return Err(PipelineError::OutputExists(probe));
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(PipelineError::Config(format!("output folder {} does not exist", dir.display())));
                }
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

impl NamedPipeline {
    /// `name` is looked up as `<dir>/<name>.toml`; a path to a .toml file also works.
    pub fn load(dir: &Path, name: &str) -> Result<NamedPipeline> {
        let path = if name.ends_with(".toml") { PathBuf::from(name) } else { dir.join(format!("{name}.toml")) };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                let known = Self::list(dir).unwrap_or_default().into_iter().map(|p| p.name).collect::<Vec<_>>().join(", ");
                PipelineError::Config(format!("no pipeline named `{name}` in {} (known: {known})", dir.display()))
            } else {
                PipelineError::Io { path: path.clone(), source: e }
            }
        })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Self::from_toml(&name, &path.display().to_string(), &text)
    }

    /// A pipeline from the text of its TOML file (a file, or one embedded in the binary:
    /// `crate::assets::pipelines`); `origin` names it in errors.
    pub fn from_toml(name: &str, origin: &str, text: &str) -> Result<NamedPipeline> {
        let mut p: NamedPipeline = toml::from_str(text).map_err(|e| PipelineError::Config(format!("{origin}: {e}")))?;
        p.name = name.to_string();
        Ok(p)
    }

    /// Every pipeline in `dir`, sorted by name.
    pub fn list(dir: &Path) -> Result<Vec<NamedPipeline>> {
        let rd = std::fs::read_dir(dir).map_err(|e| PipelineError::Io { path: dir.to_path_buf(), source: e })?;
        let mut paths: Vec<PathBuf> =
            rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
        paths.sort();
        paths.iter().map(|p| Self::load(dir, &p.to_string_lossy())).collect()
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
    fn patterns_and_formats() {
        assert_eq!(first_pattern_file("out/f_%05d.png"), PathBuf::from("out/f_00000.png"));
        assert_eq!(first_pattern_file("f%d.png"), PathBuf::from("f0.png"));
        assert!(OutputFormat::from_path(Path::new("a.png")).is_err());
        assert_eq!(OutputFormat::from_path(Path::new("a.MP4")).unwrap(), OutputFormat::Mp4);
    }

    #[test]
    fn substitution() {
        let vars = BTreeMap::from([("port".to_string(), "5000".to_string())]);
        assert_eq!(substitute("udpsrc port=${port}", &vars, "x").unwrap(), "udpsrc port=5000");
        assert!(substitute("a ${nope}", &vars, "x").is_err());
    }
}
