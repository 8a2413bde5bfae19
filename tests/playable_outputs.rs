//! Every file the tool writes plays in ordinary players (issue 12, "Trust"): browsers, QuickTime,
//! Windows' player and hardware decoders take H.264 only in 4:2:0 (High or Main profile, not the
//! High 4:4:4 Predictive that BGR frames became), MP4 streams only with its index first, and no
//! encoder takes a size change mid-stream or a frame under 16 px a side. Each output is checked
//! from the file itself: the parsed caps (profile, chroma format), the decoder's own output
//! format, the frame count and size, and the order of the MP4 boxes.

mod pipeline_support;

use std::path::{Path, PathBuf};

use gst::prelude::*;
use lightunet::pipeline::{run, Job, NamedPipeline, SinkSpec, SourceSpec};
use pipeline_support::cli::{lightunet, s, Run};
use pipeline_support::*;

const FAST: [&str; 6] = ["--weights", "random", "--input-size", "32", "--device", "cpu"];

fn ok(args: &[&str]) -> Run {
    let r = lightunet(args);
    assert_eq!(r.code, Some(0), "{}: {}", args.join(" "), r.stderr);
    r
}

/// The caps of the first sample at the end of `filesrc ! {middle} ! appsink`.
fn first_caps(path: &Path, middle: &str) -> String {
    init();
    let p = gst::parse::launch(&format!("filesrc name=src ! {middle} ! appsink name=sink sync=false"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    p.by_name("src").unwrap().set_property("location", s(path));
    let sink = p.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(30)).unwrap_or_else(|| panic!("{}: no sample", path.display()));
    p.set_state(gst::State::Null).unwrap();
    sample.caps().unwrap().to_string()
}

/// The top-level boxes of an MP4/MOV file, in order.
fn mp4_boxes(path: &Path) -> Vec<String> {
    let data = std::fs::read(path).unwrap();
    let mut boxes = Vec::new();
    let mut at = 0usize;
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        boxes.push(String::from_utf8_lossy(&data[at + 4..at + 8]).into_owned());
        let size = match size {
            1 => u64::from_be_bytes(data[at + 8..at + 16].try_into().unwrap()) as usize,
            0 => data.len() - at,
            n => n,
        };
        assert!(size >= 8, "{}: box of {size} bytes", path.display());
        at += size;
    }
    boxes
}

/// A video file that ordinary players play: decoded as I420 (4:2:0); H.264 in High or Main
/// profile, 4:2:0; MP4 and MOV with `moov` before `mdat`.
fn assert_plays_everywhere(path: &Path) {
    let name = path.display();
    let decoded = first_caps(path, "decodebin");
    assert!(decoded.contains("format=(string)I420"), "{name}: decoded as {decoded}");
    let ext = path.extension().unwrap().to_str().unwrap();
    if matches!(ext, "mp4" | "mov" | "mkv") {
        let coded = first_caps(path, "parsebin");
        assert!(coded.starts_with("video/x-h264"), "{name}: {coded}");
        assert!(coded.contains("profile=(string)high,") || coded.contains("profile=(string)main,"), "{name}: {coded}");
        assert!(coded.contains("chroma-format=(string)4:2:0"), "{name}: {coded}");
    }
    if matches!(ext, "mp4" | "mov") {
        let boxes = mp4_boxes(path);
        let at = |b: &str| boxes.iter().position(|x| x == b).unwrap_or_else(|| panic!("{name}: no {b} in {boxes:?}"));
        assert!(at("moov") < at("mdat"), "{name}: the index must come first (faststart): {boxes:?}");
    }
}

fn no_stray_files(dir: &Path, expected: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    found.sort();
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(found, expected, "no temporary (faststart) file is left behind");
}

