//! Live mode: every frame reaches the sink with the newest mask while a slow model runs apart
//! (latest-mask, the default), fresh and held frames counted, mask ages growing while the model
//! is busy, the model input made only for frames the model takes; the processed mode still drops
//! the oldest frame and counts it; the masks output and a recording (that survives `kill -9`, and
//! drops its own frames, counted, rather than hold the display up, and whose failure stops it
//! alone, the run exiting non-zero at the end); RTP/H.264 over UDP on
//! 127.0.0.1 in and out; a source that stops sending ends the run cleanly.

mod pipeline_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gst::prelude::*;
use lightunet::pipeline::{run, Job, Mode, SegmentInput, Show, SinkSpec, SourceSpec};
use pipeline_support::*;

/// A segmenter that takes `ms` per frame and marks a centred square.
fn slow_square(ms: u64) -> Box<dyn lightunet::pipeline::Segmenter> {
    Box::new(move |input: &SegmentInput| {
        std::thread::sleep(Duration::from_millis(ms));
        let (w, h) = (input.width, input.height);
        Ok((0..w * h).map(|i| if (w / 4..3 * w / 4).contains(&(i % w)) && (h / 4..3 * h / 4).contains(&(i / w)) { 1.0 } else { 0.0 }).collect())
    })
}

/// `--show processed`: each frame waits for its own mask, so a slow model drops frames.
#[test]
fn processed_mode_drops_oldest_and_counts_every_frame() {
    // 30 fps for 1.5 s into a 120 ms stage: about 12 frames get through, the rest are dropped.
    let source = SourceSpec::Launch("videotestsrc is-live=true num-buffers=45 ! video/x-raw,width=160,height=120,framerate=30/1".into());
    let mut job = Job::new(source, SinkSpec::Launch("fakesink sync=false".into()));
    job.config.mode = Mode::Live;
    job.config.show = Show::Processed;
    job.config.queue_capacity = 2;
    job.config.model_size = (32, 32);
    job.keep_records = true;
    let t = Instant::now();
    let report = run(job, slow_square(120)).unwrap();
    let c = report.counters;
    eprintln!("{}", summary(&report));
    assert_eq!(c.frames_in, 45);
    assert_eq!(c.frames_in, c.frames_out + c.dropped, "every frame is processed or counted as dropped");
    assert!(c.dropped >= 20, "dropped {}", c.dropped);
    assert!((8..=20).contains(&c.frames_out), "out {}", c.frames_out);
    // Capture never waited on the stage: 45 frames at 30 fps take 1.5 s, not 45 x 120 ms.
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // Bounded latency: at most `capacity` frames wait ahead of a frame (plus the one running).
    let queue_p = report.latency_ms.iter().find(|(n, _)| *n == "queue").unwrap().1;
    assert!(queue_p.max < 3.0 * 120.0 + 100.0, "queue wait max {} ms", queue_p.max);
    // Frames come out in capture order.
    let seqs: Vec<u64> = report.records.iter().map(|r| r.frame).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // Every frame shown has its own mask.
    assert_eq!((c.mask_fresh, c.mask_held, c.mask_none), (c.frames_out, 0, 0));
    assert!(report.records.iter().all(|r| r.mask.is_some_and(|m| m.age_frames == 0 && m.from_frame == r.frame)));
}

