//! Bounded fuzzing of every file a user hands the tool: mutated `.pth` checkpoints (the zip, its
//! pickle, its storages), mutated safetensors weights (header and data) and mutated video into
//! `convert`, weight loading, `predict` and `process`. Whatever the bytes, the answer is a clean
//! error or a result: never a panic, an abort or a hang.
//!
//! Deterministic: every case comes from a fixed seed (a failure names the seed and case to
//! reproduce). In-process cases run under `catch_unwind` (an abort would end the test binary,
//! which fails it too); the binary runs under a timeout, so a hang fails instead of hanging CI.
//! Sized to take well under a minute on 2 cores.

mod pipeline_support;

use std::collections::HashMap;
use std::io::{Cursor, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use candle_core::Device;
use lightunet::checkpoint::{self, read_pth};
use lightunet::model::InferenceNet;
use pipeline_support::cli::{finish, spawn};
use pipeline_support::scratch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(rel)).unwrap()
}

/// A few random edits of `bytes` within `range` (bit flips, special bytes, random runs, a
/// truncation, an inserted chunk).
fn mutate(rng: &mut ChaCha8Rng, bytes: &[u8], range: std::ops::Range<usize>) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        // The range as it stands after earlier edits (a truncation shortens it).
        let (lo, hi) = (range.start.min(b.len()), range.end.min(b.len()));
        if lo >= hi {
            break;
        }
        let at = rng.random_range(lo..hi);
        match rng.random_range(0..6) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => b[at] = [0x00, 0xff, 0x7f, 0x80, b'9', b'{'][rng.random_range(0..6)],
            2 => {
                let end = (at + rng.random_range(1..64)).min(b.len());
                rng.fill(&mut b[at..end]);
            }
            3 => b.truncate(at),
            4 => {
                let chunk: Vec<u8> = (0..rng.random_range(1..32)).map(|_| rng.random()).collect();
                b.splice(at..at, chunk);
            }
            _ => {
                // A run of the same byte: lengths, counts and offsets that read as huge numbers.
                let end = (at + rng.random_range(1..9)).min(b.len());
                b[at..end].fill(if rng.random() { 0xff } else { 0x7f });
            }
        }
    }
    b
}

fn members(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(Cursor::new(archive)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (entry.name().unwrap().to_string(), data)
        })
        .collect()
}

/// An archive of `members` with valid CRCs, so that a mutation gets past the zip layer.
fn zip_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in members {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// What `convert` does with a file, in process: read, detect, build the network.
fn convert_in_process(path: &Path) -> Result<(), String> {
    let tensors = read_pth(path).map_err(|e| e.to_string())?;
    let variant = checkpoint::detect_variant(&checkpoint::shapes(&tensors)).map_err(|e| e.to_string())?;
    let map: HashMap<_, _> = tensors.into_iter().collect();
    InferenceNet::from_tensors(map, variant, &Device::Cpu).map(|_| ()).map_err(|e| e.to_string())
}

/// The kind of an error, for the summary the tests print: its text up to the first detail
/// (paths and numbers vary from case to case).
fn kind(error: &str) -> String {
    let tail = error.rsplit(": ").next().unwrap_or(error);
    tail.chars().take_while(|c| !c.is_ascii_digit() && *c != '`' && *c != '(').collect::<String>().trim().to_string()
}

/// Runs `case` and turns a panic into a failure that names the case.
fn no_panic<T>(what: &str, case: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(case)) {
        Ok(v) => v,
        Err(payload) => {
            let msg = payload.downcast_ref::<String>().cloned().or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("{what}: panicked: {}", msg.unwrap_or_default())
        }
    }
}

/// Runs the binary with a timeout; it must exit 0, 1 (a clean error) or 3 (`process` finished
/// but input frames were lost, and says so), never by a signal (abort, segfault), a panic's 101
/// or a hang.
fn binary_is_clean(args: &[&str], what: &str) {
    let run = finish(spawn(args, &[("RUST_LOG", "error")]), Duration::from_secs(60), &format!("{what}: lightunet {}", args.join(" ")));
    let (status, stderr) = (run.code, run.stderr);
    assert!(matches!(status, Some(0 | 1 | 3)), "{what}: exit {status:?}: lightunet {}\n{stderr}", args.join(" "));
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    if status == Some(1) {
        assert!(stderr.contains("error: "), "{what}: a failure says why: {stderr}");
    }
    if status == Some(3) {
        assert!(stderr.contains("frames lost") && stderr.contains("--accept-loss"), "{what}: a loss says how many: {stderr}");
    }
}

