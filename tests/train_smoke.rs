//! Training end to end on generated data (dark disks on noise, 32x32): the loss goes down, the
//! run directory holds every file, the weights reload with `InferenceNet::load`, and a stopped run
//! resumes from exactly the state it stopped in.

mod train_util;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use lightunet::model::{InferenceNet, UNet, Variant};
use lightunet::metrics::Confusion;
use lightunet::train::checkpoint::{load_tensors, save_tensors};
use lightunet::train::data::{Dataset, Loader};
use lightunet::train::loss::{hard_confusions, loss};
use lightunet::train::trainer::{BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, CURVES_FILE, LOG_FILE};
use lightunet::train::{Outcome, TrainConfig, Trainer};
use train_util::{temp_dir, write_dataset};

fn small_config(root: &std::path::Path) -> TrainConfig {
    let mut cfg = TrainConfig::recipe(Variant::Lighter(1), root.to_path_buf());
    cfg.size = 32;
    cfg.batch = 4;
    cfg.optimizer.lr = 3e-3;
    cfg.optimizer.weight_decay = 0.0;
    cfg.min_epochs = 1;
    cfg.seed = 7;
    cfg
}

fn batch_of_val(root: &std::path::Path) -> Tensor {
    let imgs: Vec<f32> = (0..2)
        .flat_map(|i| {
            let img = lightunet::image_io::load_bgr(&root.join(format!("val/images/s{i}.png"))).unwrap();
            lightunet::preprocess::model_input(&img, 32).unwrap()
        })
        .collect();
    Tensor::from_vec(imgs, (2, 3, 32, 32), &Device::Cpu).unwrap()
}

