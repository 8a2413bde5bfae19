//! The built plugin library (`libgstlightunet.so`) as a user gets it: found by GStreamer through
//! `GST_PLUGIN_PATH`, run by `gst-launch-1.0` and by an appsink program.
//!
//! ```text
//! (a) filesrc (phantom clip) - decodebin - videoconvert - lightunet - appsink   (mask meta vs ground truth)
//!     filesrc (phantom clip) - decodebin - videoconvert - lightunet - videoconvert - x264enc - mp4mux - filesink
//! (b) videotestsrc is-live=true (60 fps) - identity in - lightunet mode=latest - identity out - fakesink
//! ```
//!
//! The library is the one cargo built for this test run: it sits beside `deps/`, above this test
//! executable (cargo builds the `cdylib` with the `rlib` this test links, in the same profile).
//! A library older than that `rlib` is stale and fails the test rather than testing old code.
//! It is copied into a folder of its own for `GST_PLUGIN_PATH` (GStreamer scans folders
//! recursively, and `deps/` holds a second copy), with a registry file of its own.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use common::{dice, mask_from_meta, scratch, shipped_weights};
use gst::prelude::*;
use lightunet::phantom::PhantomConfig;
use lightunet::pipeline::{write_phantom_clip, SinkSpec};

/// The folder holding a copy of the freshly built plugin, and GStreamer initialised to use it.
fn plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let deps = exe.parent().unwrap();
        let profile = deps.parent().unwrap();
        let lib = profile.join("libgstlightunet.so");
        assert!(lib.is_file(), "{} is missing: build it with `cargo build --release --workspace` (scripts/test.sh does)", lib.display());
        let mtime = |p: &Path| p.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
        let newest_rlib = std::fs::read_dir(deps)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libgstlightunet-") && n.ends_with(".rlib")))
            .map(|p| mtime(&p))
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let lag = newest_rlib.duration_since(mtime(&lib)).unwrap_or_default();
        assert!(lag.as_secs() < 5, "{} is older than the code this test was built from: run `cargo build --release --workspace`", lib.display());
        let dir = scratch("plugin");
        std::fs::copy(&lib, dir.join("libgstlightunet.so")).unwrap();
        // Before gst::init in this process, and for every gst-launch-1.0 it starts.
        std::env::set_var("GST_PLUGIN_PATH", &dir);
        std::env::set_var("GST_REGISTRY", dir.join("registry.bin"));
        gst::init().unwrap();
        dir
    })
}

/// `gst-launch-1.0 -m [args]` with the plugin on its path; returns stdout and how long it ran.
fn gst_launch(args: &[&str]) -> String {
    plugin_dir();
    let out = Command::new("gst-launch-1.0").arg("-m").args(args).output().expect("gst-launch-1.0 (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gst-launch-1.0 {args:?} failed:\n{text}");
    text
}

