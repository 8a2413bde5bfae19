//! `lightunet ablation` on generated data: two recipes trained one epoch each, val predicted
//! with and without hflip TTA, the table as markdown and JSON; run again, the finished runs are
//! kept; flags the ablation sets itself and a run folder holding another recipe are refused.

mod train_util;

use std::process::{Command, Output};

use train_util::{temp_dir, write_dataset};

fn ablation(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lightunet")).arg("ablation").args(args).output().unwrap()
}

#[test]
fn ablation_trains_predicts_and_tabulates() {
    let root = temp_dir("ablation");
    write_dataset(&root, 6, 3, 32);
    let out = root.join("abl");
    let (data, o) = (root.to_str().unwrap().to_string(), out.to_str().unwrap().to_string());
    let args = ["--data", &data, "--out", &o, "--epochs", "1", "--seed", "3", "--recipe", "seed", "--recipe", "avg=--ema 0.9", "--", "--size", "32", "--batch", "2"];
    let run = ablation(&args);
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{stdout}\n{stderr}");

    let table: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("ablation.json")).unwrap()).unwrap();
    assert_eq!((table["epochs"].as_u64(), table["seed"].as_u64()), (Some(1), Some(3)));
    assert_eq!(table["cleanup"], "confident");
    let rows = table["recipes"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, name) in rows.iter().zip(["seed", "avg"]) {
        assert_eq!(row["recipe"], name);
        assert_eq!(row["status"], "done", "{row}");
        for k in ["val_dice", "val_dice_hflip"] {
            let d = row[k].as_f64().unwrap_or(-1.0);
            assert!((0.0..=1.0).contains(&d), "{name} {k}: {row}");
        }
        assert_eq!(row["val_images"], 3);
        assert_eq!((row["epochs_done"].as_u64(), row["best_epoch"].as_u64()), (Some(1), Some(1)));
        assert!(row["minutes"].as_f64().unwrap() > 0.0);
        let run = out.join(name);
        assert!(run.join("best.safetensors").is_file());
        // The table's numbers are predict's on val.
        let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("predict-val/metrics.json")).unwrap()).unwrap();
        assert_eq!(m["summary"]["mean"]["dice"], row["val_dice"]);
        assert_eq!(m["tta"], "none");
        assert_eq!(m["post"]["cleanup"], "confident");
        let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("predict-val-hflip/metrics.json")).unwrap()).unwrap();
        assert_eq!(m["summary"]["mean"]["dice"], row["val_dice_hflip"]);
        assert_eq!(m["tta"], "hflip");
    }
    assert!(rows[0]["best_is_ema"].is_null() && rows[1]["best_is_ema"].is_boolean());
    assert_eq!(rows[1]["flags"], serde_json::json!(["--ema", "0.9"]));
    // The run really had the flags: the average is in its log.
    assert!(std::fs::read_to_string(out.join("avg/log.jsonl")).unwrap().contains("ema_val_loss"));
    let md = std::fs::read_to_string(out.join("ablation.md")).unwrap();
    assert!(md.contains("| recipe | train flags | val Dice |") && md.contains("--cleanup confident"), "{md}");
    assert!(md.contains("| seed | (seed recipe) |") && md.contains("| avg | `--ema 0.9` |"), "{md}");
    assert!(stdout.contains("| avg |"), "{stdout}");
    // The curves of both runs, in one picture.
    let png = image::open(out.join("ablation.png")).expect("ablation.png decodes").to_rgb8();
    assert!(png.width() >= 640 && png.height() >= 300, "{}x{}", png.width(), png.height());

    // Again: nothing is retrained, the numbers are the same.
    let again = ablation(&args);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert_eq!(stderr.matches("already trained").count(), 2, "{stderr}");
    let table2: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("ablation.json")).unwrap()).unwrap();
    for (a, b) in rows.iter().zip(table2["recipes"].as_array().unwrap()) {
        assert_eq!(a["val_dice"], b["val_dice"]);
        assert_eq!(a["epochs_done"], b["epochs_done"]);
    }

    // The original's clean-up for the table: the same runs, predicted again with it.
    let largest: Vec<&str> = args.iter().copied().take_while(|a| *a != "--").chain(["--cleanup", "largest"]).chain(args.iter().copied().skip_while(|a| *a != "--")).collect();
    let run = ablation(&largest);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let table3: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("ablation.json")).unwrap()).unwrap();
    assert_eq!(table3["cleanup"], "largest");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("seed/predict-val/metrics.json")).unwrap()).unwrap();
    assert_eq!(m["post"]["cleanup"], "largest");

    // Another recipe under a name that has a run: refused, the run kept.
    let changed = ablation(&["--data", &data, "--out", &o, "--epochs", "1", "--seed", "3", "--recipe", "avg=--ema 0.5", "--", "--size", "32", "--batch", "2"]);
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert!(!changed.status.success() && stderr.contains("holds a run with other train flags"), "{stderr}");
    // Flags the ablation sets itself.
    let own = ablation(&["--data", &data, "--out", &o, "--recipe", "long=--epochs 300"]);
    let stderr = String::from_utf8_lossy(&own.stderr);
    assert!(!own.status.success() && stderr.contains("--epochs is set by the ablation"), "{stderr}");
    assert!(!out.join("long").exists());
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn ablation_lists_built_in_recipes() {
    let out = ablation(&["--data", "x", "--out", "y", "--list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for name in ["seed", "bce-dice", "cosine", "one-cycle", "ema", "augment-us", "augment-original+us"] {
        assert!(stdout.lines().any(|l| l.starts_with(name)), "{name} missing:\n{stdout}");
    }
}