#[test]
fn trains_writes_run_dir_and_reloads() -> anyhow::Result<()> {
    let root = temp_dir("smoke-data");
    write_dataset(&root, 8, 4, 32);
    let out = root.join("run");
    let mut cfg = small_config(&root);
    cfg.max_epochs = 4;
    cfg.augment = false;
    let mut t = Trainer::new(cfg, &out, Device::Cpu)?;
    assert_eq!(t.run(&AtomicBool::new(false))?, Outcome::Finished);
    let h = &t.state().history;
    assert_eq!(h.len(), 4);
    assert!(h.last().unwrap().train_loss < h[0].train_loss, "train loss did not decrease: {h:#?}");
    for f in [BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, LOG_FILE, CURVES_FILE] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert_eq!(std::fs::read_to_string(out.join(LOG_FILE))?.lines().count(), 4);
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join(CONFIG_FILE))?)?;
    assert_eq!(config["variant"], "lighter@1");
    assert_eq!(config["preprocessing"]["size"], 32);
    assert!(image::open(out.join(CURVES_FILE))?.width() > 100);

    // The trained weights, saved and reloaded for inference (BatchNorm folded), give what the
    // trained model gives in eval mode.
    let x = batch_of_val(&root);
    let trained = t.net().forward_t(&x, false)?;
    let saved = out.join("final.safetensors");
    save_tensors(&saved, &t.named_tensors()?, None)?;
    let reloaded = InferenceNet::load(&saved, Variant::Lighter(1), &Device::Cpu)?.forward(&x)?;
    let diff = (trained - reloaded)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-4, "reloaded model differs by {diff}");
    // best.safetensors loads too.
    InferenceNet::load(out.join(BEST_FILE), Variant::Lighter(1), &Device::Cpu)?.forward(&x)?;

    // Validation runs the folded form; it reports what the training graph in inference mode
    // gives on the same val images (4 images, one batch).
    let (val_loss, val_dice) = t.evaluate()?;
    let val = Arc::new(Dataset::load(&root.join("val/images"), &root.join("val/mask"), 32)?);
    let n = val.len();
    let b = Loader::spawn(val, (0..n).collect(), n, 0, None, 1).next_batch().expect("one val batch");
    let xv = Tensor::from_vec(b.images, (n, 3, 32, 32), &Device::Cpu)?;
    let yv = Tensor::from_vec(b.masks, (n, 1, 32, 32), &Device::Cpu)?;
    let logits = t.net().logits_t(&xv, false)?;
    let graph_loss = f64::from(loss(t.config().loss, &logits, &yv)?.to_scalar::<f32>()?);
    let graph_dice = hard_confusions(&logits, &yv)?.iter().map(Confusion::dice).sum::<f64>() / n as f64;
    assert!((val_loss - graph_loss).abs() < 1e-5, "val loss {val_loss} vs the graph's {graph_loss}");
    assert!((val_dice - graph_dice).abs() < 1e-3, "val Dice {val_dice} vs the graph's {graph_dice}");
    assert!(val_loss > 0.0, "a trivial validation loss: {val_loss}");
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Stop mid-epoch (3 steps of 2 per epoch), resume: weights, BatchNorm statistics, optimizer
/// moments and run state come back bit for bit, and the run continues to the step limit.
#[test]
fn resume_restores_exact_state() -> anyhow::Result<()> {
    let root = temp_dir("resume-data");
    write_dataset(&root, 6, 2, 32);
    let out = root.join("run");
    let mut cfg = small_config(&root);
    cfg.max_epochs = 10;
    cfg.max_steps = Some(3);
    let mut t = Trainer::new(cfg, &out, Device::Cpu)?;
    assert_eq!(t.run(&AtomicBool::new(false))?, Outcome::StepLimit);
    assert_eq!(t.state().epoch, 1);
    assert_eq!(t.state().batch_in_epoch, 1);
    let before = t.named_tensors()?;
    let opt_before = t.optimizer().state_tensors();
    let state_before = t.state().clone();

    let mut r = Trainer::resume(&out, Device::Cpu, |c| c.max_steps = Some(6))?;
    assert_eq!(r.state(), &state_before);
    for ((n1, a), (n2, b)) in before.iter().zip(r.named_tensors()?.iter()) {
        assert_eq!(n1, n2);
        assert_eq!(a.to_vec1::<f32>().or_else(|_| a.flatten_all()?.to_vec1::<f32>())?, b.flatten_all()?.to_vec1::<f32>()?, "{n1}");
    }
    let opt_after = r.optimizer().state_tensors();
    assert_eq!(opt_before.len(), opt_after.len());
    assert!(!opt_before.is_empty());
    for ((n1, a), (n2, b)) in opt_before.iter().zip(&opt_after) {
        assert_eq!(n1, n2);
        assert_eq!(a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?.to_vec1::<f32>()?, "{n1}");
    }
    assert_eq!(r.optimizer().steps(), 3);
    assert_eq!(r.run(&AtomicBool::new(false))?, Outcome::StepLimit);
    assert_eq!(r.state().global_step, 6);
    assert_eq!(r.state().epoch, 3);
    assert_eq!(r.state().history.len(), 3);
    // The checkpoint on disk is the resumed run's.
    let (tensors, meta) = load_tensors(&out.join(CHECKPOINT_FILE))?;
    assert!(meta["state"].contains("\"global_step\":6"));
    assert!(tensors.keys().any(|k| k.starts_with("optim.exp_avg_sq.")));
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Every variable of `a` and `b` (named, sorted) bit for bit.
fn assert_same_weights(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> anyhow::Result<()> {
    assert_eq!(a.len(), b.len());
    for ((n1, x), (n2, y)) in a.iter().zip(b) {
        assert_eq!(n1, n2);
        let (x, y) = (x.flatten_all()?.to_vec1::<f32>()?, y.flatten_all()?.to_vec1::<f32>()?);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
        assert!(bits(&x) == bits(&y), "{n1} differs");
    }
    Ok(())
}

/// N steps straight == N/2, resume, N/2 more, bit for bit. The dropout mask of each step comes
/// from the trainer's stream keyed by (seed, global step); everything else (init, order,
/// augmentation, optimizer, schedule) is seeded and restored exactly. The split falls mid-epoch
/// (2 steps per epoch), after a validation and a plateau update.
#[test]
fn resume_equals_straight_run() -> anyhow::Result<()> {
    let root = temp_dir("resume-eq-data");
    write_dataset(&root, 6, 2, 32);
    let run = |dir: &str, split: bool| -> anyhow::Result<Vec<(String, Tensor)>> {
        let out = root.join(dir);
        let mut cfg = small_config(&root);
        cfg.max_steps = Some(if split { 3 } else { 6 });
        let mut t = Trainer::new(cfg, &out, Device::Cpu)?;
        t.run(&AtomicBool::new(false))?;
        if split {
            t = Trainer::resume(&out, Device::Cpu, |c| c.max_steps = Some(6))?;
            t.run(&AtomicBool::new(false))?;
        }
        Ok(t.named_tensors()?)
    };
    let a = run("straight", false)?;
    let b = run("split", true)?;
    assert_same_weights(&a, &b)?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// Two CPU runs with the same seed (augmentation and dropout on) end with identical weights,
/// BatchNorm statistics included; a different seed does not.
#[test]
fn seeded_cpu_runs_are_identical() -> anyhow::Result<()> {
    let root = temp_dir("seeded-data");
    write_dataset(&root, 6, 2, 32);
    let run = |dir: &str, seed: u64| -> anyhow::Result<Vec<(String, Tensor)>> {
        let mut cfg = small_config(&root);
        cfg.augment = true;
        cfg.seed = seed;
        cfg.max_steps = Some(3);
        let mut t = Trainer::new(cfg, &root.join(dir), Device::Cpu)?;
        assert_eq!(t.run(&AtomicBool::new(false))?, Outcome::StepLimit);
        Ok(t.named_tensors()?)
    };
    let a = run("a", 7)?;
    let b = run("b", 7)?;
    assert_same_weights(&a, &b)?;
    let c = run("c", 8)?;
    let differs = a.iter().zip(&c).any(|((_, x), (_, y))| {
        x.flatten_all().and_then(|x| x.to_vec1::<f32>()).ok() != y.flatten_all().and_then(|y| y.to_vec1::<f32>()).ok()
    });
    assert!(differs, "seed 8 trained the same weights as seed 7");
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// A caller-supplied keep mask makes the training graph deterministic: the same mask gives the
/// same logits, another mask other logits, and a mask of the wrong shape is refused.
#[test]
fn dropout_mask_is_the_callers() -> anyhow::Result<()> {
    use candle_core::DType;
    use lightunet::model::Dropout;
    let v = Variant::Lighter(1);
    let vm = candle_nn::VarMap::new();
    let net = UNet::new(v, candle_nn::VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
    let x = Tensor::rand(0f32, 1f32, (2, 3, 32, 32), &Device::Cpu)?;
    let dims = UNet::bottleneck_dims(2, 32, 32);
    let n: usize = dims.iter().product();
    let keep_a = Tensor::from_vec((0..n).map(|i| if i % 2 == 0 { 2f32 } else { 0.0 }).collect(), &dims, &Device::Cpu)?;
    let keep_b = Tensor::from_vec((0..n).map(|i| if i % 3 == 0 { 2f32 } else { 0.0 }).collect(), &dims, &Device::Cpu)?;
    let run = |keep: &Tensor| -> anyhow::Result<Vec<f32>> {
        Ok(net.logits_t_with(&x, true, Dropout::Mask(keep))?.flatten_all()?.to_vec1::<f32>()?)
    };
    assert_eq!(run(&keep_a)?, run(&keep_a)?);
    assert_ne!(run(&keep_a)?, run(&keep_b)?);
    let wrong = Tensor::ones((2, 512, 1, 1), DType::F32, &Device::Cpu)?;
    assert!(net.logits_t_with(&x, true, Dropout::Mask(&wrong)).is_err());
    // Inference mode ignores the mask.
    let eval = net.logits_t(&x, false)?.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(net.logits_t_with(&x, false, Dropout::Mask(&wrong))?.flatten_all()?.to_vec1::<f32>()?, eval);
    Ok(())
}

#[test]
fn fresh_run_refuses_existing_run_dir() -> anyhow::Result<()> {
    let root = temp_dir("refuse-data");
    write_dataset(&root, 2, 1, 32);
    let out = root.join("run");
    let mut cfg = small_config(&root);
    cfg.max_steps = Some(1);
    Trainer::new(cfg.clone(), &out, Device::Cpu)?.run(&AtomicBool::new(false))?;
    let err = Trainer::new(cfg, &out, Device::Cpu).err().expect("must refuse").to_string();
    assert!(err.contains("--resume"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// On the PyTorch-trained reference weights (skipped when absent), the training graph in eval
/// mode (BatchNorm from running statistics, not folded) gives what the folded inference network
/// gives: the weights a run saves mean the same thing to `train` and to `predict`.
#[test]
fn reference_weights_train_graph_matches_inference() -> anyhow::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/anchors/torch_lighter_at1_busi_f16.safetensors");
    if !path.exists() {
        eprintln!("skipped: {} not found", path.display());
        return Ok(());
    }
    let v = Variant::Lighter(1);
    let tensors = lightunet::model::check_weights(candle_core::safetensors::load(&path, &Device::Cpu)?, v)?;
    let vm = candle_nn::VarMap::new();
    let net = UNet::new(v, candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu))?;
    for (name, var) in vm.data().lock().unwrap().iter() {
        var.set(&tensors[name])?;
    }
    let x = Tensor::rand(0f32, 1f32, (2, 3, 48, 40), &Device::Cpu)?;
    let train_graph = net.forward_t(&x, false)?;
    let folded = InferenceNet::load(&path, v, &Device::Cpu)?.forward(&x)?;
    let diff = (train_graph - folded)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-4, "train graph vs folded inference: {diff}");
    Ok(())
}

/// `init`: a new run starts from given weights (fine-tuning): every variable equals the file
/// before the first step, whatever the seed, and weights of another variant are refused.
#[test]
fn init_starts_from_given_weights() -> anyhow::Result<()> {
    let root = temp_dir("init-data");
    write_dataset(&root, 8, 4, 32);
    let mut cfg = small_config(&root);
    cfg.max_epochs = 1;
    cfg.augment = false;
    Trainer::new(cfg.clone(), &root.join("first"), Device::Cpu)?.run(&AtomicBool::new(false))?;
    let best = root.join("first").join(BEST_FILE);
    let (file, _) = load_tensors(&best)?;

    let mut tuned = cfg.clone();
    tuned.seed = 99;
    tuned.init = Some(best.clone());
    let t = Trainer::new(tuned, &root.join("second"), Device::Cpu)?;
    let mut compared = 0;
    for (name, v) in t.named_tensors()? {
        let Some(want) = file.get(&name) else { continue };
        let d = (v - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(d == 0.0, "{name} differs from the init file by {d}");
        compared += 1;
    }
    assert!(compared > 50, "only {compared} tensors compared");

    let mut wrong = cfg;
    wrong.variant = "lighter@4".into();
    wrong.init = Some(best);
    let err = Trainer::new(wrong, &root.join("third"), Device::Cpu).err().expect("must refuse").to_string();
    assert!(err.contains("lighter@4") || err.contains("Lighter U-net@4"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
