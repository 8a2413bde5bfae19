//! The trainable network: one struct per PyTorch module (`DoubleConv`, `Down`, `Up`, `UNet`),
//! built from the architecture table ([`super::arch`]) with weights looked up only through
//! `vb.pp(..)` paths that spell the PyTorch state-dict keys, so that original checkpoints load
//! without a renaming table and a VarMap behind the VarBuilder makes them trainable.
//!
//! [`UNet::forward_t`] runs the training graph (`train`: batch statistics, dropout, candle
//! autograd) or, with `train` false, the same graph in eval mode (running statistics): the
//! reference path. Fast inference folds the network first (`UNet::fold`, defined in
//! `inference.rs`, which builds on this file and not the other way round).

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::VarBuilder;

use super::arch::{Arch, BlockKind};
use super::layers::{BatchNorm, ConvParams, ConvSet};
use super::ops::{batchnorm, ConvInput};
use super::profile::mark;
use super::variant::Variant;
use crate::error::{Error, Result};

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

/// `(conv set => BatchNorm => ReLU) x 2`: PyTorch `DoubleConv.double_conv` indices 0, 1, 3, 4
/// ([`super::arch::CONV_SET_INDEX`]).
#[derive(Debug, Clone)]
pub struct DoubleConv {
    pub(super) conv0: ConvSet,
    pub(super) bn1: BatchNorm,
    pub(super) conv3: ConvSet,
    pub(super) bn4: BatchNorm,
}

impl DoubleConv {
    pub fn new(ci: usize, mid: usize, co: usize, variant: Variant, vb: VarBuilder) -> Result<Self> {
        let [set1, set2] = Arch::new(variant).conv_sets;
        Ok(Self {
            conv0: ConvSet::new(set1, ci, mid, vb.pp(0))?,
            bn1: BatchNorm::new(mid, vb.pp(1))?,
            conv3: ConvSet::new(set2, mid, co, vb.pp(3))?,
            bn4: BatchNorm::new(co, vb.pp(4))?,
        })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = conv_bn_relu(&self.conv0, &self.bn1, x, train)?;
        conv_bn_relu(&self.conv3, &self.bn4, &x, train)
    }

    /// Both conv sets with their BatchNorms folded in (running statistics): the weights of the
    /// inference form, on this block's device and dtype.
    pub(super) fn folded_sets(&self) -> Result<[ConvSet; 2]> {
        Ok([self.conv0.fold(&self.bn1)?, self.conv3.fold(&self.bn4)?])
    }
}

/// A conv set, BatchNorm and ReLU of the training graph (or the eval graph). In training, where
/// our own op runs ([`batchnorm::supported`]), the BatchNorm is one fused op that also takes the
/// conv's bias.
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
    pub(super) maxpool_conv_1: DoubleConv,
}

impl Down {
    pub fn new(ci: usize, co: usize, variant: Variant, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("maxpool_conv").pp(1).pp("double_conv");
        Ok(Self { maxpool_conv_1: DoubleConv::new(ci, co, co, variant, vb)? })
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.maxpool_conv_1.forward_t(&ConvInput::Pool(x).materialize()?, train)
    }
}

/// Upsample x2 (bilinear, align corners), zero-pad to the skip connection, concat, DoubleConv.
#[derive(Debug, Clone)]
pub struct Up {
    pub(super) conv: DoubleConv,
}

impl Up {
    pub fn new(ci: usize, co: usize, variant: Variant, vb: VarBuilder) -> Result<Self> {
        Ok(Self { conv: DoubleConv::new(ci, ci / 2, co, variant, vb.pp("conv").pp("double_conv"))? })
    }

    pub fn forward_t(&self, x: &Tensor, skip: &Tensor, train: bool) -> Result<Tensor> {
        self.conv.forward_t(&ConvInput::Up { skip, x }.materialize()?, train)
    }
}

/// The network: `[N, 3, H, W]` in 0..1 (BGR for the original's weights) -> `[N, 1, H, W]`.
#[derive(Debug, Clone)]
pub struct UNet {
    pub(super) arch: Arch,
    pub(super) inc: DoubleConv,
    /// `down1` .. `down4`.
    pub(super) down: Vec<Down>,
    /// `up1` .. `up4`.
    pub(super) up: Vec<Up>,
    pub(super) outc: ConvParams,
}

