//! `train`: arguments to a [`TrainConfig`] (the original recipe unless overridden), Ctrl-C to
//! a resumable checkpoint, and `--resume RUN_DIR` to continue.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use lightunet::device::parse_device;
use lightunet::model::Variant;
use lightunet::output::{OutputError, OutputPlan, PendingDir, Staged};
use lightunet::percentile::{percentile, percentile_sorted};
use lightunet::train::loss::LossKind;
use lightunet::train::optim::OptimizerKind;
use lightunet::train::schedule::ScheduleKind;
use lightunet::train::ultrasound::AugmentSet;
use lightunet::train::data::Batch;
use lightunet::train::trainer::{BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, CURVES_FILE, LOG_FILE};
use lightunet::train::{Outcome, TrainConfig, Trainer};

use super::outputs::input_file;

/// What a run writes into its folder.
const RUN_FILES: [&str; 5] = [CHECKPOINT_FILE, BEST_FILE, CONFIG_FILE, LOG_FILE, CURVES_FILE];

/// The data's image and mask folders, the folders no output may be, contain or lie inside (a
/// run folder or a copy beside `train/` and `val/` in the data root is fine: it overwrites
/// nothing there).
fn data_folders(plan: &mut OutputPlan, layout: &lightunet::train::DataLayout) {
    for split in [&layout.train, &layout.val] {
        let (images, masks) = layout.dirs(split);
        plan.input_folder("data folder", images).input_folder("data folder", masks);
    }
}

/// A run folder apart from the data's folders and, with `--init`, not about to write over the
/// weights it starts from. The run's own rule (an existing checkpoint means --resume) is
/// checked by the trainer.
fn check_run_folder(out: &Path, cfg: &TrainConfig, out_role: &str) -> anyhow::Result<()> {
    let mut plan = OutputPlan::new();
    data_folders(&mut plan, &cfg.data);
    if let Some(w) = &cfg.init {
        plan.input("--init weights", w);
    }
    plan.folder(out_role, out, &RUN_FILES, true);
    Ok(plan.check()?)
}
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Data root holding `train/` and `val/`, each with `images/` and `mask/` (same file names).
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    /// Variant: unet, light or lighter@C.
    #[arg(long, required_unless_present_any = ["resume", "write_resized"])]
    model: Option<Variant>,
    /// Run directory (checkpoint, best weights, config.json, log, curves).
    #[arg(long, required_unless_present_any = ["resume", "write_resized"])]
    out: Option<PathBuf>,
    /// Do not train: write the train and val splits of --data, resized to --size exactly as
    /// training reads them, into this folder (same layout, PNG) and exit. The copy is smaller
    /// and trains bit for bit like the original (use it rather than resizing with another tool).
    #[arg(long, conflicts_with_all = ["resume", "model", "out", "init"])]
    write_resized: Option<PathBuf>,
    /// Continue the run in this directory exactly where it stopped (the recipe comes from its
    /// checkpoint; only --epochs, --max-steps and --patience may be changed: they decide where
    /// the run stops, not what it learns).
    #[arg(long, conflicts_with_all = [
        "data", "model", "out", "loss", "optimizer", "lr", "weight_decay", "momentum", "batch",
        "min_epochs", "lr_patience", "schedule", "warmup_epochs", "ema", "augment", "size", "seed",
        "no_augment", "train_dir", "val_dir", "images_dir", "masks_dir",
    ])]
    resume: Option<PathBuf>,
    /// Start from these weights (safetensors, PyTorch names, e.g. a shipped model) instead of a
    /// fresh initialisation: fine-tuning. The optimizer and schedule start fresh.
    #[arg(long, conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto (the GPU when one works).
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, value_enum, default_value = "dice")]
    loss: LossKind,
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerKind,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// L2 weight decay (default: the original's for the variant: 1e-4 U-net / Lighter@128,
    /// 1e-3 Light, 1e-2 Lighter@1).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Maximum number of epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Early stopping: epochs without improvement of the validation loss (default 15). With
    /// --resume, a larger value continues a run that stopped early (longer training): the run
    /// goes on bit for bit as a fresh run with that patience would have.
    #[arg(long)]
    patience: Option<usize>,
    /// Early stopping only from this epoch on (default 50; with --schedule cosine or one-cycle,
    /// --epochs: the schedule is laid over them, and stopping early would cut its decay short).
    #[arg(long)]
    min_epochs: Option<usize>,
    /// ReduceLROnPlateau patience (factor 0.5).
    #[arg(long, default_value_t = 5)]
    lr_patience: usize,
    /// Learning-rate schedule: plateau (the original: halve after --lr-patience epochs without a
    /// better val loss), cosine (step by step from --lr down to 0 at the end of --epochs) or
    /// one-cycle (step by step from --lr/25 up to --lr, then down to --lr/2.5e5 at the end).
    #[arg(long, value_enum, default_value = "plateau")]
    schedule: ScheduleKind,
    /// Linear warm-up of cosine or one-cycle, in epochs (default: none; one-cycle rises over 30 %
    /// of the run).
    #[arg(long, default_value_t = 0)]
    warmup_epochs: usize,
    /// Keep an exponential moving average of the weights with this decay (e.g. 0.999; ramped in
    /// as (1+t)/(10+t) over the first steps), evaluated on val each epoch beside the trained
    /// weights: the better of the two is the epoch's candidate for best.safetensors.
    #[arg(long, value_name = "DECAY")]
    ema: Option<f64>,
    /// Augmentation: original (flips, large affine), us (ultrasound: horizontal flip, small
    /// rotation/scale/shift, elastic; gain, depth gain curve, speckle, gamma) or original+us
    /// (the original geometry with the ultrasound intensity changes).
    #[arg(long, value_enum, default_value = "original", conflicts_with = "no_augment")]
    augment: AugmentSet,
    /// Images are resized to SIZE x SIZE.
    #[arg(long, default_value_t = 256)]
    size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Turn the augmentation off.
    #[arg(long)]
    no_augment: bool,
    /// Stop after this many optimizer steps in total (writes a resumable checkpoint).
    #[arg(long)]
    max_steps: Option<u64>,
    #[command(flatten)]
    dirs: DataDirs,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Folder names inside the data root (`<root>/<train|val>/<images|masks>`), shared by `train` and
