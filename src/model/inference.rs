//! The inference form of the network: [`InferenceNet`], made once from a [`UNet`] by
//! [`UNet::fold`] (or loaded straight from a weights file). Folding puts every BatchNorm into the
//! convolution before it (running statistics) and then plans each block once: which kernels run
//! it on this machine ([`Capabilities`]), device and dtype. The forward pass only follows the
//! plan.
//!
//! The paths a block can take ([`BlockPath`]):
//! - both separable conv sets fused in one pass on an AVX-512 CPU, the block's input read from
//!   its parts (pooled or upsampled on the fly) and, for the last block, the network's final 1x1
//!   applied in the same pass ([`ops::double_separable_fused`]);
//! - else each conv set on its own: fused on an AVX-512 CPU ([`ops::separable_fused`]), as one
//!   CUDA kernel ([`ops::separable_cuda`]), as a grouped 3x3 then a 1x1, or as a regular 3x3.
//!
//! Some limits depend on the map (a fused double block needs a strip of rows per thread; a fused
//! op declines what it cannot run): then the same block falls back, for that call, to the next
//! path down the list above, with the same weights.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::arch::{check_weights, Arch};
use super::capabilities::Capabilities;
use super::layers::{ConvParams, ConvSet, SeparableConv};
use super::ops::{self, ConvInput};
use super::profile::mark;
use super::unet::{model_input, DoubleConv, UNet, Up};
use super::variant::Variant;
use crate::error::{Error, Result};

/// How one conv set of a block runs (BatchNorm folded in, ReLU after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetPath {
    /// A regular 3x3 convolution: im2col + GEMM on the CPU, candle's convolution and one bias +
    /// ReLU pass elsewhere ([`ops::conv3x3_bias_act`]).
    Regular,
    /// A grouped 3x3 ([`ops::grouped_conv3x3`]), then a 1x1 with bias and ReLU
    /// ([`ops::pointwise`]).
    Layered,
    /// One pass on an AVX-512 CPU, the input read from its parts ([`ops::separable_fused`]);
    /// [`SetPath::Layered`] for a call the fused op declines.
    FusedCpu,
    /// One CUDA kernel ([`ops::separable_cuda`]; opt-in, [`Capabilities::cuda_fused`]).
    FusedCuda,
}

/// How a block runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockPath {
    /// Both separable conv sets (and, for the last block, the network's final 1x1) in one pass
    /// on an AVX-512 CPU, the middle map kept in cache ([`ops::double_separable_fused`]); for a
    /// map too small to give each thread a strip of rows, two [`SetPath::FusedCpu`] sets.
    FusedDoubleCpu,
    /// Conv set 1, then conv set 2 (then the final 1x1, for the last block).
    Sets(SetPath, SetPath),
}

impl fmt::Display for SetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SetPath::Regular => "3x3 conv",
            SetPath::Layered => "grouped 3x3 conv, 1x1 conv",
            SetPath::FusedCpu => "fused separable set (CPU)",
            SetPath::FusedCuda => "fused separable set (CUDA)",
        })
    }
}

impl fmt::Display for BlockPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockPath::FusedDoubleCpu => f.write_str("fused separable block (CPU)"),
            BlockPath::Sets(a, b) => write!(f, "{a}; {b}"),
        }
    }
}

/// A folded conv set with the path that runs it.
#[derive(Debug, Clone)]
enum SetPlan {
    Regular(ConvParams),
    Layered(SeparableConv),
    FusedCpu(SeparableConv),
    FusedCuda(SeparableConv),
}

impl SetPlan {
    /// Chooses the path of a folded set whose weights are already where they will run.
    fn new(set: ConvSet, caps: &Capabilities) -> Result<Self> {
        Ok(match set {
            ConvSet::Regular(p) => SetPlan::Regular(p),
            ConvSet::Separable(s) if caps.avx512 && s.weights().fits_cpu_fused()? => SetPlan::FusedCpu(s),
            ConvSet::Separable(s) if caps.cuda_fused && s.weights().fits_cuda_fused()? => SetPlan::FusedCuda(s),
            ConvSet::Separable(s) => SetPlan::Layered(s),
        })
    }

