//! Recorded mode: every frame comes out, in order, with the input's timestamps; grey, 16-bit and
//! odd-sized input; per-frame metadata. A fake segmenter stands in for the network (the model's
//! own tests are elsewhere), so these run in seconds.

mod pipeline_support;

use lightunet::phantom::PhantomConfig;
use lightunet::pipeline::{run, write_phantom_clip, Job, SinkSpec, SourceSpec};
use pipeline_support::*;

fn phantom_clip(dir: &std::path::Path, name: &str, w: usize, h: usize, frames: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    let cfg = PhantomConfig { width: w, height: h, fps: 25, ..Default::default() };
    write_phantom_clip(&cfg, frames, &SinkSpec::File { path: path.clone(), overwrite: false }, None).expect("phantom clip");
    path
}

fn file(path: &std::path::Path) -> SinkSpec {
    SinkSpec::File { path: path.to_path_buf(), overwrite: false }
}

#[test]
fn frame_count_and_pts_are_kept_mp4_mkv_png() {
    let dir = scratch("recorded-pts");
    let input = phantom_clip(&dir, "in.mp4", 160, 120, 12);
    let src = decode(&input).unwrap();
    assert_eq!(src.pts.len(), 12);
    assert_eq!(src.pts[0], Some(0), "the phantom clip starts at 0");

    for out in ["out.mp4", "out.mkv"] {
        let output = dir.join(out);
        let mut job = Job::new(SourceSpec::File(input.clone()), file(&output));
        job.metadata = Some(dir.join(format!("{out}.jsonl")));
        let report = run(job, empty_segmenter()).unwrap();
        assert_eq!(report.counters.frames_in, 12);
        assert_eq!(report.counters.frames_out, 12);
        assert_eq!(report.counters.dropped, 0);
        assert!(report.input_error.is_none());
        let got = decode(&output).unwrap();
        assert_eq!(got.pts, src.pts, "{out}: output PTS equal the input's");
        assert_eq!((got.frames[0].0, got.frames[0].1), (160, 120));

        let lines = read_jsonl(&dir.join(format!("{out}.jsonl")));
        assert_eq!(lines.len(), 12);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l["frame"], i as u64);
            assert_eq!(l["pts_ns"].as_u64(), src.pts[i]);
            assert_eq!(l["lesion"], false);
            assert!(l["latency_ms"]["inference"].as_f64().is_some());
            assert!(l["latency_ms"]["end_to_end"].as_f64().is_some());
        }
    }

    let pattern = dir.join("png_%03d.png");
    let report = run(Job::new(SourceSpec::File(input.clone()), file(&pattern)), empty_segmenter()).unwrap();
    assert_eq!(report.counters.frames_out, 12);
    assert_eq!(files(&dir, "png_").len(), 12);
}

#[test]
fn odd_sizes_grey_and_16_bit_input() {
    let dir = scratch("recorded-formats");
    // 321x241: a PNG sequence keeps the odd size exactly; H.264 needs even sizes and gets a
    // 1-px pad. The input is a PNG sequence too (decoded by pngdec, not the phantom appsrc).
    let cfg = PhantomConfig { width: 321, height: 241, ..Default::default() };
    write_phantom_clip(&cfg, 4, &file(&dir.join("in_%03d.png")), None).unwrap();
    let source = || {
        SourceSpec::Launch(format!(
            "multifilesrc location={}/in_%03d.png caps=image/png,framerate=25/1 ! pngdec",
            dir.display()
        ))
    };
    let report = run(Job::new(source(), file(&dir.join("out_%03d.png"))), empty_segmenter()).unwrap();
    assert_eq!(report.counters.frames_out, 4);
    let outs = files(&dir, "out_");
    assert_eq!(outs.len(), 4);
    let (w, h, rgb) = read_rgb_png(&outs[1]);
    assert_eq!((w, h), (321, 241));
    let (_, _, src_rgb) = read_rgb_png(&dir.join("in_001.png"));
    assert_eq!(rgb, src_rgb, "no lesion found: the frame passes through unchanged");
    let out = dir.join("odd_out.mp4");
    run(Job::new(source(), file(&out)), empty_segmenter()).unwrap();
    let d = decode(&out).unwrap();
    assert_eq!((d.frames.len(), d.frames[0].0, d.frames[0].1), (4, 322, 242));

    for format in ["GRAY8", "GRAY16_LE", "GRAY16_BE"] {
        let out = dir.join(format!("{format}_%02d.png"));
        let source = SourceSpec::Launch(format!("videotestsrc num-buffers=3 ! video/x-raw,format={format},width=65,height=49"));
        let report = run(Job::new(source, file(&out)), empty_segmenter()).unwrap();
        assert_eq!(report.counters.frames_out, 3, "{format}");
        let outs = files(&dir, &format!("{format}_"));
        assert_eq!(outs.len(), 3, "{format}");
        let (w, h, rgb) = read_rgb_png(&outs[0]);
        assert_eq!((w, h), (65, 49), "{format}");
        assert!(rgb.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]), "{format}: grey in, grey out");
    }
}