/// `ablation`.
#[derive(Args, Debug, Clone)]
pub struct DataDirs {
    /// Folder names inside the data root.
    #[arg(long, default_value = "train")]
    pub train_dir: String,
    #[arg(long, default_value = "val")]
    pub val_dir: String,
    #[arg(long, default_value = "images")]
    pub images_dir: String,
    #[arg(long, default_value = "mask")]
    pub masks_dir: String,
}

impl DataDirs {
    /// The layout of the data under `root`.
    pub fn layout(&self, root: PathBuf) -> lightunet::train::DataLayout {
        lightunet::train::DataLayout {
            root,
            train: self.train_dir.clone(),
            val: self.val_dir.clone(),
            images: self.images_dir.clone(),
            masks: self.masks_dir.clone(),
        }
    }
}

/// How long training may take to stop after Ctrl-C or SIGTERM before the process exits anyway:
/// the step in progress ends first (about 5 s for Lighter U-net@1 at batch 8 on 2 CPU cores,
/// several times that for U-net), then the checkpoint is written.
const FINISH_GRACE: Duration = Duration::from_secs(600);

fn write_resized(args: &TrainArgs, dest: &Path) -> anyhow::Result<()> {
    let Some(data) = &args.data else { bail!("--write-resized needs --data") };
    lightunet::model::check_input(1, args.size, args.size).context("--size")?;
    let layout = args.dirs.layout(data.clone());
    // Apart from the data's folders, and new or without the splits it writes: train has no
    // --overwrite.
    let mut plan = OutputPlan::new();
    data_folders(&mut plan, &layout);
    plan.folder("--write-resized", dest, &[&args.dirs.train_dir, &args.dirs.val_dir], false);
    match plan.check() {
        Err(OutputError::FolderHolds { path, found, .. }) => {
            bail!("--write-resized {} already holds {}: give a new or empty folder", path.display(), found.display())
        }
        other => other?,
    }
    // Written into a temporary folder beside (or inside) DEST and moved into place at the end:
    // a failed or interrupted copy leaves nothing half-written.
    // Ctrl-C: remove the half-written copy (the default would leave its temporary folder).
    ctrlc::set_handler(|| {
        eprintln!("interrupted: nothing was written");
        lightunet::output::discard_pending();
        std::process::exit(i32::from(super::exit::INTERRUPTED));
    })
    .context("installing the Ctrl-C handler")?;
    let staging = PendingDir::folder("--write-resized", dest, false)?;
    for split in [&layout.train, &layout.val] {
        let (images, masks) = layout.dirs(split);
        let d = lightunet::train::data::Dataset::load(&images, &masks, args.size)
            .with_context(|| format!("{split} split of {}", data.display()))?;
        for w in &d.warnings {
            tracing::warn!("{split}: {w}");
        }
        let at = staging.path().join(split);
        d.write_png(&at.join(&layout.images), &at.join(&layout.masks)).with_context(|| format!("writing {}", dest.join(split).display()))?;
        println!("{split}: {} pairs at {}x{} -> {}", d.len(), args.size, args.size, dest.join(split).display());
    }
    let mut staged = Staged::new();
    staged.push(staging);
    staged.commit()?;
    Ok(())
}

