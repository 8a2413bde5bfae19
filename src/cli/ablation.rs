//! `ablation`: trains named recipes (each a set of `train` flags) one after another, predicts
//! the val split with each run's best weights, and tabulates the results, so that a change to
//! the recipe is chosen on val alone (the held-out test split is never read).
//!
//! ```text
//! OUT/<recipe>/                   the run (train's files) and ablation-args.json (its flags)
//! OUT/<recipe>/predict-val/       predict on val with best.safetensors (metrics.json, masks)
//! OUT/<recipe>/predict-val-hflip/ the same with --tta hflip
//! OUT/ablation.md, ablation.json  the table: recipe, val Dice, HD95, the same with hflip
//!                                 TTA, epochs run, best epoch, minutes; rewritten after each
//! OUT/ablation.png                 val loss and val Dice per epoch, one line per recipe
//! ```
//!
//! Each step is this binary run as a child process with the flags a user would type, so a
//! recipe means exactly what `train` does with its flags. Running the same command again
//! continues: finished runs are kept, an interrupted one resumes from its checkpoint. Ctrl-C
//! is passed to the training child once (it writes its checkpoint); then the table so far is
//! written.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use lightunet::atomic_write::write_atomic;
use lightunet::model::Variant;
use lightunet::output::OutputPlan;
use lightunet::postprocess::Cleanup;
use lightunet::train::history::EpochRecord;
use lightunet::train::plot::plot_runs;
use serde::Serialize;

use super::train::DataDirs;
use serde_json::Value;

/// The screening list of issue 14: the seed recipe, then one change each.
pub const BUILT_IN: [(&str, &str); 7] = [
    ("seed", ""),
    ("bce-dice", "--loss bce-dice"),
    ("cosine", "--schedule cosine --warmup-epochs 1"),
    ("one-cycle", "--schedule one-cycle"),
    ("ema", "--ema 0.999"),
    ("augment-us", "--augment us"),
    ("augment-original+us", "--augment original+us"),
];

/// Flags the ablation sets itself, refused inside a recipe.
const OWN_FLAGS: [&str; 13] = [
    "--data", "--out", "--resume", "--write-resized", "--model", "--epochs", "--seed", "--device", "--quiet",
    "--train-dir", "--val-dir", "--images-dir", "--masks-dir",
];

const TABLE_MD: &str = "ablation.md";
const TABLE_JSON: &str = "ablation.json";
const CURVES_PNG: &str = "ablation.png";
const ARGS_FILE: &str = "ablation-args.json";

/// How long the run may take to end after Ctrl-C: the training child finishes its step and
/// writes its checkpoint first (train's own grace is 10 min).
const FINISH_GRACE: Duration = Duration::from_secs(660);

#[derive(Debug, Args)]
pub struct AblationArgs {
    /// Data root holding train/ and val/ (as for train); val is what the table reports.
    #[arg(long)]
    data: PathBuf,
    /// Folder of the runs and the tables (running the same command again continues there).
    #[arg(long)]
    out: PathBuf,
    /// Variant trained by every recipe.
    #[arg(long, default_value = "lighter@1")]
    model: Variant,
    /// Epochs per recipe (the screening length; cosine and one-cycle are laid over them).
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda, cuda:N or auto, for training and predict.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// predict's clean-up for the table (confident, largest: the original's, none).
    #[arg(long, default_value = "confident", value_parser = super::cleanup_parser())]
    cleanup: Cleanup,
    /// A recipe: NAME=FLAGS (train flags, split at spaces; `seed=` for none) or the NAME of a
    /// built-in one. Repeat for several, in table order. Default: every built-in recipe.
    #[arg(long = "recipe", value_name = "NAME[=FLAGS]")]
    recipes: Vec<String>,
    /// Print the built-in recipes and exit.
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    dirs: DataDirs,
    /// Train flags given to every recipe, after `--` (e.g. `-- --size 128 --batch 4`).
    #[arg(last = true, value_name = "TRAIN FLAGS")]
    common: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub name: String,
    pub flags: Vec<String>,
}

