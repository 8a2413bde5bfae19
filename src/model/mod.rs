//! The Light U-net family (SPEC.md): U-net, Light U-net and Lighter U-net@C in candle.
//!
//! One struct per PyTorch module; weights are looked up only through `vb.pp(..)` paths that spell
//! the PyTorch state-dict keys (`inc.double_conv.0.conv.1.weight`), so original checkpoints load
//! without a renaming table. For inference ([`UNet::load`]) BatchNorm is folded into the
//! preceding convolution and the fast ops of [`ops`] run the separable conv sets; for training the
//! same structs run with batch statistics and candle autograd ([`UNet::forward_t`]).

pub mod batchnorm;
pub mod ops;
pub mod parity;
pub mod maxpool_train;
mod pointwise_cpu;
pub mod pointwise_train;
pub mod profile;
#[cfg(target_arch = "x86_64")]
mod separable_cpu;
mod variant;
#[cfg(feature = "cuda")]
mod cuda_ops;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::VarBuilder;

pub use variant::{channels_per_group, ConvSetKind, Variant};

use crate::error::{Error, Result};
use profile::mark;

/// Whether the training graph's ops of our own (BatchNorm with bias and ReLU, 2x2 max-pooling,
/// per-channel sums) run for `t`: f32 on the CPU, and on CUDA unless
/// `LIGHTUNET_CUDA_TRAIN_OPS=graph` asks for the candle-op compositions instead (to time both in
/// one run, and as a way around a kernel fault). Other devices and dtypes use the compositions.
pub(crate) fn own_train_ops(t: &Tensor) -> bool {
    if t.dtype() != DType::F32 {
        return false;
    }
    match t.device() {
        Device::Cpu => true,
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => {
            static GRAPH: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            !*GRAPH.get_or_init(|| std::env::var("LIGHTUNET_CUDA_TRAIN_OPS").is_ok_and(|v| v == "graph"))
        }
        _ => false,
    }
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;
/// `nn.Dropout(0.5)` after the bottleneck (`x5`) in training mode.
pub const DROPOUT_P: f32 = 0.5;

/// Where the training graph's dropout mask comes from (ignored in inference mode).
#[derive(Debug, Clone, Copy)]
pub enum Dropout<'a> {
    /// Drawn inside the model by candle's device generator. Candle's CPU generator cannot be
    /// seeded, so a CPU run using this is not reproducible.
    Device,
    /// A caller-drawn keep mask of shape [`UNet::bottleneck_dims`], each value 0 (dropped) or
    /// `1 / (1 - DROPOUT_P)` = 2 (kept, rescaled as PyTorch's Dropout does). Lets a trainer
    /// draw masks from its own seeded stream and get bit-identical, resumable runs.
    Mask(&'a Tensor),
}

/// The DoubleConv blocks of every variant: (PyTorch prefix, c_in, mid, c_out).
const BLOCKS: [(&str, usize, usize, usize); 9] = [
    ("inc.double_conv", 3, 64, 64),
    ("down1.maxpool_conv.1.double_conv", 64, 128, 128),
    ("down2.maxpool_conv.1.double_conv", 128, 256, 256),
    ("down3.maxpool_conv.1.double_conv", 256, 512, 512),
    ("down4.maxpool_conv.1.double_conv", 512, 512, 512),
    ("up1.conv.double_conv", 1024, 512, 256),
    ("up2.conv.double_conv", 512, 256, 128),
    ("up3.conv.double_conv", 256, 128, 64),
    ("up4.conv.double_conv", 128, 64, 64),
];

/// Every state-dict key of `variant` with its shape, in PyTorch's order (BatchNorm running
/// statistics and `num_batches_tracked` included; the latter is a scalar, shape `[]`).
pub fn expected_shapes(variant: Variant) -> Vec<(String, Vec<usize>)> {
    let (set1, set2) = variant.conv_sets();
    let mut out = Vec::new();
    let conv_set = |out: &mut Vec<(String, Vec<usize>)>, p: String, kind, ci, co| match kind {
        ConvSetKind::Regular => {
            out.push((format!("{p}.weight"), vec![co, ci, 3, 3]));
            out.push((format!("{p}.bias"), vec![co]));
        }
        ConvSetKind::Separable { c } => {
            let k = channels_per_group(c, ci);
            out.push((format!("{p}.conv.0.weight"), vec![ci, k, 3, 3]));
            out.push((format!("{p}.conv.0.bias"), vec![ci]));
            out.push((format!("{p}.conv.1.weight"), vec![co, ci, 1, 1]));
            out.push((format!("{p}.conv.1.bias"), vec![co]));
        }
    };
    let bn = |out: &mut Vec<(String, Vec<usize>)>, p: String, c| {
        for s in ["weight", "bias", "running_mean", "running_var"] {
            out.push((format!("{p}.{s}"), vec![c]));
        }
        out.push((format!("{p}.num_batches_tracked"), vec![]));
    };
    for (p, ci, mid, co) in BLOCKS {
        conv_set(&mut out, format!("{p}.0"), set1, ci, mid);
        bn(&mut out, format!("{p}.1"), mid);
        conv_set(&mut out, format!("{p}.3"), set2, mid, co);
        bn(&mut out, format!("{p}.4"), co);
    }
    out.push(("outc.conv.weight".into(), vec![1, 64, 1, 1]));
    out.push(("outc.conv.bias".into(), vec![1]));
    out
}

/// Trainable parameters (conv weights and biases, BatchNorm gamma and beta), as PyTorch counts.
pub fn parameter_count(variant: Variant) -> usize {
    expected_shapes(variant)
        .iter()
        .filter(|(n, _)| !is_buffer(n))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

/// BatchNorm running statistics and counters: state, not parameters.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked")
}

/// Multiply-adds x 2 of every convolution for one `h x w` frame (pooling, upsampling, BatchNorm
/// and activations are not counted).
pub fn gflops(variant: Variant, h: usize, w: usize) -> f64 {
    let (set1, set2) = variant.conv_sets();
    let conv = |kind, ci: usize, co: usize, px: usize| -> f64 {
        let macs = match kind {
            ConvSetKind::Regular => ci * co * 9,
            ConvSetKind::Separable { c } => ci * channels_per_group(c, ci) * 9 + ci * co,
        };
        2.0 * (macs * px) as f64
    };
    let levels = [0, 1, 2, 3, 4, 3, 2, 1, 0];
    let mut total = 0.0;
    for ((_, ci, mid, co), lvl) in BLOCKS.iter().zip(levels) {
        let px = (h >> lvl) * (w >> lvl);
        total += conv(set1, *ci, *mid, px) + conv(set2, *mid, *co, px);
    }
    total += 2.0 * (64 * h * w) as f64;
    total / 1e9
}

// ---------------------------------------------------------------------------------------------
// Layers

/// A convolution's weight and bias.
#[derive(Debug, Clone)]
pub struct ConvParams {
    weight: Tensor,
    bias: Tensor,
}

impl ConvParams {
    fn new(vb: &VarBuilder, co: usize, ci_per_group: usize, ks: usize, fan_in: usize) -> Result<Self> {
        // PyTorch's default Conv2d initialisation: kaiming_uniform(a=sqrt(5)) for the weight,
        // U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the bias; both reduce to this bound.
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = candle_nn::Init::Uniform { lo: -bound, up: bound };
        Ok(Self {
            weight: vb.get_with_hints((co, ci_per_group, ks, ks), "weight", init)?,
            bias: vb.get_with_hints(co, "bias", init)?,
        })
    }

    /// Multiplies output channel `o` by `scale[o]` and maps the bias to `bias * scale + shift`.
    fn fold(&mut self, scale: &Tensor, shift: &Tensor) -> Result<()> {
        let co = self.weight.dim(0)?;
        self.weight = self.weight.broadcast_mul(&scale.reshape((co, 1, 1, 1))?)?;
        self.bias = self.bias.mul(scale)?.add(shift)?;
        Ok(())
    }

    fn to_device_dtype(&self, device: &Device, dtype: DType) -> Result<Self> {
        Ok(Self { weight: move_to(&self.weight, device, dtype)?, bias: move_to(&self.bias, device, dtype)? })
    }

    fn bias4(&self) -> Result<Tensor> {
        Ok(self.bias.reshape((1, (), 1, 1))?)
    }
}

/// Grouped 3x3 (`conv.0`) then pointwise 1x1 (`conv.1`): the separable conv set.
#[derive(Debug, Clone)]
pub struct SeparableConv {
    grouped: ConvParams,
    pointwise: ConvParams,
}

impl SeparableConv {
    pub fn new(ci: usize, co: usize, c: u32, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("conv");
        let k = channels_per_group(c, ci);
        Ok(Self {
            grouped: ConvParams::new(&vb.pp(0), ci, k, 3, k * 9)?,
            pointwise: ConvParams::new(&vb.pp(1), co, ci, 1, ci)?,
        })
    }
}

/// A copy on `device` in `dtype`, cut from any autograd graph (inference weights must not drag
/// the training graph, or the ops that need no gradient, along).
fn move_to(t: &Tensor, device: &Device, dtype: DType) -> Result<Tensor> {
    Ok(t.to_device(device)?.to_dtype(dtype)?.detach())
}

/// One conv set of a DoubleConv: a regular 3x3 or a separable pair.
#[derive(Debug, Clone)]
pub enum ConvSet {
    Regular(ConvParams),
    Separable(SeparableConv),
}

impl ConvSet {
    fn new(kind: ConvSetKind, ci: usize, co: usize, vb: VarBuilder) -> Result<Self> {
        Ok(match kind {
            ConvSetKind::Regular => ConvSet::Regular(ConvParams::new(&vb, co, ci, 3, ci * 9)?),
            ConvSetKind::Separable { c } => ConvSet::Separable(SeparableConv::new(ci, co, c, vb)?),
        })
    }

    fn to_device_dtype(&self, device: &Device, dtype: DType) -> Result<Self> {
        Ok(match self {
            ConvSet::Regular(p) => ConvSet::Regular(p.to_device_dtype(device, dtype)?),
            ConvSet::Separable(s) => ConvSet::Separable(SeparableConv {
                grouped: s.grouped.to_device_dtype(device, dtype)?,
                pointwise: s.pointwise.to_device_dtype(device, dtype)?,
            }),
        })
    }

    /// Moves a separable set's grouped-conv bias into the pointwise bias (the 1x1 maps the
    /// constant through: `pw(g(x) + b) = pw(g(x)) + W b`), saving the fused path a pass.
    fn fold_grouped_bias(&mut self) -> Result<()> {
        if let ConvSet::Separable(s) = self {
            let (co, ci) = (s.pointwise.weight.dim(0)?, s.pointwise.weight.dim(1)?);
            let through = s.pointwise.weight.reshape((co, ci))?.matmul(&s.grouped.bias.reshape((ci, 1))?)?;
            s.pointwise.bias = s.pointwise.bias.add(&through.reshape(co)?)?;
            s.grouped.bias = s.grouped.bias.zeros_like()?;
        }
        Ok(())
    }

    /// The last convolution of the set: the one BatchNorm folds into.
    fn last_mut(&mut self) -> &mut ConvParams {
        match self {
            ConvSet::Regular(p) => p,
            ConvSet::Separable(s) => &mut s.pointwise,
        }
    }

    /// Differentiable forward with candle ops (training and the reference path).
    fn forward_graph(&self, x: &Tensor) -> Result<Tensor> {
        let (y, bias) = self.forward_graph_unbiased(x)?;
        Ok(y.broadcast_add(&bias.reshape((1, (), 1, 1))?)?)
    }

    /// [`ConvSet::forward_graph`] without the last convolution's bias, and that bias: training
    /// BatchNorm takes it in ([`batchnorm`]).
    fn forward_graph_unbiased(&self, x: &Tensor) -> Result<(Tensor, &Tensor)> {
        match self {
            ConvSet::Regular(p) => Ok((x.conv2d(&p.weight, 1, 1, 1, 1)?, &p.bias)),
            ConvSet::Separable(s) => {
                let y = ops::grouped_conv3x3(x, &s.grouped.weight, &s.grouped.bias)?;
                if pointwise_train::supported(&y) {
                    return Ok((pointwise_train::pointwise_train(&y, &s.pointwise.weight)?, &s.pointwise.bias));
                }
                let (n, ci, h, w) = y.dims4()?;
                let co = s.pointwise.weight.dim(0)?;
                let wt = s.pointwise.weight.reshape((co, ci))?;
                let y = wt.broadcast_matmul(&y.reshape((n, ci, h * w))?)?;
                Ok((y.reshape((n, co, h, w))?, &s.pointwise.bias))
            }
        }
    }

    /// Inference with BatchNorm folded in, as one fused pass over `input` where the CPU allows
    /// (see [`ops::separable_fused`]); `None` otherwise.
    fn forward_fused(&self, input: ops::ConvInput) -> Result<Option<Tensor>> {
        match self.separable_weights() {
            None => Ok(None),
            Some(set) => Ok(ops::separable_fused(input, set, true)?),
        }
    }

    fn separable_weights(&self) -> Option<ops::SeparableWeights<'_>> {
        match self {
            ConvSet::Regular(_) => None,
            ConvSet::Separable(s) => Some(ops::SeparableWeights {
                dw_w: &s.grouped.weight,
                dw_b: &s.grouped.bias,
                pw_w: &s.pointwise.weight,
                pw_b: &s.pointwise.bias,
            }),
        }
    }

    /// Inference with BatchNorm already folded in: conv set, bias and ReLU fused where possible.
    fn forward_folded_relu(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            ConvSet::Regular(p) => Ok(ops::conv3x3_bias_act(x, &p.weight, &p.bias, true)?),
            ConvSet::Separable(s) => {
                let (gw, gb, pw, pb) = (&s.grouped.weight, &s.grouped.bias, &s.pointwise.weight, &s.pointwise.bias);
                if let Some(y) = ops::separable_cuda(x, gw, gb, pw, pb, true)? {
                    return Ok(mark("fused separable set (CUDA)", y)?);
                }
                let y = mark("grouped 3x3 conv", ops::grouped_conv3x3(x, gw, gb)?)?;
                Ok(ops::pointwise(&y, pw, pb, true)?)
            }
        }
    }
}