/// Latest-mask (the default): the same slow model, and every frame reaches the sink, drawn with
/// the newest mask; fresh and held frames add up; a held mask ages a frame at a time; the model
/// input is made only for the frames the model takes; the metadata says all that per frame.
#[test]
fn latest_mask_shows_every_frame_while_a_slow_model_runs() {
    let dir = scratch("live-latest");
    let metadata = dir.join("frames.jsonl");
    let source = SourceSpec::Launch("videotestsrc is-live=true num-buffers=45 ! video/x-raw,width=160,height=120,framerate=30/1".into());
    let mut job = Job::new(source, SinkSpec::Launch("fakesink sync=false".into()));
    job.config.mode = Mode::Live;
    assert_eq!(job.config.show, Show::LatestMask, "the default");
    // Room for a display thread descheduled for a few frame intervals on a loaded machine: this
    // test is about the model never holding frames back.
    job.config.queue_capacity = 4;
    job.config.model_size = (32, 32);
    job.metadata = Some(metadata.clone());
    job.keep_records = true;
    let t = Instant::now();
    let report = run(job, slow_square(120)).unwrap();
    let c = report.counters;
    eprintln!("{}{:?}\n{:?}", summary(&report), report.masks, report.latest);
    assert_eq!(report.show, Some("latest-mask"));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!((c.frames_in, c.frames_out, c.frames_at_sink, c.dropped), (45, 45, 45, 0), "every frame reaches the sink");
    assert_eq!(c.mask_fresh + c.mask_held + c.mask_none, c.frames_out);
    // 1.5 s of a 120 ms model: about 12 masks, each held for about 3 more frames.
    assert!((5..=16).contains(&c.mask_fresh), "{c:?}");
    assert!(c.mask_held >= 2 * c.mask_fresh, "{c:?}");
    assert!(c.mask_none >= 1 && c.mask_none <= 8, "the first frames come before the first mask: {c:?}");
    // The model input was made for the frames the model took, not for every frame.
    let l = report.latest.unwrap();
    // (A frame may replace a waiting one when frames come in a burst, before the worker is due.)
    assert!(l.submitted < c.frames_in / 2 && l.replaced * 2 <= l.submitted, "{l:?}");
    assert!(l.inferred >= c.mask_fresh, "{l:?}");
    let preprocess = report.latency_ms.iter().find(|(n, _)| *n == "preprocess").unwrap().1;
    assert_eq!(preprocess.n as u64, l.submitted);
    let inference = report.latency_ms.iter().find(|(n, _)| *n == "inference").unwrap().1;
    assert_eq!(inference.n, 0, "no frame waits for the model");
    // Ages: a held mask is one frame older on each frame, its time grows with it, and masks
    // never go back in time.
    let masks: Vec<_> = report.records.iter().filter_map(|r| r.mask.map(|m| (r.frame, m))).collect();
    for w in masks.windows(2) {
        let ((_, a), (f, b)) = (w[0], w[1]);
        assert!(b.from_frame >= a.from_frame, "frame {f}: {a:?} then {b:?}");
        if !b.fresh {
            assert_eq!((b.from_frame, b.age_frames), (a.from_frame, a.age_frames + 1), "frame {f}");
            assert!(b.age_ms > a.age_ms, "frame {f}: {a:?} then {b:?}");
        }
        assert_eq!(f - b.from_frame, b.age_frames);
    }
    let summary = report.masks.unwrap();
    assert!(summary.age_frames.max >= 3.0 && summary.age_ms.p99 >= 90.0, "{summary:?}");
    assert!(summary.model_ms.p50 >= 110.0, "{summary:?}");
    // The metadata: a line per frame, the mask's age on every frame that had one.
    let lines = read_jsonl(&metadata);
    assert_eq!(lines.len(), 45);
    let with_mask = lines.iter().filter(|l| l["mask"]["age_frames"].is_u64() && l["mask"]["age_ms"].is_f64()).count();
    assert_eq!(with_mask as u64, c.mask_fresh + c.mask_held);
    assert!(lines.iter().any(|l| l["mask"]["fresh"] == false));
}