    fn path(&self) -> SetPath {
        match self {
            SetPlan::Regular(_) => SetPath::Regular,
            SetPlan::Layered(_) => SetPath::Layered,
            SetPlan::FusedCpu(_) => SetPath::FusedCpu,
            SetPlan::FusedCuda(_) => SetPath::FusedCuda,
        }
    }

    /// The folded weights, to move and plan again.
    fn set(&self) -> ConvSet {
        match self {
            SetPlan::Regular(p) => ConvSet::Regular(p.clone()),
            SetPlan::Layered(s) | SetPlan::FusedCpu(s) | SetPlan::FusedCuda(s) => ConvSet::Separable(s.clone()),
        }
    }

    fn forward(&self, input: ConvInput) -> Result<Tensor> {
        match self {
            SetPlan::Regular(p) => Ok(ops::conv3x3_bias_act(&input.materialize()?, &p.weight, &p.bias, true)?),
            SetPlan::Layered(s) => layered(s, &input.materialize()?),
            SetPlan::FusedCpu(s) => fused_cpu(s, input),
            SetPlan::FusedCuda(s) => {
                let x = input.materialize()?;
                match ops::separable_cuda(&x, s.weights(), true)? {
                    Some(y) => Ok(mark("fused separable set (CUDA)", y)?),
                    None => layered(s, &x),
                }
            }
        }
    }
}

/// A separable set as two ops: grouped 3x3, then 1x1 with bias and ReLU.
fn layered(s: &SeparableConv, x: &Tensor) -> Result<Tensor> {
    let w = s.weights();
    let y = mark("grouped 3x3 conv", ops::grouped_conv3x3(x, w.dw_w, w.dw_b)?)?;
    Ok(ops::pointwise(&y, w.pw_w, w.pw_b, true)?)
}

/// A separable set in one pass on the CPU, or as two ops where the fused op declines the call.
fn fused_cpu(s: &SeparableConv, input: ConvInput) -> Result<Tensor> {
    match ops::separable_fused(input, s.weights(), true)? {
        Some(y) => Ok(mark("fused separable set (CPU)", y)?),
        None => layered(s, &input.materialize()?),
    }
}

#[derive(Debug, Clone)]
enum BlockPlan {
    FusedDoubleCpu(SeparableConv, SeparableConv),
    Sets(SetPlan, SetPlan),
}

/// One folded DoubleConv and the kernels chosen for it.
#[derive(Debug, Clone)]
pub struct InferenceBlock {
    plan: BlockPlan,
}

impl InferenceBlock {
    /// Folds `dc`'s BatchNorms, moves the weights to `device` and `dtype` and plans the block.
    fn fold(dc: &DoubleConv, device: &Device, dtype: DType, caps: &Capabilities) -> Result<Self> {
        let [a, b] = dc.folded_sets()?;
        Self::plan([a.to_device_dtype(device, dtype)?, b.to_device_dtype(device, dtype)?], caps)
    }

    /// Chooses the block's path: both sets fused where each could run fused on the CPU, else
    /// each set's own path.
    fn plan(sets: [ConvSet; 2], caps: &Capabilities) -> Result<Self> {
        let [a, b] = sets;
        let plan = match (SetPlan::new(a, caps)?, SetPlan::new(b, caps)?) {
            (SetPlan::FusedCpu(a), SetPlan::FusedCpu(b)) => BlockPlan::FusedDoubleCpu(a, b),
            (a, b) => BlockPlan::Sets(a, b),
        };
        Ok(Self { plan })
    }

    fn sets(&self) -> [ConvSet; 2] {
        match &self.plan {
            BlockPlan::FusedDoubleCpu(a, b) => [ConvSet::Separable(a.clone()), ConvSet::Separable(b.clone())],
            BlockPlan::Sets(a, b) => [a.set(), b.set()],
        }
    }

    fn to_device_dtype(&self, device: &Device, dtype: DType, caps: &Capabilities) -> Result<Self> {
        let [a, b] = self.sets();
        Self::plan([a.to_device_dtype(device, dtype)?, b.to_device_dtype(device, dtype)?], caps)
    }

    pub fn path(&self) -> BlockPath {
        match &self.plan {
            BlockPlan::FusedDoubleCpu(..) => BlockPath::FusedDoubleCpu,
            BlockPlan::Sets(a, b) => BlockPath::Sets(a.path(), b.path()),
        }
    }

