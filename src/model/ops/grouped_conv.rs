//! 3x3 convolutions:
//!
//! - [`grouped_conv3x3`]: a grouped/depthwise 3x3 convolution, padding 1, with bias, forward and
//!   backward. candle runs a grouped convolution as one convolution per group plus a concat, which
//!   for a 256-channel depthwise layer means 256 tiny convolutions; here a direct stencil per
//!   output plane (CPU) or a CUDA kernel, and for wide groups im2col + GEMM.
//! - [`conv3x3_bias_act`]: a regular 3x3 convolution with bias and ReLU for inference, im2col
//!   feeding the 1x1 kernel's GEMM (`pointwise_cpu`) on the CPU.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::common::{assume_init_mut, cpu_f32, filled_f32, ConvDims};
use super::pointwise::bias_act;
use crate::model::profile::mark;

/// Grouped 3x3 convolution, stride 1, padding 1: `x [N, C, H, W]`, `w [C, k, 3, 3]` (k input
/// channels per group, C/k groups, C output channels), `b [C]` -> `[N, C, H, W]`.
pub fn grouped_conv3x3(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    let (co, k, kh, kw) = w.dims4()?;
    if co != c || kh != 3 || kw != 3 || k == 0 || c % k != 0 || b.dims1()? != c {
        candle_core::bail!(
            "grouped_conv3x3: input {:?}, weight {:?}, bias {:?} do not fit",
            x.dims(),
            w.dims(),
            b.dims()
        )
    }
    if k >= WIDE_GROUP {
        // Wide groups (Lighter U-net@16 and up) are few: per-group im2col + GEMM (our kernel on
        // the CPU when no gradient is needed, candle's convolution / cuBLAS otherwise) beats a
        // direct stencil that re-reads k input planes per output.
        let no_grad = !x.track_op() && !w.track_op() && !b.track_op();
        if x.device().is_cpu() && x.dtype() == DType::F32 && no_grad {
            let wm = w.reshape((c, k * 9))?.contiguous()?;
            let op = Conv3x3 { relu: false, groups: c / k };
            return x.contiguous()?.apply_op3_no_bwd(&wm, &b.contiguous()?, &op);
        }
        let y = x.conv2d(w, 1, 1, 1, c / k)?;
        return y.broadcast_add(&b.reshape((1, c, 1, 1))?);
    }
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, GroupedConv3x3)
}

/// Channels per group from which [`grouped_conv3x3`] hands over to candle's grouped convolution.
pub const WIDE_GROUP: usize = 16;

/// Regular 3x3 convolution, padding 1, with bias and optional ReLU: `x [N, Ci, H, W]`,
/// `w [Co, Ci, 3, 3]`. Inference only. On the CPU an im2col matrix feeds the same GEMM kernel as
/// [`super::pointwise::pointwise`] (AVX-512 where available); elsewhere candle's convolution plus [`bias_act`].
pub fn conv3x3_bias_act(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let (co, ci, _, _) = w.dims4()?;
        let w = w.reshape((co, ci * 9))?.contiguous()?;
        mark("3x3 conv + bias + ReLU (CPU)", x.contiguous()?.apply_op3_no_bwd(&w, &b.contiguous()?, &Conv3x3 { relu, groups: 1 })?)
    } else {
        let y = mark("3x3 conv (candle)", x.conv2d(w, 1, 1, 1, 1)?)?;
        bias_act(&y, b, relu)
    }
}

/// im2col + GEMM 3x3 convolution; with `groups` > 1 each group is its own column matrix and GEMM.
struct Conv3x3 {
    relu: bool,
    groups: usize,
}

impl CustomOp3 for Conv3x3 {
    fn name(&self) -> &'static str {
        "conv3x3-im2col"
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
        let (co, kk) = wl.shape().dims2()?;
        let g = self.groups;
        let (cig, cog) = (ci / g, co / g);
        if ci % g != 0 || co % g != 0 || kk != cig * 9 {
            candle_core::bail!("conv3x3: input {:?} and weight {:?} do not fit {g} groups", xl.dims(), wl.dims())
        }
        let x = cpu_f32(xs, xl, "conv3x3 input")?;
        let wt = cpu_f32(ws, wl, "conv3x3 weight")?;
        let b = cpu_f32(bs, bl, "conv3x3 bias")?;
        let hw = h * w;
        let mut out = Vec::with_capacity(n * co * hw);
        for ni in 0..n {
            for gi in 0..g {
                let img = &x[(ni * ci + gi * cig) * hw..(ni * ci + (gi + 1) * cig) * hw];
                // Row (c, ky, kx) of the column matrix is channel c shifted by (ky - 1, kx - 1).
                let fill = |cols: &mut [MaybeUninit<f32>]| {
                    cols.par_chunks_mut(9 * hw).enumerate().for_each(|(c, rows)| {
                        let src = &img[c * hw..(c + 1) * hw];
                        for (t, row) in rows.chunks_mut(hw).enumerate() {
                            let (dy, dx) = (t / 3, t % 3);
                            for y in 0..h {
                                let sy = y as isize + dy as isize - 1;
                                let dst = &mut row[y * w..(y + 1) * w];
                                for (xo, d) in dst.iter_mut().enumerate() {
                                    let sx = xo as isize + dx as isize - 1;
                                    let inside = sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize;
                                    d.write(if inside { src[sy as usize * w + sx as usize] } else { 0.0 });
                                }
                            }
                        }
                    })
                };
                // SAFETY: every (channel, tap) row is written for every pixel.
                let cols = unsafe { filled_f32(cig * 9 * hw, fill) };
                let dims = super::pointwise_cpu::Dims { n: 1, ci: cig * 9, co: cog, hw };
                let wg = &wt[gi * cog * kk..(gi + 1) * cog * kk];
                let bg = &b[gi * cog..(gi + 1) * cog];
                out.extend(super::pointwise_cpu::pointwise_cpu(&cols, wg, bg, dims, self.relu));
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, co, h, w))))
    }
}