#[test]
fn grey_input_reaches_the_model_as_three_equal_channels() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let seg = Box::new(move |input: &lightunet::pipeline::SegmentInput| {
        let n = input.width * input.height;
        let mean = |c: usize| input.chw[c * n..(c + 1) * n].iter().sum::<f32>() / n as f32;
        s.lock().unwrap().push([mean(0), mean(1), mean(2)]);
        Ok(vec![0f32; n])
    });
    let dir = scratch("recorded-grey");
    let source = SourceSpec::Launch("videotestsrc num-buffers=2 pattern=gradient ! video/x-raw,format=GRAY16_LE,width=64,height=64".into());
    run(Job::new(source, file(&dir.join("o_%02d.png"))), seg).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for m in seen.iter() {
        assert!(m[0] > 0.05 && (m[0] - m[1]).abs() < 1e-6 && (m[1] - m[2]).abs() < 1e-6, "{m:?}");
    }
}

/// A PNG sequence whose size changes after three frames: every frame is processed, and the
/// encoded output keeps the first frame's size (the encoder never renegotiates).
#[test]
fn resolution_change_mid_stream() {
    let dir = scratch("recorded-resize");
    for (prefix, w, h) in [("a", 160, 120), ("b", 200, 150)] {
        let cfg = PhantomConfig { width: w, height: h, ..Default::default() };
        write_phantom_clip(&cfg, 3, &file(&dir.join(format!("{prefix}_%03d.png"))), None).unwrap();
    }
    for (i, p) in files(&dir, "a_").into_iter().chain(files(&dir, "b_")).enumerate() {
        std::fs::rename(p, dir.join(format!("in_{i:03}.png"))).unwrap();
    }
    let source = SourceSpec::Launch(format!("multifilesrc location={}/in_%03d.png caps=image/png,framerate=25/1 ! pngdec", dir.display()));
    let out = dir.join("out.mkv");
    let mut job = Job::new(source, file(&out));
    job.masks = Some(file(&dir.join("mask_%02d.png")));
    let report = run(job, empty_segmenter()).unwrap();
    assert_eq!(report.counters.frames_out, 6);
    let d = decode(&out).unwrap();
    assert_eq!(d.frames.len(), 6);
    assert!(d.frames.iter().all(|f| (f.0, f.1) == (160, 120)));
    assert_eq!(files(&dir, "mask_").len(), 6);
}

/// Records the size of every batch it gets; marks a lesion on odd frames only, so that a map
/// handed to the wrong frame shows in the metadata.
struct BatchProbe {
    sizes: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

impl lightunet::pipeline::Segmenter for BatchProbe {
    fn segment(&mut self, input: &lightunet::pipeline::SegmentInput) -> lightunet::pipeline::Result<Vec<f32>> {
        Ok(self.segment_batch(std::slice::from_ref(input))?.remove(0))
    }

    fn segment_batch(&mut self, inputs: &[lightunet::pipeline::SegmentInput]) -> lightunet::pipeline::Result<Vec<Vec<f32>>> {
        self.sizes.lock().unwrap().push(inputs.len());
        // Slow enough that the decoder fills the queue behind it.
        std::thread::sleep(std::time::Duration::from_millis(40));
        Ok(inputs.iter().map(|i| vec![if i.seq % 2 == 1 { 1.0 } else { 0.0 }; i.width * i.height]).collect())
    }
}

#[test]
fn queued_frames_are_batched_in_order() {
    let dir = scratch("recorded-batch");
    let input = phantom_clip(&dir, "in.mkv", 96, 64, 16);
    for batch in [4, 1] {
        let sizes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut job = Job::new(SourceSpec::File(input.clone()), file(&dir.join(format!("out{batch}.mkv"))));
        job.config.batch = batch;
        job.config.model_size = (32, 32);
        job.metadata = Some(dir.join(format!("b{batch}.jsonl")));
        let report = run(job, Box::new(BatchProbe { sizes: sizes.clone() })).unwrap();
        assert_eq!(report.counters.frames_out, 16);
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 16, "{sizes:?}");
        assert_eq!(report.batch, *sizes.iter().max().unwrap(), "the report names the largest batch");
        assert!(sizes.iter().all(|&s| (1..=batch).contains(&s)), "{sizes:?}");
        if batch > 1 {
            assert!(sizes.iter().any(|&s| s > 1), "a backlog should be batched: {sizes:?}");
        }
        let lines = read_jsonl(&dir.join(format!("b{batch}.jsonl")));
        assert_eq!(lines.len(), 16);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l["frame"], i as u64);
            assert_eq!(l["lesion"], i % 2 == 1, "frame {i} got another frame's map (batch {batch})");
        }
    }
}