    /// The block on `input`: a map, a map to pool (Down blocks) or a skip connection and a map
    /// to upsample (Up blocks).
    pub fn forward(&self, input: ConvInput) -> Result<Tensor> {
        self.forward_head(input, None)
    }

    /// The block, then `head` (a 1x1 with bias, no activation) if given: fused where the
    /// block's path allows, so that the block's output map is never stored.
    fn forward_head(&self, input: ConvInput, head: Option<&ConvParams>) -> Result<Tensor> {
        let y = match &self.plan {
            BlockPlan::FusedDoubleCpu(a, b) => {
                let head_weights = head.map(|h| (&h.weight, &h.bias));
                if let Some(y) = ops::double_separable_fused(input, a.weights(), b.weights(), head_weights)? {
                    return Ok(mark("fused separable block (CPU)", y)?);
                }
                // Too small a map for a strip per thread: one set at a time (the one-set pass
                // splits the output channels instead).
                let y = fused_cpu(a, input)?;
                fused_cpu(b, ConvInput::Map(&y))?
            }
            BlockPlan::Sets(a, b) => {
                let y = a.forward(input)?;
                b.forward(ConvInput::Map(&y))?
            }
        };
        match head {
            Some(h) => Ok(ops::pointwise(&y, &h.weight, &h.bias, false)?),
            None => Ok(y),
        }
    }
}

/// The network for inference: `[N, 3, H, W]` in 0..1 (BGR for the original's weights) ->
/// probabilities `[N, 1, H, W]`. BatchNorm is folded, dropout off, and every block runs the
/// path chosen for it when the network was folded or moved ([`InferenceNet::describe`]).
#[derive(Debug, Clone)]
pub struct InferenceNet {
    arch: Arch,
    caps: Capabilities,
    inc: InferenceBlock,
    /// `down1` .. `down4`.
    down: Vec<InferenceBlock>,
    /// `up1` .. `up4`; the last one runs with `outc` as its head.
    up: Vec<InferenceBlock>,
    outc: ConvParams,
}

impl UNet {
    /// The inference form of this network on `device` in `dtype`: every BatchNorm folded into
    /// the convolution before it (running statistics), each block's kernels chosen for this
    /// machine ([`Capabilities::detect`]), device and dtype. The folding arithmetic runs where
    /// this network's weights are, before they move.
    pub fn fold(&self, device: &Device, dtype: DType) -> Result<InferenceNet> {
        let caps = Capabilities::detect();
        let block = |dc: &DoubleConv| InferenceBlock::fold(dc, device, dtype, &caps);
        Ok(InferenceNet {
            arch: self.arch,
            caps,
            inc: block(&self.inc)?,
            down: self.down.iter().map(|d| block(&d.maxpool_conv_1)).collect::<Result<_>>()?,
            up: self.up.iter().map(|u| block(&u.conv)).collect::<Result<_>>()?,
            outc: self.outc.to_device_dtype(device, dtype)?,
        })
    }
}

impl DoubleConv {
    /// This block alone in its inference form on `device` in `dtype` (see [`UNet::fold`]).
    pub fn fold(&self, device: &Device, dtype: DType) -> Result<InferenceBlock> {
        InferenceBlock::fold(self, device, dtype, &Capabilities::detect())
    }
}

impl Up {
    /// This block's DoubleConv in its inference form; it runs on
    /// `ConvInput::Up { skip, x }`.
    pub fn fold(&self, device: &Device, dtype: DType) -> Result<InferenceBlock> {
        self.conv.fold(device, dtype)
    }
}

