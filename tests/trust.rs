//! Bad input and faults as a new user meets them (issue 12, "Trust"): every case ends with a
//! clear message and a non-zero exit, or a correct result; never a crash, an abort, a hang, or a
//! wrong result without a word. Each test names the case it covers; the binary always runs under
//! a timeout, so that a hang fails the test instead of hanging CI.

mod pipeline_support;
mod train_util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lightunet::model::{UNet, Variant};
use lightunet::pipeline::{run, Job, Mode, PipelineError, SegmentInput, Segmenter, Show, SinkSpec, SourceSpec};
use lightunet::train::{TrainConfig, Trainer};
use pipeline_support::cli::*;
use pipeline_support::scratch;

const FAST: [&str; 6] = ["--weights", "random", "--input-size", "32", "--device", "cpu"];

/// A source that opens and never sends: a UDP port nobody streams to.
const SILENT_SOURCE: &str = "udpsrc port=0 caps=\"video/x-raw,format=BGR,width=64,height=48,framerate=25/1\"";

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Case 5: printf in file patterns. `%s` segfaulted, `%n` aborted, `%p`/`%x` wrote addresses into
/// file names; now every place a pattern is given refuses it before GStreamer sees it.
#[test]
fn printf_patterns_are_refused_everywhere() {
    let dir = scratch("trust-printf");
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let phantom = ["phantom:160x120", "--frames", "2"];
    let cases: Vec<Vec<String>> = vec![
        [&["process"][..], &phantom, &["-o", &p("fr_%s.png")], &FAST].concat().iter().map(|x| x.to_string()).collect(),
        [&["process"][..], &phantom, &["-o", &p("ok_%05d.png"), "--masks", &p("m_%n.png")], &FAST]
            .concat()
            .iter()
            .map(|x| x.to_string())
            .collect(),
        ["phantom", "-o", &p("leak_%d_%p_%x.png"), "--frames", "2", "--size", "160x120"].iter().map(|x| x.to_string()).collect(),
        ["phantom", "-o", &p("a.mkv"), "--masks", &p("m_%s.png"), "--frames", "2", "--size", "160x120"]
            .iter()
            .map(|x| x.to_string())
            .collect(),
        [&["live", "--source", "phantom:160x120", "--frames", "2", "--sink", &p("fr_%s.png")][..], &FAST]
            .concat()
            .iter()
            .map(|x| x.to_string())
            .collect(),
        [&["live", "--source", "phantom:160x120", "--frames", "2", "--sink"][..], &[&format!("pngenc ! multifilesink location={}", p("f_%x.png"))], &FAST]
            .concat()
            .iter()
            .map(|x| x.to_string())
            .collect(),
        [&["live", "--source"][..], &[&format!("multifilesrc location={} ! pngdec", p("in_%n.png"))], &["--sink", "fakesink"], &FAST]
            .concat()
            .iter()
            .map(|x| x.to_string())
            .collect(),
    ];
    for args in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = lightunet(&args);
        r.assert_clean_failure("file pattern");
        assert!(r.stderr.contains("`%d` or `%0Nd`"), "{}", r.stderr);
    }
    assert!(files_in(&dir).is_empty(), "nothing is written: {:?}", files_in(&dir));
    // A good pattern still works, `%%` included.
    let r = lightunet(&[&["process"][..], &phantom, &["-o", &p("100%%_%03d.png")], &FAST].concat());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(files_in(&dir), ["100%_000.png", "100%_001.png"]);
}