/// BatchNorm2d with PyTorch semantics (eps 1e-5, momentum 0.1, unbiased running variance).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl BatchNorm {
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(c, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(c, "bias", candle_nn::Init::Const(0.0))?,
            running_mean: vb.get_with_hints(c, "running_mean", candle_nn::Init::Const(0.0))?,
            running_var: vb.get_with_hints(c, "running_var", candle_nn::Init::Const(1.0))?,
        })
    }

    fn to_device_dtype(&self, device: &Device, dtype: DType) -> Result<Self> {
        Ok(Self {
            weight: move_to(&self.weight, device, dtype)?,
            bias: move_to(&self.bias, device, dtype)?,
            running_mean: move_to(&self.running_mean, device, dtype)?,
            running_var: move_to(&self.running_var, device, dtype)?,
        })
    }

    /// `(scale, shift)` with `bn(x) = x * scale + shift` in inference mode.
    fn affine(&self) -> Result<(Tensor, Tensor)> {
        let scale = self.weight.div(&(self.running_var.affine(1.0, BN_EPS)?.sqrt()?))?;
        let shift = self.bias.sub(&self.running_mean.mul(&scale)?)?;
        Ok((scale, shift))
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let c = self.weight.dim(0)?;
        if !train {
            let (scale, shift) = self.affine().map_err(candle_core::Error::wrap)?;
            return x
                .broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
                .broadcast_add(&shift.reshape((1, c, 1, 1))?);
        }
        let (n, _, h, w) = x.dims4()?;
        let mean = x.mean_keepdim((0, 2, 3))?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
        let y = centred.broadcast_div(&var.affine(1.0, BN_EPS)?.sqrt()?)?;
        let y = y
            .broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?;
        self.update_running(&mean, &var, n * h * w)?;
        Ok(y)
    }
}

