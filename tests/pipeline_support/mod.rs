//! Helpers shared by the tests/pipeline_*.rs files: scratch folders, decoding a file back into
//! frames and timestamps, fake segmenters.
#![allow(dead_code)]

pub mod cli;

use std::path::{Path, PathBuf};

use gst::prelude::*;
use gst_video::prelude::*;
use lightunet::pipeline::{Report, SegmentInput, Segmenter};

pub fn init() {
    gst::init().expect("GStreamer initialises");
}

/// Waits up to 60 s for `p` to reach EOS, then stops it; an error on its bus fails the test,
/// naming `what`.
pub fn wait_eos(p: &gst::Pipeline, what: &str) {
    let msg = p
        .bus()
        .expect("a pipeline has a bus")
        .timed_pop_filtered(gst::ClockTime::from_seconds(60), &[gst::MessageType::Eos, gst::MessageType::Error])
        .unwrap_or_else(|| panic!("{what}: no EOS within 60 s"));
    p.set_state(gst::State::Null).unwrap();
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{what}: {}", e.error());
    }
}

/// Runs a gst-launch description to EOS.
pub fn gst_run(description: &str) {
    init();
    let p = gst::parse::launch(description).unwrap().downcast::<gst::Pipeline>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    wait_eos(&p, description);
}

/// A fresh, empty scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lightunet-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// A file from ../shared, or `None` (and a message) when this machine does not have it.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("shared").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIP: {} is not present", p.display());
        None
    }
}

pub struct Decoded {
    pub pts: Vec<Option<u64>>,
    /// Packed BGR frames with their size.
    pub frames: Vec<(usize, usize, Vec<u8>)>,
}

/// Decodes every frame of `path` (packed BGR) with its PTS in nanoseconds.
pub fn decode(path: &Path) -> Result<Decoded, String> {
    init();
    let p = gst::parse::launch("filesrc name=src ! decodebin ! videoconvert ! appsink name=sink sync=false")
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline")?;
    p.by_name("src").unwrap().set_property("location", path.to_string_lossy().as_ref());
    let sink = p.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    sink.set_caps(Some(&gst_video::VideoCapsBuilder::new().format(gst_video::VideoFormat::Bgr).build()));
    p.set_state(gst::State::Playing).map_err(|e| format!("{e}: {}", bus_error(&p)))?;
    let mut out = Decoded { pts: Vec::new(), frames: Vec::new() };
    while let Ok(sample) = sink.pull_sample() {
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let buffer = sample.buffer().unwrap();
        out.pts.push(buffer.pts().map(|t| t.nseconds()));
        let vf = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).unwrap();
        let (w, h) = (info.width() as usize, info.height() as usize);
        let stride = vf.plane_stride()[0] as usize;
        let data = vf.plane_data(0).unwrap();
        let mut packed = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            packed.extend_from_slice(&data[y * stride..y * stride + w * 3]);
        }
        out.frames.push((w, h, packed));
    }
    let err = bus_error(&p);
    p.set_state(gst::State::Null).unwrap();
    if !err.is_empty() {
        return Err(err);
    }
    Ok(out)
}

fn bus_error(p: &gst::Pipeline) -> String {
    let bus = p.bus().unwrap();
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(e) = msg.view() {
            return e.error().to_string();
        }
    }
    String::new()
}

/// Every line of a JSON-lines file (`--metadata`).
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A grey PNG (masks) as `(width, height, bytes)`.
pub fn read_gray_png(path: &Path) -> (usize, usize, Vec<u8>) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_luma8();
    (img.width() as usize, img.height() as usize, img.into_raw())
}

/// An RGB PNG as `(width, height, RGB bytes)`.
pub fn read_rgb_png(path: &Path) -> (usize, usize, Vec<u8>) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    (img.width() as usize, img.height() as usize, img.into_raw())
}

/// Sorted files in `dir` whose names start with `prefix`.
pub fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    v
}

/// A run's counters and per-stage latency for a test's log (the CLI's table lives in the binary).
pub fn summary(report: &Report) -> String {
    let mut s = format!("{} run: {:?}\n", report.mode, report.counters);
    for (name, p) in &report.latency_ms {
        s.push_str(&format!("{name:<13} n {:>5}  p50 {:>8.2}  p99 {:>8.2}  max {:>8.2} ms\n", p.n, p.p50, p.p99, p.max));
    }
    s
}

/// Never finds a lesion: the cheapest stand-in for the model.
pub fn empty_segmenter() -> Box<dyn Segmenter> {
    Box::new(|input: &SegmentInput| Ok(vec![0f32; input.width * input.height]))
}

/// Dice of two 0/255 masks of the same size.
pub fn dice(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut inter, mut na, mut nb) = (0usize, 0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x > 127, y > 127);
        inter += usize::from(x && y);
        na += usize::from(x);
        nb += usize::from(y);
    }
    if na + nb == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (na + nb) as f64
    }
}
