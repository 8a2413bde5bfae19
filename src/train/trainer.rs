//! The training loop: model and optimizer on one device, batches from the loader thread,
//! validation each epoch, plateau schedule, early stopping, and the files of a run directory:
//!
//! ```text
//! RUN/checkpoint.safetensors   resumable: weights (`model.*`), optimizer moments (`optim.*`),
//!                              the weight average (`ema.*`, with --ema), run state (step-wise
//!                              schedule included) and config as JSON metadata; rewritten each epoch,
//!                              on Ctrl-C and at --max-steps
//! RUN/best.safetensors         best validation loss weights, PyTorch key names (with --ema, the
//!                              trained or the averaged weights, whichever had the lower loss)
//! RUN/config.json              variant, recipe, preprocessing, data fingerprint, epochs, metrics
//! RUN/log.jsonl                one line per finished epoch
//! RUN/curves.png               train/val loss and val Dice per epoch
//! ```
//!
//! Reproducibility: weights are initialised from the seed (PyTorch's default uniform bounds),
//! the sample order of each epoch and each sample's augmentation come from seeded streams keyed
//! by (epoch, position), so a run resumed mid-epoch sees exactly the batches it would have seen.
//! The dropout mask of each step comes from a stream keyed by the global step (saved in the
//! run state), drawn here on the CPU rather than by candle's generator, whose CPU side cannot
//! be seeded: seeded CPU runs are bit-identical, straight or resumed, and a CUDA run draws the
//! same masks as a CPU run of the same seed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::checkpoint::{read_tensor_file, save_tensors, Checksum, TensorFile};
use super::config::TrainConfig;
use super::data::{epoch_order, stream_seed, AugmentSeed, Batch, Dataset, Loader};
use super::ema::{Ema, EMA_PREFIX};
use super::history::{history_jsonl, EpochAccum, EpochRecord};
use super::loss::{hard_confusions, loss};
use super::optim::Optimizer;
use super::plot::plot_curves;
use super::schedule::{EarlyStop, Plateau, StepSchedule};
use crate::atomic_write::write_atomic;
use crate::error::{Error, Result};
use crate::metrics::Confusion;
use crate::model::{is_buffer, Dropout, UNet, Variant, DROPOUT_P};
use crate::postprocess::Cleanup;

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const BEST_FILE: &str = "best.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const LOG_FILE: &str = "log.jsonl";
pub const CURVES_FILE: &str = "curves.png";

/// First key of the dropout stream: far above any epoch number, so it never meets the
/// augmentation streams keyed by (epoch, position).
const DROPOUT_STREAM: u64 = 0xd409_0000_0000_0000;

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs fully done.
    pub epoch: usize,
    /// Batches done in the current (unfinished) epoch.
    pub batch_in_epoch: usize,
    pub global_step: u64,
    pub lr: f64,
    pub plateau: Plateau,
    pub early_stop: EarlyStop,
    pub accum: EpochAccum,
    pub history: Vec<EpochRecord>,
    pub finished: bool,
    /// The learning rate of every step, for `--schedule cosine` or `one-cycle` (`None`: the
    /// plateau schedule, which changes `lr` per epoch). Fixed when the run starts.
    #[serde(default)]
    pub step_schedule: Option<StepSchedule>,
}

/// Why [`Trainer::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Early stopping or the epoch limit.
    Finished,
    /// `max_steps` reached: resumable.
    StepLimit,
    /// The stop flag (Ctrl-C): resumable.
    Interrupted,
}

pub struct Trainer {
    cfg: TrainConfig,
    variant: Variant,
    device: Device,
    varmap: VarMap,
    net: UNet,
    opt: Optimizer,
    state: TrainState,
    train: Arc<Dataset>,
    val: Arc<Dataset>,
    out: PathBuf,
    progress: bool,
    /// Seconds of each training step taken by this process (not saved).
    step_seconds: Vec<f64>,
    /// When set, [`Trainer::train_step`] synchronises the device between its phases and keeps
    /// their seconds here: forward with loss, backward, optimizer update (`bench train`).
    phases: Option<[f64; 3]>,
    /// The BatchNorm running statistics, which the training forward updates: copied before each
    /// step and put back when the step fails, so that a failed step changes nothing.
    buffers: Vec<Var>,
    /// The weight average (`--ema`), updated after every step.
    ema: Option<Ema>,
}