impl BatchNorm {
    /// Running statistics follow PyTorch: momentum 0.1, unbiased variance, from the batch `mean`
    /// and biased `var` over `count` values per channel. They are state, not part of the graph,
    /// and only variables (a training VarMap) can be updated.
    fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> candle_core::Result<()> {
        if self.running_mean.is_variable() && self.running_var.is_variable() {
            let count = count as f64;
            let mean = mean.flatten_all()?.detach();
            let unbiased = var.flatten_all()?.detach().affine(count / (count - 1.0).max(1.0), 0.0)?;
            let m = BN_MOMENTUM;
            let new_mean = (self.running_mean.affine(1.0 - m, 0.0)? + mean.affine(m, 0.0)?)?;
            let new_var = (self.running_var.affine(1.0 - m, 0.0)? + unbiased.affine(m, 0.0)?)?;
            Var::from_tensor(&self.running_mean)?.set(&new_mean)?;
            Var::from_tensor(&self.running_var)?.set(&new_var)?;
        }
        Ok(())
    }

    /// Training forward then ReLU, `x` being a convolution's output before its `conv_bias`: the
    /// same as `relu(forward_t(x + conv_bias, true))` (running statistics included), as the
    /// fused CPU op of [`batchnorm`].
    pub fn forward_train_relu(&self, x: &Tensor, conv_bias: &Tensor) -> Result<Tensor> {
        let (n, _, h, w) = x.dims4()?;
        let out = batchnorm::batch_norm_relu_train(x, conv_bias, &self.weight, &self.bias, BN_EPS, true)?;
        self.update_running(&out.mean, &out.var, n * h * w)?;
        Ok(out.y)
    }
}

