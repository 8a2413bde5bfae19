//! Bilinear x2 upsampling with align_corners=True (the Up blocks), with the backward pass candle
//! lacks: one pass per output plane that blends two source rows, interpolated along x once per
//! row. CUDA kernels in kernels/ops.cu (`super::cuda`).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::common::{ac_taps, cpu_f32, filled_f32};

/// Bilinear x2 upsampling with align_corners=True (PyTorch `nn.Upsample(scale_factor=2,
/// mode="bilinear", align_corners=True)`), with a backward pass.
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Upsample2x)
}

struct Upsample2x;

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "upsample2x-bilinear-ac"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = cpu_f32(s, l, "upsample2x input")?;
        let (oh, ow) = (2 * h, 2 * w);
        let xt: Vec<_> = (0..ow).map(|i| ac_taps(i, w)).collect();
        let yt: Vec<_> = (0..oh).map(|i| ac_taps(i, h)).collect();
        let fill = |out: &mut [MaybeUninit<f32>]| out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, dst)| {
            let src = &x[p * h * w..(p + 1) * h * w];
            // Each output row blends two source rows; interpolate those along x once per row.
            let mut r0 = vec![0f32; ow];
            let mut r1 = vec![0f32; ow];
            for (oy, &(y0, y1, fy)) in yt.iter().enumerate() {
                let (s0, s1) = (&src[y0 * w..(y0 + 1) * w], &src[y1 * w..(y1 + 1) * w]);
                for (ox, &(x0, x1, fx)) in xt.iter().enumerate() {
                    r0[ox] = s0[x0] + (s0[x1] - s0[x0]) * fx;
                    r1[ox] = s1[x0] + (s1[x1] - s1[x0]) * fx;
                }
                for ((d, a), b) in dst[oy * ow..(oy + 1) * ow].iter_mut().zip(&r0).zip(&r1) {
                    d.write(a + (b - a) * fy);
                }
            }
        });
        // SAFETY: every row of every output plane is written.
        let out = unsafe { filled_f32(n * c * oh * ow, fill) };
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        Ok((super::cuda::upsample2x(s, l)?, Shape::from((n, c, 2 * h, 2 * w))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Upsample2xBwd { h, w })?))
    }
}

/// Adjoint of [`Upsample2x`]: `[N, C, 2h, 2w] -> [N, C, h, w]`.
struct Upsample2xBwd {
    h: usize,
    w: usize,
}

impl CustomOp1 for Upsample2xBwd {
    fn name(&self) -> &'static str {
        "upsample2x-bilinear-ac-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, oh, ow) = l.shape().dims4()?;
        let (h, w) = (self.h, self.w);
        if oh != 2 * h || ow != 2 * w {
            candle_core::bail!("upsample2x backward: grad {oh}x{ow} for input {h}x{w}")
        }
        let g = cpu_f32(s, l, "upsample2x grad")?;
        let xt: Vec<_> = (0..ow).map(|i| ac_taps(i, w)).collect();
        let yt: Vec<_> = (0..oh).map(|i| ac_taps(i, h)).collect();
        let mut out = vec![0f32; n * c * h * w];
        out.par_chunks_mut(h * w).enumerate().for_each(|(p, dst)| {
            let src = &g[p * oh * ow..(p + 1) * oh * ow];
            for (oy, &(y0, y1, fy)) in yt.iter().enumerate() {
                let row = &src[oy * ow..(oy + 1) * ow];
                for (ox, &(x0, x1, fx)) in xt.iter().enumerate() {
                    let v = row[ox];
                    dst[y0 * w + x0] += v * (1.0 - fy) * (1.0 - fx);
                    dst[y0 * w + x1] += v * (1.0 - fy) * fx;
                    dst[y1 * w + x0] += v * fy * (1.0 - fx);
                    dst[y1 * w + x1] += v * fy * fx;
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, _, _) = l.shape().dims4()?;
        let out = super::cuda::upsample2x_bwd(s, l, self.h, self.w)?;
        Ok((out, Shape::from((n, c, self.h, self.w))))
    }
}