/// "Execution ended after 0:00:03.012345678" in seconds.
fn execution_seconds(text: &str) -> f64 {
    let line = text.lines().find_map(|l| l.split("Execution ended after ").nth(1)).expect("an execution time");
    let parts: Vec<f64> = line.trim().split(':').map(|p| p.parse().unwrap()).collect();
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

#[test]
fn the_element_comes_from_the_built_library() {
    let dir = plugin_dir();
    let factory = gst::ElementFactory::find("lightunet").expect("lightunet on GST_PLUGIN_PATH");
    let plugin = factory.plugin().unwrap();
    assert_eq!(plugin.filename().unwrap(), dir.join("libgstlightunet.so"));
    let out = Command::new("gst-inspect-1.0").arg("lightunet").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for what in ["weights", "model", "device", "dtype", "threshold", "roi", "overlay", "smooth", "cleanup", "keep", "mode", "BGRx", "RGBx"] {
        assert!(text.contains(what), "gst-inspect-1.0 lightunet lacks `{what}`:\n{text}");
    }
}

/// (a) Every-frame mode on the phantom's clip: the mask each buffer carries, read by an appsink
/// program, against the phantom's ground truth; then the same clip through gst-launch-1.0 into an
/// MP4, one message per frame.
#[test]
fn every_frame_on_the_phantom_clip_matches_its_ground_truth() {
    plugin_dir();
    let dir = scratch("clip");
    let cfg = PhantomConfig { width: 320, height: 240, ..Default::default() };
    let frames = 25u64;
    let clip = dir.join("clip.mkv");
    let (x, y, w, h) = write_phantom_clip(&cfg, frames, &SinkSpec::File { path: clip.clone(), overwrite: true }, None).unwrap();
    let roi = format!("{x},{y},{w},{h}");
    let phantom = lightunet::phantom::Phantom::new(cfg.clone()).unwrap();

    let description = format!(
        "filesrc location={} ! decodebin ! videoconvert ! lightunet weights={} device=cpu roi={roi} ! appsink name=sink sync=false caps=video/x-raw,format=BGR",
        clip.display(),
        shipped_weights()
    );
    let pipeline = gst::parse::launch(&description).unwrap().downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut scores = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let buffer = sample.buffer().unwrap();
        let i = scores.len() as u64;
        let mut truth = vec![0u8; cfg.width * cfg.height];
        phantom.fill_mask_into(i, &mut truth).unwrap();
        let mask = mask_from_meta(buffer, cfg.width, cfg.height).unwrap_or_else(|| vec![0; cfg.width * cfg.height]);
        scores.push(dice(&mask, &truth));
    }
    let bus = pipeline.bus().unwrap();
    let error = bus.pop_filtered(&[gst::MessageType::Error]);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(error.is_none(), "{error:?}");
    assert_eq!(scores.len() as u64, frames);
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    let worst = scores.iter().copied().fold(1.0, f64::min);
    eprintln!("phantom clip, every-frame: Dice mean {mean:.3}, worst {worst:.3} over {frames} frames");
    // Measured mean 0.952, worst 0.945 (shipped Lighter@1, this clip, release build,
    // 2026-11-30, loaded 2-core machine); the bars leave margin.
    assert!(mean > 0.85 && worst > 0.75, "Dice mean {mean}, worst {worst}");

    let out = dir.join("out.mp4");
    let text = gst_launch(&[
        "filesrc",
        &format!("location={}", clip.display()),
        "!",
        "decodebin",
        "!",
        "videoconvert",
        "!",
        "queue",
        "!",
        "lightunet",
        &format!("weights={}", shipped_weights()),
        "device=cpu",
        &format!("roi={roi}"),
        "!",
        "queue",
        "!",
        "videoconvert",
        "!",
        "x264enc",
        "speed-preset=ultrafast",
        "!",
        "mp4mux",
        "!",
        "filesink",
        &format!("location={}", out.display()),
    ]);
    let messages: Vec<&str> = text.lines().filter(|l| l.contains("(element): lightunet,")).collect();
    assert_eq!(messages.len() as u64, frames, "{text}");
    assert!(out.metadata().unwrap().len() > 1000);
    // The messages gst-launch-1.0 printed, against the ground truth: each frame's lesion box and
    // area (the outline drawn is this mask's edge).
    let mut ious = Vec::new();
    for line in &messages {
        let field = |name: &str| -> u64 {
            let at = line.find(&format!(" {name}=(")).unwrap_or_else(|| panic!("no {name} in {line}"));
            let rest = &line[at..];
            let value = &rest[rest.find(')').unwrap() + 1..];
            value.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap_or_else(|_| panic!("{name} in {line}"))
        };
        let i = field("frame");
        let mut truth = vec![0u8; cfg.width * cfg.height];
        phantom.fill_mask_into(i, &mut truth).unwrap();
        let on: Vec<(usize, usize)> = (0..truth.len()).filter(|&k| truth[k] > 0).map(|k| (k % cfg.width, k / cfg.width)).collect();
        let (tx0, tx1) = (on.iter().map(|p| p.0).min().unwrap(), on.iter().map(|p| p.0).max().unwrap() + 1);
        let (ty0, ty1) = (on.iter().map(|p| p.1).min().unwrap(), on.iter().map(|p| p.1).max().unwrap() + 1);
        let (x0, y0) = (field("x") as usize, field("y") as usize);
        let (x1, y1) = (x0 + field("width") as usize, y0 + field("height") as usize);
        let inter = x1.min(tx1).saturating_sub(x0.max(tx0)) * y1.min(ty1).saturating_sub(y0.max(ty0));
        let union = (x1 - x0) * (y1 - y0) + (tx1 - tx0) * (ty1 - ty0) - inter;
        ious.push(inter as f64 / union as f64);
        let (area, truth_area) = (field("area") as f64, on.len() as f64);
        assert!((area / truth_area - 1.0).abs() < 0.3, "frame {i}: area {area} against {truth_area} in the ground truth");
    }
    let mean_iou = ious.iter().sum::<f64>() / ious.len() as f64;
    eprintln!("gst-launch-1.0, every-frame: lesion box IoU against the ground truth, mean {mean_iou:.3}");
    // Measured mean 0.914 (this clip, release build, 2026-11-30); the bars leave margin.
    assert!(mean_iou > 0.75 && ious.iter().all(|&v| v > 0.5), "box IoU {ious:?}");
}