/// `(conv set => BatchNorm => ReLU) x 2`: PyTorch `DoubleConv.double_conv` indices 0, 1, 3, 4.
#[derive(Debug, Clone)]
pub struct DoubleConv {
    conv0: ConvSet,
    bn1: Option<BatchNorm>,
    conv3: ConvSet,
    bn4: Option<BatchNorm>,
}

impl DoubleConv {
    pub fn new(ci: usize, mid: usize, co: usize, variant: Variant, vb: VarBuilder) -> Result<Self> {
        let (set1, set2) = variant.conv_sets();
        Ok(Self {
            conv0: ConvSet::new(set1, ci, mid, vb.pp(0))?,
            bn1: Some(BatchNorm::new(mid, vb.pp(1))?),
            conv3: ConvSet::new(set2, mid, co, vb.pp(3))?,
            bn4: Some(BatchNorm::new(co, vb.pp(4))?),
        })
    }

    /// A copy with every weight on `device` in `dtype`.
    pub fn to_device_dtype(&self, device: &Device, dtype: DType) -> Result<Self> {
        let bn = |b: &Option<BatchNorm>| b.as_ref().map(|b| b.to_device_dtype(device, dtype)).transpose();
        Ok(Self {
            conv0: self.conv0.to_device_dtype(device, dtype)?,
            bn1: bn(&self.bn1)?,
            conv3: self.conv3.to_device_dtype(device, dtype)?,
            bn4: bn(&self.bn4)?,
        })
    }

