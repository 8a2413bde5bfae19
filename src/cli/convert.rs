//! `lightunet convert`: a PyTorch checkpoint (whole pickled model or state dict) to a safetensors
//! file with the same PyTorch weight names, checked against the model before anything is written.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};

use lightunet::checkpoint;
use lightunet::model::{InferenceNet, Variant};
use lightunet::output::{OutputPlan, PendingFile, Staged};

use super::outputs::input_file;

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// PyTorch checkpoint (.pth / .pt): `torch.save(model)`, `torch.save(model.state_dict())`, or
    /// a dict holding one under "state_dict" or "model".
    pub input: PathBuf,
    /// Safetensors file to write (PyTorch weight names).
    pub output: PathBuf,
    /// Fail unless the checkpoint is this variant: unet, light or lighter@C.
    #[arg(long = "model", value_name = "VARIANT")]
    pub model: Option<Variant>,
    /// Floating-point type of the written weights; `keep` writes them as stored.
    #[arg(long, value_enum, default_value_t = OutDtype::Keep)]
    pub dtype: OutDtype,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutDtype {
    F32,
    F16,
    Keep,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    // Checked first so a long import is not wasted on an output that cannot be written, and so
    // that the output is never the input (by any name).
    input_file("input", &args.input)?;
    let mut plan = OutputPlan::new();
    plan.input("input", &args.input).file("output", &args.output, args.overwrite);
    plan.check()?;

    let mut tensors = checkpoint::read_pth(&args.input)?;
    // `nn.DataParallel` saves its model under `module.`; the weights themselves are the same.
    if tensors.iter().all(|(name, _)| name.starts_with("module.")) {
        for (name, _) in &mut tensors {
            name.drain(.."module.".len());
        }
        eprintln!("note: removed the `module.` prefix (a DataParallel checkpoint)");
    }

    let shapes = checkpoint::shapes(&tensors);
    let variant = checkpoint::detect_variant(&shapes)
        .with_context(|| format!("{} holds no known model", args.input.display()))?;
    println!(
        "detected {variant} ({}), {} parameters",
        variant.paper_name(),
        thousands(checkpoint::parameter_count(&shapes))
    );
    if let Some(wanted) = args.model {
        if wanted != variant {
            bail!(
                "{} holds {variant} ({}), not {wanted} ({}) as --model asks",
                args.input.display(),
                variant.paper_name(),
                wanted.paper_name()
            );
        }
    }

    let tensors = tensors
        .into_iter()
        .map(|(name, t)| Ok((name, cast(t, args.dtype)?)))
        .collect::<candle_core::Result<Vec<_>>>()?;

    // Building the network checks every name and shape, so a file that converts also loads.
    let by_name: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    InferenceNet::from_tensors(by_name, variant, &Device::Cpu)
        .with_context(|| format!("{} does not load as {variant}", args.input.display()))?;

    // Written under a temporary name and renamed into place: without --overwrite, never over a
    // file that appeared during the import.
    let file = PendingFile::create("output", &args.output, args.overwrite)?;
    checkpoint::save_safetensors(&tensors, file.path())
        .with_context(|| format!("writing {}", args.output.display()))?;
    let mut staged = Staged::new();
    staged.push(file);
    staged.commit()?;
    let dtypes: Vec<&str> = {
        let mut d: Vec<&str> = tensors
            .iter()
            .map(|(_, t)| t.dtype())
            .filter(|d| d.is_float())
            .map(|d| d.as_str())
            .collect();
        d.sort_unstable();
        d.dedup();
        d
    };
    println!(
        "wrote {} ({} tensors, {})",
        args.output.display(),
        tensors.len(),
        dtypes.join("+")
    );
    Ok(())
}

/// Floating-point tensors to the requested type; integer buffers (`num_batches_tracked`) stay.
fn cast(tensor: Tensor, dtype: OutDtype) -> candle_core::Result<Tensor> {
    let target = match dtype {
        OutDtype::F32 => DType::F32,
        OutDtype::F16 => DType::F16,
        OutDtype::Keep => return Ok(tensor),
    };
    if tensor.dtype().is_float() && tensor.dtype() != target {
        tensor.to_dtype(target)
    } else {
        Ok(tensor)
    }
}

/// 1983583 -> "1,983,583".
fn thousands(n: usize) -> String {
    let digits: Vec<char> = n.to_string().chars().collect();
    // The leading group holds 1 to 3 digits, every later one exactly 3.
    let lead = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let (head, tail) = digits.split_at(lead.min(digits.len()));
    let mut out: String = head.iter().collect();
    for group in tail.chunks(3) {
        out.push(',');
        out.extend(group);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_983_583), "1,983,583");
        assert_eq!(thousands(17_267_393), "17,267,393");
    }
}
