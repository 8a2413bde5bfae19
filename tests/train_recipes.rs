//! The options beyond the original recipe (issue 14): BCE + Dice, cosine and one-cycle
//! schedules with warm-up, the weight average (EMA), the ultrasound augmentation. Each trains on
//! generated data (dark disks on noise, 32x32) seeded and reproducibly; a run with all of them
//! resumes bit for bit; and the defaults train as the original recipe did, old checkpoints
//! included.

mod train_util;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use lightunet::model::Variant;
use lightunet::train::checkpoint::{load_tensors, save_tensors};
use lightunet::train::loss::LossKind;
use lightunet::train::schedule::{ScheduleKind, StepSchedule};
use lightunet::train::trainer::{BEST_FILE, CHECKPOINT_FILE, LOG_FILE};
use lightunet::train::ultrasound::AugmentSet;
use lightunet::train::{Outcome, TrainConfig, Trainer};
use train_util::{temp_dir, write_dataset};

fn small_config(root: &Path) -> TrainConfig {
    let mut cfg = TrainConfig::recipe(Variant::Lighter(1), root.to_path_buf());
    cfg.size = 32;
    cfg.batch = 4;
    cfg.optimizer.lr = 3e-3;
    cfg.min_epochs = 1;
    cfg.seed = 7;
    cfg
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().and_then(|t| t.to_vec1::<f32>()).unwrap().iter().map(|f| f.to_bits()).collect()
}