/// The masks output in latest-mask mode: one mask per frame shown, the mask it was drawn with.
#[test]
fn latest_mask_writes_a_mask_per_frame() {
    let dir = scratch("live-masks");
    let source = SourceSpec::Launch("videotestsrc is-live=true num-buffers=20 pattern=black ! video/x-raw,width=160,height=120,framerate=30/1".into());
    let mut job = Job::new(source, SinkSpec::Launch("fakesink sync=false".into()));
    job.config.mode = Mode::Live;
    job.config.queue_capacity = 4;
    job.config.model_size = (32, 32);
    job.masks = Some(SinkSpec::File { path: dir.join("m_%03d.png"), overwrite: false });
    job.keep_records = true;
    let report = run(job, slow_square(60)).unwrap();
    let c = report.counters;
    let pngs = files(&dir, "m_");
    assert_eq!(pngs.len() as u64, c.frames_out, "{}", summary(&report));
    for (png, r) in pngs.iter().zip(&report.records) {
        let (w, h, px) = read_gray_png(png);
        assert_eq!((w, h), (160, 120));
        let lesion = px.iter().filter(|&&v| v == 255).count();
        match r.mask {
            // The centred square, half the frame each way.
            Some(_) => assert!((4000..=6000).contains(&lesion), "{}: {lesion}", png.display()),
            None => assert_eq!(lesion, 0, "{}: no mask yet", png.display()),
        }
    }
}

/// The recording never holds the display up: with its encoder stopped (the pipeline left
/// paused), the display gets every frame, the recording keeps RECORD_QUEUE of them waiting and
/// drops the rest, counted.
#[test]
fn a_stalled_recording_drops_its_own_frames_not_the_displays() {
    use lightunet::pipeline::frame::{Frame, FrameBuffer, FrameLayout};
    use lightunet::pipeline::latency::Stamps;
    use lightunet::pipeline::sink::{Outputs, RECORD_QUEUE};
    init();
    let dir = scratch("live-record-stall");
    let path = dir.join("rec.mkv");
    let mut outputs = Outputs::build(&SinkSpec::Launch("fakesink sync=false".into()), None, Mode::Live, None).unwrap();
    let recording = outputs.add_recording(&path, false, 0).unwrap();
    outputs.video.pipeline.set_state(gst::State::Playing).unwrap();
    // Paused, a live source's pipeline takes buffers into its queue but does not run them.
    let _ = recording.pipeline.set_state(gst::State::Paused);
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Bgr, 64, 48).fps(gst::Fraction::new(30, 1)).build().unwrap();
    let layout = FrameLayout { width: 64, height: 48, stride: info.stride()[0] as usize };
    let frames = 30u64;
    for seq in 0..frames {
        let data = gst::Buffer::with_size(info.size()).unwrap().into_mapped_buffer_writable().unwrap();
        let frame = Frame {
            seq,
            pts: None,
            duration: None,
            fps: gst::Fraction::new(30, 1),
            layout,
            data: FrameBuffer(data),
            stamps: Stamps::new(Instant::now()),
        };
        outputs.push(frame, None).unwrap();
    }
    let r = recording.report();
    assert_eq!(outputs.video.pushed, frames, "the display got every frame");
    assert_eq!((r.recorded, r.dropped), (RECORD_QUEUE, frames - RECORD_QUEUE), "{r:?}");
    for o in outputs.iter() {
        let _ = o.pipeline.set_state(gst::State::Null);
    }
    drop(outputs);
}

/// `live --record`: a recording cut by `kill -9` mid-run plays up to the cut, under its own name.
#[test]
fn a_recording_cut_by_kill_9_still_plays() {
    init();
    let dir = scratch("live-record-kill");
    for name in ["rec.mkv", "rec.mp4"] {
        let path = dir.join(name);
        let mut child = Command::new(env!("CARGO_BIN_EXE_lightunet"))
            .args(["live", "--source", "phantom:320x240@25", "--sink", "fakesink", "--record"])
            .arg(&path)
            .args(["--weights", "random", "--input-size", "32", "--device", "cpu"])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // About three seconds of video: the header, then clusters or 1 s fragments.
        let t = Instant::now();
        while std::fs::metadata(&path).map_or(0, |m| m.len()) < 20_000 && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(2500));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let d = decode(&path).unwrap_or_else(|e| panic!("{name}: the cut recording does not play: {e}"));
        eprintln!("{name}: {} frames after kill -9 ({} bytes)", d.frames.len(), std::fs::metadata(&path).unwrap().len());
        assert!(d.frames.len() >= 25, "{name}: {} frames", d.frames.len());
        assert!(d.frames.iter().all(|(w, h, _)| (*w, *h) == (320, 240)));
        assert_no_temporary_files(&dir);
    }
}