    /// Folds both BatchNorms into the convolutions before them (inference only).
    pub fn fold_bn(&mut self) -> Result<()> {
        for (conv, bn) in [(&mut self.conv0, &mut self.bn1), (&mut self.conv3, &mut self.bn4)] {
            if let Some(b) = bn.take() {
                let (scale, shift) = b.affine()?;
                conv.last_mut().fold(&scale, &shift)?;
            }
            conv.fold_grouped_bias()?;
        }
        Ok(())
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_input(ops::ConvInput::Map(x), train)
    }

    /// Forward from an input that may still be a pooled or upsampled-and-concatenated map:
    /// folded separable sets on AVX-512 CPUs read it straight from its parts.
    pub fn forward_input(&self, input: ops::ConvInput, train: bool) -> Result<Tensor> {
        if let Some(y) = self.forward_fused_double(input, None)? {
            return Ok(mark("fused separable block (CPU)", y)?);
        }
        if self.bn1.is_none() {
            if let Some(y) = self.conv0.forward_fused(input)? {
                return self.conv3_forward(mark("fused separable set (CPU)", y)?, train);
            }
        }
        let x = input.materialize()?;
        let x = match &self.bn1 {
            None => self.conv0.forward_folded_relu(&x)?,
            Some(bn) => conv_bn_relu(&self.conv0, bn, &x, train)?,
        };
        self.conv3_forward(x, train)
    }

    /// Inference through this (folded) DoubleConv and then `head`, the network's final 1x1,
    /// fused where the CPU allows so that this block's output map is never stored.
    fn forward_head(&self, input: ops::ConvInput, head: &ConvParams) -> Result<Tensor> {
        if let Some(y) = self.forward_fused_double(input, Some(head))? {
            return Ok(mark("fused separable block (CPU)", y)?);
        }
        let y = self.forward_input(input, false)?;
        Ok(ops::pointwise(&y, &head.weight, &head.bias, false)?)
    }

    /// Both folded separable sets (and `head`, if given) as one fused pass, where the CPU and
    /// the map allow ([`ops::double_separable_fused`]).
    fn forward_fused_double(&self, input: ops::ConvInput, head: Option<&ConvParams>) -> Result<Option<Tensor>> {
        if self.bn1.is_some() || self.bn4.is_some() {
            return Ok(None);
        }
        let (Some(a), Some(b)) = (self.conv0.separable_weights(), self.conv3.separable_weights()) else {
            return Ok(None);
        };
        Ok(ops::double_separable_fused(input, a, b, head.map(|h| (&h.weight, &h.bias)))?)
    }

