//! The binary on bad input and faults: a clear message and a non-zero exit, never a panic, and an
//! output that is finalised whenever any frame was processed. Random weights at a 32x32 model
//! input keep every run to a second or two (the model's correctness is tested elsewhere).

mod pipeline_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lightunet::pipeline::NamedPipeline;
use pipeline_support::*;

const FAST: [&str; 6] = ["--weights", "random", "--input-size", "32", "--device", "cpu"];

fn lightunet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lightunet")).args(args).env("RUST_LOG", "warn").output().expect("runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "should fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn phantom_clip(dir: &Path, name: &str, frames: u32) -> PathBuf {
    let out = dir.join(name);
    let o = lightunet(&["phantom", "-o", s(&out), "--frames", &frames.to_string(), "--size", "160x120"]);
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

#[test]
fn missing_file_and_not_a_video() {
    let dir = scratch("cli-missing");
    let out = dir.join("out.mp4");
    let o = lightunet(&[&["process", "/nonexistent/clip.mp4", "-o", s(&out)][..], &FAST].concat());
    assert_clean_failure(&o, "does not exist");

    let text = dir.join("notes.mp4");
    std::fs::write(&text, "this is not a video\n".repeat(100)).unwrap();
    let o = lightunet(&[&["process", s(&text), "-o", s(&out)][..], &FAST].concat());
    assert_clean_failure(&o, "no video frame could be decoded");
    assert!(!out.exists(), "no empty output is left behind");
}

#[test]
fn truncated_files_process_what_decodes_and_finalise() {
    let dir = scratch("cli-truncated");
    // Matroska decodes up to the cut and stops quietly; the duration check reports it.
    let clip = phantom_clip(&dir, "clip.mkv", 30);
    let bytes = std::fs::read(&clip).unwrap();
    let cut = dir.join("cut.mkv");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.join("out.mp4");
    let o = lightunet(&[&["process", s(&cut), "-o", s(&out)][..], &FAST].concat());
    assert_clean_failure(&o, "truncated or corrupted");
    assert_eq!(o.status.code(), Some(3), "finished with frames lost: {}", stderr(&o));
    let d = decode(&out).expect("the output is finalised and plays");
    assert!(d.frames.len() >= 5 && d.frames.len() < 30, "{} frames", d.frames.len());

    // An MP4 with its index at the end (as cameras write them) has nothing to decode once cut: a
    // clear error, never a hang (tests/damaged_input.rs loops this case).
    let clip = dir.join("camera.mp4");
    let o = Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "num-buffers=30", "!", "video/x-raw,width=160,height=120,framerate=25/1", "!", "x264enc", "!", "mp4mux", "!", "filesink"])
        .arg(format!("location={}", s(&clip)))
        .output()
        .expect("gst-launch-1.0 runs");
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&clip).unwrap();
    let cut = dir.join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.join("out2.mp4");
    let o = lightunet(&[&["process", s(&cut), "-o", s(&out)][..], &FAST].concat());
    assert_clean_failure(&o, "no playable streams");
    assert_eq!(o.status.code(), Some(1));
    assert!(!out.exists());

    // Ours have the index first (faststart): cut in half, the first half is processed and the
    // loss reported.
    let clip = phantom_clip(&dir, "clip.mp4", 30);
    let bytes = std::fs::read(&clip).unwrap();
    let cut = dir.join("cut_faststart.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.join("out2b.mp4");
    let o = lightunet(&[&["process", s(&cut), "-o", s(&out)][..], &FAST].concat());
    assert_clean_failure(&o, "frames lost");
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let d = decode(&out).expect("the output is finalised and plays");
    assert!(d.frames.len() >= 5 && d.frames.len() < 30, "{} frames", d.frames.len());

    // Garbage in the middle of a stream: whatever decodes is processed, the output plays.
    let mut bytes = std::fs::read(dir.join("clip.mkv")).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n / 3..n / 3 + 2000] {
        *b = 0x5a;
    }
    let bad = dir.join("corrupt.mkv");
    std::fs::write(&bad, &bytes).unwrap();
    let out = dir.join("out3.mp4");
    let o = lightunet(&[&["process", s(&bad), "-o", s(&out)][..], &FAST].concat());
    assert!(!stderr(&o).contains("panicked"));
    decode(&out).expect("the output is finalised and plays");
}

