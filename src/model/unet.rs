//! The trainable network: one struct per PyTorch module (`DoubleConv`, `Down`, `Up`, `UNet`),
//! built from the architecture table ([`super::arch`]) with weights looked up only through
//! `vb.pp(..)` paths that spell the PyTorch state-dict keys, so that original checkpoints load
//! without a renaming table and a VarMap behind the VarBuilder makes them trainable.
//!
//! [`UNet::forward_t`] runs the training graph (`train`: batch statistics, dropout, candle
//! autograd) or, with `train` false, the same graph in eval mode (running statistics): the
//! reference path. Fast inference folds the network first (`UNet::fold`, defined in
//! `inference.rs`, which builds on this file and not the other way round). In training mode on
//! an AVX-512 CPU, Lighter U-net@1 (every conv set depthwise separable) runs the same step as
//! one fused op instead (`train_fused`), the graph's numbers to the last bits of summation
//! order; `logits_graph` is the graph, the reference its tests compare with.

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::VarBuilder;

use super::arch::{Arch, BlockKind};
use super::layers::{BatchNorm, ConvParams, ConvSet};
#[cfg(target_arch = "x86_64")]
use super::train_fused::{self, BufferPool, SetRef};
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
    /// The fused training step's buffers, reused from step to step (`train_fused`).
    #[cfg(target_arch = "x86_64")]
    fused: BufferPool,
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
            #[cfg(target_arch = "x86_64")]
            fused: BufferPool::default(),
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
        #[cfg(target_arch = "x86_64")]
        if train {
            if let Some(sets) = self.separable_sets() {
                if train_fused::runs(&self.arch, &sets, &x)? {
                    let keep = self.keep_mask(&x, dropout)?;
                    return train_fused::logits(&self.arch, &sets, &self.outc, &self.fused, &x, &keep);
                }
            }
        }
        self.logits_graph(&x, train, dropout)
    }

    /// The conv sets with their BatchNorms in network order, when all are separable.
    #[cfg(target_arch = "x86_64")]
    fn separable_sets(&self) -> Option<Vec<SetRef<'_>>> {
        let blocks = std::iter::once(&self.inc)
            .chain(self.down.iter().map(|d| &d.maxpool_conv_1))
            .chain(self.up.iter().map(|u| &u.conv));
        let mut sets = Vec::new();
        for dc in blocks {
            for (conv, bn) in [(&dc.conv0, &dc.bn1), (&dc.conv3, &dc.bn4)] {
                match conv {
                    ConvSet::Separable(conv) => sets.push(SetRef { conv, bn }),
                    ConvSet::Regular(_) => return None,
                }
            }
        }
        Some(sets)
    }

    /// The dropout keep mask for the fused step: the caller's (checked against the bottleneck's
    /// shape), or drawn here as candle's dropout draws it.
    #[cfg(target_arch = "x86_64")]
    fn keep_mask(&self, x: &Tensor, dropout: Dropout) -> Result<Tensor> {
        let (n, _, h, w) = x.dims4()?;
        let dims = self.arch.bottleneck_dims(n, h, w);
        match dropout {
            Dropout::Mask(keep) => {
                if keep.dims() != dims {
                    return Err(Error::Input(format!("dropout mask has shape {:?}, the bottleneck {dims:?}", keep.dims())));
                }
                Ok(keep.to_device(x.device())?.to_dtype(x.dtype())?.detach())
            }
            Dropout::Device => {
                let kept = Tensor::rand(0f32, 1f32, dims.to_vec(), x.device())?.ge(f64::from(DROPOUT_P))?;
                Ok(kept.to_dtype(x.dtype())?.affine(1.0 / (1.0 - f64::from(DROPOUT_P)), 0.0)?)
            }
        }
    }

    /// [`UNet::logits_t_with`] as the op-by-op graph (the reference the fused step is tested
    /// against), `x` already checked by `model_input`.
    pub(super) fn logits_graph(&self, x: &Tensor, train: bool, dropout: Dropout) -> Result<Tensor> {
        let mut x = self.inc.forward_t(x, train)?; // x1 [N, 64, H, W]
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
    #[cfg(target_arch = "x86_64")]
    use rand::{Rng, SeedableRng};

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

    /// A Lighter U-net@1 with every variable drawn from `seed`: conv weights in PyTorch's
    /// bounds, conv biases, BatchNorm gammas (0.8 to 1.2), betas and running statistics, so that
    /// no two BatchNorms share coefficients.
    #[cfg(target_arch = "x86_64")]
    fn random_net(seed: u64) -> candle_core::Result<(VarMap, UNet)> {
        let vm = VarMap::new();
        let net = UNet::new(Variant::Lighter(1), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).map_err(candle_core::Error::wrap)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let data = vm.data().lock().expect("lock");
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let v = &data[name];
            let vals: Vec<f32> = if name.ends_with("running_var") {
                (0..v.elem_count()).map(|_| rng.random_range(0.5..2.0)).collect()
            } else if v.rank() == 1 && name.ends_with(".weight") {
                (0..v.elem_count()).map(|_| rng.random_range(0.8..1.2)).collect()
            } else if v.rank() == 1 {
                (0..v.elem_count()).map(|_| rng.random_range(-0.1..0.1)).collect()
            } else {
                let bound = 1.0 / ((v.dims()[1] * v.dims()[2] * v.dims()[3]) as f32).sqrt();
                (0..v.elem_count()).map(|_| rng.random_range(-bound..bound)).collect()
            };
            v.set(&Tensor::from_vec(vals, v.shape(), &Device::Cpu)?)?;
        }
        drop(data);
        Ok((vm, net))
    }

    #[cfg(target_arch = "x86_64")]
    fn rel(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
        let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1e-12);
        Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? / scale)
    }

    /// The fused training step (`train_fused`) against the op-by-op graph: logits, every
    /// parameter's gradient and the running statistics after the step, at batch 1 to 3, on
    /// sizes that leave odd maps at every level (floor pooling, padded upsampling, strips with
    /// halo rows), with the dropout mask. The fused forward computes the graph's activations
    /// bit for bit, so every ReLU mask and pooling choice is the same and the gradients differ
    /// only by summation order (about 1e-6 here). Without that, a value at a ReLU's threshold
    /// or a pooling near-tie could go either way and move one element's share of a gradient:
    /// the graph against itself, input scaled by 1 + 1e-7, differs by up to 1e-2 on these
    /// nets. Then the same step again: bit-identical.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn fused_step_matches_graph() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        for (n, h, w, seed) in [(2usize, 64usize, 64usize, 1u64), (1, 50, 38, 2), (3, 35, 81, 3), (2, 16, 16, 4)] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut uniform = |len: usize, lo: f32, hi: f32| -> Vec<f32> { (0..len).map(|_| rng.random_range(lo..hi)).collect() };
            let x = Tensor::from_vec(uniform(n * 3 * h * w, 0.0, 1.0), (n, 3, h, w), &dev)?;
            let dims = UNet::bottleneck_dims(n, h, w);
            let keep: Vec<f32> = uniform(dims.iter().product(), 0.0, 1.0).iter().map(|&u| if u >= 0.5 { 2.0 } else { 0.0 }).collect();
            let keep = Tensor::from_vec(keep, dims.to_vec(), &dev)?;
            let r = Tensor::from_vec(uniform(n * h * w, -1.0, 1.0), (n, 1, h, w), &dev)?;
            let (vm_a, net_a) = random_net(seed)?;
            if !train_fused::runs(&net_a.arch, &net_a.separable_sets().expect("separable"), &x).map_err(candle_core::Error::wrap)? {
                eprintln!("skipped: the fused training step does not run on this CPU");
                return Ok(());
            }
            let (vm_b, net_b) = random_net(seed)?;
            let what = format!("[{n}, 3, {h}, {w}]");
            let fused = net_a.logits_t_with(&x, true, Dropout::Mask(&keep)).map_err(candle_core::Error::wrap)?;
            let graph = net_b.logits_graph(&x, true, Dropout::Mask(&keep)).map_err(candle_core::Error::wrap)?;
            let d = rel(&fused, &graph)?;
            assert!(d < 1e-5, "{what}: logits differ by {d:e}");
            let ga = (&fused * &r)?.sum_all()?.backward()?;
            let gb = (&graph * &r)?.sum_all()?.backward()?;
            let (va, vb) = (vm_a.data().lock().expect("lock"), vm_b.data().lock().expect("lock"));
            let mut global = 0f32;
            for v in vb.values() {
                if let Some(g) = gb.get(v) {
                    global = global.max(g.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?);
                }
            }
            let mut diffs = Vec::new();
            for (name, b) in vb.iter() {
                let a = &va[name];
                if name.contains("running") {
                    let d = rel(a.as_tensor(), b.as_tensor())?;
                    assert!(d < 1e-5, "{what}: {name} differs by {d:e}");
                    continue;
                }
                let (Some(g_a), Some(g_b)) = (ga.get(a), gb.get(b)) else { panic!("{what}: no gradient for {name}") };
                let max_b = g_b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                if max_b <= 1e-5 * global {
                    // Conv biases right before a BatchNorm: zero up to rounding in both.
                    let max_a = g_a.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                    assert!(max_a <= 1e-4 * global, "{what}: {name} gradient {max_a:e} should vanish");
                    continue;
                }
                diffs.push((rel(g_a, g_b)?, name.clone()));
            }
            diffs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (median, worst) = (&diffs[diffs.len() / 2], &diffs[diffs.len() - 1]);
            eprintln!("{what}: {} gradients, median difference {:e}, worst {:e} ({})", diffs.len(), median.0, worst.0, worst.1);
            assert!(diffs.len() > 50, "{what}: only {} gradients compared", diffs.len());
            assert!(median.0 < 1e-5 && worst.0 < 2e-4, "{what}: gradients differ: median {:e}, worst {:e} ({})", median.0, worst.0, worst.1);
            drop((va, vb));
            // Determinism: the same step on the same weights (running statistics aside, which
            // the first step moved and the step does not read) gives the same bits.
            let again = net_a.logits_t_with(&x, true, Dropout::Mask(&keep)).map_err(candle_core::Error::wrap)?;
            assert_eq!((&again - &fused)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?, 0.0, "{what}: logits not repeatable");
            let g2 = (&again * &r)?.sum_all()?.backward()?;
            for v in vm_a.data().lock().expect("lock").values() {
                if let (Some(a), Some(b)) = (ga.get(v), g2.get(v)) {
                    assert_eq!((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?, 0.0, "{what}: gradients not repeatable");
                }
            }
        }
        Ok(())
    }
}