/// PyTorch's default initialisation, drawn from `seed`: every conv weight and its bias
/// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`; BatchNorm keeps gamma 1, beta 0, mean 0, var 1.
fn seeded_init(varmap: &VarMap, seed: u64) -> Result<()> {
    let vars = varmap.data().lock().map_err(|_| Error::Poisoned("variable map"))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for (i, name) in names.iter().enumerate() {
        let Some(prefix) = name.strip_suffix(".weight").or_else(|| name.strip_suffix(".bias")) else { continue };
        let Some(w) = vars.get(&format!("{prefix}.weight")) else { continue };
        let [_, ci, kh, kw] = w.dims() else { continue }; // BatchNorm: 1-D
        let bound = 1.0 / ((ci * kh * kw) as f64).sqrt();
        let var = &vars[*name];
        let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(seed, 0x1417, i as u64));
        let vals: Vec<f32> = (0..var.elem_count()).map(|_| rng.random_range(-bound..bound) as f32).collect();
        var.set(&Tensor::from_vec(vals, var.shape(), &Device::Cpu)?.to_device(var.device())?)?;
    }
    Ok(())
}

/// Sets every variable (weights and BatchNorm running statistics) from a weights file with
/// PyTorch names, f32 or f16, checked against `variant` like any weights the tool loads.
fn init_from(varmap: &VarMap, variant: Variant, path: &Path, device: &Device) -> Result<()> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tensors = crate::model::check_weights(tensors, variant)?;
    let vars = varmap.data().lock().map_err(|_| Error::Poisoned("variable map"))?;
    for (name, var) in vars.iter() {
        let t = tensors.get(name).ok_or_else(|| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("no tensor {name}"),
        })?;
        var.set(&t.to_dtype(DType::F32)?.to_device(device)?)?;
    }
    Ok(())
}

fn trainable(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let vars = varmap.data().lock().map_err(|_| Error::Poisoned("variable map"))?;
    let mut params: Vec<(String, Var)> =
        vars.iter().filter(|(n, _)| !is_buffer(n)).map(|(n, v)| (n.clone(), v.clone())).collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(params)
}

/// The variables that are not trained but updated by the forward pass (running statistics).
fn buffers(varmap: &VarMap) -> Result<Vec<Var>> {
    let vars = varmap.data().lock().map_err(|_| Error::Poisoned("variable map"))?;
    let mut named: Vec<(&String, &Var)> = vars.iter().filter(|(n, _)| is_buffer(n) && !n.ends_with("num_batches_tracked")).collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    Ok(named.into_iter().map(|(_, v)| v.clone()).collect())
}

fn load_split(cfg: &TrainConfig, split: &str) -> Result<Dataset> {
    let (images, masks) = cfg.data.dirs(split);
    let d = Dataset::load(&images, &masks, cfg.size)
        .map_err(|e| Error::Dataset(format!("{split} split ({}): {e}", cfg.data.root.join(split).display())))?;
    for w in &d.warnings {
        tracing::warn!("{split}: {w}");
    }
    Ok(d)
}

impl Trainer {
    /// A fresh run in `out` (created; an existing checkpoint there is an error: use resume).
    pub fn new(cfg: TrainConfig, out: &Path, device: Device) -> Result<Self> {
        cfg.validate()?;
        if out.join(CHECKPOINT_FILE).exists() {
            return Err(Error::Input(format!(
                "{} already holds a run; continue it with --resume or choose another --out",
                out.display()
            )));
        }
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let variant = cfg.variant()?;
        let train = Arc::new(load_split(&cfg, &cfg.data.train)?);
        let val = Arc::new(load_split(&cfg, &cfg.data.val)?);
        Self::fresh(cfg, variant, out, device, train, val)
    }