// ---------------------------------------------------------------------------------------------
// Grouped 3x3 convolution

struct GroupedConv3x3;

/// Adds `wt[0..9]` (a 3x3 stencil) applied to `src` (one H x W plane, zero padded) into `dst`.
#[inline]
fn stencil3x3_acc(dst: &mut [f32], src: &[f32], wt: &[f32], h: usize, w: usize) {
    for y in 0..h {
        let out = &mut dst[y * w..(y + 1) * w];
        for dy in 0..3 {
            let sy = y as isize + dy as isize - 1;
            if sy < 0 || sy >= h as isize {
                continue;
            }
            let row = &src[sy as usize * w..(sy as usize + 1) * w];
            let (w0, w1, w2) = (wt[dy * 3], wt[dy * 3 + 1], wt[dy * 3 + 2]);
            if w == 1 {
                out[0] += w1 * row[0];
                continue;
            }
            // Centre tap over the whole row, then the left and right taps shifted by one: three
            // straight loops the compiler vectorises, instead of one loop with border branches.
            for (o, r) in out.iter_mut().zip(row) {
                *o += w1 * r;
            }
            for (o, r) in out[1..].iter_mut().zip(&row[..w - 1]) {
                *o += w0 * r;
            }
            for (o, r) in out[..w - 1].iter_mut().zip(&row[1..]) {
                *o += w2 * r;
            }
        }
    }
}

pub(crate) fn grouped_conv3x3_cpu(
    x: &[f32],
    wt: &[f32],
    b: Option<&[f32]>,
    d: ConvDims,
) -> Vec<f32> {
    let plane = d.h * d.w;
    if plane == 0 {
        return Vec::new();
    }
    // Few big planes or many small ones: either way hand rayon enough work per task.
    let min_len = (16384 / plane).max(1);
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(plane).with_min_len(min_len).enumerate().for_each(|(idx, dst)| {
            let (ni, o) = (idx / d.c, idx % d.c);
            let g = o / d.k;
            let bias = b.map_or(0.0, |b| b[o]);
            dst.iter_mut().for_each(|v| {
                v.write(bias);
            });
            // SAFETY: every element was just written.
            let dst = unsafe { assume_init_mut(dst) };
            for j in 0..d.k {
                let ic = g * d.k + j;
                let src = &x[(ni * d.c + ic) * plane..(ni * d.c + ic + 1) * plane];
                stencil3x3_acc(dst, src, &wt[(o * d.k + j) * 9..(o * d.k + j + 1) * 9], d.h, d.w);
            }
        })
    };
    // SAFETY: `fill` writes every plane in full before accumulating into it.
    unsafe { filled_f32(d.n * d.c * plane, fill) }
}

/// `sum(a * b)` in eight independent lanes: a plain iterator sum is a strict sequential float
/// reduction that the compiler may not vectorise, which made the weight gradient scalar code.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 8;
    let mut acc = [0f32; L];
    let (mut ai, mut bi) = (a.chunks_exact(L), b.chunks_exact(L));
    for (x, y) in (&mut ai).zip(&mut bi) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ai.remainder().iter().zip(bi.remainder()).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// d(loss)/d(weight) of the grouped 3x3 convolution: `[C, k, 3, 3]`.
