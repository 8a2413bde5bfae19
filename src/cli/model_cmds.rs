//! `info` and `bench model`: what the variants are, and how fast the network alone runs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::Args;
use lightunet::device::{parse_device, parse_dtype};
use lightunet::model::{gflops, parameter_count, InferenceNet, UNet, Variant};
use lightunet::percentile::percentile_sorted;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Only this variant (unet, light, lighter@C).
    #[arg(long)]
    model: Option<Variant>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn info(args: InfoArgs) -> anyhow::Result<()> {
    let variants = match args.model {
        Some(v) => vec![v],
        None => Variant::all(),
    };
    if args.json {
        let rows: Vec<_> = variants
            .iter()
            .map(|v| {
                serde_json::json!({
                    "variant": v.to_string(), "name": v.paper_name(),
                    "parameters": parameter_count(*v), "gflop_256": gflops(*v, 256, 256),
                    "size_f32_mb": parameter_count(*v) as f64 * 4.0 / 1048576.0,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<13} {:<20} {:>12} {:>10} {:>12}", "variant", "name", "parameters", "size f32", "GFLOP/frame");
    for v in variants {
        let n = parameter_count(v);
        println!(
            "{:<13} {:<20} {:>12} {:>7.1} MB {:>12.1}",
            v.to_string(),
            v.paper_name(),
            group_thousands(n),
            n as f64 * 4.0 / 1048576.0,
            gflops(v, 256, 256)
        );
    }
    println!("(GFLOP: 2 x multiply-adds of all convolutions for one 256x256 frame)");
    Ok(())
}

pub fn group_thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[derive(Debug, Args)]
pub struct BenchModelArgs {
    /// Variant to time (unet, light, lighter@C).
    #[arg(long, default_value = "lighter@1")]
    model: Variant,
    /// Weights (safetensors); random weights when absent (the timing does not depend on them).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto (the GPU when one works).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, f16 or bf16 (reduced precision only on CUDA).
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Input height and width.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Timed runs after warm-up.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Also time each kind of op (after the timed runs, as many passes again), waiting for the
    /// device after every op: where a pass spends its time, as shares of the profiled total.
    #[arg(long)]
    profile: bool,
    /// Print JSON instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// A network with the given weights, or random ones (same cost) for timing only.
pub fn load_or_random(variant: Variant, weights: Option<&PathBuf>, device: &Device) -> anyhow::Result<InferenceNet> {
    match weights {
        Some(p) => InferenceNet::load(p, variant, device).with_context(|| format!("loading {}", p.display())),
        None => {
            let map = candle_nn::VarMap::new();
            let net = UNet::new(variant, VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu))?;
            Ok(net.fold(device, DType::F32)?)
        }
    }
}

pub fn bench_model(args: BenchModelArgs) -> anyhow::Result<()> {
    // Each timed run keeps its time; more than this only takes longer to say the same.
    const MAX_RUNS: usize = 100_000;
    if !(1..=MAX_RUNS).contains(&args.runs) || args.warmup > MAX_RUNS {
        bail!("--runs must be 1 to {MAX_RUNS} and --warmup at most {MAX_RUNS}");
    }
    lightunet::model::check_input(args.batch, args.size, args.size).context("--size and --batch")?;
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    if device.is_cpu() && dtype != DType::F32 {
        bail!("the CPU path runs in f32 only");
    }
    let net = load_or_random(args.model, args.weights.as_ref(), &device)?.to_device_dtype(&device, dtype)?;
    let x = Tensor::rand(0f32, 1f32, (args.batch, 3, args.size, args.size), &device)?;
    let run = || -> anyhow::Result<f64> {
        let t = Instant::now();
        let _y = net.forward(&x)?;
        // CUDA runs asynchronously: the time counts only once the stream has finished.
        device.synchronize()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..args.warmup {
        run()?;
    }
    let mut times = (0..args.runs).map(|_| run()).collect::<anyhow::Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    let at = |p: f64| percentile_sorted(&times, p).context("no timed runs");
    let (median, p90) = (at(50.0)?, at(90.0)?);
    let b = args.batch as f64;
    let threads = candle_core::utils::get_num_threads();
    // Per-op times, summed over as many passes as were timed, then per pass.
    let ops = if args.profile {
        let mut all = lightunet::model::profile::OpTimes::default();
        for _ in 0..args.runs {
            let (_, t) = lightunet::model::profile::profile(|| device.synchronize(), || net.forward(&x).map_err(candle_core::Error::wrap))?;
            all.merge(&t);
        }
        Some(all.scaled(1.0 / args.runs as f64))
    } else {
        None
    };
    if args.json {
        let mut j = serde_json::json!({
            "variant": args.model.to_string(), "device": args.device, "dtype": args.dtype,
            "batch": args.batch, "size": args.size, "runs": args.runs, "threads": threads,
            "median_ms_batch": median, "p90_ms_batch": p90,
            "median_ms_frame": median / b, "p90_ms_frame": p90 / b,
            "frames_per_s": b * 1000.0 / median,
        });
        if let Some(ops) = &ops {
            j["profiled_ms_batch"] = (ops.total() * 1e3).into();
            j["plan"] = net.describe().iter().map(|(block, path)| serde_json::json!({"block": block, "path": path.to_string()})).collect();
            j["profile"] = ops
                .entries
                .iter()
                .map(|(label, s, calls)| serde_json::json!({"op": label, "ms_batch": s * 1e3, "calls": calls}))
                .collect();
        }
        println!("{j}");
    } else {
        println!(
            "{} {} {} batch={} {}x{}: median {:.2} ms/batch ({:.2} ms/frame), p90 {:.2} ms/batch, {:.0} frames/s [{} runs, {} threads]",
            args.model, args.device, args.dtype, args.batch, args.size, args.size, median, median / b, p90, b * 1000.0 / median, args.runs, threads
        );
        if let Some(ops) = &ops {
            println!("inference plan (the kernels chosen for each block):");
            for (block, path) in net.describe() {
                println!("  {block:<6} {path}");
            }
            let total = ops.total();
            println!("per op, waiting for the device after each (total {:.2} ms/batch against {median:.2} unprofiled):", total * 1e3);
            let mut rows = ops.entries.clone();
            rows.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (label, s, calls) in rows {
                println!("  {label:<30} {:>9.3} ms {:>5.1}%  {calls:>4} calls", s * 1e3, 100.0 * s / total.max(1e-12));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Folder with the parity fixtures (the repository's tests/fixtures/parity).
    #[arg(long, default_value = "tests/fixtures/parity")]
    fixtures: PathBuf,
    /// Allowed max |ours - PyTorch| on probabilities; default 1e-4 for f32, 5e-2 for f16, 3e-1 for bf16 (measured on an H200: 4.0e-2 and 2.7e-1 over the whole network; single blocks stay within 6e-4 and 5e-3).
    #[arg(long)]
    tolerance: Option<f32>,
    /// Also compare the custom ops' values and gradients on the device with the CPU's (relative,
    /// <= 1e-4), and one whole training step of Lighter U-net@1 (<= 1e-3).
    #[arg(long)]
    grad: bool,
    #[arg(long)]
    json: bool,
}

/// Bound on the relative gradient differences of `check --grad` (cases may carry their own).
const GRAD_TOLERANCE: f32 = 1e-4;

/// Runs the PyTorch parity fixtures on a device: proof that a GPU install computes what PyTorch does.
pub fn check(args: CheckArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    // Before anything is loaded: the CPU kernels run in f32 only.
    if device.is_cpu() && dtype != DType::F32 {
        bail!("--dtype {} needs a CUDA device: the CPU path runs in f32 only (--device {} gave the CPU)", args.dtype, args.device);
    }
    if let Some(t) = args.tolerance {
        if !(t.is_finite() && t > 0.0) {
            bail!("--tolerance must be a finite number > 0, got {t}");
        }
    }
    let tol = args.tolerance.unwrap_or(match dtype {
        DType::F16 => 5e-2,
        DType::BF16 => 3e-1,
        _ => 1e-4,
    });
    let mut cases = lightunet::model::parity::run_fixtures(&args.fixtures, &device, dtype)
        .with_context(|| format!("running the fixtures in {}", args.fixtures.display()))?;
    if args.grad {
        let grads = lightunet::model::parity::grad_check(&device).context("gradient check")?;
        cases.extend(grads.into_iter().map(|mut c| {
            c.tolerance.get_or_insert(GRAD_TOLERANCE);
            c
        }));
    }
    // Every case against its own bound (the fixtures: the dtype's); the worst is the one
    // closest to (or furthest past) its bound.
    let bound = |c: &lightunet::model::parity::ParityCase| c.tolerance.unwrap_or(tol);
    let ok = cases.iter().all(|c| c.max_abs_diff <= bound(c));
    let worst = cases
        .iter()
        .max_by(|a, b| (a.max_abs_diff / bound(a)).total_cmp(&(b.max_abs_diff / bound(b))))
        .map(|c| format!("{} {:.3e} (bound {:.0e})", c.name, c.max_abs_diff, bound(c)))
        .unwrap_or_default();
    if args.json {
        println!("{}", serde_json::json!({"device": args.device, "dtype": args.dtype, "tolerance": tol, "ok": ok, "worst": worst, "cases": cases}));
    } else {
        for c in &cases {
            println!("{:<40} max |diff| {:.3e} {}", c.name, c.max_abs_diff, if c.max_abs_diff <= bound(c) { "ok" } else { "FAIL" });
        }
        println!("parity {} {}: worst {worst}: {}", args.device, args.dtype, if ok { "PASS" } else { "FAIL" });
    }
    if !ok {
        bail!("parity check failed on {} {} (worst {worst})", args.device, args.dtype);
    }
    Ok(())
}