/// Every tensor of two named lists, bit for bit.
fn assert_same(a: &[(String, Tensor)], b: &[(String, Tensor)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: counts");
    for ((n1, x), (n2, y)) in a.iter().zip(b) {
        assert_eq!(n1, n2, "{what}");
        assert!(bits(x) == bits(y), "{what}: {n1} differs");
    }
}

fn differ(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> bool {
    a.iter().zip(b).any(|((_, x), (_, y))| bits(x) != bits(y))
}

/// The run's weights, and the average's when there is one.
fn weights(t: &Trainer) -> Vec<(String, Tensor)> {
    let mut w = t.named_tensors().unwrap();
    if let Some(e) = t.ema() {
        w.extend(e.named_tensors().into_iter().map(|(n, t)| (format!("ema.{n}"), t)));
    }
    w
}

/// A change to the recipe.
type Change = dyn Fn(&mut TrainConfig);

/// Each option alone: a seeded run of 3 steps (an epoch and a half, one validation) finishes,
/// trains to finite losses, gives the same weights twice and other weights than the original
/// recipe.
#[test]
fn each_option_trains_seeded() -> anyhow::Result<()> {
    let root = temp_dir("recipes-each");
    write_dataset(&root, 6, 2, 32);
    let run = |name: &str, change: &Change| -> anyhow::Result<Trainer> {
        let mut cfg = small_config(&root);
        cfg.max_epochs = 4;
        cfg.max_steps = Some(3);
        change(&mut cfg);
        let mut t = Trainer::new(cfg, &root.join(name), Device::Cpu)?;
        assert_eq!(t.run(&AtomicBool::new(false))?, Outcome::StepLimit, "{name}");
        let h = &t.state().history;
        assert_eq!(h.len(), 1, "{name}");
        assert!(h[0].train_loss.is_finite() && h[0].val_loss.is_finite(), "{name}: {h:?}");
        Ok(t)
    };
    let seed = weights(&run("seed", &|_| {})?);
    let options: [(&str, &Change); 6] = [
        ("bce-dice", &|c| c.loss = LossKind::BceDice),
        ("cosine", &|c| {
            c.schedule = ScheduleKind::Cosine;
            c.warmup_epochs = 1;
        }),
        ("one-cycle", &|c| c.schedule = ScheduleKind::OneCycle),
        ("ema", &|c| c.ema = Some(0.9)),
        ("us", &|c| c.augment_set = AugmentSet::Us),
        ("original-us", &|c| c.augment_set = AugmentSet::OriginalUs),
    ];
    for (name, change) in options {
        let a = run(&format!("{name}-a"), change)?;
        let b = run(&format!("{name}-b"), change)?;
        assert_same(&weights(&a), &weights(&b), name);
        let model_only: Vec<_> = a.named_tensors()?;
        if let Some(ema) = a.ema() {
            // The average watches training without changing it.
            assert_same(&seed, &model_only, "the trained weights beside an average");
            assert!(differ(&model_only, &ema.named_tensors()), "the average equals the weights");
        } else {
            assert!(differ(&seed, &model_only), "{name} trained the seed recipe's weights");
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Cosine with a warm-up epoch: every step takes the schedule's rate for its step count (the
/// rate in the log is the epoch's last step's); the schedule spans --epochs x steps per epoch.
/// One-cycle ends near zero at the last step.
#[test]
fn step_schedules_set_the_rate_per_step() -> anyhow::Result<()> {
    let root = temp_dir("recipes-schedule");
    write_dataset(&root, 6, 2, 32);
    for (kind, warmup) in [(ScheduleKind::Cosine, 1), (ScheduleKind::OneCycle, 0)] {
        let mut cfg = small_config(&root);
        cfg.schedule = kind;
        cfg.warmup_epochs = warmup;
        cfg.max_epochs = 3;
        cfg.min_epochs = 3;
        let out = root.join(format!("{kind:?}"));
        let mut t = Trainer::new(cfg, &out, Device::Cpu)?;
        assert_eq!(t.run(&AtomicBool::new(false))?, Outcome::Finished);
        let plan = StepSchedule::new(kind, 3e-3, 2, 3, warmup).unwrap();
        assert_eq!(t.state().step_schedule, Some(plan));
        let h = &t.state().history;
        assert_eq!(h.len(), 3);
        for r in h {
            assert_eq!(r.lr, plan.lr(r.steps - 1), "{kind:?} epoch {}", r.epoch);
        }
        assert_eq!(t.optimizer().lr(), plan.lr(5));
        if kind == ScheduleKind::Cosine {
            assert_eq!(h[0].lr, 3e-3, "the warm-up reaches the peak at its last step");
        } else {
            assert!(h[2].lr < 3e-3 / 25.0 / 1e3, "one-cycle ends at peak/25/1e4: {}", h[2].lr);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// With an average: both are evaluated each epoch, the log says which was the candidate, the
/// checkpoint holds the averages, and best.safetensors holds the candidate's weights.
#[test]
fn ema_is_evaluated_and_saved_when_it_wins() -> anyhow::Result<()> {
    let root = temp_dir("recipes-ema");
    write_dataset(&root, 6, 2, 32);
    let mut cfg = small_config(&root);
    cfg.ema = Some(0.5);
    cfg.max_epochs = 1;
    let out = root.join("run");
    let mut t = Trainer::new(cfg, &out, Device::Cpu)?;
    assert_eq!(t.run(&AtomicBool::new(false))?, Outcome::Finished);
    let r = &t.state().history[0];
    assert!(r.best);
    let (ema_loss, ema_dice) = (r.ema_val_loss.expect("ema loss"), r.ema_val_dice.expect("ema dice"));
    assert!(ema_loss.is_finite() && (0.0..=1.0).contains(&ema_dice));
    assert_ne!(ema_loss, r.val_loss, "the average is another network");
    let from_ema = ema_loss < r.val_loss;
    assert_eq!(r.selected.as_deref(), Some(if from_ema { "ema" } else { "model" }));
    assert_eq!(t.state().early_stop.best, Some(ema_loss.min(r.val_loss)));
    let (best, _) = load_tensors(&out.join(BEST_FILE))?;
    let want = if from_ema { t.ema().unwrap().named_tensors() } else { t.named_tensors()? };
    for (n, w) in &want {
        assert!(bits(&best[n]) == bits(w), "best.safetensors {n} is not the {} weights", r.selected.as_deref().unwrap());
    }
    let (ckpt, _) = load_tensors(&out.join(CHECKPOINT_FILE))?;
    for (n, w) in t.ema().unwrap().named_tensors() {
        assert!(bits(&ckpt[&format!("ema.{n}")]) == bits(&w), "checkpoint ema.{n}");
    }
    let log = std::fs::read_to_string(out.join(LOG_FILE))?;
    assert!(log.contains("\"ema_val_loss\"") && log.contains("\"selected\""), "{log}");
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Every option at once (BCE + Dice, cosine with warm-up, EMA, ultrasound augmentation):
/// 6 steps straight == 3 steps, resume, 3 more, bit for bit (weights, BatchNorm statistics,
/// averages, optimizer moments, run state). The split falls mid-epoch, after a validation.
/// Changing --epochs on resume is refused: the schedule is laid over them.
#[test]
fn all_options_resume_bit_exact() -> anyhow::Result<()> {
    let root = temp_dir("recipes-resume");
    write_dataset(&root, 6, 2, 32);
    let config = || {
        let mut cfg = small_config(&root);
        cfg.loss = LossKind::BceDice;
        cfg.schedule = ScheduleKind::Cosine;
        cfg.warmup_epochs = 1;
        cfg.ema = Some(0.9);
        cfg.augment_set = AugmentSet::Us;
        cfg.max_epochs = 5;
        cfg
    };
    let run = |dir: &str, split: bool| -> anyhow::Result<Trainer> {
        let out = root.join(dir);
        let mut cfg = config();
        cfg.max_steps = Some(if split { 3 } else { 6 });
        let mut t = Trainer::new(cfg, &out, Device::Cpu)?;
        t.run(&AtomicBool::new(false))?;
        if split {
            t = Trainer::resume(&out, Device::Cpu, |c| c.max_steps = Some(6))?;
            t.run(&AtomicBool::new(false))?;
        }
        Ok(t)
    };
    let a = run("straight", false)?;
    let b = run("split", true)?;
    assert_eq!(a.state().global_step, 6);
    assert_same(&weights(&a), &weights(&b), "weights and averages");
    assert_same(&a.optimizer().state_tensors(), &b.optimizer().state_tensors(), "optimizer");
    let (mut sa, mut sb) = (a.state().clone(), b.state().clone());
    for s in [&mut sa, &mut sb] {
        s.accum.seconds = 0.0;
        s.history.iter_mut().for_each(|r| r.seconds = 0.0);
    }
    assert_eq!(sa, sb);
    assert_eq!(a.optimizer().lr(), b.optimizer().lr());

    let err = Trainer::resume(&root.join("split"), Device::Cpu, |c| c.max_epochs = 9).err().expect("must refuse").to_string();
    assert!(err.contains("laid over the run's 5 epochs"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Longer training without starting over: a run stopped early by its patience, resumed with a
/// larger one, goes on bit for bit to where a fresh run with the larger patience stops. Resumed
/// with its own patience it stays finished.
#[test]
fn larger_patience_on_resume_continues_bit_exact() -> anyhow::Result<()> {
    let root = temp_dir("recipes-patience");
    write_dataset(&root, 4, 2, 32);
    let config = |patience| {
        let mut cfg = small_config(&root);
        cfg.max_epochs = 4;
        cfg.min_epochs = 2;
        cfg.early_stop_patience = patience;
        cfg
    };
    let stop = AtomicBool::new(false);
    let mut long = Trainer::new(config(100), &root.join("long"), Device::Cpu)?;
    assert_eq!(long.run(&stop)?, Outcome::Finished);
    assert_eq!(long.state().epoch, 4);

    // Patience 0 stops at --min-epochs whatever the losses do.
    let short_dir = root.join("short");
    let mut short = Trainer::new(config(0), &short_dir, Device::Cpu)?;
    assert_eq!(short.run(&stop)?, Outcome::Finished);
    assert_eq!(short.state().epoch, 2);
    let mut same = Trainer::resume(&short_dir, Device::Cpu, |_| ())?;
    assert_eq!(same.run(&stop)?, Outcome::Finished);
    assert_eq!(same.state().epoch, 2, "resumed with its own patience, a finished run trains no further");

    let mut longer = Trainer::resume(&short_dir, Device::Cpu, |c| c.early_stop_patience = 100)?;
    assert_eq!(longer.run(&stop)?, Outcome::Finished);
    assert_eq!(longer.state().epoch, 4);
    assert_same(&weights(&long), &weights(&longer), "weights");
    assert_same(&long.optimizer().state_tensors(), &longer.optimizer().state_tensors(), "optimizer");
    let losses = |t: &Trainer| t.state().history.iter().map(|r| (r.train_loss.to_bits(), r.val_loss.to_bits())).collect::<Vec<_>>();
    assert_eq!(losses(&long), losses(&longer));
    assert_eq!(longer.config().early_stop_patience, 100);
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// The defaults are the original recipe: no step schedule, no average, the original
/// augmentation; the log has the original's fields and the checkpoint the original's tensors.
/// A checkpoint in the format written before these options existed (their keys removed from
/// its config and state) resumes to exactly what the new format resumes to.
#[test]
fn defaults_train_as_the_original_recipe() -> anyhow::Result<()> {
    let root = temp_dir("recipes-default");
    write_dataset(&root, 6, 2, 32);
    let mut cfg = small_config(&root);
    cfg.plateau_patience = 0; // the plateau schedule acts within the run
    cfg.max_epochs = 10;
    cfg.max_steps = Some(5);
    assert_eq!((cfg.schedule, cfg.warmup_epochs, cfg.ema, cfg.augment_set), (ScheduleKind::Plateau, 0, None, AugmentSet::Original));
    let out = root.join("run");
    let mut t = Trainer::new(cfg, &out, Device::Cpu)?;
    assert_eq!(t.run(&AtomicBool::new(false))?, Outcome::StepLimit);
    assert!(t.state().step_schedule.is_none() && t.ema().is_none());
    let log = std::fs::read_to_string(out.join(LOG_FILE))?;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["best", "epoch", "lr", "seconds", "steps", "train_dice", "train_loss", "val_dice", "val_loss"]);
    }
    let (tensors, meta) = load_tensors(&out.join(CHECKPOINT_FILE))?;
    assert!(tensors.keys().all(|k| k.starts_with("model.") || k.starts_with("optim.")));
    // Plateau with patience 0 halves the rate after a non-improving epoch: the rates are the
    // plateau's, not a step schedule's.
    for r in &t.state().history {
        assert!([3e-3, 1.5e-3, 7.5e-4].contains(&r.lr), "{}", r.lr);
    }

    // The same checkpoint in the old format.
    let old = root.join("old");
    std::fs::create_dir_all(&old)?;
    for f in std::fs::read_dir(&out)? {
        let f = f?;
        std::fs::copy(f.path(), old.join(f.file_name()))?;
    }
    let mut config: serde_json::Value = serde_json::from_str(&meta["config"])?;
    let mut state: serde_json::Value = serde_json::from_str(&meta["state"])?;
    for k in ["schedule", "warmup_epochs", "ema", "augment_set"] {
        assert!(config.as_object_mut().unwrap().remove(k).is_some(), "{k}");
    }
    assert!(state.as_object_mut().unwrap().remove("step_schedule").is_some());
    let mut old_meta: HashMap<String, String> = meta.clone();
    old_meta.insert("config".into(), config.to_string());
    old_meta.insert("state".into(), state.to_string());
    let mut named: Vec<(String, Tensor)> = tensors.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    save_tensors(&old.join(CHECKPOINT_FILE), &named, Some(old_meta))?;
    let resume = |dir: &Path| -> anyhow::Result<Trainer> {
        let mut r = Trainer::resume(dir, Device::Cpu, |c| c.max_steps = Some(8))?;
        assert_eq!(r.run(&AtomicBool::new(false))?, Outcome::StepLimit);
        Ok(r)
    };
    let new_format = resume(&out)?;
    let old_format = resume(&old)?;
    assert_eq!(old_format.config(), new_format.config());
    assert_same(&weights(&new_format), &weights(&old_format), "old-format resume");
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// The train flags reach the run's recipe; with a step schedule --min-epochs defaults to
/// --epochs; a warm-up without a step schedule, --augment with --no-augment, and a recipe
/// flag on --resume are refused.
#[test]
fn train_cli_options_reach_the_recipe() {
    use std::process::Command;
    let root = temp_dir("recipes-cli");
    write_dataset(&root, 4, 2, 32);
    let train = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_lightunet"))
            .args(["train", "--model", "lighter@1", "--size", "32", "--batch", "2", "--quiet", "--data"])
            .arg(&root)
            .args(args)
            .output()
            .unwrap()
    };
    let run = root.join("run");
    let out = train(&[
        "--out", run.to_str().unwrap(), "--epochs", "3", "--max-steps", "1", "--loss", "bce-dice", "--schedule", "cosine",
        "--warmup-epochs", "1", "--ema", "0.99", "--augment", "us",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, meta) = load_tensors(&run.join(CHECKPOINT_FILE)).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
    assert_eq!(cfg["loss"], "bce-dice");
    assert_eq!(cfg["schedule"], "cosine");
    assert_eq!(cfg["warmup_epochs"], 1);
    assert_eq!(cfg["ema"], 0.99);
    assert_eq!(cfg["augment_set"], "us");
    assert_eq!(cfg["min_epochs"], 3);
    let state: serde_json::Value = serde_json::from_str(&meta["state"]).unwrap();
    assert_eq!(state["step_schedule"]["total_steps"], 6);

    let stderr = |o: std::process::Output| {
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = stderr(train(&["--out", root.join("b").to_str().unwrap(), "--warmup-epochs", "1"]));
    assert!(e.contains("--schedule cosine or one-cycle"), "{e}");
    let e = stderr(train(&["--out", root.join("c").to_str().unwrap(), "--augment", "us", "--no-augment"]));
    assert!(e.contains("cannot be used with"), "{e}");
    // Every recipe flag, not only the newer ones: on --resume it would be ignored.
    for flag in [["--ema", "0.5"], ["--lr", "0.1"], ["--loss", "dice"], ["--seed", "3"], ["--images-dir", "img"]] {
        let e = stderr(Command::new(env!("CARGO_BIN_EXE_lightunet")).args(["train", "--resume"]).arg(&run).args(flag).output().unwrap());
        assert!(e.contains("cannot be used with"), "{flag:?}: {e}");
    }
    let _ = std::fs::remove_dir_all(&root);
}