impl TrainArgs {
    /// Where the run stops: the only flags a fresh run and `--resume` share, since they do not
    /// change what the run learns.
    fn set_limits(&self, cfg: &mut TrainConfig) {
        if let Some(e) = self.epochs {
            cfg.max_epochs = e;
        }
        if let Some(p) = self.patience {
            cfg.early_stop_patience = p;
        }
        cfg.max_steps = self.max_steps;
    }
}

fn config(args: &TrainArgs) -> anyhow::Result<(TrainConfig, PathBuf)> {
    let (Some(data), Some(variant), Some(out)) = (&args.data, args.model, &args.out) else {
        bail!("--data, --model and --out are required for a new run");
    };
    let mut cfg = TrainConfig::recipe(variant, data.clone());
    args.set_limits(&mut cfg);
    cfg.loss = args.loss;
    cfg.optimizer.kind = args.optimizer;
    cfg.optimizer.lr = args.lr;
    if let Some(wd) = args.weight_decay {
        cfg.optimizer.weight_decay = wd;
    }
    cfg.optimizer.momentum = args.momentum;
    cfg.batch = args.batch;
    cfg.schedule = args.schedule;
    cfg.warmup_epochs = args.warmup_epochs;
    cfg.ema = args.ema;
    cfg.augment_set = args.augment;
    cfg.min_epochs = match args.min_epochs {
        Some(m) => m,
        None if args.schedule == ScheduleKind::Plateau => cfg.min_epochs,
        None => cfg.max_epochs,
    };
    cfg.plateau_patience = args.lr_patience;
    cfg.size = args.size;
    cfg.seed = args.seed;
    cfg.augment = !args.no_augment;
    cfg.init = args.init.clone();
    cfg.data = args.dirs.layout(cfg.data.root.clone());
    cfg.validate()?;
    Ok((cfg, out.clone()))
}


pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if let Some(dest) = &args.write_resized {
        return write_resized(&args, dest);
    }
    // Installed first, so an interrupt while the data loads also ends with a checkpoint.
    let stop = super::interrupt::install("finishing the current step and writing a checkpoint", FINISH_GRACE);
    let device = parse_device(&args.device)?;
    let (trainer, out) = match &args.resume {
        Some(dir) => {
            let t = Trainer::resume(dir, device, |c| args.set_limits(c))
                .with_context(|| format!("resuming {}", dir.display()))?;
            tracing::info!(
                "resuming at epoch {} batch {} (step {})",
                t.state().epoch + 1,
                t.state().batch_in_epoch,
                t.state().global_step
            );
            (t, dir.clone())
        }
        None => {
            let (cfg, out) = config(&args)?;
            if let Some(w) = &cfg.init {
                input_file("--init", w)?;
            }
            check_run_folder(&out, &cfg, "--out")?;
            (Trainer::new(cfg, &out, device).context("setting up training")?, out)
        }
    };
    if args.resume.is_some() {
        // The data's folders are known once the checkpoint is read, still before anything is
        // written.
        check_run_folder(&out, trainer.config(), "--resume")?;
    }
    let mut trainer = trainer.with_progress(!args.quiet);
    let outcome = trainer.run(&stop).map_err(|e| {
        // A failed run writes nothing more: say what is left to continue from.
        let checkpoint = out.join(lightunet::train::trainer::CHECKPOINT_FILE);
        let e = anyhow::Error::from(e);
        if checkpoint.exists() {
            e.context(format!("training stopped; the last good checkpoint is kept in {}", checkpoint.display()))
        } else {
            e.context("training stopped before its first checkpoint")
        }
    })?;
    let s = trainer.state();
    let times = trainer.step_seconds();
    if let Some(median) = percentile(times, 50.0) {
        println!(
            "{} steps in this session: median {:.2} s, mean {:.2} s per step (batch {}, {}x{})",
            times.len(),
            median,
            times.iter().sum::<f64>() / times.len() as f64,
            trainer.config().batch,
            trainer.config().size,
            trainer.config().size
        );
    }
    let best = s.history.iter().find(|r| r.epoch == s.early_stop.best_epoch);
    match outcome {
        Outcome::Finished => println!("finished after {} epochs ({} steps)", s.epoch, s.global_step),
        Outcome::StepLimit => println!(
            "stopped at step {} (--max-steps); continue with: lightunet train --resume {}",
            s.global_step,
            out.display()
        ),
        Outcome::Interrupted => println!(
            "interrupted at step {}; continue with: lightunet train --resume {}",
            s.global_step,
            out.display()
        ),
    }
    if let Some(b) = best {
        let (loss, dice, which) = match (b.selected.as_deref(), b.ema_val_loss, b.ema_val_dice) {
            (Some("ema"), Some(l), Some(d)) => (l, d, " (weight average)"),
            _ => (b.val_loss, b.val_dice, ""),
        };
        println!(
            "best epoch {}{which}: val loss {:.4}, val Dice {:.4} -> {}",
            b.epoch,
            loss,
            dice,
            out.join(lightunet::train::trainer::BEST_FILE).display()
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Variant to train (unet, light, lighter@C).
    #[arg(long, default_value = "lighter@1")]
    model: Variant,
    /// cpu, cuda, cuda:N or auto (the GPU when one works).
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Image height and width.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Timed steps after warm-up.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Untimed steps first (the first step also sizes the heap).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, value_enum, default_value = "dice")]
    loss: LossKind,
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerKind,
    /// Print JSON instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// Times [`Trainer::train_step`] (the step `train` takes: forward with batch statistics and