/// (b) A live 60 fps source through latest mode: every buffer comes out, with its own timestamp,
/// and the run takes the stream's own duration (the model, slower than 60 fps on a CPU, does not
/// hold the frames back); the messages show masks arriving and held between them.
#[test]
fn latest_mode_keeps_a_live_60fps_source_at_its_rate() {
    let n = 180;
    let text = gst_launch(&[
        "-v",
        "videotestsrc",
        "is-live=true",
        &format!("num-buffers={n}"),
        "pattern=ball",
        "!",
        "video/x-raw,format=BGR,width=640,height=480,framerate=60/1",
        "!",
        "identity",
        "name=in",
        "silent=false",
        "!",
        "lightunet",
        &format!("weights={}", shipped_weights()),
        "device=cpu",
        "mode=latest",
        "!",
        "identity",
        "name=out",
        "silent=false",
        "!",
        "fakesink",
        "sync=true",
    ]);
    let pts_of = |name: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains(&format!("GstIdentity:{name}: last-message")))
            .filter_map(|l| l.split("pts: ").nth(1).and_then(|r| r.split(',').next()).map(str::to_string))
            .collect()
    };
    let (pts_in, pts_out) = (pts_of("in"), pts_of("out"));
    assert_eq!(pts_in.len(), n, "buffers in");
    assert_eq!(pts_out, pts_in, "buffers out, with their timestamps");
    let msgs: Vec<&str> = text.lines().filter(|l| l.contains("(element): lightunet,")).collect();
    assert_eq!(msgs.len(), n);
    let fresh = msgs.iter().filter(|l| l.contains("has-mask=(boolean)true") && l.contains("fresh=(boolean)true")).count();
    let held = msgs.iter().filter(|l| l.contains("fresh=(boolean)false")).count();
    let seconds = execution_seconds(&text);
    eprintln!("live 60 fps, latest mode: {n} buffers in and out in {seconds:.2} s; {fresh} fresh masks, {held} frames held one");
    assert!(fresh > 2 && held > 0, "{fresh} fresh, {held} held");
    // 180 buffers at 60 fps are 3.0 s of stream. Measured 3.12 s on the loaded 2-core machine
    // (load average about 12; 9 masks made, 144 frames held one); every-frame mode there needs
    // 45 ms a frame or more (over 8 s). The bar allows for a loaded machine.
    assert!(seconds < 4.5, "{seconds} s for 3 s of 60 fps video");
}