    /// A trainer with nothing to train on, for timing [`Trainer::train_step`] on caller-made
    /// batches (`bench train`): the same network, initialisation, optimizer and step as a real
    /// run. It has no run directory: [`Trainer::run`] refuses it and nothing is written.
    pub fn without_data(cfg: TrainConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let variant = cfg.variant()?;
        let empty =
            || Arc::new(Dataset { size: cfg.size, samples: Vec::new(), fingerprint: String::new(), warnings: Vec::new() });
        let (train, val) = (empty(), empty());
        Self::fresh(cfg, variant, Path::new(""), device, train, val)
    }

    fn fresh(
        cfg: TrainConfig,
        variant: Variant,
        out: &Path,
        device: Device,
        train: Arc<Dataset>,
        val: Arc<Dataset>,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let net = UNet::new(variant, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
        seeded_init(&varmap, cfg.seed)?;
        if let Some(path) = &cfg.init {
            init_from(&varmap, variant, path, &device)?;
        }
        let opt = Optimizer::new(cfg.optimizer, trainable(&varmap)?);
        let step_schedule = StepSchedule::new(
            cfg.schedule,
            cfg.optimizer.lr,
            train.len().div_ceil(cfg.batch.max(1)),
            cfg.max_epochs,
            cfg.warmup_epochs,
        );
        if step_schedule.is_some() && cfg.min_epochs < cfg.max_epochs {
            tracing::warn!(
                "early stopping may end the {:?} schedule before its learning rate has decayed (min epochs {} < epochs {})",
                cfg.schedule,
                cfg.min_epochs,
                cfg.max_epochs
            );
        }
        let ema = cfg.ema.map(|d| Ema::new(d, &varmap, variant, &device)).transpose()?;
        let state = TrainState {
            epoch: 0,
            batch_in_epoch: 0,
            global_step: 0,
            lr: cfg.optimizer.lr,
            plateau: Plateau::new(cfg.plateau_factor, cfg.plateau_patience),
            early_stop: EarlyStop::new(cfg.early_stop_patience, cfg.min_epochs, cfg.max_epochs),
            accum: EpochAccum::default(),
            history: Vec::new(),
            finished: false,
            step_schedule,
        };
        let buffers = buffers(&varmap)?;
        Ok(Self { cfg, variant, device, varmap, net, opt, state, train, val, out: out.to_path_buf(), progress: false, step_seconds: Vec::new(), phases: None, buffers, ema })
    }

    /// Continues the run in `out` exactly where its checkpoint left it. `adjust` may change the
    /// limits (`max_steps`, `max_epochs`, `early_stop_patience`) but nothing that would change
    /// the trajectory.
    pub fn resume(out: &Path, device: Device, adjust: impl FnOnce(&mut TrainConfig)) -> Result<Self> {
        let path = out.join(CHECKPOINT_FILE);
        if !path.exists() {
            return Err(Error::Input(format!("{} has no {CHECKPOINT_FILE} to resume from", out.display())));
        }
        let TensorFile { tensors, metadata: meta, checksum } = read_tensor_file(&path)?;
        let bad = |reason: String| Error::Checkpoint { path: path.clone(), reason };
        if checksum == Checksum::Absent {
            tracing::warn!("{} has no checksum (written before checksums were added): not verified", path.display());
        }
        // A damaged file without a checksum (or one whose damage went in before it was written)
        // must not be trained on either: no value may be NaN or infinite.
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        for name in names {
            let values = tensors[name].flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("{name}: value {i} of {} is {}", values.len(), values[i])));
            }
        }
        let get = |k: &str| meta.get(k).ok_or_else(|| bad(format!("no `{k}` metadata")));
        let mut cfg: TrainConfig = serde_json::from_str(get("config")?).map_err(|e| bad(e.to_string()))?;
        let mut state: TrainState = serde_json::from_str(get("state")?).map_err(|e| bad(e.to_string()))?;
        let fingerprints: HashMap<String, String> =
            serde_json::from_str(get("data")?).map_err(|e| bad(e.to_string()))?;
        let planned_epochs = cfg.max_epochs;
        adjust(&mut cfg);
        cfg.validate()?;
        if state.step_schedule.is_some() && cfg.max_epochs != planned_epochs {
            return Err(Error::InvalidSetting(format!(
                "the {:?} schedule is laid over the run's {planned_epochs} epochs: a resumed run keeps them (got {})",
                cfg.schedule, cfg.max_epochs
            )));
        }
        state.early_stop.max_epochs = cfg.max_epochs;
        state.early_stop.patience = cfg.early_stop_patience;
        // A finished run continues only if the new limits allow more epochs.
        state.finished = state.epoch > 0 && state.early_stop.should_stop(state.epoch);
        let variant = cfg.variant()?;
        let train = Arc::new(load_split(&cfg, &cfg.data.train)?);
        let val = Arc::new(load_split(&cfg, &cfg.data.val)?);
        for (split, d) in [("train", &train), ("val", &val)] {
            if fingerprints.get(split) != Some(&d.fingerprint) {
                tracing::warn!("the {split} data changed since the checkpoint was written: the run will not be reproducible");
            }
        }
        let varmap = VarMap::new();
        let net = UNet::new(variant, VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
        {
            let vars = varmap.data().lock().map_err(|_| Error::Poisoned("variable map"))?;
            for (name, var) in vars.iter() {
                let t = tensors.get(&format!("model.{name}")).ok_or_else(|| bad(format!("missing model.{name}")))?;
                if t.dims() != var.dims() {
                    return Err(bad(format!("model.{name}: shape {:?}, expected {:?}", t.dims(), var.dims())));
                }
                var.set(&t.to_device(&device)?)?;
            }
        }
        let mut opt = Optimizer::new(cfg.optimizer, trainable(&varmap)?);
        let optim: HashMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix("optim.").map(|k| (k.to_string(), t.clone())))
            .collect();
        opt.load_state(state.global_step, &optim)?;
        opt.set_lr(state.lr);
        let ema = match cfg.ema {
            Some(d) => {
                let ema = Ema::new(d, &varmap, variant, &device)?;
                ema.load(&tensors).map_err(|e| bad(e.to_string()))?;
                Some(ema)
            }
            None => None,
        };
        let buffers = buffers(&varmap)?;
        Ok(Self { cfg, variant, device, varmap, net, opt, state, train, val, out: out.to_path_buf(), progress: false, step_seconds: Vec::new(), phases: None, buffers, ema })
    }

    /// Shows an indicatif progress bar (on a terminal).
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    pub fn state(&self) -> &TrainState {
        &self.state
    }

    pub fn net(&self) -> &UNet {
        &self.net
    }

    pub fn optimizer(&self) -> &Optimizer {
        &self.opt
    }

    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The weight average, with `--ema`.
    pub fn ema(&self) -> Option<&Ema> {
        self.ema.as_ref()
    }

    /// Wall time of each optimizer step this process took (data loading excluded).
    pub fn step_seconds(&self) -> &[f64] {
        &self.step_seconds
    }

    /// Time the phases of every following step (it adds two device synchronisations per step,
    /// so a real run leaves it off).
    pub fn time_phases(&mut self) {
        self.phases = Some([0.0; 3]);
    }

    /// The last step's forward-with-loss, backward and optimizer seconds, when timed.
    pub fn last_phases(&self) -> Option<[f64; 3]> {
        self.phases
    }

    pub fn train_len(&self) -> usize {
        self.train.len()
    }

    /// Every variable (weights and BatchNorm statistics) under its PyTorch name, sorted.
    pub fn named_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let vars = self.varmap.data().lock().map_err(|_| Error::Poisoned("variable map"))?;
        let mut v: Vec<(String, Tensor)> = vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// The dropout keep mask of the step being taken (`global_step`, 0-based) for a batch of
    /// `n`: values 0 or `1 / (1 - p)`, each kept with probability `1 - p` as in candle's and
    /// PyTorch's dropout.
    /// Keyed by (seed, step) rather than carried as generator state, so a resumed run redraws
    /// exactly the masks of the straight run from the step count alone. Drawn on the CPU (it is
    /// small: `n * 512 * (size/16)^2` values) and moved to the device.
    fn dropout_mask(&self, n: usize) -> Result<Tensor> {
        let s = self.cfg.size;
        let dims = UNet::bottleneck_dims(n, s, s);
        let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(self.cfg.seed, DROPOUT_STREAM, self.state.global_step));
        let scale = 1.0 / (1.0 - DROPOUT_P);
        let keep: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|_| if rng.random::<f32>() >= DROPOUT_P { scale } else { 0.0 })
            .collect();
        Ok(Tensor::from_vec(keep, &dims, &Device::Cpu)?.to_device(&self.device)?)
    }

    /// One optimizer step on `batch`: returns the loss and the hard-Dice confusions.
    pub fn train_step(&mut self, batch: Batch) -> Result<(f64, Vec<Confusion>)> {
        let s = self.cfg.size;
        let x = Tensor::from_vec(batch.images, (batch.n, 3, s, s), &Device::Cpu)?.to_device(&self.device)?;
        let y = Tensor::from_vec(batch.masks, (batch.n, 1, s, s), &Device::Cpu)?.to_device(&self.device)?;
        let keep = self.dropout_mask(batch.n)?;
        // A few thousand values (one per channel of each BatchNorm): negligible beside a step.
        let saved: Vec<Tensor> = self.buffers.iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
        let restore = |buffers: &[Var]| -> Result<()> {
            for (v, t) in buffers.iter().zip(&saved) {
                v.set(t)?;
            }
            Ok(())
        };
        let t0 = std::time::Instant::now();
        let logits = self.net.logits_t_with(&x, true, Dropout::Mask(&keep))?;
        let l = loss(self.cfg.loss, &logits, &y)?;
        let value = f64::from(l.to_scalar::<f32>()?); // waits for the device
        let t1 = std::time::Instant::now();
        if !value.is_finite() {
            restore(&self.buffers)?;
            return Err(Error::NonFiniteLoss { value, step: self.state.global_step + 1 });
        }
        let grads = l.backward()?;
        if let Some(name) = self.opt.first_non_finite_gradient(&grads)? {
            restore(&self.buffers)?;
            return Err(Error::NonFiniteGradient { name, step: self.state.global_step + 1 });
        }
        if self.phases.is_some() {
            self.device.synchronize()?;
        }
        let t2 = std::time::Instant::now();
        self.opt.step(&grads)?;
        drop(grads);
        if let Some(p) = self.phases.as_mut() {
            self.device.synchronize()?;
            let t3 = std::time::Instant::now();
            *p = [t1 - t0, t2 - t1, t3 - t2].map(|d| d.as_secs_f64());
        }
        let conf = hard_confusions(&logits.detach(), &y)?;
        self.state.global_step += 1;
        Ok((value, conf))
    }

    /// Validation in inference mode (running statistics, no dropout): mean loss and mean Dice
    /// per image (at the training size, threshold 0.5, no clean-up).
    pub fn evaluate(&self) -> Result<(f64, f64)> {
        self.evaluate_net(&self.net)
    }

    /// [`Trainer::evaluate`] for `net`: the trained network or the weight average.
    ///
    /// Runs the folded inference form (BatchNorm folded into the convolutions, the kernels
    /// `predict` and `process` use), which is the same function as the graph in inference mode
    /// up to float rounding: through the training graph, validating BUSI's 97 images took about
    /// 28 s of each 86 s epoch on the 2-core machine, most of it allocating and zeroing pages.
    fn evaluate_net(&self, net: &UNet) -> Result<(f64, f64)> {
        let s = self.cfg.size;
        let net = net.fold(&self.device, net.dtype())?;
        let order: Vec<usize> = (0..self.val.len()).collect();
        let loader = Loader::spawn(self.val.clone(), order, self.cfg.batch, 0, None, 2);
        let (mut loss_sum, mut dice_sum, mut n) = (0f64, 0f64, 0usize);
        while let Some(b) = loader.next_batch() {
            let x = Tensor::from_vec(b.images, (b.n, 3, s, s), &Device::Cpu)?.to_device(&self.device)?;
            let y = Tensor::from_vec(b.masks, (b.n, 1, s, s), &Device::Cpu)?.to_device(&self.device)?;
            let logits = net.logits(&x)?;
            loss_sum += f64::from(loss(self.cfg.loss, &logits, &y)?.to_scalar::<f32>()?) * b.n as f64;
            dice_sum += hard_confusions(&logits, &y)?.iter().map(Confusion::dice).sum::<f64>();
            n += b.n;
        }
        let n = n.max(1) as f64;
        Ok((loss_sum / n, dice_sum / n))
    }

    fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.cfg.batch)
    }

    /// Trains until early stopping, the epoch or step limit, or `stop` is set. Writes the
    /// resumable checkpoint whenever it returns `Ok`.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<Outcome> {
        if self.train.is_empty() || self.out.as_os_str().is_empty() {
            return Err(Error::Input("this trainer has no training data or run directory (Trainer::without_data)".into()));
        }
        let per_epoch = self.steps_per_epoch();
        tracing::info!(
            "training {} on {} images ({} val), {} steps per epoch, device {:?}",
            self.variant,
            self.train.len(),
            self.val.len(),
            per_epoch,
            self.device
        );
        while !self.state.finished {
            if let Some(outcome) = self.limit_reached(stop) {
                self.save_checkpoint()?;
                return Ok(outcome);
            }
            let epoch = self.state.epoch; // 0-based, the one being trained
            let bar = if self.progress { ProgressBar::new(per_epoch as u64) } else { ProgressBar::hidden() };
            if let Ok(style) = ProgressStyle::with_template(
                "epoch {prefix} [{bar:25}] {pos}/{len} {msg} {elapsed_precise} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(format!("{}/{}", epoch + 1, self.cfg.max_epochs));
            bar.set_position(self.state.batch_in_epoch as u64);
            let order = epoch_order(self.train.len(), self.cfg.seed, epoch);
            let aug = self.cfg.augment.then_some(AugmentSeed { seed: self.cfg.seed, epoch, set: self.cfg.augment_set });
            let loader = Loader::spawn(self.train.clone(), order, self.cfg.batch, self.state.batch_in_epoch, aug, 2);
            loop {
                let t0 = Instant::now();
                // The end of the epoch comes first: a limit reached on its last step still
                // gets the epoch's validation, log and checkpoint.
                let Some(batch) = loader.next_batch() else { break };
                if let Some(outcome) = self.limit_reached(stop) {
                    bar.abandon();
                    self.save_checkpoint()?;
                    return Ok(outcome);
                }
                let n = batch.n;
                self.apply_step_schedule();
                let t_step = Instant::now();
                let (l, conf) = self.train_step(batch)?;
                self.step_seconds.push(t_step.elapsed().as_secs_f64());
                self.update_ema()?;
                let a = &mut self.state.accum;
                a.loss_sum += l * n as f64;
                a.dice_sum += conf.iter().map(Confusion::dice).sum::<f64>();
                a.images += n;
                a.seconds += t0.elapsed().as_secs_f64();
                self.state.batch_in_epoch += 1;
                let images = a.images.max(1) as f64;
                bar.set_message(format!(
                    "loss {:.4} dice {:.3} lr {:.1e}",
                    a.loss_sum / images,
                    a.dice_sum / images,
                    self.opt.lr()
                ));
                bar.inc(1);
            }
            drop(loader);
            bar.finish_and_clear();
            self.finish_epoch()?;
        }
        Ok(Outcome::Finished)
    }

    /// Sets the learning rate of the step about to be taken from a step-wise schedule (the
    /// plateau schedule changes it once per epoch, in [`Trainer::epoch_schedule`]). A function
    /// of the step count alone, so a resumed run takes the rates of the straight run.
    fn apply_step_schedule(&mut self) {
        if let Some(schedule) = &self.state.step_schedule {
            let lr = schedule.lr(self.state.global_step);
            self.opt.set_lr(lr);
            self.state.lr = lr;
        }
    }

    /// The end-of-epoch learning-rate update: the plateau schedule on the trained network's
    /// validation loss; nothing for a step-wise schedule. Returns the new rate.
    fn epoch_schedule(&mut self, val_loss: f64, lr_used: f64) -> f64 {
        if self.state.step_schedule.is_some() {
            return lr_used;
        }
        let new_lr = self.state.plateau.step(val_loss, lr_used);
        if new_lr != lr_used {
            tracing::info!("validation loss plateaued: learning rate {lr_used:.1e} -> {new_lr:.1e}");
        }
        self.opt.set_lr(new_lr);
        self.state.lr = new_lr;
        new_lr
    }

    /// Folds the step just taken into the weight average (its update count is the step's).
    fn update_ema(&mut self) -> Result<()> {
        match &self.ema {
            Some(ema) => ema.update(self.state.global_step.saturating_sub(1)),
            None => Ok(()),
        }
    }

    /// The weight average's validation loss and Dice, when there is one; a non-finite loss is
    /// an error as for the trained network.
    fn evaluate_ema(&self, epoch: usize) -> Result<Option<(f64, f64)>> {
        let Some(ema) = &self.ema else { return Ok(None) };
        let (loss, dice) = self.evaluate_net(ema.net())?;
        if !loss.is_finite() {
            return Err(Error::NonFiniteValidation { value: loss, epoch });
        }
        Ok(Some((loss, dice)))
    }

    /// The weights `best.safetensors` gets this epoch: the average when it had the lower loss.
    fn best_tensors(&self, from_ema: bool) -> Result<Vec<(String, Tensor)>> {
        match (&self.ema, from_ema) {
            (Some(ema), true) => Ok(ema.named_tensors()),
            _ => self.named_tensors(),
        }
    }

    fn limit_reached(&self, stop: &AtomicBool) -> Option<Outcome> {
        if stop.load(Ordering::SeqCst) {
            Some(Outcome::Interrupted)
        } else if self.cfg.max_steps.is_some_and(|m| self.state.global_step >= m) {
            Some(Outcome::StepLimit)
        } else {
            None
        }
    }

    fn finish_epoch(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let (val_loss, val_dice) = self.evaluate()?;
        let epoch = self.state.epoch + 1;
        if !val_loss.is_finite() {
            // Nothing of this epoch is written: the files on disk are the last good ones.
            return Err(Error::NonFiniteValidation { value: val_loss, epoch });
        }
        let ema = self.evaluate_ema(epoch)?;
        // With an average, the epoch's candidate is whichever weights had the lower loss.
        let from_ema = ema.is_some_and(|(l, _)| l < val_loss);
        let selected_loss = if from_ema { ema.map_or(val_loss, |(l, _)| l) } else { val_loss };
        let a = std::mem::take(&mut self.state.accum);
        let images = a.images.max(1) as f64;
        let best = self.state.early_stop.update(epoch, selected_loss);
        let lr_used = self.opt.lr();
        let record = EpochRecord {
            epoch,
            steps: self.state.global_step,
            train_loss: a.loss_sum / images,
            train_dice: a.dice_sum / images,
            val_loss,
            val_dice,
            lr: lr_used,
            seconds: a.seconds + t0.elapsed().as_secs_f64(),
            best,
            ema_val_loss: ema.map(|(l, _)| l),
            ema_val_dice: ema.map(|(_, d)| d),
            selected: ema.map(|_| if from_ema { "ema" } else { "model" }.to_string()),
        };
        let ema_note = match ema {
            Some((l, d)) => format!(" | ema loss {l:.4} dice {d:.4}{}", if from_ema { " (selected)" } else { "" }),
            None => String::new(),
        };
        tracing::info!(
            "epoch {epoch}: train loss {:.4} dice {:.4} | val loss {:.4} dice {:.4}{ema_note} | lr {:.1e}{}",
            record.train_loss,
            record.train_dice,
            val_loss,
            val_dice,
            lr_used,
            if best { " | best" } else { "" }
        );
        self.state.history.push(record);
        self.epoch_schedule(val_loss, lr_used);
        self.state.epoch = epoch;
        self.state.batch_in_epoch = 0;
        self.state.finished = self.state.early_stop.should_stop(epoch);
        if best {
            save_tensors(&self.out.join(BEST_FILE), &self.best_tensors(from_ema)?, None)?;
        }
        self.write_config()?;
        self.write_log()?;
        if let Err(e) = plot_curves(&self.state.history, &self.out.join(CURVES_FILE)) {
            tracing::warn!("could not draw {CURVES_FILE}: {e}");
        }
        self.save_checkpoint()
    }

    fn write_log(&self) -> Result<()> {
        write_atomic(&self.out.join(LOG_FILE), history_jsonl(&self.state.history)?.as_bytes())
    }

    /// config.json: what inference needs to reload the best weights, and what produced them.
    fn write_config(&self) -> Result<()> {
        let es = &self.state.early_stop;
        let best = self.state.history.iter().find(|r| r.epoch == es.best_epoch);
        let json = serde_json::json!({
            "variant": self.variant.to_string(),
            "name": self.variant.paper_name(),
            "weights": BEST_FILE,
            "preprocessing": {
                "size": self.cfg.size, "channels": "BGR", "resize": "bilinear, 8-bit", "scale": "1/255",
            },
            "postprocessing": { "threshold": 0.5, "cleanup": Cleanup::default().name() },
            "recipe": self.cfg,
            "data": {
                "root": self.cfg.data.root,
                "train_images": self.train.len(), "val_images": self.val.len(),
                "train_fingerprint": self.train.fingerprint, "val_fingerprint": self.val.fingerprint,
            },
            "epochs_done": self.state.epoch,
            "steps_done": self.state.global_step,
            "best_epoch": es.best_epoch,
            "best": best,
            "finished": self.state.finished,
            "tool": format!("lightunet {}", env!("CARGO_PKG_VERSION")),
            "device": format!("{:?}", self.device),
        });
        let text = serde_json::to_string_pretty(&json)?;
        write_atomic(&self.out.join(CONFIG_FILE), text.as_bytes())
    }

    /// Writes the resumable checkpoint (atomically).
    pub fn save_checkpoint(&self) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> =
            self.named_tensors()?.into_iter().map(|(n, t)| (format!("model.{n}"), t)).collect();
        tensors.extend(self.opt.state_tensors().into_iter().map(|(n, t)| (format!("optim.{n}"), t)));
        if let Some(ema) = &self.ema {
            tensors.extend(ema.named_tensors().into_iter().map(|(n, t)| (format!("{EMA_PREFIX}{n}"), t)));
        }
        let data = HashMap::from([
            ("train".to_string(), self.train.fingerprint.clone()),
            ("val".to_string(), self.val.fingerprint.clone()),
        ]);
        let meta = HashMap::from([
            ("config".to_string(), to_json(&self.cfg)?),
            ("state".to_string(), to_json(&self.state)?),
            ("data".to_string(), to_json(&data)?),
            ("format".to_string(), "lightunet-train-checkpoint-1".to_string()),
        ]);
        save_tensors(&self.out.join(CHECKPOINT_FILE), &tensors, Some(meta))
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    Ok(serde_json::to_string(v)?)
}
