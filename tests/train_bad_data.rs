//! Bad training data gets one clear error before any training starts (all problems listed),
//! except non-binary masks, which are binarised at > 127 with a warning. Also the `train` CLI
//! end to end: a short run, its resume, and the error chain on bad data.

mod train_util;

use std::path::Path;
use std::process::Command;

use lightunet::train::data::Dataset;
use train_util::{temp_dir, write_dataset, write_split};

fn load(root: &Path) -> Result<Dataset, String> {
    Dataset::load(&root.join("train/images"), &root.join("train/mask"), 32).map_err(|e| e.to_string())
}

#[test]
fn empty_folders() {
    let root = temp_dir("bad-empty");
    std::fs::create_dir_all(root.join("train/images")).unwrap();
    std::fs::create_dir_all(root.join("train/mask")).unwrap();
    let err = load(&root).unwrap_err();
    assert!(err.contains("no images"), "{err}");
    let err = Dataset::load(&root.join("nope/images"), &root.join("nope/mask"), 32).unwrap_err().to_string();
    assert!(err.contains("not a folder"), "{err}");
}

#[test]
fn unreadable_image_and_unmatched_names_are_all_listed() {
    let root = temp_dir("bad-unreadable");
    write_split(&root, "train", 3, 32, 1);
    std::fs::write(root.join("train/images/s1.png"), b"garbage").unwrap();
    let err = load(&root).unwrap_err();
    assert!(err.contains("s1.png") && err.contains("cannot decode"), "{err}");

    std::fs::remove_file(root.join("train/mask/s2.png")).unwrap();
    image::GrayImage::new(32, 32).save(root.join("train/mask/extra.png")).unwrap();
    let err = load(&root).unwrap_err();
    assert!(err.contains("images without a mask") && err.contains("s2.png"), "{err}");
    assert!(err.contains("masks without an image") && err.contains("extra.png"), "{err}");
}

#[test]
fn size_mismatch_is_refused() {
    let root = temp_dir("bad-size");
    write_split(&root, "train", 2, 32, 1);
    image::GrayImage::new(20, 32).save(root.join("train/mask/s0.png")).unwrap();
    let err = load(&root).unwrap_err();
    assert!(err.contains("mask is 20x32 but the image") && err.contains("32x32"), "{err}");
}

#[test]
fn non_binary_masks_are_binarised_with_a_warning() {
    let root = temp_dir("bad-nonbinary");
    write_split(&root, "train", 2, 32, 1);
    let soft = image::GrayImage::from_fn(32, 32, |x, _| image::Luma([(x * 8) as u8]));
    soft.save(root.join("train/mask/s0.png")).unwrap();
    let d = load(&root).unwrap();
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    assert!(d.warnings[0].contains("s0"), "{:?}", d.warnings);
    let s0 = d.samples.iter().find(|s| s.name == "s0").unwrap();
    assert!(s0.mask.iter().all(|&v| v <= 1));
    // x * 8 > 127 from x = 16: the right half is lesion.
    assert_eq!(s0.mask[0], 0);
    assert_eq!(s0.mask[31], 1);
}

fn lightunet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lightunet")).args(args).output().unwrap()
}

#[test]
fn cli_train_resume_and_bad_data() {
    let root = temp_dir("cli-train");
    write_dataset(&root, 4, 2, 32);
    let data = root.to_str().unwrap().to_string();
    let run = root.join("run");
    let run_s = run.to_str().unwrap().to_string();
    let common = ["--model", "lighter@1", "--size", "32", "--batch", "2", "--quiet", "--seed", "3"];
    let mut args = vec!["train", "--data", &data, "--out", &run_s, "--max-steps", "3"];
    args.extend(common);
    let out = lightunet(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("--resume"), "{stdout}");
    assert!(run.join("checkpoint.safetensors").is_file());
    assert!(run.join("best.safetensors").is_file(), "epoch 1 (2 steps) should have finished");

    let out = lightunet(&["train", "--resume", &run_s, "--max-steps", "4", "--quiet"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");

    // predict picks the variant and size from config.json next to the weights.
    let pred = root.join("pred");
    let out = lightunet(&[
        "predict",
        "--weights",
        run.join("best.safetensors").to_str().unwrap(),
        "--images",
        root.join("val/images").to_str().unwrap(),
        "--masks",
        root.join("val/mask").to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(pred.join("metrics.json").is_file());

    // Bad data: the message names the split and the file.
    std::fs::write(root.join("val/images/s0.png"), b"junk").unwrap();
    let bad_run = root.join("run2");
    let mut args = vec!["train", "--data", &data, "--out", bad_run.to_str().unwrap(), "--max-steps", "1"];
    args.extend(common);
    let out = lightunet(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("val split") && stderr.contains("s0.png"), "{stderr}");
    let _ = std::fs::remove_dir_all(&root);
}

/// `train --write-resized` writes both splits at the training size; loading the copy gives the
/// same samples as loading the original (so it trains the same).
#[test]
fn write_resized_copy_loads_like_the_original() {
    let root = temp_dir("write-resized");
    write_dataset(&root, 3, 2, 50);
    let dest = root.join("copy");
    let out = Command::new(env!("CARGO_BIN_EXE_lightunet"))
        .args(["train", "--data", root.to_str().unwrap(), "--write-resized", dest.to_str().unwrap(), "--size", "32"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (split, n) in [("train", 3), ("val", 2)] {
        let a = Dataset::load(&root.join(split).join("images"), &root.join(split).join("mask"), 32).unwrap();
        let b = Dataset::load(&dest.join(split).join("images"), &dest.join(split).join("mask"), 32).unwrap();
        assert_eq!(b.len(), n);
        for (x, y) in a.samples.iter().zip(&b.samples) {
            assert!(x.name == y.name && x.image == y.image && x.mask == y.mask, "{split}/{} differs", x.name);
        }
        let img = image::open(dest.join(split).join("images").join(format!("{}.png", b.samples[0].name))).unwrap();
        assert_eq!((img.width(), img.height()), (32, 32));
    }
}
