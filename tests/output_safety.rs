//! No choice of input and output names destroys data (issue 12, "Trust"): the binary run the way
//! a new user would. An output that is an input (by name, symbolic or hard link), two outputs on
//! one name, an output folder around the ground truth: refused before anything opens, with both
//! paths in the message, the input intact byte for byte and nothing left behind. Outputs appear
//! only when finished: a failed run leaves nothing, and of two runs racing for one output one
//! wins and the other fails cleanly. Names with spaces, non-ASCII letters, a leading dash or 200
//! characters work as inputs and outputs. Random weights at a 32x32 model input keep each run
//! to a second or two.

mod pipeline_support;
mod train_util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use lightunet::model::{UNet, Variant};
use pipeline_support::{decode, read_jsonl, scratch};

const FAST: [&str; 6] = ["--weights", "random", "--input-size", "32", "--device", "cpu"];

fn lightunet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lightunet")).args(args).env("RUST_LOG", "warn").output().expect("runs")
}

fn process(args: &[&str]) -> Output {
    lightunet(&[&["process"][..], args, &FAST].concat())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Fails with a message holding every one of `needles`, without a panic.
fn refused(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "should fail: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected `{n}` in: {err}");
    }
}

/// Every name in `dir`, hidden ones included, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn phantom_clip(path: &Path, frames: u32) {
    let o = lightunet(&["phantom", "-o", s(path), "--frames", &frames.to_string(), "--size", "160x120"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn an_output_that_is_the_input_is_refused_even_with_overwrite() {
    let dir = scratch("safety-same");
    let clip = dir.join("clip.mp4");
    phantom_clip(&clip, 3);
    let bytes = std::fs::read(&clip).unwrap();
    let out = dir.join("out.mp4");
    let c = s(&clip);
    for (args, role) in [
        (vec!["-o", c], "video output"),
        (vec!["-o", s(&out), "--masks", c], "masks output"),
        (vec!["-o", s(&out), "--metadata", c], "metadata output"),
        (vec!["-o", s(&out), "--report", c], "report"),
    ] {
        let o = process(&[&[c, "--overwrite"][..], &args].concat());
        refused(&o, &[role, "same file as the input", "clip.mp4", "never"]);
        assert_eq!(std::fs::read(&clip).unwrap(), bytes, "{role}: the input survives byte for byte");
        assert_eq!(listing(&dir), ["clip.mp4"], "{role}: nothing left behind");
    }
    // `./` and `..` spellings are the same file too.
    let other = dir.join("sub");
    std::fs::create_dir(&other).unwrap();
    let roundabout = other.join("..").join(".").join("clip.mp4");
    let o = process(&[c, "-o", s(&roundabout), "--overwrite"]);
    refused(&o, &["same file as the input"]);
    assert_eq!(std::fs::read(&clip).unwrap(), bytes);
}

#[test]
fn links_to_the_input_are_refused() {
    let dir = scratch("safety-links");
    let clip = dir.join("clip.mkv");
    phantom_clip(&clip, 3);
    let bytes = std::fs::read(&clip).unwrap();
    let link = dir.join("link.mkv");
    std::os::unix::fs::symlink(&clip, &link).unwrap();
    let o = process(&[s(&clip), "-o", s(&link), "--overwrite"]);
    refused(&o, &["same file as the input", "link.mkv", "clip.mkv", "symbolic link"]);
    assert_eq!(std::fs::read(&clip).unwrap(), bytes);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link is untouched");
    // Reading through the link and writing to the real name is the same file as well.
    let o = process(&[s(&link), "-o", s(&clip), "--overwrite"]);
    refused(&o, &["same file as the input"]);
    assert_eq!(std::fs::read(&clip).unwrap(), bytes);

    let hard = dir.join("hard.mkv");
    std::fs::hard_link(&clip, &hard).unwrap();
    let o = process(&[s(&clip), "-o", s(&hard), "--overwrite"]);
    refused(&o, &["same file as the input", "hard.mkv", "hard link"]);
    let o = process(&[s(&clip), "-o", s(&dir.join("out.mkv")), "--metadata", s(&hard), "--overwrite"]);
    refused(&o, &["metadata output", "hard link"]);
    assert_eq!(std::fs::read(&clip).unwrap(), bytes);
    assert_eq!(std::fs::read(&hard).unwrap(), bytes);
    assert_eq!(listing(&dir), ["clip.mkv", "hard.mkv", "link.mkv"]);
}

#[test]
fn two_outputs_on_one_name_are_refused() {
    let dir = scratch("safety-two");
    let o_mp4 = dir.join("o.mp4");
    let m_json = dir.join("m.json");
    for args in [
        vec!["-o", s(&o_mp4), "--masks", s(&o_mp4)],
        vec!["-o", s(&o_mp4), "--metadata", s(&o_mp4)],
        vec!["-o", s(&o_mp4), "--metadata", s(&m_json), "--report", s(&m_json)],
    ] {
        let o = process(&[&["phantom:160x120@25", "--frames", "2"][..], &args].concat());
        refused(&o, &["is the same file as the", "two outputs cannot share a file"]);
        assert!(listing(&dir).is_empty(), "{args:?}: nothing written");
    }
    // Two sequences whose names can coincide, and a file among a sequence's names.
    let o = process(&["phantom:160x120@25", "--frames", "2", "-o", s(&dir.join("f_%05d.png")), "--masks", s(&dir.join("f_%d.png"))]);
    refused(&o, &["can produce the same file names"]);
    let o = process(&["phantom:160x120@25", "--frames", "2", "-o", s(&dir.join("f_%05d.png")), "--report", s(&dir.join("f_00001.png"))]);
    refused(&o, &["would write", "f_00001.png"]);
    // The phantom writer and bench pipeline check their outputs the same way.
    let o = lightunet(&["phantom", "-o", s(&o_mp4), "--masks", s(&o_mp4), "--frames", "2", "--size", "160x120"]);
    refused(&o, &["same file as the video output"]);
    let o = lightunet(&[&["bench", "pipeline", "--frames", "2", "--report", s(&m_json), "--plot", s(&m_json)][..], &FAST].concat());
    refused(&o, &["the plot", "same file as the report"]);
    assert!(listing(&dir).is_empty());
}

#[test]
fn outputs_appear_whole_and_only_at_the_end() {
    let dir = scratch("safety-whole");
    let out = dir.join("out.mp4");
    let (masks, meta, report) = (dir.join("m_%03d.png"), dir.join("frames.jsonl"), dir.join("r.json"));
    let o = process(&["phantom:160x120@25", "--frames", "4", "-o", s(&out), "--masks", s(&masks), "--metadata", s(&meta), "--report", s(&report)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(decode(&out).unwrap().frames.len(), 4);
    assert_eq!(read_jsonl(&meta).len(), 4);
    assert!(serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&report).unwrap()).is_ok());
    // No temporary file or folder is left; the files have the usual permissions.
    assert_eq!(listing(&dir), ["frames.jsonl", "m_000.png", "m_001.png", "m_002.png", "m_003.png", "out.mp4", "r.json"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_ne!(mode & 0o044, 0, "readable by others as a plain File::create makes it (mode {mode:o})");
    // Without --overwrite a rerun is refused and changes nothing; the sequence's first file is enough.
    let before = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(&meta).unwrap();
    std::fs::remove_file(&report).unwrap();
    let o = process(&["phantom:160x120@25", "--frames", "2", "-o", s(&out), "--masks", s(&masks)]);
    refused(&o, &["masks output", "m_000.png", "already exists"]);
    assert!(!out.exists());
    drop(before);
}

#[test]
fn a_failed_run_leaves_nothing_and_does_not_block_a_rerun() {
    let dir = scratch("safety-failed");
    let text = dir.join("notes.mp4");
    std::fs::write(&text, "this is not a video\n".repeat(100)).unwrap();
    let (out, meta, report) = (dir.join("out.mp4"), dir.join("m.jsonl"), dir.join("r.json"));
    let o = process(&[s(&text), "-o", s(&out), "--metadata", s(&meta), "--report", s(&report)]);
    refused(&o, &["no video frame could be decoded"]);
    assert_eq!(listing(&dir), ["notes.mp4"], "no 0-byte metadata, video or report");
    // Frames too small for the encoder: an error, and no 0-byte video.
    let o = process(&["phantom:2x2@25", "--frames", "2", "-o", s(&out), "--metadata", s(&meta)]);
    if !o.status.success() {
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        assert_eq!(listing(&dir), ["notes.mp4"], "{}", stderr(&o));
    } else {
        assert!(decode(&out).is_ok(), "when 2x2 encodes, the file plays");
        std::fs::remove_file(&out).unwrap();
        std::fs::remove_file(&meta).unwrap();
    }
    // Nothing blocks the rerun.
    let o = process(&["phantom:160x120@25", "--frames", "2", "-o", s(&out), "--metadata", s(&meta), "--report", s(&report)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(listing(&dir), ["m.jsonl", "notes.mp4", "out.mp4", "r.json"]);
}

#[test]
fn locations_are_checked_before_the_run() {
    let dir = scratch("safety-where");
    let out = dir.join("out.mp4");
    let o = process(&["phantom:160x120@25", "--frames", "2", "-o", s(&out), "--report", s(&dir.join("missing/r.json"))]);
    refused(&o, &["report", "missing", "does not exist"]);
    assert!(!stderr(&o).contains("frames in"), "refused before the run: {}", stderr(&o));
    let o = process(&["phantom:160x120@25", "--frames", "2", "-o", s(&out), "--report", s(&dir)]);
    refused(&o, &["is a folder"]);
    let o = process(&["phantom:160x120@25", "--frames", "0", "-o", s(&out)]);
    refused(&o, &["--frames 0"]);
    let o = lightunet(&["live", "--source", "phantom:160x120@25", "--sink", s(&out), "--frames", "0", "--weights", "random"]);
    refused(&o, &["--frames 0"]);
    let o = lightunet(&["process", "phantom:160x120@25", "--frames", "2", "-o", s(&out), "--weights", s(&dir)]);
    refused(&o, &["--weights", "is a folder"]);
    assert!(listing(&dir).is_empty());
    // The read-only folder case (skipped as root, who may write anywhere).
    let ro = dir.join("ro");
    std::fs::create_dir(&ro).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), b"").is_err() {
        let o = process(&["phantom:160x120@25", "--frames", "2", "-o", s(&out), "--metadata", s(&ro.join("m.jsonl"))]);
        refused(&o, &["cannot write in the folder"]);
        assert!(!out.exists());
    }
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn two_runs_racing_for_one_output_one_wins_the_other_fails_cleanly() {
    let dir = scratch("safety-race");
    let out = dir.join("out.mp4");
    let meta = dir.join("m.jsonl");
    let spawn = |seed: &str| {
        Command::new(env!("CARGO_BIN_EXE_lightunet"))
            .arg("process")
            .arg(format!("phantom:160x120@25,seed={seed}"))
            .args(["--frames", "12", "-o", s(&out), "--metadata", s(&meta)])
            .args(FAST)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("1"), spawn("2"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let wins = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(wins, 1, "exactly one run wins:\n{}\n{}", stderr(&a), stderr(&b));
    let loser = if a.status.success() { &b } else { &a };
    let err = stderr(loser);
    assert!(err.contains("appeared while this run was writing it") || err.contains("already exists"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The winner's files are whole and consistent with each other; the loser left nothing.
    assert_eq!(decode(&out).unwrap().frames.len(), 12);
    assert_eq!(read_jsonl(&meta).len(), 12);
    assert_eq!(listing(&dir), ["m.jsonl", "out.mp4"]);
}

#[test]
fn any_file_name_works_as_input_and_output() {
    let dir = scratch("safety-names");
    let long = format!("{}.mkv", "l".repeat(200));
    for (input, output) in [
        ("my clip é.mkv", "out put ü.mp4"),
        ("-dash.mkv", "-out.mp4"),
        ("日本語 ! x.mkv", "a b=c.mkv"),
        (long.as_str(), "short.mkv"),
        ("fakesink", "videotestsrc.mkv"),
    ] {
        let (inp, out) = (dir.join(input), dir.join(output));
        // Written with an extension (the phantom picks its encoder by it), then named as wanted.
        phantom_clip(&dir.join("made.mkv"), 2);
        std::fs::rename(dir.join("made.mkv"), &inp).unwrap();
        // A name after `--` and an option value given with `=` may start with a dash.
        let o = lightunet(&[&["process", &format!("--output={}", s(&out))][..], &FAST, &["--", s(&inp)]].concat());
        assert!(o.status.success(), "{input} -> {output}: {}", stderr(&o));
        assert_eq!(decode(&out).unwrap().frames.len(), 2, "{output}");
        std::fs::remove_file(&out).unwrap();
    }
    // Relative names that start with a dash, from inside the folder.
    let o = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .current_dir(&dir)
        .args(["process", "--output=-rel.mp4"])
        .args(FAST)
        .args(["--", "-dash.mkv"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.join("-rel.mp4").is_file());
    // live: a source file and a sink file with spaces are files, not pipeline descriptions.
    let (inp, out) = (dir.join("my clip é.mkv"), dir.join("live out.mkv"));
    let o = lightunet(&[&["live", "--source", s(&inp), "--sink", s(&out), "--stall-timeout", "2"][..], &FAST].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!decode(&out).unwrap().frames.is_empty());
    // A name that is not UTF-8: as an output it works (GStreamer writes the temporary name, which
    // is UTF-8, and the rename gives the real one); as an input too (read through a link with a
    // UTF-8 name in a private folder, removed afterwards), into an output of such a name.
    use std::os::unix::ffi::OsStrExt;
    let bad = dir.join(std::ffi::OsStr::from_bytes(b"bad\xff.mp4"));
    let o = Command::new(env!("CARGO_BIN_EXE_lightunet")).args(["process", "--frames", "2", "phantom:160x120@25", "-o"]).arg(&bad).args(FAST).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let copy = dir.join("bad-copy.mp4");
    std::fs::copy(&bad, &copy).unwrap();
    assert_eq!(decode(&copy).unwrap().frames.len(), 2);
    std::fs::remove_file(&copy).unwrap();
    let bad_out = dir.join(std::ffi::OsStr::from_bytes(b"out\xfe.mkv"));
    let o = Command::new(env!("CARGO_BIN_EXE_lightunet")).arg("process").arg(&bad).arg("-o").arg(&bad_out).args(FAST).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::copy(&bad_out, &copy).unwrap();
    assert_eq!(decode(&copy).unwrap().frames.len(), 2, "every frame of the input");
    std::fs::remove_file(&copy).unwrap();
    // ...and the same file as input and output is still refused under such a name.
    let o = Command::new(env!("CARGO_BIN_EXE_lightunet")).arg("process").arg(&bad).arg("-o").arg(&bad).arg("--overwrite").args(FAST).output().unwrap();
    refused(&o, &["same file"]);
    // A missing file with a space is reported as a missing file.
    let o = process(&["no such clip.mp4", "-o", s(&dir.join("x.mp4"))]);
    refused(&o, &["does not exist"]);
}

fn random_weights(path: &Path) {
    let vm = VarMap::new();
    UNet::new(Variant::Lighter(1), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    vm.save(path).unwrap();
}

fn predict(images: &Path, masks: Option<&Path>, weights: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lightunet"));
    c.args(["predict", "--model", "lighter@1", "--size", "32", "--images", s(images), "--weights", s(weights), "--out", s(out)]);
    if let Some(m) = masks {
        c.args(["--masks", s(m)]);
    }
    c.args(extra).env("RUST_LOG", "warn").output().unwrap()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn predict_never_writes_over_the_ground_truth() {
    let dir = scratch("safety-predict");
    let (images, masks) = (dir.join("images"), dir.join("masks"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    for i in 0..2 {
        let (g, m) = train_util::disk(i, 40, 30);
        g.save(images.join(format!("{i}.png"))).unwrap();
        m.save(masks.join(format!("{i}.png"))).unwrap();
    }
    std::fs::write(images.join("broken.png"), b"not a png").unwrap();
    let weights = dir.join("w.safetensors");
    random_weights(&weights);
    let before = snapshot(&dir);
    for (out, relation) in [(dir.clone(), "contains the --images"), (masks.clone(), "is the --masks"), (images.join("out"), "lies inside the --images")] {
        let o = predict(&images, Some(&masks), &weights, &out, &[]);
        refused(&o, &["--out", relation, "--overwrite never allows this"]);
        assert_eq!(snapshot(&dir), before, "{}: nothing changed", out.display());
    }
    // Weights given as their folder.
    let o = predict(&images, Some(&masks), &dir, &dir.join("out"), &[]);
    refused(&o, &["--weights", "is a folder"]);
    // A good run: the count says what was written; a rerun needs --overwrite.
    let out = dir.join("out");
    let o = predict(&images, Some(&masks), &weights, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("wrote 2 masks") && stdout.contains("1 unreadable images skipped"), "{stdout}");
    assert_eq!(listing(&dir), ["images", "masks", "out", "w.safetensors"], "no temporary folder left");
    assert_eq!(listing(&out.join("masks")), ["0.png", "1.png"]);
    let first = snapshot(&out);
    let o = predict(&images, Some(&masks), &weights, &out, &[]);
    refused(&o, &["already holds", "--overwrite"]);
    assert_eq!(snapshot(&out), first);
    let o = predict(&images, Some(&masks), &weights, &out, &["--overwrite", "--no-overlays"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(listing(&out), ["masks", "metrics.csv", "metrics.json", "overlays"]);
    assert_eq!(snapshot(&images), before.iter().filter(|(p, _)| p.starts_with(&images)).cloned().collect::<Vec<_>>());
}

#[test]
fn convert_and_train_keep_their_inputs() {
    let dir = scratch("safety-convert-train");
    let pth = dir.join("model.pth");
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch/lighter_at1.state-dict-f16.pth"), &pth).unwrap();
    let bytes = std::fs::read(&pth).unwrap();
    let o = lightunet(&["convert", s(&pth), s(&pth), "--overwrite"]);
    refused(&o, &["same file as the input", "never"]);
    let link = dir.join("link.safetensors");
    std::os::unix::fs::symlink(&pth, &link).unwrap();
    let o = lightunet(&["convert", s(&pth), s(&link), "--overwrite"]);
    refused(&o, &["symbolic link"]);
    assert_eq!(std::fs::read(&pth).unwrap(), bytes);
    let o = lightunet(&["convert", s(&dir), s(&dir.join("x.safetensors"))]);
    refused(&o, &["is a folder"]);
    assert_eq!(listing(&dir), ["link.safetensors", "model.pth"]);

    let data = dir.join("data");
    train_util::write_dataset(&data, 2, 1, 32);
    let before = snapshot(&data);
    let train = |extra: &[&str]| lightunet(&[&["train", "--data", s(&data)][..], extra].concat());
    let o = train(&["--model", "lighter@1", "--out", s(&data), "--max-steps", "1"]);
    refused(&o, &["--out", "contains the data folder", "train/images"]);
    let o = train(&["--model", "lighter@1", "--out", s(&data.join("train/mask")), "--max-steps", "1"]);
    refused(&o, &["--out", "is the data folder"]);
    let o = train(&["--model", "lighter@1", "--out", s(&data.join("val/images/run")), "--max-steps", "1"]);
    refused(&o, &["--out", "lies inside the data folder"]);
    let o = train(&["--write-resized", s(&data)]);
    refused(&o, &["--write-resized", "contains the data folder"]);
    let o = train(&["--model", "lighter@1", "--out", s(&dir.join("run")), "--init", s(&dir)]);
    refused(&o, &["--init", "is a folder"]);
    assert_eq!(snapshot(&data), before, "the data set is untouched");
    // --write-resized: written whole, and never into a folder that already holds splits.
    let small = dir.join("small");
    let o = train(&["--write-resized", s(&small), "--size", "16"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(listing(&small), ["train", "val"]);
    assert_eq!(listing(&dir), ["data", "link.safetensors", "model.pth", "small"]);
    let o = train(&["--write-resized", s(&small), "--size", "16"]);
    refused(&o, &["already holds", "new or empty folder"]);
}

#[test]
fn a_second_interrupt_leaves_no_temporary_files() {
    let dir = scratch("safety-interrupt");
    let (out, meta, masks) = (dir.join("out.mp4"), dir.join("m.jsonl"), dir.join("m_%05d.png"));
    let child = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args(["process", "phantom:160x120@25", "--frames", "100000", "-o", s(&out), "--metadata", s(&meta), "--masks", s(&masks)])
        .args(FAST)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Writing is under way: the temporary files exist.
    let t = std::time::Instant::now();
    while !listing(&dir).iter().any(|n| n.contains(".lightunet-")) && t.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(listing(&dir).iter().any(|n| n.contains(".lightunet-")), "{:?}", listing(&dir));
    // Two signals sent back to back can merge into one: a short pause between them.
    for _ in 0..2 {
        let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        assert!(kill.success());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!o.status.success(), "an interrupted run is not a success: {err}");
    // Whatever the timing (the second signal before, during or after the final moves, which it
    // waits for; the run may also stop on its own error once its temporaries are gone): no
    // temporary file, and either nothing or every output whole.
    let names = listing(&dir);
    assert!(names.iter().all(|n| !n.contains(".lightunet-")), "{names:?} {err}");
    assert!(names.is_empty() || (decode(&out).is_ok() && meta.exists() && names.iter().any(|n| n.starts_with("m_"))), "{names:?} {:?} {err}", o.status);
}

/// `live --record` (and `bench pipeline --record`) follows the same rules: never an input (by
/// name, symbolic or hard link) or another output, even with --overwrite; an existing file only
/// with --overwrite. It is written under its own name, not staged (a crash must leave it where
/// the user looks), so a refused run leaves nothing and an existing FIFO is written in place:
/// not replaced, not removed.
#[test]
fn live_recordings_follow_the_output_rules() {
    let dir = scratch("safety-record");
    let clip = dir.join("clip.mkv");
    phantom_clip(&clip, 3);
    let bytes = std::fs::read(&clip).unwrap();
    let link = dir.join("link.mkv");
    std::os::unix::fs::symlink(&clip, &link).unwrap();
    let hard = dir.join("hard.mkv");
    std::fs::hard_link(&clip, &hard).unwrap();
    // `--sink` defaults to fakesink here unless a case gives its own.
    let live = |args: &[&str]| {
        let sink: &[&str] = if args.contains(&"--sink") { &[] } else { &["--sink", "fakesink"] };
        lightunet(&[&["live"][..], sink, args, &FAST].concat())
    };
    for (record, why) in [(&clip, "same file as the input"), (&link, "symbolic link"), (&hard, "hard link")] {
        let o = live(&["--source", s(&clip), "--record", s(record), "--overwrite"]);
        refused(&o, &["recording", why]);
    }
    assert_eq!(std::fs::read(&clip).unwrap(), bytes);
    assert_eq!(listing(&dir), ["clip.mkv", "hard.mkv", "link.mkv"]);

    let (rec, meta) = (dir.join("rec.mkv"), dir.join("frames.jsonl"));
    let phantom = ["--source", "phantom:160x120@25", "--frames", "10"];
    for clash in [
        vec!["--sink", s(&rec)],
        vec!["--metadata", s(&rec)],
        vec!["--report", s(&rec)],
        vec!["--masks", s(&rec)],
    ] {
        let o = live(&[&phantom[..], &["--record", s(&rec), "--overwrite"], &clash].concat());
        refused(&o, &["recording", "two outputs cannot share a file"]);
        assert!(!rec.exists(), "{clash:?}: nothing written");
    }
    let o = lightunet(&[&["bench", "pipeline", "--mode", "live", "--frames", "2", "--record", s(&rec), "--report", s(&rec)][..], &FAST].concat());
    refused(&o, &["recording", "two outputs cannot share a file"]);
    // `process` has no recording: its output file is the recording.
    let o = lightunet(&[&["process", "phantom:160x120@25", "--frames", "2", "-o", s(&dir.join("o.mp4")), "--record", s(&rec)][..], &FAST].concat());
    assert!(!o.status.success() && !rec.exists(), "{}", stderr(&o));

    // With --overwrite an existing recording is replaced by the new one.
    std::fs::write(&rec, b"an old recording").unwrap();
    let o = live(&[&phantom[..], &["--record", s(&rec), "--metadata", s(&meta), "--overwrite"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(decode(&rec).unwrap().frames.len() >= 2);
    assert_eq!(read_jsonl(&meta).len(), 10);

    // An existing FIFO is a stream: written in place without --overwrite, and still a FIFO.
    let fifo = dir.join("pipe.mkv");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIP (FIFO part): mkfifo failed");
        return;
    }
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let o = live(&[&phantom[..], &["--record", s(&fifo)]].concat());
    if !o.status.success() {
        // The reader waits for a writer: let it go before failing.
        drop(std::fs::OpenOptions::new().write(true).open(&fifo));
        panic!("{}", stderr(&o));
    }
    let streamed = reader.join().unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO is still there");
    let copy = dir.join("streamed.mkv");
    std::fs::write(&copy, &streamed).unwrap();
    assert!(decode(&copy).unwrap().frames.len() >= 2, "{} bytes through the FIFO", streamed.len());
}