    fn conv3_forward(&self, x: Tensor, train: bool) -> Result<Tensor> {
        Ok(match &self.bn4 {
            None => match self.conv3.forward_fused(ops::ConvInput::Map(&x))? {
                Some(y) => mark("fused separable set (CPU)", y)?,
                None => self.conv3.forward_folded_relu(&x)?,
            },
            Some(bn) => conv_bn_relu(&self.conv3, bn, &x, train)?,
        })
    }
}

/// A conv set, BatchNorm and ReLU of the training graph (or the unfolded eval graph). On the CPU
/// in training the BatchNorm is one fused op that also takes the conv's bias ([`batchnorm`]).
fn conv_bn_relu(conv: &ConvSet, bn: &BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    if train && batchnorm::supported(x) {
        let (y, bias) = conv.forward_graph_unbiased(x)?;
        return bn.forward_train_relu(&y, bias);
    }
    Ok(bn.forward_t(&conv.forward_graph(x)?, train)?.relu()?)
}

/// Max-pool 2 then DoubleConv (`maxpool_conv.1`).
#[derive(Debug, Clone)]
pub struct Down {
    maxpool_conv_1: DoubleConv,
}

impl Down {
    fn new(ci: usize, co: usize, variant: Variant, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("maxpool_conv").pp(1).pp("double_conv");
        Ok(Self { maxpool_conv_1: DoubleConv::new(ci, co, co, variant, vb)? })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.maxpool_conv_1.forward_input(ops::ConvInput::Pool(x), train)
    }
}

/// Upsample x2 (bilinear, align corners), zero-pad to the skip connection, concat, DoubleConv.
#[derive(Debug, Clone)]
pub struct Up {
    conv: DoubleConv,
}

impl Up {
    /// Folds BatchNorm for inference.
    pub fn fold_bn(&mut self) -> Result<()> {
        self.conv.fold_bn()
    }

    /// A copy with every weight on `device` in `dtype`.
    pub fn to_device_dtype(&self, device: &Device, dtype: DType) -> Result<Self> {
        Ok(Self { conv: self.conv.to_device_dtype(device, dtype)? })
    }

    pub fn new(ci: usize, co: usize, variant: Variant, vb: VarBuilder) -> Result<Self> {
        Ok(Self { conv: DoubleConv::new(ci, ci / 2, co, variant, vb.pp("conv").pp("double_conv"))? })
    }

    pub fn forward_t(&self, x: &Tensor, skip: &Tensor, train: bool) -> Result<Tensor> {
        self.conv.forward_input(ops::ConvInput::Up { skip, x }, train)
    }
}

/// The network: `[N, 3, H, W]` in 0..1 (BGR for the original's weights) -> `[N, 1, H, W]`.
#[derive(Debug, Clone)]
pub struct UNet {
    variant: Variant,
    inc: DoubleConv,
    down1: Down,
    down2: Down,
    down3: Down,
    down4: Down,
    up1: Up,
    up2: Up,
    up3: Up,
    up4: Up,
    outc: ConvParams,
    folded: bool,
}

impl UNet {
    /// Builds the network from a VarBuilder whose paths are the PyTorch keys. With a VarMap
    /// behind it this creates freshly initialised, trainable weights.
    pub fn new(variant: Variant, vb: VarBuilder) -> Result<Self> {
        let inc = DoubleConv::new(3, 64, 64, variant, vb.pp("inc").pp("double_conv"))?;
        Ok(Self {
            variant,
            inc,
            down1: Down::new(64, 128, variant, vb.pp("down1"))?,
            down2: Down::new(128, 256, variant, vb.pp("down2"))?,
            down3: Down::new(256, 512, variant, vb.pp("down3"))?,
            down4: Down::new(512, 512, variant, vb.pp("down4"))?,
            up1: Up::new(1024, 256, variant, vb.pp("up1"))?,
            up2: Up::new(512, 128, variant, vb.pp("up2"))?,
            up3: Up::new(256, 64, variant, vb.pp("up3"))?,
            up4: Up::new(128, 64, variant, vb.pp("up4"))?,
            outc: ConvParams::new(&vb.pp("outc").pp("conv"), 1, 64, 1, 64)?,
            folded: false,
        })
    }