impl UNet {
    /// Builds the network from a VarBuilder whose paths are the PyTorch keys. With a VarMap
    /// behind it this creates freshly initialised, trainable weights.
    pub fn new(variant: Variant, vb: VarBuilder) -> Result<Self> {
        let arch = Arch::new(variant);
        let inc = arch.input_block();
        let down = arch.blocks_of(BlockKind::Down).map(|b| Down::new(b.c_in, b.c_out, variant, vb.pp(b.name)));
        let up = arch.blocks_of(BlockKind::Up).map(|b| Up::new(b.c_in, b.c_out, variant, vb.pp(b.name)));
        let head = arch.head();
        Ok(Self {
            arch,
            inc: DoubleConv::new(inc.c_in, inc.mid, inc.c_out, variant, vb.pp(inc.name).pp("double_conv"))?,
            down: down.collect::<Result<_>>()?,
            up: up.collect::<Result<_>>()?,
            outc: ConvParams::new(&vb.pp(head.name).pp("conv"), head.c_out, head.c_in, 1, head.c_in)?,
        })
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

    /// Eval mode (running statistics, no dropout) through the training graph, BatchNorm not
    /// folded: `x [N, 3, H, W]` (H, W >= 16) in 0..1 -> probabilities `[N, 1, H, W]`. The
    /// reference path; inference proper runs an `InferenceNet` (`UNet::fold`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }

    /// Forward in training (`train`: batch statistics, dropout) or eval mode.
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
        Arch::new(Variant::UNet).bottleneck_dims(n, h, w)
    }

    /// [`UNet::logits_t`] with the dropout mask chosen by the caller.
    pub fn logits_t_with(&self, x: &Tensor, train: bool, dropout: Dropout) -> Result<Tensor> {
        let x = model_input(&self.arch, x, self.dtype())?;
        let mut x = self.inc.forward_t(&x, train)?; // x1 [N, 64, H, W]
        // x2 [N, 128, H/2, W/2], x3 [N, 256, H/4, W/4], x4 [N, 512, H/8, W/8], then x5
        // [N, 512, H/16, W/16] stays in x; the skip connections x1 .. x4 are kept.
        let mut skips = Vec::with_capacity(self.down.len());
        for down in &self.down {
            let y = down.forward_t(&x, train)?;
            skips.push(std::mem::replace(&mut x, y));
        }
        if train {
            x = match dropout {
                Dropout::Device => candle_nn::ops::dropout(&x, DROPOUT_P)?,
                Dropout::Mask(keep) => {
                    if keep.dims() != x.dims() {
                        return Err(Error::Input(format!(
                            "dropout mask has shape {:?}, the bottleneck {:?}",
                            keep.dims(),
                            x.dims()
                        )));
                    }
                    // The mask is a constant: gradients flow to x5 only, scaled by the mask,
                    // exactly as through candle's own dropout.
                    let keep = keep.to_device(x.device())?.to_dtype(x.dtype())?;
                    x.mul(&keep.detach())?
                }
            };
        }
        // up1 .. up4 with x4 .. x1: [N, 256, H/8, W/8], [N, 128, H/4, W/4], [N, 64, H/2, W/2],
        // [N, 64, H, W].
        for (up, skip) in self.up.iter().zip(skips.iter().rev()) {
            x = up.forward_t(&x, skip, train)?;
        }
        let o = x.conv2d(&self.outc.weight, 0, 1, 1, 1)?; // [N, 1, H, W]
        Ok(o.broadcast_add(&self.outc.bias4()?)?)
    }
}

impl Module for UNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        UNet::forward(self, x).map_err(candle_core::Error::wrap)
    }
}

/// The network's input checked against the architecture (`[N, 3, H, W]`, H and W at least 16)
/// and cast to the weights' `dtype`, which on the CPU must be f32.
pub(super) fn model_input(arch: &Arch, x: &Tensor, dtype: DType) -> Result<Tensor> {
    let (c, min) = (arch.in_channels(), arch.min_side());
    let (_, xc, h, w) = x.dims4().map_err(|_| Error::Input(format!("expected [N, {c}, H, W], got {:?}", x.dims())))?;
    if xc != c || h < min || w < min {
        return Err(Error::Input(format!("expected [N, {c}, H, W] with H, W >= {min}, got {:?}", x.dims())));
    }
    let x = mark("input cast", x.to_dtype(dtype)?)?;
    if x.device().is_cpu() && x.dtype() != DType::F32 {
        return Err(Error::CpuDType(x.dtype()));
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::expected_shapes;
    use candle_nn::VarMap;

    /// The network built by `UNet::new` asks for exactly the keys and shapes of the table (the
    /// structs spell the module paths; the table the names and widths).
    #[test]
    fn unet_new_builds_the_table() {
        for v in Variant::all() {
            let vm = VarMap::new();
            UNet::new(v, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
            let mut got: Vec<(String, Vec<usize>)> =
                vm.data().lock().unwrap().iter().map(|(k, t)| (k.clone(), t.dims().to_vec())).collect();
            let mut want: Vec<_> =
                expected_shapes(v).into_iter().filter(|(n, _)| !n.ends_with(".num_batches_tracked")).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{v}");
        }
    }
}