/// Mutated `.pth` files: the raw archive (the zip layer must refuse), and members mutated behind
/// valid CRCs (the pickle, a storage, the byte order), each read and built as `convert` does.
#[test]
fn mutated_checkpoints_fail_cleanly() {
    let dir = scratch("fuzz-pth");
    let mut rng = ChaCha8Rng::seed_from_u64(0x7074_6831);
    let mut outcomes = [0usize; 2];
    let mut kinds = std::collections::BTreeMap::new();
    for file in ["torch/lighter_at1.state-dict-f16.pth", "torch/lighter_at1.whole-model.pth"] {
        let archive = fixture(file);
        let parts = members(&archive);
        for case in 0..40 {
            let bytes = match case % 4 {
                0 => mutate(&mut rng, &archive, 0..archive.len()),
                target => {
                    let pick = |name: &str| match target {
                        1 => name.ends_with("data.pkl"),
                        2 => name.contains("/data/"),
                        _ => name.ends_with("byteorder") || name.ends_with("version"),
                    };
                    let candidates: Vec<usize> = (0..parts.len()).filter(|&i| pick(&parts[i].0)).collect();
                    assert!(!candidates.is_empty(), "{file}: no member for target {target}");
                    let i = candidates[rng.random_range(0..candidates.len())];
                    let mut rebuilt = parts.clone();
                    let data = &parts[i].1;
                    rebuilt[i].1 = mutate(&mut rng, data, 0..data.len());
                    zip_of(&rebuilt)
                }
            };
            let path = dir.join(format!("case{case}.pth"));
            std::fs::write(&path, &bytes).unwrap();
            let what = format!("{file} case {case}");
            let result = no_panic(&what, || convert_in_process(&path));
            outcomes[usize::from(result.is_ok())] += 1;
            if let Err(e) = result {
                assert!(!e.is_empty(), "{what}: an empty error");
                *kinds.entry(kind(&e)).or_insert(0usize) += 1;
            }
            if case % 10 == 3 {
                binary_is_clean(&["convert", s(&path), s(&dir.join(format!("case{case}.safetensors"))), "--overwrite"], &what);
            }
        }
    }
    eprintln!("mutated .pth: {} refused, {} converted; refusals by kind: {kinds:#?}", outcomes[0], outcomes[1]);
    assert!(outcomes[0] > 0, "the mutations must reach the checks");
}

/// Mutated safetensors weights, header and data, into `InferenceNet::load` and `predict`.
#[test]
fn mutated_safetensors_fail_cleanly() {
    let dir = scratch("fuzz-safetensors");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    image::GrayImage::from_fn(40, 30, |x, y| image::Luma([((x * 7 + y * 3) % 256) as u8])).save(images.join("a.png")).unwrap();
    let weights = fixture("parity/lighter_at1.weights.safetensors");
    let header_end = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(0x5afe_7e45);
    let mut outcomes = [0usize; 2];
    let mut kinds = std::collections::BTreeMap::new();
    for case in 0..48 {
        // Mostly the header (names, dtypes, shapes, offsets), sometimes the length prefix or data.
        let range = match case % 4 {
            0 => 0..8,
            1 | 2 => 8..header_end,
            _ => header_end..weights.len(),
        };
        let bytes = mutate(&mut rng, &weights, range);
        let path = dir.join(format!("case{case}.safetensors"));
        std::fs::write(&path, &bytes).unwrap();
        let what = format!("safetensors case {case}");
        let result = no_panic(&what, || InferenceNet::load(&path, "lighter@1".parse().unwrap(), &Device::Cpu));
        outcomes[usize::from(result.is_ok())] += 1;
        if let Err(e) = &result {
            *kinds.entry(kind(&e.to_string())).or_insert(0usize) += 1;
        }
        if case % 12 == 5 {
            let out = dir.join(format!("out{case}"));
            binary_is_clean(&["predict", "--model", "lighter@1", "--size", "32", "--weights", s(&path), "--images", s(&images), "--out", s(&out)], &what);
        }
    }
    eprintln!("mutated safetensors: {} refused, {} loaded; refusals by kind: {kinds:#?}", outcomes[0], outcomes[1]);
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}: both outcomes are exercised");
}

/// Mutated video (Matroska and MP4) into `process`.
#[test]
fn mutated_video_fails_cleanly_or_processes() {
    let dir = scratch("fuzz-video");
    let mut rng = ChaCha8Rng::seed_from_u64(0x0076_6964);
    for ext in ["mkv", "mp4"] {
        let clip = dir.join(format!("clip.{ext}"));
        let o = Command::new(env!("CARGO_BIN_EXE_lightunet"))
            .args(["phantom", "-o", s(&clip), "--frames", "8", "--size", "96x64"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let video = std::fs::read(&clip).unwrap();
        for case in 0..4 {
            // The first kilobytes hold the container's headers, the rest the frames.
            let range = if case % 2 == 0 { 0..video.len().min(2048) } else { 0..video.len() };
            let bytes = mutate(&mut rng, &video, range);
            let input = dir.join(format!("case{case}.{ext}"));
            std::fs::write(&input, &bytes).unwrap();
            let out = dir.join(format!("out{case}{ext}.mkv"));
            let args = ["process", s(&input), "-o", s(&out), "--weights", "random", "--input-size", "32", "--device", "cpu", "--overwrite"];
            binary_is_clean(&args, &format!("{ext} case {case}"));
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