#[test]
fn invalid_pipeline_description_shows_gstreamers_error() {
    let o = lightunet(&[&["live", "--source", "videotestsrc ! nosuchelement", "--sink", "fakesink"][..], &FAST].concat());
    assert_clean_failure(&o, "nosuchelement");
    let o = lightunet(&[&["live", "--source", "videotestsrc num-buffers=2", "--sink", "fakesink ! ! x"][..], &FAST].concat());
    assert_clean_failure(&o, "invalid pipeline description");
    let o = lightunet(&[&["live", "--pipeline", "no-such-pipeline"][..], &FAST].concat());
    assert_clean_failure(&o, "no pipeline named");
    let o = lightunet(&[&["process", "phantom", "-o", "/tmp/x.mp4", "--frames", "2", "--roi", "1,2,3"][..], &FAST].concat());
    assert_clean_failure(&o, "expected four numbers");
}

#[test]
fn output_exists_without_overwrite() {
    let dir = scratch("cli-exists");
    let clip = phantom_clip(&dir, "clip.mkv", 3);
    let out = dir.join("out.mp4");
    std::fs::write(&out, b"keep me").unwrap();
    let o = lightunet(&[&["process", s(&clip), "-o", s(&out)][..], &FAST].concat());
    assert_clean_failure(&o, "already exists");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let o = lightunet(&[&["process", s(&clip), "-o", s(&out), "--overwrite"][..], &FAST].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(decode(&out).unwrap().frames.len(), 3);
    // The phantom writer refuses too.
    let o = lightunet(&["phantom", "-o", s(&clip), "--frames", "2", "--size", "160x120"]);
    assert_clean_failure(&o, "already exists");
}

#[test]
fn roi_outside_the_frame_is_a_clear_error() {
    let dir = scratch("cli-roi");
    let clip = phantom_clip(&dir, "clip.mkv", 2);
    let out = dir.join("out.mp4");
    let o = lightunet(&[&["process", s(&clip), "-o", s(&out), "--roi", "100,100,100,100"][..], &FAST].concat());
    assert_clean_failure(&o, "does not fit in the 160x120 frame");
}

/// SIGINT during `process`: EOS is sent, the output is finalised and plays, statistics printed.
#[test]
fn ctrl_c_during_process_finalises_the_output() {
    let dir = scratch("cli-ctrlc");
    let out = dir.join("out.mp4");
    let child = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args([&["process", "phantom:320x240@25", "--frames", "100000", "-o", s(&out)][..], &FAST].concat())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    assert_clean_failure(&o, "interrupted");
    assert_eq!(o.status.code(), Some(130), "interrupted, as documented in --help: {}", stderr(&o));
    assert!(stderr(&o).contains("frames in"), "statistics printed: {}", stderr(&o));
    let d = decode(&out).expect("finalised and playable");
    assert!(d.frames.len() >= 2, "{} frames", d.frames.len());
}

/// SIGINT during `live` is the normal way to stop it: exit 0, file finalised.
#[test]
fn ctrl_c_during_live_finalises_the_output() {
    let dir = scratch("cli-ctrlc-live");
    let out = dir.join("live.mkv");
    let child = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args([&["live", "--source", "phantom:320x240@25", "--sink", s(&out)][..], &FAST].concat())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(decode(&out).unwrap().frames.len() >= 2);
}

/// Every named pipeline loads, resolves with its defaults (and `input`, which a file pipeline
/// needs from the user: it has no default), and GStreamer can parse both ends.
#[test]
fn named_pipelines_parse() {
    init();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let listing = NamedPipeline::list(&dir).unwrap();
    assert!(listing.invalid.is_empty(), "{:?}", listing.invalid);
    assert!(listing.valid.len() >= 6);
    let input: std::collections::BTreeMap<String, String> = [("input".to_string(), "clip.mp4".to_string())].into();
    for p in listing.valid {
        let (src, sink) = p.resolve(&input).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        if !src.starts_with("phantom") {
            gst::parse::launch(&format!("{src} ! fakesink")).unwrap_or_else(|e| panic!("{} source: {e}", p.name));
        }
        if sink.contains('!') || sink.contains(' ') {
            gst::parse::launch(&format!("videotestsrc ! {sink}")).unwrap_or_else(|e| panic!("{} sink: {e}", p.name));
        }
    }
}

/// The default live sink is a window. Without a display, autovideosink used to try DirectFB's
/// sink, which crashed the process (SIGSEGV); now the run goes on, with a warning saying why
/// nothing is shown.
#[test]
fn window_sink_without_a_display_warns_and_does_not_crash() {
    let o = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args([&["live", "--source", "videotestsrc num-buffers=15 ! video/x-raw,width=64,height=48", "--sink", "autovideosink"][..], &FAST].concat())
        .env("RUST_LOG", "warn")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .expect("runs");
    let err = stderr(&o);
    assert!(o.status.success(), "status {:?}: {err}", o.status);
    assert!(err.contains("DISPLAY and WAYLAND_DISPLAY are unset"), "{err}");
}

/// A capture card that is not there (unplugged, wrong /dev/videoN): GStreamer's own message and
/// a non-zero exit, through the shipped v4l2-window pipeline's source.
#[test]
fn missing_capture_device_fails_cleanly() {
    if gst_element_missing("v4l2src") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let vars = [("device".to_string(), "/dev/lightunet-no-such-card".to_string())].into_iter().collect();
    let (source, _) = NamedPipeline::load(&dir, "v4l2-window").unwrap().resolve(&vars).unwrap();
    let o = lightunet(&[&["live", "--source", &source, "--sink", "fakesink"][..], &FAST].concat());
    assert_clean_failure(&o, "/dev/lightunet-no-such-card");
}

fn gst_element_missing(name: &str) -> bool {
    init();
    let missing = gst::ElementFactory::find(name).is_none();
    if missing {
        eprintln!("SKIP: no {name} element (gstreamer1.0-plugins-good)");
    }
    missing
}

/// `live --show`, `--masks`, `--record` and `bench pipeline --mode live`: a recording of another
/// format is refused before anything starts, an existing one without --overwrite too; the old
/// mode is still there; the bench reports each live target beside its bar.
#[test]
fn live_show_masks_record_and_bench_targets() {
    let dir = scratch("cli-live-options");
    let src = ["--source", "phantom:160x120@25", "--sink", "fakesink", "--frames", "20"];
    let o = lightunet(&[&["live"][..], &src, &["--record", s(&dir.join("rec.avi"))], &FAST].concat());
    assert_clean_failure(&o, "use .mkv");
    let existing = dir.join("old.mkv");
    std::fs::write(&existing, b"keep me").unwrap();
    let o = lightunet(&[&["live"][..], &src, &["--record", s(&existing)], &FAST].concat());
    assert_clean_failure(&o, "--overwrite");
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");

    let (masks, rec, report) = (dir.join("m_%03d.png"), dir.join("rec.mkv"), dir.join("report.json"));
    let o = lightunet(&[&["live"][..], &src, &["--masks", s(&masks), "--record", s(&rec), "--report", s(&report)], &FAST].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("shown (latest-mask)") && err.contains("recording "), "{err}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let out = r["counters"]["frames_out"].as_u64().unwrap();
    assert_eq!(out, 20);
    let sum = ["mask_fresh", "mask_held", "mask_none"].iter().map(|k| r["counters"][k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum, out);
    assert_eq!(files(&dir, "m_").len() as u64, out);
    assert_eq!(r["recording"]["recorded"].as_u64().unwrap() + r["recording"]["dropped"].as_u64().unwrap(), out);
    assert!(decode(&rec).unwrap().frames.len() >= 2);

    let o = lightunet(&[&["live"][..], &src, &["--show", "processed"], &FAST].concat());
    assert!(o.status.success() && stderr(&o).contains("shown (processed)"), "{}", stderr(&o));

    let o = lightunet(&[
        &["bench", "pipeline", "--mode", "live", "--source", "phantom:160x120@25", "--frames", "25", "--model-runs", "2", "--json"][..],
        &FAST,
    ]
    .concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = j["targets"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for want in ["frames at the sink", "capture to sink, p99", "masks refreshed / model alone", "mask age p99 (ms)", "last third"] {
        assert!(names.iter().any(|n| n.contains(want)), "{want}: {names:?}");
    }
    assert_eq!(j["show"], "latest-mask");
    assert!(j["targets"][0]["pass"].is_boolean() && j["model_only"]["threads"].is_u64());
}