/// dropout, loss, backward, optimizer update, running statistics) with the variant's recipe on
/// random images and masks, so no data set is needed. Data loading is not included, as in the
/// per-step times `train` prints.
pub fn bench_train(args: BenchTrainArgs) -> anyhow::Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    lightunet::model::check_input(args.batch, args.size, args.size).context("--size and --batch")?;
    let device = parse_device(&args.device)?;
    let mut cfg = TrainConfig::recipe(args.model, PathBuf::new());
    cfg.batch = args.batch;
    cfg.size = args.size;
    cfg.loss = args.loss;
    cfg.optimizer.kind = args.optimizer;
    let mut trainer = Trainer::without_data(cfg, device.clone()).context("setting up the trainer")?;
    trainer.time_phases();
    let mut phases: Vec<[f64; 3]> = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let px = args.size * args.size;
    let mut step = || -> anyhow::Result<(f64, [f64; 3])> {
        let images: Vec<f32> = (0..args.batch * 3 * px).map(|_| rng.random::<f32>()).collect();
        let masks: Vec<f32> = (0..args.batch * px).map(|_| f32::from(u8::from(rng.random::<f32>() > 0.7))).collect();
        let batch = Batch { images, masks, n: args.batch };
        let t = Instant::now();
        trainer.train_step(batch)?;
        device.synchronize()?;
        let seconds = t.elapsed().as_secs_f64();
        Ok((seconds, trainer.last_phases().unwrap_or_default()))
    };
    for _ in 0..args.warmup {
        step()?;
    }
    let mut times = Vec::new();
    for _ in 0..args.steps {
        let (s, p) = step()?;
        times.push(s);
        phases.push(p);
    }
    // Median of each phase over the timed steps.
    let phase = |i: usize| {
        let v: Vec<f64> = phases.iter().map(|p| p[i]).collect();
        percentile(&v, 50.0).context("no timed steps")
    };
    let (forward, backward, optimizer) = (phase(0)?, phase(1)?, phase(2)?);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let (median, min, max) =
        (percentile_sorted(&sorted, 50.0).context("no timed steps")?, sorted[0], sorted[sorted.len() - 1]);
    let b = args.batch as f64;
    let threads = candle_core::utils::get_num_threads();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "variant": args.model.to_string(), "device": args.device, "batch": args.batch,
                "size": args.size, "steps": args.steps, "warmup": args.warmup, "threads": threads,
                "loss": args.loss, "optimizer": args.optimizer,
                "median_s_step": median, "min_s_step": min, "max_s_step": max,
                "median_s_image": median / b, "step_seconds": times,
                "median_phase_s": { "forward_loss": forward, "backward": backward, "optimizer": optimizer },
            })
        );
    } else {
        println!(
            "train step {} {} batch={} {}x{}: median {:.2} s/step ({:.3} s/image), min {:.2} s, max {:.2} s [{} steps, {} threads]",
            args.model, args.device, args.batch, args.size, args.size, median, median / b, min, max, args.steps, threads
        );
        println!("  phases (median, device synchronised between them): forward+loss {forward:.3} s, backward {backward:.3} s, optimizer {optimizer:.3} s");
    }
    Ok(())
}
