//! Command-line interface: one file per subcommand, each with its clap `Args` and a `run`.

use clap::{Parser, Subcommand};

mod ablation;
mod convert;
pub mod exit;
mod interrupt;
mod model_cmds;
mod outputs;
mod predict;
mod train;
mod pipeline;
mod weights;

/// `--cleanup`: the names of [`lightunet::postprocess::Cleanup`], listed in `--help`.
fn cleanup_parser() -> impl clap::builder::TypedValueParser<Value = lightunet::postprocess::Cleanup> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(lightunet::postprocess::Cleanup::NAMES).try_map(|s| s.parse())
}

#[derive(Debug, Parser)]
#[command(name = "lightunet", version, about = "Lesion segmentation in ultrasound images and video (Light U-net family)", after_help = exit::HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert a PyTorch checkpoint (.pth: whole pickled model or state dict) to safetensors.
    Convert(convert::ConvertArgs),
    /// Variants, parameter counts and work per 256x256 frame.
    Info(model_cmds::InfoArgs),
    /// Run the PyTorch parity fixtures on a device (checks a GPU install).
    Check(model_cmds::CheckArgs),
    /// Segment a recorded video (or the phantom): every frame, original timestamps, annotated output.
    Process(pipeline::ProcessArgs),
    /// Live: capture, segment and show/stream every frame with the newest mask (--show processed:
    /// only frames the model saw; the others are dropped).
    Live(pipeline::LiveArgs),
    /// Write a synthetic B-mode phantom clip and its ground-truth masks.
    Phantom(pipeline::PhantomArgs),
    /// Train a model: the original recipe unless options change it (resumable; Ctrl-C writes a checkpoint).
    Train(train::TrainArgs),
    /// Train named recipes one change at a time and tabulate their val Dice and HD95.
    Ablation(ablation::AblationArgs),
    /// Segment a folder of images; with --masks, per-image and mean metrics.
    Predict(predict::PredictArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

// Parsed once at start-up: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time the network alone: warm-up, then median and p90 per batch and per frame.
    Model(model_cmds::BenchModelArgs),
    /// Time the whole streaming pipeline: per-stage latency percentiles, drops, fps.
    Pipeline(pipeline::BenchPipelineArgs),
    /// Time training steps (forward, loss, backward, optimizer) on random data.
    Train(train::BenchTrainArgs),
}

/// Keeps freed tensor buffers in the heap instead of returning them to the kernel. candle
/// allocates every intermediate afresh; glibc serves large blocks with mmap and unmaps them on
/// free, so each forward pass page-faulted its whole activation memory anew: a Lighter U-net@1
/// training step spent about half its time in the kernel (31.7 s instead of 43.5 s per batch-8
/// step), and page faults were about a third of a CPU inference. The heap settles at the peak
/// of one pass and is reused from then on.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_MAX: i32 = -4;
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // SAFETY: mallopt only changes allocator tunables; called first thing in main.
    unsafe {
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}

pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only on a terminal: in a pipe or a log file they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Info(args) => model_cmds::info(args),
        Command::Check(args) => model_cmds::check(args),
        Command::Train(args) => train::run(args),
        Command::Ablation(args) => ablation::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Bench(BenchCommand::Model(args)) => model_cmds::bench_model(args),
        Command::Bench(BenchCommand::Pipeline(args)) => pipeline::bench_pipeline(args),
        Command::Bench(BenchCommand::Train(args)) => train::bench_train(args),
        Command::Process(args) => pipeline::process(args),
        Command::Live(args) => pipeline::live(args),
        Command::Phantom(args) => pipeline::phantom(args),
    }
}