/// `NAME=FLAGS` or a built-in `NAME`, checked: a plain folder name, and none of the flags the
/// ablation sets itself.
pub fn parse_recipe(spec: &str) -> anyhow::Result<Recipe> {
    let (name, flags) = match spec.split_once('=') {
        Some((n, f)) => (n.trim(), f.to_string()),
        None => match BUILT_IN.iter().find(|(n, _)| *n == spec.trim()) {
            Some((n, f)) => (*n, f.to_string()),
            None => bail!(
                "--recipe {spec}: not a built-in recipe ({}); give NAME=FLAGS",
                BUILT_IN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        },
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || "._+-".contains(c);
    if name.is_empty() || name.starts_with('.') || !name.chars().all(plain) {
        bail!("--recipe {spec}: the name must be a plain folder name (letters, digits, . _ + -), not starting with a dot");
    }
    let flags: Vec<String> = flags.split_whitespace().map(str::to_string).collect();
    check_flags(&flags).with_context(|| format!("--recipe {name}"))?;
    Ok(Recipe { name: name.to_string(), flags })
}

fn check_flags(flags: &[String]) -> anyhow::Result<()> {
    for f in flags {
        if let Some(own) = OWN_FLAGS.iter().find(|o| f == *o || f.starts_with(&format!("{o}="))) {
            bail!("{own} is set by the ablation itself (give it to `lightunet ablation`)");
        }
    }
    Ok(())
}

/// One row of the table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    pub recipe: String,
    pub flags: Vec<String>,
    /// `done`, or what went wrong.
    pub status: String,
    pub val_dice: Option<f64>,
    /// Mean HD95 in pixels, over the val images where both masks are non-empty.
    pub val_hd95: Option<f64>,
    pub val_dice_hflip: Option<f64>,
    pub val_hd95_hflip: Option<f64>,
    pub val_images: Option<u64>,
    pub epochs_done: Option<u64>,
    pub best_epoch: Option<u64>,
    /// Whether the best weights are the weight average's (`--ema`).
    pub best_is_ema: Option<bool>,
    /// Training and validation time of every epoch, summed from the run's log (so a resumed
    /// run counts each epoch once).
    pub minutes: Option<f64>,
    pub run: PathBuf,
    /// The run's epochs (its log), for the curves; not in ablation.json, which points at the run.
    #[serde(skip)]
    pub history: Vec<EpochRecord>,
}

/// Runs this binary with `args`, in its own process group so that a Ctrl-C at the terminal
/// reaches only the ablation, which passes one SIGINT on (a second one would make `train` exit
/// without its checkpoint).
fn run_child(args: &[String], stop: &AtomicBool) -> anyhow::Result<ExitStatus> {
    let exe = std::env::current_exe().context("finding the lightunet binary")?;
    eprintln!("== lightunet {}", args.join(" "));
    let mut cmd = Command::new(&exe);
    cmd.args(args);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().with_context(|| format!("starting {}", exe.display()))?;
    let mut passed_on = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if stop.load(Ordering::SeqCst) && !passed_on {
            passed_on = true;
            let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            if !sent.is_ok_and(|s| s.success()) {
                tracing::warn!("could not pass the interrupt on to process {}", child.id());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `(mean Dice, mean HD95, images)` of a predict report.
fn predict_summary(dir: &Path) -> anyhow::Result<(Option<f64>, Option<f64>, Option<u64>)> {
    let report = read_json(&dir.join("metrics.json"))?;
    let s = &report["summary"];
    Ok((s["mean"]["dice"].as_f64(), s["mean"]["hd95"].as_f64(), s["images"].as_u64()))
}

/// Epochs, best epoch, whether the best weights are the average's, and minutes, from a run.
fn run_summary(run: &Path, row: &mut Row) -> anyhow::Result<()> {
    let config = read_json(&run.join("config.json"))?;
    row.epochs_done = config["epochs_done"].as_u64();
    row.best_epoch = config["best_epoch"].as_u64();
    row.best_is_ema = config["best"]["selected"].as_str().map(|s| s == "ema");
    let log_path = run.join("log.jsonl");
    let log = std::fs::read_to_string(&log_path).with_context(|| format!("reading {}", log_path.display()))?;
    row.history = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str::<EpochRecord>)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", log_path.display()))?;
    row.minutes = Some(row.history.iter().map(|r| r.seconds).sum::<f64>() / 60.0);
    Ok(())
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

/// The markdown table (and a line saying what it is).
pub fn markdown(args_line: &str, rows: &[Row]) -> String {
    let seed = rows.iter().find(|r| r.recipe == "seed").and_then(|r| r.val_dice);
    let mut s = format!(
        "# Ablation on val\n\n{args_line}\n\nval Dice and HD95 (pixels, at each image's own size; over the images where both masks are non-empty) \
         from `lightunet predict` (with the `--cleanup` of the command above) on the val split with each run's best.safetensors (its best val-loss epoch), \
         with and without `--tta hflip`. The held-out test split is not used. \
         Curves per epoch: ablation.png.\n\n\
         | recipe | train flags | val Dice | Dice - seed | HD95 | Dice hflip-TTA | HD95 hflip-TTA | epochs | best epoch | minutes | status |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        let delta = match (r.val_dice, seed) {
            (Some(d), Some(s)) => format!("{:+.4}", d - s),
            _ => "-".into(),
        };
        let best = match (r.best_epoch, r.best_is_ema) {
            (Some(e), Some(true)) => format!("{e} (EMA)"),
            (Some(e), _) => e.to_string(),
            _ => "-".into(),
        };
        let flags = if r.flags.is_empty() { "(seed recipe)".to_string() } else { format!("`{}`", r.flags.join(" ")) };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.recipe,
            flags,
            fmt(r.val_dice, 4),
            delta,
            fmt(r.val_hd95, 2),
            fmt(r.val_dice_hflip, 4),
            fmt(r.val_hd95_hflip, 2),
            r.epochs_done.map_or("-".into(), |e| e.to_string()),
            best,
            fmt(r.minutes, 1),
            r.status
        ));
    }
    s
}

pub fn run(args: AblationArgs) -> anyhow::Result<()> {
    if args.list {
        for (name, flags) in BUILT_IN {
            println!("{name:<22} {}", if flags.is_empty() { "(the seed recipe: no flags)" } else { flags });
        }
        return Ok(());
    }
    if args.epochs == 0 {
        bail!("--epochs must be at least 1");
    }
    let recipes: Vec<Recipe> = if args.recipes.is_empty() {
        BUILT_IN.iter().map(|(n, _)| parse_recipe(n)).collect::<anyhow::Result<_>>()?
    } else {
        args.recipes.iter().map(|r| parse_recipe(r)).collect::<anyhow::Result<_>>()?
    };
    for (i, r) in recipes.iter().enumerate() {
        if recipes[..i].iter().any(|o| o.name == r.name) {
            bail!("--recipe {} is given twice", r.name);
        }
    }
    check_flags(&args.common).context("the train flags after --")?;
    let (val_images, val_masks) = {
        let base = args.data.join(&args.dirs.val_dir);
        (base.join(&args.dirs.images_dir), base.join(&args.dirs.masks_dir))
    };
    for dir in [&val_images, &val_masks] {
        if !dir.is_dir() {
            bail!("{} is not a folder (the val split is what the table reports)", dir.display());
        }
    }
    let mut plan = OutputPlan::new();
    for split in [&args.dirs.train_dir, &args.dirs.val_dir] {
        let base = args.data.join(split);
        plan.input_folder("data folder", base.join(&args.dirs.images_dir)).input_folder("data folder", base.join(&args.dirs.masks_dir));
    }
    let mut writes: Vec<&str> = vec![TABLE_MD, TABLE_JSON, CURVES_PNG];
    writes.extend(recipes.iter().map(|r| r.name.as_str()));
    plan.folder("--out", &args.out, &writes, true);
    plan.check()?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;

    let stop = super::interrupt::install("waiting for the training in progress to write its checkpoint", FINISH_GRACE);
    let device = args.device.clone();
    let args_line = format!(
        "`lightunet ablation --model {} --epochs {} --seed {} --device {device} --cleanup {}{}`, data {} (the table is on its {} split).",
        args.model,
        args.epochs,
        args.seed,
        args.cleanup,
        if args.common.is_empty() { String::new() } else { format!(" -- {}", args.common.join(" ")) },
        args.data.display(),
        args.dirs.val_dir,
    );
    let mut rows: Vec<Row> = Vec::new();
    let write_tables = |rows: &[Row]| -> anyhow::Result<()> {
        let json = serde_json::json!({
            "model": args.model.to_string(), "epochs": args.epochs, "seed": args.seed, "device": device, "cleanup": args.cleanup.name(),
            "data": args.data, "val": val_images, "common_flags": args.common, "recipes": rows,
        });
        write_atomic(&args.out.join(TABLE_JSON), serde_json::to_string_pretty(&json)?.as_bytes())?;
        write_atomic(&args.out.join(TABLE_MD), markdown(&args_line, rows).as_bytes())?;
        let runs: Vec<(&str, &[EpochRecord])> = rows.iter().filter(|r| !r.history.is_empty()).map(|r| (r.recipe.as_str(), r.history.as_slice())).collect();
        plot_runs(&runs, &args.out.join(CURVES_PNG))?;
        Ok(())
    };
    for recipe in &recipes {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let run_dir = args.out.join(&recipe.name);
        let mut row = Row { recipe: recipe.name.clone(), flags: recipe.flags.clone(), run: run_dir.clone(), ..Row::default() };
        row.status = run_recipe(&args, recipe, &run_dir, &val_images, &val_masks, &stop, &mut row)?;
        rows.push(row);
        write_tables(&rows)?;
    }
    print!("{}", markdown(&args_line, &rows));
    println!("tables: {}, {}", args.out.join(TABLE_MD).display(), args.out.join(TABLE_JSON).display());
    if stop.load(Ordering::SeqCst) {
        bail!("interrupted: run the same command again to continue (finished runs are kept, the interrupted one resumes)");
    }
    Ok(())
}

/// Trains (or resumes, or keeps) one recipe's run and predicts val with its best weights;
/// returns the row's status. Errors are only those that should stop the whole ablation (a
/// recipe whose run folder holds another recipe's run).
fn run_recipe(
    args: &AblationArgs,
    recipe: &Recipe,
    run_dir: &Path,
    val_images: &Path,
    val_masks: &Path,
    stop: &AtomicBool,
    row: &mut Row,
) -> anyhow::Result<String> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let mut train: Vec<String> = vec!["train".into(), "--data".into(), s(&args.data), "--model".into(), args.model.to_string()];
    train.extend(["--out".into(), s(run_dir), "--epochs".into(), args.epochs.to_string(), "--seed".into(), args.seed.to_string()]);
    for (flag, v) in [("--train-dir", &args.dirs.train_dir), ("--val-dir", &args.dirs.val_dir), ("--images-dir", &args.dirs.images_dir), ("--masks-dir", &args.dirs.masks_dir)] {
        train.extend([flag.to_string(), v.clone()]);
    }
    train.extend(args.common.iter().cloned());
    train.extend(recipe.flags.iter().cloned());
    let args_file = run_dir.join(ARGS_FILE);
    let checkpoint = run_dir.join(lightunet::train::trainer::CHECKPOINT_FILE);
    let args_json = serde_json::to_string_pretty(&train)?;
    if checkpoint.exists() {
        let before = std::fs::read_to_string(&args_file).unwrap_or_default();
        if before != args_json {
            bail!(
                "{} holds a run with other train flags than recipe {} now has ({}); give another --out or remove it",
                run_dir.display(),
                recipe.name,
                args_file.display()
            );
        }
    }
    let finished = read_json(&run_dir.join("config.json")).is_ok_and(|c| c["finished"] == true);
    let quiet = ["--quiet".to_string(), "--device".to_string(), args.device.clone()];
    if finished {
        eprintln!("== {}: already trained ({})", recipe.name, run_dir.display());
    } else {
        let cmd: Vec<String> = if checkpoint.exists() {
            ["train".to_string(), "--resume".into(), s(run_dir)].into_iter().chain(quiet.iter().cloned()).collect()
        } else {
            std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
            write_atomic(&args_file, args_json.as_bytes())?;
            train.iter().cloned().chain(quiet.iter().cloned()).collect()
        };
        let status = run_child(&cmd, stop)?;
        if stop.load(Ordering::SeqCst) {
            let _ = run_summary(run_dir, row);
            return Ok("interrupted (resumes when run again)".into());
        }
        if !status.success() {
            let _ = run_summary(run_dir, row);
            return Ok(format!("train failed ({status})"));
        }
    }
    run_summary(run_dir, row).with_context(|| format!("reading the run {}", run_dir.display()))?;
    let best = run_dir.join(lightunet::train::trainer::BEST_FILE);
    for (tta, folder) in [("none", "predict-val"), ("hflip", "predict-val-hflip")] {
        let out = run_dir.join(folder);
        let cmd: Vec<String> = vec![
            "predict".into(), "--weights".into(), s(&best), "--images".into(), s(val_images), "--masks".into(), s(val_masks),
            "--out".into(), s(&out), "--device".into(), args.device.clone(), "--tta".into(), tta.into(), "--no-overlays".into(),
            "--overwrite".into(), "--cleanup".into(), args.cleanup.to_string(),
        ];
        let status = run_child(&cmd, stop)?;
        if !status.success() {
            return Ok(format!("predict failed ({status})"));
        }
        let (dice, hd95, images) = predict_summary(&out)?;
        if tta == "none" {
            (row.val_dice, row.val_hd95, row.val_images) = (dice, hd95, images);
        } else {
            (row.val_dice_hflip, row.val_hd95_hflip) = (dice, hd95);
        }
    }
    Ok("done".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_parse_and_own_flags_are_refused() {
        assert_eq!(parse_recipe("ema").unwrap(), Recipe { name: "ema".into(), flags: vec!["--ema".into(), "0.999".into()] });
        assert_eq!(parse_recipe("seed=").unwrap().flags, Vec::<String>::new());
        assert_eq!(parse_recipe("mine=--loss bce-dice  --ema 0.99").unwrap().flags, ["--loss", "bce-dice", "--ema", "0.99"]);
        assert!(parse_recipe("nope").unwrap_err().to_string().contains("not a built-in"));
        assert!(parse_recipe("../x=--ema 0.9").is_err());
        assert!(parse_recipe("a b=--ema 0.9").is_err());
        let err = format!("{:#}", parse_recipe("long=--epochs 300").unwrap_err());
        assert!(err.contains("--epochs is set by the ablation"), "{err}");
        assert!(parse_recipe("x=--out=/tmp").is_err());
        for (name, _) in BUILT_IN {
            parse_recipe(name).unwrap();
        }
    }

    #[test]
    fn markdown_rows_and_delta() {
        let rows = vec![
            Row { recipe: "seed".into(), status: "done".into(), val_dice: Some(0.70), epochs_done: Some(15), best_epoch: Some(12), ..Row::default() },
            Row {
                recipe: "ema".into(),
                flags: vec!["--ema".into(), "0.999".into()],
                status: "done".into(),
                val_dice: Some(0.7234),
                best_epoch: Some(14),
                best_is_ema: Some(true),
                ..Row::default()
            },
            Row { recipe: "bad".into(), status: "train failed (exit status: 1)".into(), ..Row::default() },
        ];
        let md = markdown("line", &rows);
        let lines: Vec<&str> = md.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| recipe")).collect();
        assert_eq!(lines.len(), 3, "{md}");
        assert!(lines[0].starts_with("| seed | (seed recipe) | 0.7000 | +0.0000 |"), "{}", lines[0]);
        assert!(lines[1].contains("| `--ema 0.999` | 0.7234 | +0.0234 |") && lines[1].contains("| 14 (EMA) |"), "{}", lines[1]);
        assert!(lines[2].contains("| - | - |") && lines[2].ends_with("| train failed (exit status: 1) |"), "{}", lines[2]);
    }
}