/// Case 14: every H.264 output was High 4:4:4 Predictive with 4:4:4 chroma (videoconvert handed
/// x264enc Y444), the masks 4:0:0, and MP4 had its index at the end. Now every format the tool
/// writes (process, the phantom's clip and masks, a live output, `live --record`) is 4:2:0 in a standard
/// profile, and MP4/MOV start with their index.
#[test]
fn every_output_is_4_2_0_in_a_standard_profile_with_the_index_first() {
    let dir = scratch("playable-formats");
    let clip = dir.join("clip.mp4");
    let masks = dir.join("truth.mkv");
    ok(&["phantom", "-o", s(&clip), "--masks", s(&masks), "--frames", "6", "--size", "160x120"]);
    assert_plays_everywhere(&clip);
    assert_plays_everywhere(&masks);
    let mut names = vec!["clip.mp4".to_string(), "truth.mkv".to_string()];
    for ext in ["mp4", "mov", "mkv", "webm", "avi"] {
        let out = dir.join(format!("out.{ext}"));
        let m = dir.join(format!("masks.{ext}"));
        ok(&[&["process", s(&clip), "-o", s(&out), "--masks", s(&m)][..], &FAST].concat());
        for f in [&out, &m] {
            assert_plays_everywhere(f);
            assert_eq!(decode(f).unwrap().frames.len(), 6, "{}", f.display());
        }
        names.push(format!("out.{ext}"));
        names.push(format!("masks.{ext}"));
    }
    // A live recording to a file (zerolatency H.264).
    let live = dir.join("live.mp4");
    ok(&[&["live", "--source", "videotestsrc num-buffers=8 ! video/x-raw,width=64,height=48", "--sink", s(&live)][..], &FAST].concat());
    assert_plays_everywhere(&live);
    names.push("live.mp4".into());
    // live --record, both crash-safe forms (Matroska as it goes, fragmented MP4: its header,
    // with the index of its tracks, first).
    for ext in ["mkv", "mp4"] {
        let rec = dir.join(format!("record.{ext}"));
        ok(&[&["live", "--source", "videotestsrc num-buffers=8 ! video/x-raw,width=64,height=48", "--sink", "fakesink", "--record", s(&rec)][..], &FAST].concat());
        assert_plays_everywhere(&rec);
        names.push(format!("record.{ext}"));
    }
    // PNG sequences stay lossless RGB and grey.
    ok(&[&["process", s(&clip), "-o", s(&dir.join("f_%02d.png")), "--masks", s(&dir.join("m_%02d.png"))][..], &FAST].concat());
    assert_eq!(read_rgb_png(&dir.join("f_05.png")).0, 160);
    assert_eq!(read_gray_png(&dir.join("m_05.png")).0, 160);
    names.extend((0..6).flat_map(|i| [format!("f_{i:02}.png"), format!("m_{i:02}.png")]));
    no_stray_files(&dir, &names.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The shipped pipelines that send H.264 (RTP, SRT) convert to I420 first too: a receiver's
/// hardware decoder or browser takes High 4:2:0, not High 4:4:4.
#[test]
fn shipped_h264_pipelines_send_4_2_0() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut checked = 0;
    // A file pipeline's `input` has no default: the user gives it.
    let input: std::collections::BTreeMap<String, String> = [("input".to_string(), "clip.mp4".to_string())].into();
    for p in NamedPipeline::list(&dir).unwrap().valid {
        let (_, sink) = p.resolve(&input).unwrap();
        let Some(end) = sink.find("x264enc") else { continue };
        // The sink up to and including the encoder, fed BGR as the tool's output does.
        let encoder = sink[end..].split('!').next().unwrap();
        let head = format!("{}{encoder}", &sink[..end]);
        let out = scratch(&format!("playable-{}", p.name)).join("sent.h264");
        gst_run(&format!(
            "videotestsrc num-buffers=3 ! video/x-raw,format=BGR,width=64,height=48 ! videoconvert ! {head} ! h264parse ! video/x-h264,stream-format=byte-stream ! filesink location={}",
            out.display()
        ));
        let coded = first_caps(&out, "h264parse");
        assert!(coded.contains("profile=(string)high,") || coded.contains("profile=(string)main,") || coded.contains("baseline"), "{}: {coded}", p.name);
        assert!(coded.contains("chroma-format=(string)4:2:0"), "{}: {coded}", p.name);
        checked += 1;
    }
    assert!(checked >= 3, "rtp-h264-out, rtp-h264-relay and srt-out encode H.264");
}

/// Writes `frames` frames of a videotestsrc `pattern` at `w x h` as an H.264 elementary stream.
fn h264_stream(path: &Path, w: usize, h: usize, frames: u32, pattern: &str) {
    gst_run(&format!(
        "videotestsrc num-buffers={frames} pattern={pattern} ! video/x-raw,format=I420,width={w},height={h},framerate=25/1 \
         ! x264enc bframes=0 ! video/x-h264,stream-format=byte-stream ! filesink location={}",
        path.display()
    ));
}

/// Case 12: two H.264 streams of different sizes concatenated (`cat`), as a recorder that
/// restarts at a new size writes them: 160x120 white, then 320x180 white. The mp4 output failed
/// with not-negotiated (an unplayable file), Matroska with "Caps changes are not supported".
/// Now every container takes it: later frames are scaled to the first size, the aspect ratio
/// kept with black borders (320x180 is 16:9: 160x90 inside 160x120, 15 rows black above and
/// below).
#[test]
fn a_resolution_change_mid_stream_plays_in_every_container() {
    let dir = scratch("playable-resize");
    let (a, b) = (dir.join("a.h264"), dir.join("b.h264"));
    h264_stream(&a, 160, 120, 4, "white");
    h264_stream(&b, 320, 180, 4, "white");
    let joined = dir.join("joined.h264");
    std::fs::write(&joined, [std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap()].concat()).unwrap();
    for ext in ["mp4", "mov", "mkv", "webm", "avi"] {
        let out = dir.join(format!("out.{ext}"));
        let masks = dir.join(format!("masks.{ext}"));
        let r = ok(&[&["process", s(&joined), "-o", s(&out), "--masks", s(&masks), "--overlay", "none"][..], &FAST].concat());
        assert!(r.stderr.contains("frame size changed to 320x180"), "{}", r.stderr);
        assert_plays_everywhere(&out);
        assert_plays_everywhere(&masks);
        let d = decode(&out).unwrap();
        assert_eq!(d.frames.len(), 8, "{ext}: every frame");
        assert!(d.frames.iter().all(|f| (f.0, f.1) == (160, 120)), "{ext}: the first frame's size throughout");
        let grey = |f: &(usize, usize, Vec<u8>), row: usize| {
            let line = &f.2[row * 160 * 3..(row + 1) * 160 * 3];
            line.iter().map(|&v| f64::from(v)).sum::<f64>() / line.len() as f64
        };
        assert!(grey(&d.frames[0], 2) > 200.0, "{ext}: the first stream fills the frame");
        let last = &d.frames[7];
        assert!(grey(last, 4) < 40.0 && grey(last, 115) < 40.0, "{ext}: black borders above and below the 16:9 picture");
        assert!(grey(last, 60) > 200.0, "{ext}: the picture in the middle");
        assert_eq!(decode(&masks).unwrap().frames.len(), 8, "{ext} masks");
    }
}

/// Case 13: frames under 16 px a side (1x1, 2x2, 17x9) failed for MP4, MOV, WebM and AVI with
/// not-negotiated and no file. Now they are padded with black to the encoders' minimum (and to
/// even sides); a PNG sequence keeps the size.
#[test]
fn frames_under_16_px_are_padded_for_every_encoder() {
    let dir = scratch("playable-tiny");
    for ((w, h), padded) in [((1, 1), (16, 16)), ((2, 2), (16, 16)), ((17, 9), (18, 16))] {
        let source = || SourceSpec::Launch(format!("videotestsrc num-buffers=3 pattern=white ! video/x-raw,width={w},height={h}"));
        for ext in ["mp4", "mov", "mkv", "webm", "avi"] {
            let out = dir.join(format!("tiny_{w}x{h}.{ext}"));
            let report = run(Job::new(source(), SinkSpec::File { path: out.clone(), overwrite: false }), empty_segmenter())
                .unwrap_or_else(|e| panic!("{w}x{h} {ext}: {e}"));
            assert_eq!(report.counters.frames_out, 3);
            assert_plays_everywhere(&out);
            let d = decode(&out).unwrap();
            assert_eq!(d.frames.len(), 3, "{w}x{h} {ext}");
            assert_eq!((d.frames[0].0, d.frames[0].1), padded, "{w}x{h} {ext}");
            assert!(d.frames[0].2[..3].iter().all(|&v| v > 150), "{w}x{h} {ext}: the picture at the top left");
            assert!(d.frames[0].2[d.frames[0].2.len() - 3..].iter().all(|&v| v < 60), "{w}x{h} {ext}: black padding at the bottom right");
        }
        let pattern: PathBuf = dir.join(format!("tiny_{w}x{h}_%02d.png"));
        run(Job::new(source(), SinkSpec::File { path: pattern, overwrite: false }), empty_segmenter()).unwrap();
        assert_eq!(read_rgb_png(&dir.join(format!("tiny_{w}x{h}_00.png"))).0, w, "PNG keeps the size");
    }
}