/// Case 6: an ROI past `usize::MAX` wrapped around, panicked the inference thread and left the
/// process deaf even to SIGTERM. On the command line and in a pipelines file.
#[test]
fn huge_roi_fails_cleanly() {
    let dir = scratch("trust-roi");
    let out = dir.join("out.mp4");
    let r = lightunet(&[&["process", "phantom:160x120", "--frames", "3", "-o", s(&out), "--roi", "18446744073709551615,0,10,10"][..], &FAST].concat());
    r.assert_clean_failure("does not fit in the 160x120 frame");
    let pipelines = dir.join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    std::fs::write(
        pipelines.join("wide.toml"),
        "description = \"x\"\nsource = \"phantom:160x120\"\nsink = \"fakesink\"\nroi = \"0,18446744073709551615,4,4\"\n",
    )
    .unwrap();
    let r = lightunet(&[&["live", "--pipelines-dir", s(&pipelines), "--pipeline", "wide", "--frames", "3"][..], &FAST].concat());
    r.assert_clean_failure("does not fit in the 160x120 frame");
}

/// A segmenter that panics at its third frame.
fn panicking_segmenter() -> Box<dyn Segmenter> {
    Box::new(|input: &SegmentInput| {
        if input.seq >= 2 {
            panic!("boom at frame {}", input.seq);
        }
        Ok(vec![0f32; input.width * input.height])
    })
}

/// Case 6: a panic in the inference thread ends the run with an error that says so, in both
/// modes, with a file output (recorded mode used to block the capture thread for ever). Live,
/// latest-mask (the default), the model runs on the latest-mask worker: its panic ends the run
/// the same way, naming that thread.
#[test]
fn a_panicking_segmenter_ends_the_run_with_an_error() {
    let dir = scratch("trust-panic");
    let cases = [(Mode::Recorded, Show::Processed, "inference"), (Mode::Live, Show::Processed, "inference"), (Mode::Live, Show::LatestMask, "latest mask")];
    for (mode, show, thread) in cases {
        let mut job = Job::new(
            SourceSpec::parse("phantom:160x120@25", Some(200)).unwrap(),
            SinkSpec::File { path: dir.join(format!("{mode:?}-{show:?}.mkv")), overwrite: true },
        );
        job.config.mode = mode;
        job.config.show = show;
        job.config.model_size = (32, 32);
        job.config.queue_capacity = 1;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(run(job, panicking_segmenter()));
        });
        let result = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("{mode:?} {show:?}: the run hangs"));
        match result {
            Err(PipelineError::ThreadPanicked { thread: t, message }) if t == thread => {
                // Latest-mask may skip frame 2 (the model takes the newest frame when free).
                assert!(message.starts_with("boom at frame "), "{mode:?} {show:?}: {message}")
            }
            other => panic!("{mode:?} {show:?}: {:?}", other.map(|r| r.counters)),
        }
    }
}

/// Case 7: huge numbers aborted on allocation; each is now refused with its limit and why.
#[test]
fn huge_numbers_name_their_limit() {
    let dir = scratch("trust-huge");
    let out = dir.join("o.mp4");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let weights = dir.join("w.safetensors");
    random_weights(&weights);
    let process = |extra: &[&str]| {
        let mut args = vec!["process", "phantom:160x120", "--frames", "2", "-o", s(&out), "--weights", "random", "--device", "cpu"];
        args.extend(extra);
        lightunet(&args)
    };
    process(&["--input-size", "100000"]).assert_clean_failure("above the limit of 1024 per side");
    process(&["--queue", "100000000"]).assert_clean_failure("1 to 64 frames");
    process(&["--batch", "100000"]).assert_clean_failure("input pixels per pass");
    assert!(!out.exists());
    lightunet(&["predict", "--model", "lighter@1", "--weights", s(&weights), "--images", s(&images), "--out", s(&dir.join("p")), "--size", "100000"])
        .assert_clean_failure("above the limit of 1024 per side");
    lightunet(&["bench", "model", "--size", "100000"]).assert_clean_failure("above the limit of 1024 per side");
    lightunet(&["bench", "model", "--batch", "100000"]).assert_clean_failure("input pixels per pass");
    lightunet(&["bench", "train", "--size", "100000"]).assert_clean_failure("above the limit of 1024 per side");
    let data = dir.join("data");
    train_util::write_dataset(&data, 2, 1, 32);
    lightunet(&["train", "--data", s(&data), "--model", "lighter@1", "--out", s(&dir.join("run")), "--size", "100000"])
        .assert_clean_failure("above the limit of 1024 per side");
    assert!(!dir.join("run").exists());
}