/// A recording that fails (here a full disk: `/dev/full` behind the name) stops alone: every
/// frame still reaches the display, and `live` says so and exits non-zero at the end.
#[test]
fn a_failing_recording_stops_alone_and_the_run_says_so() {
    init();
    if !Path::new("/dev/full").exists() {
        eprintln!("SKIP: no /dev/full");
        return;
    }
    let dir = scratch("live-record-full");
    let path = dir.join("full.mkv");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let report = dir.join("report.json");
    let o = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args(["live", "--source", "phantom:160x120@25", "--frames", "30", "--sink", "fakesink", "--record"])
        .arg(&path)
        .arg("--report")
        .arg(&report)
        .args(["--weights", "random", "--input-size", "32", "--device", "cpu"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains("the recording") && err.contains("failed") && err.contains("the display went on"), "{err}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["counters"]["frames_at_sink"], 30, "{r}");
    let rec = &r["recording"];
    assert!(rec["error"].is_string(), "{rec}");
    assert_eq!(rec["recorded"].as_u64().unwrap() + rec["dropped"].as_u64().unwrap() + rec["after_failure"].as_u64().unwrap(), 30, "{rec}");
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink(), "the link is left as it was");
}

fn assert_no_temporary_files(dir: &Path) {
    let names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.contains(".lightunet-")), "{names:?}");
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A test pipeline that receives RTP/H.264 on `port` and counts decoded frames and red pixels.
struct Receiver {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
}

impl Receiver {
    fn start(port: u16) -> Receiver {
        Receiver::decoding(&format!(
            "udpsrc address=127.0.0.1 port={port} caps=\"application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=96\" \
             ! rtph264depay ! h264parse ! avdec_h264"
        ))
    }

    /// Any description ending in decoded video.
    fn decoding(source: &str) -> Receiver {
        init();
        let p = gst::parse::launch(&format!("{source} ! videoconvert ! video/x-raw,format=BGR ! appsink name=sink sync=false"))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = p.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
        p.set_state(gst::State::Playing).unwrap();
        Receiver { pipeline: p, sink }
    }

