//! The 1x1 convolution of the training graph on the CPU, without its bias (the training
//! BatchNorm after it takes the bias in, see [`super::batchnorm`]), as one op with its own
//! backward.
//!
//! As a candle matmul on reshaped tensors it cost two reshape nodes, and candle's backward adds
//! every node's gradient into a fresh zero tensor: two extra passes over the activation per conv
//! set. As one op, the forward and the input gradient (a 1x1 convolution with the transposed
//! weight) also run on the inference kernel (`pointwise_cpu`: our AVX-512 kernel where there is
//! one, `gemm` elsewhere). CPU and f32 only ([`supported`]).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::common::cpu_f32;
use super::pointwise_cpu::{pointwise_cpu, Dims};

/// Whether [`pointwise_train`] runs for `x` (CPU, f32).
pub fn supported(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// `x [N, ci, H, W]`, `w [co, ci, 1, 1]` -> `[N, co, H, W]`, no bias; differentiable in both.
pub fn pointwise_train(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (_, ci, _, _) = x.dims4()?;
    let (_, wci, kh, kw) = w.dims4()?;
    if wci != ci || kh != 1 || kw != 1 {
        candle_core::bail!("pointwise_train: input {:?} and weight {:?} do not fit", x.dims(), w.dims());
    }
    if !supported(x) || w.dtype() != DType::F32 {
        candle_core::bail!("pointwise_train: CPU f32 only, got {:?} {:?}", x.device(), x.dtype());
    }
    x.contiguous()?.apply_op2(&w.contiguous()?, PointwiseTrain)
}

struct PointwiseTrain;

impl CustomOp2 for PointwiseTrain {
    fn name(&self) -> &'static str {
        "pointwise-conv-train"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ws: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, ci, h, w) = xl.shape().dims4()?;
        let co = wl.shape().dims()[0];
        let x = cpu_f32(xs, xl, "pointwise input")?;
        let wt = cpu_f32(ws, wl, "pointwise weight")?;
        let zero_bias = vec![0f32; co];
        let out = pointwise_cpu(x, wt, &zero_bias, Dims { n, ci, co, hw: h * w }, false);
        Ok((CpuStorage::F32(out), Shape::from((n, co, h, w))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _z: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, ci, h, wd) = x.dims4()?;
        let co = w.dim(0)?;
        let grad = grad.contiguous()?;
        // Detached: nothing here is differentiated again, so no graph needs recording.
        let w_t = w.detach().reshape((co, ci))?.t()?.contiguous()?.reshape((ci, co, 1, 1))?;
        let dx = grad.apply_op2_no_bwd(&w_t, &PointwiseTrain)?;
        let x3 = x.detach().reshape((n, ci, h * wd))?;
        let dw = grad.reshape((n, co, h * wd))?.matmul(&x3.t()?)?.sum(0)?.reshape((co, ci, 1, 1))?;
        Ok((Some(dx), Some(dw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale)
    }

    /// Output and both gradients against candle's `conv2d` on `L = sum(y * r)`.
    #[test]
    fn matches_candle_conv2d() -> Result<()> {
        let dev = Device::Cpu;
        // Batch 1 and odd sizes; output channels a multiple of 8 (the AVX-512 kernel) and not.
        for &(n, ci, co, h, w) in &[(1, 3, 16, 5, 7), (2, 16, 8, 9, 13), (3, 12, 5, 4, 3), (2, 8, 24, 33, 17)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, ci, h, w), &dev)?)?;
            let wt = Var::from_tensor(&Tensor::randn(0f32, 1.0, (co, ci, 1, 1), &dev)?)?;
            let r = Tensor::randn(0f32, 1.0, (n, co, h, w), &dev)?;
            let got = pointwise_train(&x, &wt)?;
            let want = x.conv2d(&wt, 0, 1, 1, 1)?;
            let what = format!("n={n} ci={ci} co={co} {h}x{w}");
            assert!(max_rel_diff(&got, &want)? < 1e-5, "{what}: output");
            let g_got = (got * &r)?.sum_all()?.backward()?;
            let g_want = (want * &r)?.sum_all()?.backward()?;
            for (name, v) in [("x", &x), ("w", &wt)] {
                let (a, b) = (g_got.get(v).expect("gradient"), g_want.get(v).expect("gradient"));
                let d = max_rel_diff(a, b)?;
                assert!(d < 1e-5, "{what}: d{name} differs by {d:e}");
            }
        }
        Ok(())
    }
}
