//! The 1x1 convolution of inference (bias and an optional ReLU fused in) and the bias + ReLU pass
//! that follows a convolution run elsewhere (cuBLAS, candle's conv2d).
//!
//! [`pointwise`] is one GEMM per image whose output is pre-filled with the bias (no im2col copy,
//! no separate bias and ReLU passes): our AVX-512 kernel where there is one (`pointwise_cpu`),
//! cuBLAS then [`bias_act`] on the GPU. Inference only: training uses `pointwise_train`.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::common::cpu_f32;
use crate::model::profile::mark;

/// 1x1 convolution `w [Co, Ci]` (or `[Co, Ci, 1, 1]`), bias `b [Co]`, optional ReLU, on
/// `x [N, Ci, H, W]`. Inference only (no backward).
pub fn pointwise(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    let (co, ci) = match w.dims() {
        [co, ci] => (*co, *ci),
        [co, ci, 1, 1] => (*co, *ci),
        d => candle_core::bail!("pointwise: weight shape {d:?}"),
    };
    let w = w.reshape((co, ci))?.contiguous()?;
    let x = x.contiguous()?;
    if x.device().is_cpu() {
        mark("pointwise + bias (CPU)", x.apply_op3_no_bwd(&w, &b.contiguous()?, &Pointwise { relu })?)
    } else {
        // On the GPU, cuBLAS does the GEMM and one fused kernel adds the bias and clamps.
        let (n, _, h, wd) = x.dims4()?;
        let y = mark("pointwise GEMM", w.broadcast_matmul(&x.reshape((n, ci, h * wd))?)?)?;
        bias_act(&y.reshape((n, co, h, wd))?, b, relu)
    }
}

/// `relu?(x + b[c])` for `x [N, C, H, W]`, in one pass. Inference only.
pub fn bias_act(x: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    mark("bias + ReLU", x.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &BiasAct { relu })?)
}

struct Pointwise {
    relu: bool,
}

impl CustomOp3 for Pointwise {
    fn name(&self) -> &'static str {
        "pointwise-conv"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, ci, h, w) = xl.shape().dims4()?;
        let (co, _) = wl.shape().dims2()?;
        let x = cpu_f32(xs, xl, "pointwise input")?;
        let wt = cpu_f32(ws, wl, "pointwise weight")?;
        let b = cpu_f32(bs, bl, "pointwise bias")?;
        let dims = super::pointwise_cpu::Dims { n, ci, co, hw: h * w };
        let out = super::pointwise_cpu::pointwise_cpu(x, wt, b, dims, self.relu);
        Ok((CpuStorage::F32(out), Shape::from((n, co, h, w))))
    }
}

struct BiasAct {
    relu: bool,
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, h, w) = xl.shape().dims4()?;
        let x = cpu_f32(xs, xl, "bias_act input")?;
        let b = cpu_f32(bs, bl, "bias_act bias")?;
        let plane = h * w;
        let mut out = x.to_vec();
        let relu = self.relu;
        out.par_chunks_mut(plane).enumerate().for_each(|(i, p)| {
            let bias = b[i % c];
            if relu {
                p.iter_mut().for_each(|v| *v = (*v + bias).max(0.0));
            } else {
                p.iter_mut().for_each(|v| *v += bias);
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let out = super::cuda::bias_act(xs, xl, bs, bl, self.relu)?;
        Ok((out, xl.shape().clone()))
    }
}
