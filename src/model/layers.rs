//! The layers of the family, each a struct whose fields are the PyTorch attributes, built from a
//! `VarBuilder` whose paths spell the state-dict keys: a convolution's parameters, the separable
//! conv set (`conv.0`, `conv.1`), a conv set of either kind, BatchNorm2d. They run in the training
//! graph (candle autograd; batch statistics, or running statistics in eval mode). Folding a
//! BatchNorm into the convolution before it, the weight arithmetic of inference, is here too;
//! which kernels then run a folded set is the inference plan's choice (`inference`).

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use candle_nn::VarBuilder;

use super::ops::{self, batchnorm, pointwise_train, SeparableWeights};
use super::variant::{channels_per_group, ConvSetKind};
use crate::error::Result;

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// A convolution's weight and bias.
#[derive(Debug, Clone)]
pub struct ConvParams {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
}

impl ConvParams {
    pub(super) fn new(vb: &VarBuilder, co: usize, ci_per_group: usize, ks: usize, fan_in: usize) -> Result<Self> {
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

    pub(super) fn to_device_dtype(&self, device: &Device, dtype: DType) -> Result<Self> {
        Ok(Self { weight: move_to(&self.weight, device, dtype)?, bias: move_to(&self.bias, device, dtype)? })
    }

    pub(super) fn bias4(&self) -> Result<Tensor> {
        Ok(self.bias.reshape((1, (), 1, 1))?)
    }
}

/// Grouped 3x3 (`conv.0`) then pointwise 1x1 (`conv.1`): the separable conv set.
#[derive(Debug, Clone)]
pub struct SeparableConv {
    pub(super) grouped: ConvParams,
    pub(super) pointwise: ConvParams,
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

    /// The four tensors, as the fused separable ops take them.
    pub fn weights(&self) -> SeparableWeights<'_> {
        SeparableWeights {
            dw_w: &self.grouped.weight,
            dw_b: &self.grouped.bias,
            pw_w: &self.pointwise.weight,
            pw_b: &self.pointwise.bias,
        }
    }
}

/// A copy on `device` in `dtype`, cut from any autograd graph (inference weights must not drag
/// the training graph, or the ops that need no gradient, along).
pub(super) fn move_to(t: &Tensor, device: &Device, dtype: DType) -> Result<Tensor> {
    Ok(t.to_device(device)?.to_dtype(dtype)?.detach())
}

/// One conv set of a DoubleConv: a regular 3x3 or a separable pair.
#[derive(Debug, Clone)]
pub enum ConvSet {
    Regular(ConvParams),
    Separable(SeparableConv),
}

impl ConvSet {
    pub(super) fn new(kind: ConvSetKind, ci: usize, co: usize, vb: VarBuilder) -> Result<Self> {
        Ok(match kind {
            ConvSetKind::Regular => ConvSet::Regular(ConvParams::new(&vb, co, ci, 3, ci * 9)?),
            ConvSetKind::Separable { c } => ConvSet::Separable(SeparableConv::new(ci, co, c, vb)?),
        })
    }

    /// A copy with every weight on `device` in `dtype`, cut from any autograd graph.
    pub(super) fn to_device_dtype(&self, device: &Device, dtype: DType) -> Result<Self> {
        Ok(match self {
            ConvSet::Regular(p) => ConvSet::Regular(p.to_device_dtype(device, dtype)?),
            ConvSet::Separable(s) => ConvSet::Separable(SeparableConv {
                grouped: s.grouped.to_device_dtype(device, dtype)?,
                pointwise: s.pointwise.to_device_dtype(device, dtype)?,
            }),
        })
    }

    /// The inference form of this set followed by `bn`: the BatchNorm folded into the set's last
    /// convolution, then (for a separable set) the grouped conv's bias moved into the pointwise
    /// bias.
    pub(super) fn fold(&self, bn: &BatchNorm) -> Result<ConvSet> {
        let mut set = self.clone();
        let (scale, shift) = bn.affine()?;
        set.last_mut().fold(&scale, &shift)?;
        set.fold_grouped_bias()?;
        Ok(set)
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
    pub(super) fn forward_graph(&self, x: &Tensor) -> Result<Tensor> {
        let (y, bias) = self.forward_graph_unbiased(x)?;
        Ok(y.broadcast_add(&bias.reshape((1, (), 1, 1))?)?)
    }

    /// [`ConvSet::forward_graph`] without the last convolution's bias, and that bias: training
    /// BatchNorm takes it in ([`batchnorm`]).
    pub(super) fn forward_graph_unbiased(&self, x: &Tensor) -> Result<(Tensor, &Tensor)> {
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
}

/// BatchNorm2d with PyTorch semantics (eps 1e-5, momentum 0.1, unbiased running variance).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
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
    pub(super) fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> candle_core::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
        let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale)
    }

    /// `BatchNorm::forward_train_relu` (fused, bias taken in) and `relu(forward_t(x + bias))`
    /// (candle ops) give the same output and the same running statistics, step after step.
    #[test]
    fn running_statistics_update_as_before() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let c = 6;
        let (map_a, map_b) = (VarMap::new(), VarMap::new());
        let bn_a = BatchNorm::new(c, VarBuilder::from_varmap(&map_a, DType::F32, &dev))
            .map_err(candle_core::Error::wrap)?;
        let bn_b = BatchNorm::new(c, VarBuilder::from_varmap(&map_b, DType::F32, &dev))
            .map_err(candle_core::Error::wrap)?;
        let bias = Tensor::randn(0f32, 1.0, c, &dev)?;
        for step in 0..3 {
            let x = Tensor::randn(step as f32, 2.0, (2, c, 7, 5), &dev)?;
            let ya = bn_a.forward_train_relu(&x, &bias).map_err(candle_core::Error::wrap)?;
            let yb = bn_b.forward_t(&x.broadcast_add(&bias.reshape((1, c, 1, 1))?)?, true)?.relu()?;
            assert!(max_rel_diff(&ya, &yb)? < 1e-5, "step {step}: output");
        }
        let (a, b) = (map_a.data().lock().expect("lock"), map_b.data().lock().expect("lock"));
        for name in ["running_mean", "running_var"] {
            let d = max_rel_diff(a[name].as_tensor(), b[name].as_tensor())?;
            assert!(d < 1e-5, "{name} differs by {d:e}");
        }
        // And they moved: the update really happened.
        assert!(a["running_var"].as_tensor().to_vec1::<f32>()?.iter().any(|v| (v - 1.0).abs() > 0.1));
        Ok(())
    }
}