    /// Loads a safetensors file with PyTorch key names (f32, f16 or bf16) for inference on
    /// `device`: BatchNorm folded, dropout off.
    pub fn load(path: impl AsRef<Path>, variant: Variant, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            Error::Checkpoint { path: path.to_path_buf(), reason: format!("not a readable safetensors file: {e}") }
        })?;
        Self::from_tensors(tensors, variant, device)
    }

    /// Like [`UNet::load`], from tensors already in memory (any device, any float dtype).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, variant: Variant, device: &Device) -> Result<Self> {
        let tensors = check_weights(tensors, variant)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let mut net = Self::new(variant, vb)?;
        net.fold_bn()?;
        net.to_device(device)
    }

    /// Folds every BatchNorm into its convolution: the inference form.
    pub fn fold_bn(&mut self) -> Result<()> {
        for dc in self.double_convs_mut() {
            dc.fold_bn()?;
        }
        self.folded = true;
        Ok(())
    }

    fn double_convs_mut(&mut self) -> [&mut DoubleConv; 9] {
        [
            &mut self.inc,
            &mut self.down1.maxpool_conv_1,
            &mut self.down2.maxpool_conv_1,
            &mut self.down3.maxpool_conv_1,
            &mut self.down4.maxpool_conv_1,
            &mut self.up1.conv,
            &mut self.up2.conv,
            &mut self.up3.conv,
            &mut self.up4.conv,
        ]
    }

    /// Moves (and converts to `dtype`) every weight: used for CUDA and reduced precision.
    pub fn to_device_dtype(&self, device: &Device, dtype: DType) -> Result<Self> {
        let mut net = self.clone();
        for dc in net.double_convs_mut() {
            *dc = dc.to_device_dtype(device, dtype)?;
        }
        net.outc = net.outc.to_device_dtype(device, dtype)?;
        Ok(net)
    }

    pub fn to_device(&self, device: &Device) -> Result<Self> {
        self.to_device_dtype(device, self.dtype())
    }

    pub fn variant(&self) -> Variant {
        self.variant
    }

    pub fn device(&self) -> &Device {
        self.outc.weight.device()
    }

    pub fn dtype(&self) -> DType {
        self.outc.weight.dtype()
    }

    /// Inference: `x [N, 3, H, W]` (H, W >= 16) in 0..1 -> probabilities `[N, 1, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }

    /// Forward in training (`train`: batch statistics, dropout) or inference mode.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(mark("sigmoid", candle_nn::ops::sigmoid(&self.logits_t(x, train)?)?)?)
    }

    /// The network before the final sigmoid (training losses use it for numerical stability).
    /// In training mode the dropout mask comes from candle's device generator
    /// ([`Dropout::Device`]); seeded training uses [`UNet::logits_t_with`].
    pub fn logits_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.logits_t_with(x, train, Dropout::Device)
    }

    /// The shape of the bottleneck `x5`, where dropout applies, for an input `[n, 3, h, w]`:
    /// `[n, 512, h/16, w/16]` (four floor-halving max-pools).
    pub fn bottleneck_dims(n: usize, h: usize, w: usize) -> [usize; 4] {
        [n, 512, h / 16, w / 16]
    }

    /// [`UNet::logits_t`] with the dropout mask chosen by the caller.
    pub fn logits_t_with(&self, x: &Tensor, train: bool, dropout: Dropout) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4().map_err(|_| Error::Input(format!("expected [N, 3, H, W], got {:?}", x.dims())))?;
        if c != 3 || h < 16 || w < 16 {
            return Err(Error::Input(format!("expected [N, 3, H, W] with H, W >= 16, got {:?}", x.dims())));
        }
        if train && self.folded {
            return Err(Error::Msg("this network was folded for inference and cannot train".into()));
        }
        let x = mark("input cast", x.to_dtype(self.dtype())?)?;
        ops::check_cpu_dtype(&x)?;
        let x1 = self.inc.forward_t(&x, train)?; // [N, 64, H, W]
        let x2 = self.down1.forward_t(&x1, train)?; // [N, 128, H/2, W/2]
        let x3 = self.down2.forward_t(&x2, train)?; // [N, 256, H/4, W/4]
        let x4 = self.down3.forward_t(&x3, train)?; // [N, 512, H/8, W/8]
        let mut x5 = self.down4.forward_t(&x4, train)?; // [N, 512, H/16, W/16]
        if train {
            x5 = match dropout {
                Dropout::Device => candle_nn::ops::dropout(&x5, DROPOUT_P)?,
                Dropout::Mask(keep) => {
                    if keep.dims() != x5.dims() {
                        return Err(Error::Input(format!(
                            "dropout mask has shape {:?}, the bottleneck {:?}",
                            keep.dims(),
                            x5.dims()
                        )));
                    }
                    // The mask is a constant: gradients flow to x5 only, scaled by the mask,
                    // exactly as through candle's own dropout.
                    let keep = keep.to_device(x5.device())?.to_dtype(x5.dtype())?;
                    x5.mul(&keep.detach())?
                }
            };
        }
        let y = self.up1.forward_t(&x5, &x4, train)?; // [N, 256, H/8, W/8]
        let y = self.up2.forward_t(&y, &x3, train)?; // [N, 128, H/4, W/4]
        let y = self.up3.forward_t(&y, &x2, train)?; // [N, 64, H/2, W/2]
        if self.folded {
            // up4 and outc together: [N, 1, H, W]
            return self.up4.conv.forward_head(ops::ConvInput::Up { skip: &x1, x: &y }, &self.outc);
        }
        let y = self.up4.forward_t(&y, &x1, train)?; // [N, 64, H, W]
        let o = y.conv2d(&self.outc.weight, 0, 1, 1, 1)?;
        Ok(o.broadcast_add(&self.outc.bias4()?)?)
    }
}