impl InferenceNet {
    /// Loads a safetensors file with PyTorch key names (f32, f16 or bf16) for inference on
    /// `device`, in f32.
    pub fn load(path: impl AsRef<Path>, variant: Variant, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("not a readable safetensors file: {e}"),
        })?;
        Self::from_tensors(tensors, variant, device)
    }

    /// Like [`InferenceNet::load`], from the bytes of a safetensors file (the weights embedded in
    /// the binary); `origin` names them in errors.
    pub fn load_buffer(bytes: &[u8], origin: &Path, variant: Variant, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| Error::Checkpoint {
            path: origin.to_path_buf(),
            reason: format!("not readable safetensors: {e}"),
        })?;
        Self::from_tensors(tensors, variant, device)
    }

    /// Like [`InferenceNet::load`], from tensors already in memory (any device, any float
    /// dtype), checked by [`check_weights`].
    pub fn from_tensors(tensors: HashMap<String, Tensor>, variant: Variant, device: &Device) -> Result<Self> {
        let tensors = check_weights(tensors, variant)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        UNet::new(variant, vb)?.fold(device, DType::F32)
    }

    /// Moves (and converts to `dtype`) every weight, and plans every block again for the new
    /// device and dtype: used for CUDA and reduced precision.
    pub fn to_device_dtype(&self, device: &Device, dtype: DType) -> Result<Self> {
        self.replan(device, dtype, self.caps)
    }

    pub fn to_device(&self, device: &Device) -> Result<Self> {
        self.to_device_dtype(device, self.dtype())
    }

    /// The same network planned as if this machine had `caps` (to compare paths; a fused path
    /// still runs only where the kernels find the CPU features they need).
    pub fn with_capabilities(&self, caps: Capabilities) -> Result<Self> {
        self.replan(self.device(), self.dtype(), caps)
    }

    fn replan(&self, device: &Device, dtype: DType, caps: Capabilities) -> Result<Self> {
        let block = |b: &InferenceBlock| b.to_device_dtype(device, dtype, &caps);
        Ok(Self {
            arch: self.arch,
            caps,
            inc: block(&self.inc)?,
            down: self.down.iter().map(block).collect::<Result<_>>()?,
            up: self.up.iter().map(block).collect::<Result<_>>()?,
            outc: self.outc.to_device_dtype(device, dtype)?,
        })
    }

    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    pub fn variant(&self) -> Variant {
        self.arch.variant
    }

    pub fn device(&self) -> &Device {
        self.outc.weight.device()
    }

    pub fn dtype(&self) -> DType {
        self.outc.weight.dtype()
    }

    /// Each block's PyTorch name and path, in network order (`up4`'s path includes `outc`).
    pub fn describe(&self) -> Vec<(&'static str, BlockPath)> {
        let blocks = std::iter::once(&self.inc).chain(&self.down).chain(&self.up);
        self.arch.blocks().map(|b| b.name).zip(blocks.map(InferenceBlock::path)).collect()
    }

    /// `x [N, 3, H, W]` (H, W >= 16) in 0..1 -> probabilities `[N, 1, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(mark("sigmoid", candle_nn::ops::sigmoid(&self.logits(x)?)?)?)
    }

    /// The network before the final sigmoid.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let x = model_input(&self.arch, x, self.dtype())?;
        let mut x = self.inc.forward(ConvInput::Map(&x))?; // x1 [N, 64, H, W]
        // x2 .. x5 (x5 [N, 512, H/16, W/16] stays in x), each pooled on the way in; the skip
        // connections x1 .. x4 are kept.
        let mut skips = Vec::with_capacity(self.down.len());
        for down in &self.down {
            let y = down.forward(ConvInput::Pool(&x))?;
            skips.push(std::mem::replace(&mut x, y));
        }
        // up1 .. up4 with x4 .. x1, each upsampling on the way in; up4 ends in outc:
        // [N, 1, H, W].
        let last = self.up.len().saturating_sub(1);
        for (i, (up, skip)) in self.up.iter().zip(skips.iter().rev()).enumerate() {
            let head = (i == last).then_some(&self.outc);
            x = up.forward_head(ConvInput::Up { skip, x: &x }, head)?;
        }
        Ok(x)
    }
}