pub(crate) fn grouped_conv3x3_grad_w_cpu(gy: &[f32], x: &[f32], d: ConvDims) -> Vec<f32> {
    let plane = d.h * d.w;
    let mut gw = vec![0f32; d.c * d.k * 9];
    gw.par_chunks_mut(9).enumerate().for_each(|(idx, acc)| {
        let (o, j) = (idx / d.k, idx % d.k);
        let ic = (o / d.k) * d.k + j;
        for ni in 0..d.n {
            let g = &gy[(ni * d.c + o) * plane..(ni * d.c + o + 1) * plane];
            let s = &x[(ni * d.c + ic) * plane..(ni * d.c + ic + 1) * plane];
            for dy in 0..3 {
                for dx in 0..3 {
                    // Output pixel (y, x) saw input (y + dy - 1, x + dx - 1).
                    let y0 = if dy == 0 { 1 } else { 0 };
                    let y1 = if dy == 2 { d.h - 1 } else { d.h };
                    let x0 = if dx == 0 { 1 } else { 0 };
                    let x1 = if dx == 2 { d.w.saturating_sub(1) } else { d.w };
                    let mut sum = 0f32;
                    for y in y0..y1 {
                        let grow = &g[y * d.w + x0..y * d.w + x1];
                        let sy = y + dy - 1;
                        let srow = &s[sy * d.w + x0 + dx - 1..sy * d.w + x1 + dx - 1];
                        sum += dot(grow, srow);
                    }
                    acc[dy * 3 + dx] += sum;
                }
            }
        }
    });
    gw
}

/// The weights that turn the forward convolution into its input gradient: within each group,
/// swap input and output channel and rotate the kernel by 180 degrees.
pub(crate) fn transpose_flip_weights(w: &Tensor) -> Result<Tensor> {
    let (c, k, _, _) = w.dims4()?;
    let g = c / k;
    let rev = Tensor::new(&[2u32, 1, 0], w.device())?;
    w.reshape((g, k, k, 3, 3))?
        .transpose(1, 2)?
        .contiguous()?
        .index_select(&rev, 3)?
        .index_select(&rev, 4)?
        .reshape((c, k, 3, 3))
}

impl CustomOp3 for GroupedConv3x3 {
    fn name(&self) -> &'static str {
        "grouped-conv3x3"
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
        let (n, c, h, w) = xl.shape().dims4()?;
        let k = wl.shape().dims4()?.1;
        let x = cpu_f32(xs, xl, "grouped_conv3x3 input")?;
        let wt = cpu_f32(ws, wl, "grouped_conv3x3 weight")?;
        let b = cpu_f32(bs, bl, "grouped_conv3x3 bias")?;
        let out = grouped_conv3x3_cpu(x, wt, Some(b), ConvDims { n, c, h, w, k });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let k = wl.shape().dims4()?.1;
        let out = super::cuda::grouped_conv3x3(
            xs,
            xl,
            ws,
            wl,
            Some((bs, bl)),
            ConvDims { n, c, h, w, k },
        )?;
        Ok((out, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let c = w.dim(0)?;
        let zero_bias = Tensor::zeros(c, grad.dtype(), grad.device())?;
        let gx = grad.apply_op3_no_bwd(&transpose_flip_weights(w)?, &zero_bias, &GroupedConv3x3)?;
        let gw = grad.apply_op2_no_bwd(&x.contiguous()?, &GroupedConv3x3GradW { k: w.dim(1)? })?;
        let gb = super::batchnorm::channel_sums(&grad)?;
        Ok((Some(gx), Some(gw), Some(gb)))
    }
}

/// Weight gradient as an op of its own: `(grad_out, input) -> [C, k, 3, 3]`.
struct GroupedConv3x3GradW {
    k: usize,
}

impl CustomOp2 for GroupedConv3x3GradW {
    fn name(&self) -> &'static str {
        "grouped-conv3x3-grad-w"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let gy = cpu_f32(gs, gl, "grouped_conv3x3 grad")?;
        let x = cpu_f32(xs, xl, "grouped_conv3x3 input")?;
        let gw = grouped_conv3x3_grad_w_cpu(gy, x, ConvDims { n, c, h, w, k: self.k });
        Ok((CpuStorage::F32(gw), Shape::from((c, self.k, 3, 3))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let d = ConvDims { n, c, h, w, k: self.k };
        let out = super::cuda::grouped_conv3x3_grad_w(gs, gl, xs, xl, d)?;
        Ok((out, Shape::from((c, self.k, 3, 3))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The wide-group path (candle's convolution) and the stencil agree.
    #[test]
    fn wide_groups_match_stencil() -> Result<()> {
        let (n, c, h, w, k) = (2, 32, 9, 14, WIDE_GROUP);
        let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &Device::Cpu)?;
        let wt = Tensor::randn(0f32, 0.3, (c, k, 3, 3), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 0.3, c, &Device::Cpu)?;
        let wide = grouped_conv3x3(&x, &wt, &b)?;
        let stencil = grouped_conv3x3_cpu(
            &x.flatten_all()?.to_vec1::<f32>()?,
            &wt.flatten_all()?.to_vec1::<f32>()?,
            Some(&b.to_vec1::<f32>()?),
            ConvDims { n, c, h, w, k },
        );
        // A variable input takes candle's differentiable grouped convolution instead.
        let graph = grouped_conv3x3(candle_core::Var::from_tensor(&x)?.as_tensor(), &wt, &b)?;
        for (name, t) in [("im2col", &wide), ("candle", &graph)] {
            let d = t.flatten_all()?.to_vec1::<f32>()?.iter().zip(&stencil).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d < 1e-4, "{name}: max diff {d}");
        }
        Ok(())
    }

}