/// What `torch.save({'x': torch.zeros(1).expand(1 << 20, 1 << 20)}, 'e.pth')` writes, built by
/// hand (pickle protocol 2 in a zip, as PyTorch does): 1.6 KB that stand for 4 TiB of f32.
fn expanded_pth() -> Vec<u8> {
    let text = |out: &mut Vec<u8>, s: &str| {
        out.push(b'X');
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
    };
    let mut pkl = vec![0x80, 0x02, b'}'];
    text(&mut pkl, "x");
    pkl.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    text(&mut pkl, "storage");
    pkl.extend(b"ctorch\nFloatStorage\n");
    text(&mut pkl, "0");
    text(&mut pkl, "cpu");
    pkl.extend([b'K', 1, b't', b'Q', b'K', 0]); // numel 1, persistent id, storage offset 0
    pkl.extend([b'(', b'J', 0, 0, 0x10, 0, b'J', 0, 0, 0x10, 0, b't']); // size (1 << 20, 1 << 20)
    pkl.extend([b'(', b'K', 0, b'K', 0, b't', 0x89]); // stride (0, 0), requires_grad False
    pkl.extend(b"ccollections\nOrderedDict\n)RtRs.");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in [("e/data.pkl", pkl), ("e/byteorder", b"little".to_vec()), ("e/data/0", vec![0u8; 4])] {
        zip.start_file(name, options).unwrap();
        std::io::Write::write_all(&mut zip, &data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Case 8: `convert` of a 1.6 KB file asked for 4 TB and aborted; now a clear refusal.
#[test]
fn convert_refuses_a_view_larger_than_its_file() {
    let dir = scratch("trust-expand");
    let (pth, out) = (dir.join("e.pth"), dir.join("e.safetensors"));
    std::fs::write(&pth, expanded_pth()).unwrap();
    assert!(std::fs::metadata(&pth).unwrap().len() < 2048);
    let r = lightunet(&["convert", s(&pth), s(&out)]);
    r.assert_clean_failure("tensor `x`: shape [1048576, 1048576] with strides [0, 0] needs 4.0 TiB");
    assert!(!out.exists());
}

/// Case 9: a live source that never sends used to wait for ever; now the run fails after the
/// first-frame timeout, naming the source.
#[test]
fn a_source_that_never_sends_fails_naming_it() {
    let r = lightunet(&[&["live", "--source", SILENT_SOURCE, "--sink", "fakesink", "--first-frame-timeout", "2"][..], &FAST].concat());
    r.assert_clean_failure("no frame from the source `udpsrc port=0");
    assert!(r.stderr.contains("within 2 s"), "{}", r.stderr);
    assert!(r.seconds < 30.0, "{} s", r.seconds);
}

/// Cases 6 and 9: SIGTERM ends a run that was told to wait for ever for its first frame.
#[test]
fn sigterm_ends_a_run_that_waits_forever() {
    let child = spawn(&[&["live", "--source", SILENT_SOURCE, "--sink", "fakesink", "--first-frame-timeout", "never"][..], &FAST].concat(), &[]);
    std::thread::sleep(Duration::from_secs(3));
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let r = finish(child, Duration::from_secs(20), "live after SIGTERM");
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(r.stderr.contains("interrupt"), "{}", r.stderr);
    assert_eq!(r.code, Some(0), "live ends on an interrupt as its normal stop (--help's exit statuses): {}", r.stderr);
}

/// Case 16: one malformed pipelines file no longer breaks `live --list`: the rest are listed,
/// the bad one flagged (and the exit status says something is wrong).
#[test]
fn live_list_flags_a_malformed_file_and_lists_the_rest() {
    let dir = scratch("trust-list");
    std::fs::write(dir.join("fine.toml"), "description = \"a fine one\"\nsource = \"phantom\"\nsink = \"fakesink\"\n").unwrap();
    std::fs::write(dir.join("broken.toml"), "description = \"unterminated\nsource = ").unwrap();
    let r = lightunet(&["live", "--list", "--pipelines-dir", s(&dir)]);
    assert!(r.stdout.contains("fine") && r.stdout.contains("a fine one"), "{}", r.stdout);
    assert!(r.stdout.contains("broken") && r.stdout.contains("INVALID"), "{}", r.stdout);
    r.assert_clean_failure("cannot be loaded");
}

/// Case 16: `--pipeline ../Cargo` read a file outside the pipelines folder.
#[test]
fn a_pipeline_name_is_not_a_path() {
    let pipelines = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for name in ["../Cargo", "../Cargo.toml", "/etc/hostname"] {
        lightunet(&[&["live", "--pipelines-dir", s(&pipelines), "--pipeline", name][..], &FAST].concat())
            .assert_clean_failure("is not a pipeline name");
    }
}

fn random_weights(path: &Path) {
    let vm = VarMap::new();
    UNet::new(Variant::Lighter(1), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    vm.save(path).unwrap();
}

/// `random_weights` with one tensor replaced.
fn weights_with(path: &Path, name: &str, value: Tensor) {
    random_weights(path);
    let mut t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    assert!(t.contains_key(name), "{name}");
    t.insert(name.to_string(), value);
    candle_core::safetensors::save(&t, path).unwrap();
}

/// Case 16: `predict` finds `<stem>.config.json` beside the weights (how weights ship), as well
/// as a run's `config.json`.
#[test]
fn predict_finds_the_weights_sidecar() {
    let dir = scratch("trust-sidecar");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let (img, _) = train_util::disk(1, 40, 30);
    img.save(images.join("a.png")).unwrap();
    let weights = dir.join("lighter_at1_busi.safetensors");
    random_weights(&weights);
    let predict = |out: &str| lightunet(&["predict", "--weights", s(&weights), "--images", s(&images), "--out", s(&dir.join(out))]);
    let r = predict("none");
    r.assert_clean_failure("--model is required");
    assert!(r.stderr.contains("lighter_at1_busi.config.json") && r.stderr.contains("config.json"), "{}", r.stderr);
    std::fs::write(dir.join("lighter_at1_busi.config.json"), r#"{"variant": "lighter@1", "preprocessing": {"size": 32}}"#).unwrap();
    let r = predict("with-sidecar");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(dir.join("with-sidecar/masks/a.png").exists());
    // The shipped weights and the seed-recipe weights kept beside them, each found with its
    // sidecar, when this checkout has them.
    for name in ["lighter_at1_busi", "lighter_at1_busi_seed"] {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("pretrained_models/{name}.safetensors"));
        if shipped.exists() {
            let r = lightunet(&["predict", "--weights", s(&shipped), "--images", s(&images), "--out", s(&dir.join(name)), "--size", "32"]);
            assert_eq!(r.code, Some(0), "{}", r.stderr);
            let report = std::fs::read_to_string(dir.join(name).join("metrics.json")).unwrap();
            assert!(report.contains(r#""model": "lighter@1""#), "{report}");
        } else {
            eprintln!("SKIP: {} is not present", shipped.display());
        }
    }
}

/// Case 10: NaN or Inf anywhere in a weights file, a negative running variance, or int32 weights
/// were accepted (every frame "no lesion", Dice 0, exit 0); each is now refused with its name.
#[test]
fn bad_weight_values_are_refused_with_the_tensor_name() {
    let dir = scratch("trust-nan");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let (img, _) = train_util::disk(1, 40, 30);
    img.save(images.join("a.png")).unwrap();
    let conv = "up2.conv.double_conv.0.conv.1.weight";
    let shape = [256usize, 512, 1, 1];
    let n: usize = shape.iter().product();
    let mut nan = vec![0.01f32; n];
    nan[n / 2] = f32::NAN;
    let rv = "inc.double_conv.1.running_var";
    let cases = [
        ("nan", conv, Tensor::from_vec(nan, &shape[..], &Device::Cpu).unwrap(), "is NaN"),
        ("inf", "outc.conv.bias", Tensor::new(&[f32::INFINITY], &Device::Cpu).unwrap(), "is inf"),
        ("negvar", rv, Tensor::from_vec(vec![-1f32; 64], 64, &Device::Cpu).unwrap(), "negative"),
        ("int", "outc.conv.bias", Tensor::new(&[3u32], &Device::Cpu).unwrap(), "floating point"),
    ];
    for (label, name, value, why) in cases {
        let w = dir.join(format!("{label}.safetensors"));
        weights_with(&w, name, value);
        let r = lightunet(&["predict", "--model", "lighter@1", "--size", "32", "--weights", s(&w), "--images", s(&images), "--out", s(&dir.join(label))]);
        r.assert_clean_failure(name);
        assert!(r.stderr.contains(why), "{label}: {}", r.stderr);
        let out = dir.join(format!("{label}.mp4"));
        let r = lightunet(&["process", "phantom:160x120", "--frames", "2", "-o", s(&out), "--weights", s(&w), "--input-size", "32", "--device", "cpu"]);
        r.assert_clean_failure(name);
        assert!(!out.exists());
    }
}

/// Case 16: `check --dtype f16 --device cpu` loaded everything before failing; now the
/// combination is refused first (the fixtures folder here does not even exist).
#[test]
fn check_refuses_reduced_precision_on_the_cpu_first() {
    let r = lightunet(&["check", "--dtype", "f16", "--device", "cpu", "--fixtures", "/nonexistent/fixtures"]);
    r.assert_clean_failure("needs a CUDA device");
    assert!(!r.stderr.contains("nonexistent"), "{}", r.stderr);
    lightunet(&["check", "--device", "cpu", "--tolerance", "NaN", "--fixtures", "/nonexistent"]).assert_clean_failure("--tolerance");
}

/// Case 16: float options are validated up front, before any data is read or file written.
#[test]
fn float_options_are_validated_up_front() {
    let dir = scratch("trust-floats");
    let data = dir.join("data");
    train_util::write_dataset(&data, 2, 1, 32);
    let train = |option: &str| {
        let out = dir.join(format!("run{option}"));
        let r = lightunet(&["train", "--data", s(&data), "--model", "lighter@1", "--out", s(&out), "--size", "32", option]);
        assert!(!out.exists(), "{option}: nothing is written");
        r
    };
    train("--momentum=NaN").assert_clean_failure("momentum must be a finite number in [0, 1), got NaN");
    train("--lr=inf").assert_clean_failure("learning rate must be a finite number");
    train("--lr=-1").assert_clean_failure("learning rate");
    train("--weight-decay=NaN").assert_clean_failure("weight decay");
    let out = dir.join("o.mp4");
    for (flag, option) in [("--duration", "--duration=inf"), ("--duration", "--duration=-1"), ("--first-frame-timeout", "--first-frame-timeout=NaN")] {
        lightunet(&[&["live", "--source", "phantom", "--sink", s(&out), option][..], &FAST].concat()).assert_clean_failure(flag);
    }
    lightunet(&[&["process", "phantom", "--frames", "2", "-o", s(&out), "--threshold", "NaN"][..], &FAST].concat()).assert_clean_failure("threshold");
    lightunet(&[&["process", "phantom", "--frames", "2", "-o", s(&out), "--smooth", "inf"][..], &FAST].concat()).assert_clean_failure("--smooth");
    lightunet(&["phantom", "-o", s(&out), "--frames", "2", "--fps", "4000000000"]).assert_clean_failure("fps 4000000000 not in 1..=1000");
    assert!(!out.exists());
}

/// Case 16: the report shows the peak of resident memory (an 8K clip peaked at 4.8 GB while the
/// report said 559 MiB), in the JSON and the summary.
#[test]
fn the_report_shows_peak_memory() {
    let dir = scratch("trust-peak");
    let (out, report) = (dir.join("o.mp4"), dir.join("r.json"));
    let r = lightunet(&[&["process", "phantom:160x120", "--frames", "3", "-o", s(&out), "--report", s(&report)][..], &FAST].concat());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let peak = json["peak_rss_mb"].as_f64().expect("peak_rss_mb");
    let end = json["rss_mb"][1].as_f64().unwrap();
    assert!(peak >= end && peak > 1.0, "peak {peak}, end {end}");
    assert!(r.stderr.contains(&format!("peak {peak:.0} MiB")), "{}", r.stderr);
}

/// Case 16: logs written to a pipe or a file carry no ANSI colour codes.
#[test]
fn logs_in_a_pipe_have_no_colour_codes() {
    let child = spawn(&["info", "--model", "lighter@1"], &[("RUST_LOG", "debug")]);
    let r = finish(child, Duration::from_secs(60), "info");
    assert_eq!(r.code, Some(0));
    let dir = scratch("trust-colour");
    let out = dir.join("o.mp4");
    let child = spawn(&[&["process", "phantom:160x120", "--frames", "2", "-o", s(&out)][..], &FAST].concat(), &[("RUST_LOG", "info")]);
    let r = finish(child, Duration::from_secs(120), "process");
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("INFO"), "{}", r.stderr);
    assert!(!r.stderr.contains('\x1b'), "{:?}", r.stderr);
}

fn train_config(data: &Path) -> TrainConfig {
    let mut cfg = TrainConfig::recipe(Variant::Lighter(1), data.to_path_buf());
    cfg.size = 32;
    cfg.batch = 2;
    cfg.augment = false;
    cfg.max_steps = Some(2);
    cfg
}

/// Case 10 (training): a checkpoint with a damaged byte was resumed and trained on until every
/// tensor was NaN, and that was saved. Now the checksum refuses it on resume.
#[test]
fn a_damaged_checkpoint_is_not_resumed() {
    let dir = scratch("trust-damaged");
    train_util::write_dataset(&dir, 4, 2, 32);
    let out = dir.join("run");
    let mut t = Trainer::new(train_config(&dir), &out, Device::Cpu).unwrap();
    t.run(&AtomicBool::new(false)).unwrap();
    let path = out.join(lightunet::train::trainer::CHECKPOINT_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    // A byte in the tensor data (the end of the file is data): 0x7f makes a NaN of many floats.
    let at = bytes.len() - 1000;
    bytes[at] = 0x7f;
    bytes[at - 1] = 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = Trainer::resume(&out, Device::Cpu, |_| {}).err().expect("refused").to_string();
    assert!(err.contains("checksum mismatch"), "{err}");
    let r = lightunet(&["train", "--resume", s(&out), "--quiet"]);
    r.assert_clean_failure("checksum mismatch");
}

/// Case 10 (training): weights that turn NaN stop training with a clear error, and the last good
/// checkpoint stays as it was.
#[test]
fn training_that_diverges_stops_and_keeps_the_last_good_checkpoint() {
    let dir = scratch("trust-diverge");
    train_util::write_dataset(&dir, 4, 2, 32);
    let out = dir.join("run");
    let mut t = Trainer::new(train_config(&dir), &out, Device::Cpu).unwrap();
    t.run(&AtomicBool::new(false)).unwrap();
    let path = out.join(lightunet::train::trainer::CHECKPOINT_FILE);
    let good = std::fs::read(&path).unwrap();
    let mut t = Trainer::resume(&out, Device::Cpu, |c| c.max_steps = Some(6)).unwrap();
    {
        // Training diverged: a weight became NaN.
        let vars = t.varmap().data().lock().unwrap();
        let w = &vars["outc.conv.weight"];
        w.set(&w.as_tensor().affine(f64::NAN, 0.0).unwrap()).unwrap();
    }
    let err = t.run(&AtomicBool::new(false)).unwrap_err();
    assert!(matches!(err, lightunet::Error::NonFiniteLoss { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), good, "the last good checkpoint is kept");
    // Ctrl-C at that point would save the state: NaN is refused, the good file stays.
    let err = t.save_checkpoint().unwrap_err();
    assert!(matches!(&err, lightunet::Error::NonFiniteTensor { name } if name.contains("outc.conv.weight")), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), good);
}

/// Case 10 (training): the running statistics diverge (-inf means) while the loss stays finite:
/// training never reads them and evaluation stays finite (the ReLUs turn what they make into
/// zeros), so neither loss check fires. The end of the epoch still refuses to write them: the run
/// stops naming the tensor, and the checkpoint and the best weights stay the last good ones.
#[test]
fn diverged_running_statistics_are_never_saved() {
    let dir = scratch("trust-running-stats");
    train_util::write_dataset(&dir, 4, 2, 32);
    let out = dir.join("run");
    let mut t = Trainer::new(train_config(&dir), &out, Device::Cpu).unwrap();
    t.run(&AtomicBool::new(false)).unwrap();
    let ckpt = out.join(lightunet::train::trainer::CHECKPOINT_FILE);
    let best = out.join("best.safetensors");
    let (good_ckpt, good_best) = (std::fs::read(&ckpt).unwrap(), std::fs::read(&best).unwrap());
    let mut t = Trainer::resume(&out, Device::Cpu, |c| c.max_steps = Some(4)).unwrap();
    {
        let vars = t.varmap().data().lock().unwrap();
        for (_, v) in vars.iter().filter(|(n, _)| n.ends_with("running_mean")) {
            v.set(&v.as_tensor().affine(0.0, f64::NEG_INFINITY).unwrap()).unwrap();
        }
    }
    let err = t.run(&AtomicBool::new(false)).unwrap_err();
    assert!(matches!(&err, lightunet::Error::NonFiniteTensor { name } if name.ends_with("running_mean")), "{err}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), good_ckpt, "the last good checkpoint is kept");
    assert_eq!(std::fs::read(&best).unwrap(), good_best, "the last good best weights are kept");
}

/// Case 10 (training): one NaN pixel in a batch. The loss stays finite (ReLU and max-pooling
/// drop the NaN on the way forward) but the gradients do not: training stops before the step is
/// applied, naming the first parameter hit.
#[test]
fn a_nan_gradient_stops_before_the_step() {
    let mut cfg = TrainConfig::recipe(Variant::Lighter(1), PathBuf::new());
    cfg.size = 16;
    cfg.batch = 1;
    let mut t = Trainer::without_data(cfg, Device::Cpu).unwrap();
    let before: HashMap<String, Vec<f32>> =
        t.named_tensors().unwrap().into_iter().map(|(n, v)| (n, v.flatten_all().unwrap().to_vec1().unwrap())).collect();
    let mut images = vec![0.5f32; 3 * 16 * 16];
    images[7] = f32::NAN;
    let batch = lightunet::train::data::Batch { images, masks: vec![0.0; 16 * 16], n: 1 };
    let err = t.train_step(batch).unwrap_err();
    assert!(matches!(&err, lightunet::Error::NonFiniteGradient { step: 1, .. }), "{err}");
    assert!(err.to_string().contains("became NaN or infinite at step 1"), "{err}");
    for (n, v) in t.named_tensors().unwrap() {
        let v: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().zip(&before[&n]).all(|(a, b)| a.to_bits() == b.to_bits()), "{n} changed");
    }
}