impl Module for InferenceNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        InferenceNet::forward(self, x).map_err(candle_core::Error::wrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    /// A network with random weights and BatchNorm statistics far from the identity, so that
    /// folding has something to fold.
    fn random_net(v: Variant) -> Result<UNet> {
        let vm = VarMap::new();
        let net = UNet::new(v, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
        for (name, var) in vm.data().lock().map_err(|_| Error::Poisoned("variable map"))?.iter() {
            let c = var.elem_count();
            let t = if name.ends_with(".running_mean") || (var.rank() == 1 && name.ends_with("4.bias")) {
                Tensor::randn(0f32, 0.2, c, &Device::Cpu)?
            } else if name.ends_with(".running_var") || (var.rank() == 1 && name.ends_with("4.weight")) {
                Tensor::rand(0.5f32, 1.5, c, &Device::Cpu)?
            } else {
                continue;
            };
            var.set(&t)?;
        }
        Ok(net)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        Ok(a.sub(b)?.abs()?.flatten_all()?.max(0)?.to_scalar()?)
    }

    /// The path every block takes on this CPU, per variant: both sets fused where they are
    /// depthwise on AVX-512, a set fused where only it is, the layers otherwise; and nothing
    /// fused when the capabilities say no AVX-512.
    #[test]
    fn plan_per_block_on_this_cpu() -> Result<()> {
        use SetPath::*;
        let fused = Capabilities::detect().avx512;
        let names = ["inc", "down1", "down2", "down3", "down4", "up1", "up2", "up3", "up4"];
        let cases = [
            (Variant::UNet, BlockPath::Sets(Regular, Regular)),
            (Variant::Light, BlockPath::Sets(Regular, if fused { FusedCpu } else { Layered })),
            (Variant::Lighter(1), if fused { BlockPath::FusedDoubleCpu } else { BlockPath::Sets(Layered, Layered) }),
            (Variant::Lighter(2), BlockPath::Sets(Layered, Layered)),
            (Variant::Lighter(128), BlockPath::Sets(Layered, Layered)),
        ];
        for (v, want) in cases {
            let net = random_net(v)?.fold(&Device::Cpu, DType::F32)?;
            let plan = net.describe();
            assert_eq!(plan.iter().map(|(n, _)| *n).collect::<Vec<_>>(), names, "{v}");
            for (name, path) in &plan {
                assert_eq!(*path, want, "{v} {name}: {path}");
            }
            let generic = net.with_capabilities(Capabilities { avx512: false, ..net.capabilities() })?;
            for (name, path) in generic.describe() {
                let none_fused = !matches!(path, BlockPath::FusedDoubleCpu | BlockPath::Sets(FusedCpu, _) | BlockPath::Sets(_, FusedCpu));
                assert!(none_fused, "{v} {name} without AVX-512: {path}");
            }
        }
        Ok(())
    }

    /// The folded network, on its planned path and on the generic one, gives what the unfolded
    /// eval graph gives: batch 2, a size whose deep maps are too small for the fused double
    /// block (so those blocks fall back), odd sizes that make every Up block pad.
    #[test]
    fn inference_matches_eval_graph() -> Result<()> {
        for v in [Variant::UNet, Variant::Light, Variant::Lighter(1), Variant::Lighter(4), Variant::Lighter(16)] {
            let unet = random_net(v)?;
            let net = unet.fold(&Device::Cpu, DType::F32)?;
            let generic = net.with_capabilities(Capabilities { avx512: false, ..net.capabilities() })?;
            for dims in [(2, 3, 64, 48), (1, 3, 37, 50)] {
                let x = Tensor::rand(0f32, 1.0, dims, &Device::Cpu)?;
                let want = unet.forward_t(&x, false)?;
                for (what, n) in [("planned", &net), ("generic", &generic)] {
                    let d = max_diff(&n.forward(&x)?, &want)?;
                    assert!(d < 1e-4, "{v} {dims:?} {what}: max diff {d}");
                }
            }
        }
        Ok(())
    }

    /// Moving to another dtype plans again (the fused CPU kernels are f32 only), and the CPU
    /// refuses anything but f32 with an error of its own kind.
    #[test]
    fn other_dtypes_replan_and_cpu_refuses_them() -> Result<()> {
        let net = random_net(Variant::Lighter(1))?.fold(&Device::Cpu, DType::F32)?;
        let half = net.to_device_dtype(&Device::Cpu, DType::F16)?;
        assert!(half.describe().iter().all(|(_, p)| *p == BlockPath::Sets(SetPath::Layered, SetPath::Layered)));
        let err = half.forward(&Tensor::rand(0f32, 1.0, (1, 3, 16, 16), &Device::Cpu)?).unwrap_err();
        assert!(matches!(err, Error::CpuDType(DType::F16)), "{err}");
        let err = net.forward(&Tensor::rand(0f32, 1.0, (1, 3, 15, 16), &Device::Cpu)?).unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{err}");
        Ok(())
    }
}