    /// Frames received until nothing arrives for `idle`; and the number with a red outline.
    fn collect(&self, idle: Duration) -> (usize, usize) {
        let (mut frames, mut red) = (0, 0);
        while let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_nseconds(idle.as_nanos() as u64)) {
            frames += 1;
            let map = sample.buffer().unwrap().map_readable().unwrap();
            // BGR: strongly red pixels are the overlay (the test pattern has no pure red area
            // wider than the contour on the frames' centre rows is irrelevant; count them all).
            let n = map.chunks_exact(3).filter(|p| p[2] > 180 && p[1] < 80 && p[0] < 80).count();
            red += usize::from(n > 50);
        }
        (frames, red)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// sender (test) -> RTP/UDP -> lightunet live (udpsrc ... ! appsink, overlay, appsrc ... ! udpsink)
/// -> RTP/UDP -> receiver (test). The sender stops without EOS (as a network stream does), so the
/// run must end by itself through the stall timeout.
#[test]
fn rtp_udp_loopback_round_trip_and_stalled_source() {
    let (port_in, port_out) = (free_udp_port(), free_udp_port());
    let receiver = Receiver::start(port_out);

    let source = SourceSpec::Launch(format!(
        "udpsrc address=127.0.0.1 port={port_in} caps=\"application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=96\" \
         ! rtpjitterbuffer latency=50 ! rtph264depay ! h264parse ! avdec_h264"
    ));
    let sink = SinkSpec::Launch(format!(
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay pt=96 config-interval=1 ! udpsink host=127.0.0.1 port={port_out} sync=false"
    ));
    let mut job = Job::new(source, sink);
    job.config.mode = Mode::Live;
    job.config.model_size = (32, 32);
    job.config.stall_timeout = Duration::from_millis(1500);
    let live = std::thread::spawn(move || run(job, slow_square(5)));

    // Give lightunet's udpsrc time to bind, then send 40 frames (black, so the only red is ours).
    std::thread::sleep(Duration::from_millis(700));
    let sender = gst::parse::launch(&format!(
        "videotestsrc is-live=true num-buffers=40 pattern=black ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! rtph264pay pt=96 config-interval=1 ! udpsink host=127.0.0.1 port={port_in}"
    ))
    .unwrap();
    sender.set_state(gst::State::Playing).unwrap();
    let bus = sender.bus().unwrap();
    bus.timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Eos, gst::MessageType::Error]).unwrap();
    sender.set_state(gst::State::Null).unwrap();

    let report = live.join().unwrap().expect("live run ends cleanly when the source stops");
    let (frames, red) = receiver.collect(Duration::from_millis(1500));
    eprintln!("{}received {frames} frames, {red} with the overlay", summary(&report));
    assert!(report.stopped.as_deref().unwrap_or("").contains("stalled"), "{:?}", report.stopped);
    assert!(report.counters.frames_in >= 25, "in {}", report.counters.frames_in);
    assert!(frames >= 20, "received {frames}");
    assert!(red >= frames / 2, "overlay visible in {red} of {frames}");
}