impl Module for UNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        UNet::forward(self, x).map_err(candle_core::Error::wrap)
    }
}

/// Checks names and shapes against `variant` and converts floats to f32. A missing, extra or
/// mis-shaped tensor is an error naming it, its expected and found shape, and the variant.
pub fn check_weights(
    mut tensors: HashMap<String, Tensor>,
    variant: Variant,
) -> Result<HashMap<String, Tensor>> {
    let expected = expected_shapes(variant);
    // Same rules as `convert`'s detection, so both name the same variant for the same file.
    let shapes: Vec<(String, Vec<usize>)> = tensors.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect();
    let hint = crate::checkpoint::detect_variant(&shapes)
        .ok()
        .filter(|v| *v != variant)
        .map(|v| format!(" (these weights look like {v})"))
        .unwrap_or_default();
    let err = |name: &str, problem: String| Error::Weights {
        variant: variant.to_string(),
        name: name.to_string(),
        problem: format!("{problem}{hint}"),
    };
    let mut out = HashMap::with_capacity(expected.len());
    for (name, shape) in &expected {
        let optional = name.ends_with(".num_batches_tracked");
        match tensors.get(name) {
            None if optional => continue,
            None => return Err(err(name, format!("missing, expected shape {shape:?}"))),
            Some(t) if !optional && t.dims() != shape.as_slice() => {
                return Err(err(name, format!("expected shape {shape:?}, found {:?}", t.dims())))
            }
            Some(_) => {}
        }
        if let Some(t) = tensors.remove(name) {
            if !optional {
                out.insert(name.clone(), t.to_dtype(DType::F32)?);
            }
        }
    }
    if let Some(name) = tensors.keys().min() {
        let found = tensors[name].dims().to_vec();
        return Err(err(name, format!("unexpected tensor of shape {found:?}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_seed_table() {
        let table = [
            ("unet", 17_267_393),
            ("light", 11_000_257),
            ("lighter@128", 7_944_661),
            ("lighter@64", 4_995_541),
            ("lighter@32", 3_465_685),
            ("lighter@16", 2_700_757),
            ("lighter@8", 2_318_293),
            ("lighter@4", 2_127_061),
            ("lighter@2", 2_031_445),
            ("lighter@1", 1_983_583),
        ];
        for (name, n) in table {
            let v: Variant = name.parse().unwrap();
            assert_eq!(parameter_count(v), n, "{name}");
        }
    }

    #[test]
    fn gflops_match_spec() {
        for (name, g) in [("unet", 80.0), ("light", 51.3), ("lighter@128", 75.3), ("lighter@1", 9.5)] {
            let v: Variant = name.parse().unwrap();
            let got = gflops(v, 256, 256);
            assert!((got - g).abs() < 0.06, "{name}: {got}");
        }
    }

    #[test]
    fn variant_names_round_trip() {
        for v in Variant::all() {
            assert_eq!(v.to_string().parse::<Variant>().unwrap(), v);
        }
        assert!("lighter@3".parse::<Variant>().is_err());
        assert!("lighter@256".parse::<Variant>().is_err());
        assert!("resnet".parse::<Variant>().is_err());
    }
}