/// The shipped `srt-in` source and `srt-out` sink (pipelines/*.toml, ports substituted) in one
/// live run: sender (test, SRT caller) -> lightunet (SRT listener in, overlay, SRT listener out)
/// -> receiver (test, SRT caller). The sender's stop ends the run through the stall timeout.
#[test]
fn srt_named_pipelines_round_trip() {
    init();
    if gst::ElementFactory::find("srtsrc").is_none() {
        eprintln!("SKIP: no srtsrc/srtsink (gstreamer1.0-plugins-bad with SRT); scripts/setup.sh installs it");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let (port_in, port_out) = (free_udp_port(), free_udp_port());
    let vars = |port: u16| [("port".to_string(), port.to_string())].into_iter().collect();
    let (source, _) = lightunet::pipeline::NamedPipeline::load(&dir, "srt-in").unwrap().resolve(&vars(port_in)).unwrap();
    let (_, sink) = lightunet::pipeline::NamedPipeline::load(&dir, "srt-out").unwrap().resolve(&vars(port_out)).unwrap();
    let mut job = Job::new(SourceSpec::Launch(source), SinkSpec::Launch(sink));
    job.config.mode = Mode::Live;
    job.config.model_size = (32, 32);
    job.config.stall_timeout = Duration::from_millis(2000);
    let live = std::thread::spawn(move || run(job, slow_square(5)));

    // Both listeners up, then the receiver calls the output and the sender the input.
    std::thread::sleep(Duration::from_millis(1000));
    let receiver = Receiver::decoding(&format!("srtsrc uri=srt://127.0.0.1:{port_out}?mode=caller ! tsdemux ! h264parse ! avdec_h264"));
    std::thread::sleep(Duration::from_millis(300));
    let sender = gst::parse::launch(&format!(
        "videotestsrc is-live=true num-buffers=75 pattern=black ! video/x-raw,width=320,height=240,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! mpegtsmux alignment=7 ! srtsink uri=srt://127.0.0.1:{port_in}?mode=caller"
    ))
    .unwrap();
    sender.set_state(gst::State::Playing).unwrap();
    let bus = sender.bus().unwrap();
    let end = bus.timed_pop_filtered(gst::ClockTime::from_seconds(15), &[gst::MessageType::Eos, gst::MessageType::Error]);
    sender.set_state(gst::State::Null).unwrap();
    assert!(matches!(end.as_ref().map(|m| m.view()), Some(gst::MessageView::Eos(_))), "sender: {end:?}");

    let report = live.join().unwrap().expect("live run ends cleanly when the SRT sender stops");
    let (frames, red) = receiver.collect(Duration::from_millis(2000));
    eprintln!("{}received {frames} frames over SRT, {red} with the overlay", summary(&report));
    assert!(report.counters.frames_in >= 25, "in {}", report.counters.frames_in);
    // SRT callers joining mid-stream lose frames until the next keyframe (every 10 frames in,
    // 30 out): counts are lower bounds with that margin.
    assert!(frames >= 15, "received {frames}");
    assert!(red >= frames / 2, "overlay visible in {red} of {frames}");
}

/// A virtual X server (Xvfb) for the window-sink test; killed on drop.
struct Xvfb {
    child: std::process::Child,
    display: String,
}

impl Xvfb {
    fn start() -> Option<Xvfb> {
        let n = 40 + std::process::id() % 200;
        let child = std::process::Command::new("Xvfb")
            .args([&format!(":{n}"), "-screen", "0", "640x480x24", "-nolisten", "tcp"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(child) = child else {
            eprintln!("SKIP: Xvfb is not installed (scripts/test.sh installs it)");
            return None;
        };
        let mut x = Xvfb { child, display: format!(":{n}") };
        let socket = std::path::PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
        let t = Instant::now();
        // Ready when a client can connect: an earlier server killed without its clean-up can
        // leave a socket file of the same name behind.
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            // A machine where Xvfb cannot run (permissions, a display number in use) says
            // nothing about the window sink: skip, loudly.
            if t.elapsed() > Duration::from_secs(10) || x.child.try_wait().ok().flatten().is_some() {
                eprintln!("SKIP: Xvfb {} did not start", x.display);
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(x)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM lets Xvfb remove its socket and lock file (SIGKILL leaves them behind).
        let terminated = std::process::Command::new("kill").arg(self.child.id().to_string()).status().is_ok_and(|s| s.success());
        if !terminated {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The window sink really shows the annotated frames: a live run into ximagesink on a virtual X
/// display, while a second pipeline grabs the screen (ximagesrc) and looks for the red outline.
#[test]
fn window_sink_shows_the_overlay() {
    init();
    if gst::ElementFactory::find("ximagesink").is_none() || gst::ElementFactory::find("ximagesrc").is_none() {
        eprintln!("SKIP: ximagesink/ximagesrc missing (gstreamer1.0-x, gstreamer1.0-plugins-good)");
        return;
    }
    let Some(x) = Xvfb::start() else { return };
    let source = SourceSpec::Launch("videotestsrc is-live=true num-buffers=90 pattern=black ! video/x-raw,width=320,height=240,framerate=30/1".into());
    let mut job = Job::new(source, SinkSpec::Launch(format!("ximagesink display={} sync=false", x.display)));
    job.config.mode = Mode::Live;
    job.config.model_size = (32, 32);
    let live = std::thread::spawn(move || run(job, slow_square(5)));

    std::thread::sleep(Duration::from_millis(1000));
    let grab = Receiver::decoding(&format!("ximagesrc display-name={} use-damage=false num-buffers=10 ! video/x-raw,framerate=10/1", x.display));
    let (frames, red) = grab.collect(Duration::from_millis(1500));
    let report = live.join().unwrap().expect("live run into a window");
    eprintln!("{}grabbed {frames} screens, {red} with the overlay", summary(&report));
    assert_eq!(report.counters.frames_in, 90);
    assert!(frames >= 5, "grabbed {frames}");
    assert!(red >= 3, "overlay on screen in {red} of {frames} grabs");
}
