//! Custom operations the Light U-net family needs and candle does not do fast (or at all):
//!
//! - [`grouped_conv3x3`]: a grouped/depthwise 3x3 convolution, padding 1, with bias, forward and
//!   backward. candle runs a grouped convolution as one convolution per group plus a concat, which
//!   for a 256-channel depthwise layer means 256 tiny convolutions.
//! - [`pointwise`]: a 1x1 convolution with bias and an optional fused ReLU, as one GEMM per image
//!   whose output is pre-filled with the bias (no im2col copy, no separate bias and ReLU passes).
//!   Inference only: training uses candle's matmul so autograd sees it.
//! - [`upsample2x`]: bilinear x2 upsampling with align_corners=True, with the backward pass candle
//!   lacks.
//! - [`separable_fused`]: inference on AVX-512 CPUs, a whole separable conv set (depthwise 3x3,
//!   1x1, bias, ReLU) in one pass over bands of rows, its input read straight from a map, a map
//!   to max-pool, or a skip connection plus a map to upsample and pad (see `separable_cpu`).
//!
//! All take contiguous NCHW tensors (they make them contiguous if needed). CPU code runs on rayon;
//! CUDA kernels live in `kernels/ops.cu` (see `cuda_ops`).

use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result,
    Shape, Tensor, D,
};
use rayon::prelude::*;
use super::profile::mark;
use std::mem::MaybeUninit;

/// An f32 buffer of `len` elements that `fill` initialises completely, allocated without the
/// zero fill: zeroing fresh 16 MB activations cost about 13 % of a Lighter U-net@1 CPU inference.
///
/// # Safety
/// `fill` must write every element before returning.
pub(crate) unsafe fn filled_f32(len: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<MaybeUninit<f32>> = Vec::with_capacity(len);
    // SAFETY: MaybeUninit elements need no initialisation.
    unsafe { v.set_len(len) };
    fill(&mut v);
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: every element is initialised (the caller's contract); same allocation, layout,
    // length and capacity.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut f32, v.len(), v.capacity()) }
}

/// Views a slice whose every element has been written as initialised floats.
///
/// # Safety
/// Every element of `s` must be initialised.
pub(crate) unsafe fn assume_init_mut(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: MaybeUninit<f32> has f32's layout; initialisation is the caller's contract.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

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

/// A folded separable conv set (grouped 3x3 with `K` < [`WIDE_GROUP`] inputs per group, then
/// 1x1, bias, ReLU if `relu`) as one CUDA kernel, which keeps the grouped conv's output in
/// shared memory: `Some` on CUDA when `LIGHTUNET_CUDA_FUSED=1` (opt-in until a GPU run has
/// checked and timed it), `None` elsewhere and for anything that needs a gradient.
pub fn separable_cuda(x: &Tensor, gw: &Tensor, gb: &Tensor, pw: &Tensor, pb: &Tensor, relu: bool) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let on = *ON.get_or_init(|| std::env::var("LIGHTUNET_CUDA_FUSED").is_ok_and(|v| v == "1"));
        let k = gw.dims4()?.1;
        let tracked = [x, gw, gb, pw, pb].iter().any(|t| t.track_op());
        if on && x.device().is_cuda() && k < WIDE_GROUP && !tracked {
            return super::cuda_ops::separable_fused(x, gw, gb, pw, pb, relu).map(Some);
        }
    }
    let _ = (x, gw, gb, pw, pb, relu);
    Ok(None)
}

/// The input of a conv set: a map, a map to max-pool 2x2 first (Down blocks), or an Up block's
/// skip connection and the lower-resolution map that is upsampled 2x, zero-padded to the skip's
/// size and concatenated after it.
#[derive(Clone, Copy, Debug)]
pub enum ConvInput<'a> {
    Map(&'a Tensor),
    Pool(&'a Tensor),
    Up { skip: &'a Tensor, x: &'a Tensor },
}

impl ConvInput<'_> {
    /// The input as one tensor (the layer-by-layer path; differentiable).
    pub fn materialize(&self) -> Result<Tensor> {
        match *self {
            ConvInput::Map(x) => Ok(x.clone()),
            ConvInput::Pool(x) => mark("max-pool 2x2", maxpool2x2(x)?),
            ConvInput::Up { skip, x } => {
                let x = mark("upsample x2", upsample2x(x)?)?;
                let (_, _, sh, sw) = skip.dims4()?;
                let (_, _, uh, uw) = x.dims4()?;
                let (top, bottom, left, right) = up_padding((sh, sw), (uh, uw));
                let x = if top + bottom + left + right > 0 {
                    mark("pad", x.pad_with_zeros(D::Minus2, top, bottom)?.pad_with_zeros(D::Minus1, left, right)?)?
                } else {
                    x
                };
                mark("concat", Tensor::cat(&[skip, &x], 1)?)
            }
        }
    }
}

/// Zero padding (top, bottom, left, right) that brings an upsampled map to its skip
/// connection's size. Pooling floors, so the upsampled map is at most one row/column short.
/// Both the layer-by-layer and the fused path place the upsampled map with it.
fn up_padding((sh, sw): (usize, usize), (uh, uw): (usize, usize)) -> (usize, usize, usize, usize) {
    let (dy, dx) = (sh.saturating_sub(uh), sw.saturating_sub(uw));
    (dy / 2, dy - dy / 2, dx / 2, dx - dx / 2)
}

/// The weights of one separable conv set: depthwise 3x3 `[ci, 1, 3, 3]` and its bias, 1x1
/// `[co, ci, 1, 1]` (or `[co, ci]`) and its bias.
#[derive(Clone, Copy, Debug)]
pub struct SeparableWeights<'a> {
    pub dw_w: &'a Tensor,
    pub dw_b: &'a Tensor,
    pub pw_w: &'a Tensor,
    pub pw_b: &'a Tensor,
}

/// A separable conv set (depthwise 3x3 with bias, then 1x1 with bias and optional ReLU) as one
/// fused pass over `input`, on AVX-512 CPUs for inference (nothing tracks gradients). `None`
/// where it does not apply (other devices, dtypes or CPUs, grouped rather than depthwise 3x3,
/// output channels not a multiple of 8): the caller runs the layers one by one.
pub fn separable_fused(input: ConvInput, set: SeparableWeights, relu: bool) -> Result<Option<Tensor>> {
    fused_cpu(input, &[set], None, relu)
}

/// Both separable conv sets of a DoubleConv, ReLU after each, in one pass that keeps the middle
/// map in cache (see `separable_cpu::double_separable`). `None` where that does not apply,
/// including maps too small to split into a strip per thread (the one-set path splits the
/// output channels instead).
///
/// With a `head` (weight `[k, co, 1, 1]` and bias `[k]`, k < 8: the network's final 1x1, no
/// activation) the result is the head's output, and the DoubleConv's output is never stored.
pub fn double_separable_fused(
    input: ConvInput,
    first: SeparableWeights,
    second: SeparableWeights,
    head: Option<(&Tensor, &Tensor)>,
) -> Result<Option<Tensor>> {
    fused_cpu(input, &[first, second], head, true)
}

fn fused_cpu(
    input: ConvInput,
    sets: &[SeparableWeights],
    head: Option<(&Tensor, &Tensor)>,
    relu: bool,
) -> Result<Option<Tensor>> {
    #[cfg(target_arch = "x86_64")]
    {
        use super::separable_cpu::{self as sc, Source};
        let maps: Vec<&Tensor> = match input {
            ConvInput::Map(x) | ConvInput::Pool(x) => vec![x],
            ConvInput::Up { skip, x } => vec![skip, x],
        };
        let head_tensors: Vec<&Tensor> = head.map_or(Vec::new(), |(w, b)| vec![w, b]);
        let weights = sets.iter().flat_map(|s| [s.dw_w, s.dw_b, s.pw_w, s.pw_b]).chain(head_tensors.iter().copied());
        let all = maps.iter().copied().chain(weights);
        let mut depthwise = true;
        for s in sets {
            depthwise &= s.dw_w.rank() == 4 && s.dw_w.dim(1)? == 1 && sc::available(s.pw_w.dim(0)?);
        }
        if !depthwise || all.clone().any(|t| !t.device().is_cpu() || t.dtype() != DType::F32 || t.track_op()) {
            return Ok(None);
        }
        let dims: Vec<(usize, usize, usize, usize)> = maps.iter().map(|t| t.dims4()).collect::<Result<_>>()?;
        let (n, c0, h0, w0) = dims[0];
        let (h, w) = match input {
            ConvInput::Pool(_) => (h0 / 2, w0 / 2),
            _ => (h0, w0),
        };
        let mut ci: usize = dims.iter().map(|d| d.1).sum();
        if h == 0 || w == 0 || (head.is_some() && sets.len() != 2) || (sets.len() == 2 && !sc::double_worthwhile(n, ci, sets[0].pw_w.dim(0)?, h, w)) {
            return Ok(None);
        }
        for s in sets {
            let co = s.pw_w.dim(0)?;
            if s.dw_w.dims() != [ci, 1, 3, 3] || s.dw_b.dims() != [ci] || s.pw_w.elem_count() != co * ci || s.pw_b.dims() != [co] {
                candle_core::bail!(
                    "separable conv: input of {ci} channels, weights {:?} {:?} {:?} {:?}",
                    s.dw_w.dims(),
                    s.dw_b.dims(),
                    s.pw_w.dims(),
                    s.pw_b.dims()
                )
            }
            ci = co;
        }
        let mut co = ci;
        if let Some((hw_, hb)) = head {
            let k = hb.elem_count();
            if k == 0 || k >= 8 || hb.rank() != 1 || hw_.elem_count() != k * co {
                candle_core::bail!("head: weight {:?} and bias {:?} after {co} channels", hw_.dims(), hb.dims())
            }
            co = k;
        }
        let tensors: Vec<Tensor> = all.map(|t| t.contiguous()).collect::<Result<_>>()?;
        let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
        let slices: Vec<&[f32]> = guards
            .iter()
            .map(|(s, l)| match &**s {
                candle_core::Storage::Cpu(cs) => cpu_f32(cs, l, "separable conv"),
                _ => candle_core::bail!("separable conv: not on the CPU"),
            })
            .collect::<Result<_>>()?;
        let srcs: Vec<Source> = match input {
            ConvInput::Map(_) => vec![Source::Map { data: slices[0], c: c0 }],
            ConvInput::Pool(_) => vec![Source::Pool { data: slices[0], c: c0, h: h0, w: w0 }],
            ConvInput::Up { .. } => {
                let (nx, cx, sh, sw) = dims[1];
                if nx != n || 2 * sh > h || 2 * sw > w {
                    candle_core::bail!("up block: map {:?} does not fit skip connection {:?}", dims[1], dims[0])
                }
                let (top, _, left, _) = up_padding((h, w), (2 * sh, 2 * sw));
                vec![
                    Source::Map { data: slices[0], c: c0 },
                    Source::Up { data: slices[1], c: cx, h: sh, w: sw, top, left },
                ]
            }
        };
        let k = maps.len();
        let wts = |i: usize| sc::Weights {
            dw_w: slices[k + 4 * i],
            dw_b: slices[k + 4 * i + 1],
            pw_w: slices[k + 4 * i + 2],
            pw_b: slices[k + 4 * i + 3],
        };
        let head = head.map(|_| {
            let at = k + 4 * sets.len();
            sc::Head { w: slices[at], b: slices[at + 1] }
        });
        let out = if sets.len() == 2 {
            sc::double_separable(&srcs, wts(0), wts(1), head, n, h, w)
        } else {
            sc::separable(&srcs, wts(0), n, h, w, relu)
        };
        return Ok(Some(Tensor::from_vec(out, (n, co, h, w), &candle_core::Device::Cpu)?));
    }
    #[allow(unreachable_code)]
    Ok(None)
}

/// Regular 3x3 convolution, padding 1, with bias and optional ReLU: `x [N, Ci, H, W]`,
/// `w [Co, Ci, 3, 3]`. Inference only. On the CPU an im2col matrix feeds the same GEMM kernel as
/// [`pointwise`] (AVX-512 where available); elsewhere candle's convolution plus [`bias_act`].
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

/// `relu?(x + b[c])` for `x [N, C, H, W]`, in one pass. Inference only.
pub fn bias_act(x: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    mark("bias + ReLU", x.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &BiasAct { relu })?)
}

/// Bilinear x2 upsampling with align_corners=True (PyTorch `nn.Upsample(scale_factor=2,
/// mode="bilinear", align_corners=True)`), with a backward pass.
pub fn upsample2x(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Upsample2x)
}

// ---------------------------------------------------------------------------------------------
// Grouped 3x3 convolution

struct GroupedConv3x3;

/// Geometry shared by the forward and backward kernels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvDims {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Input channels per group.
    pub k: usize,
}

/// The f32 data of a contiguous CPU storage (an error for other dtypes or strided layouts).
pub(crate) fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d.as_slice(),
        other => candle_core::bail!("{what}: expected f32, got {:?}", other.dtype()),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: input is not contiguous"),
    }
}

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
        let out = super::cuda_ops::grouped_conv3x3(
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
        let out = super::cuda_ops::grouped_conv3x3_grad_w(gs, gl, xs, xl, d)?;
        Ok((out, Shape::from((c, self.k, 3, 3))))
    }
}

// ---------------------------------------------------------------------------------------------
// Pointwise convolution with bias and ReLU (CPU)

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

// ---------------------------------------------------------------------------------------------
// Bias + activation

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
        let out = super::cuda_ops::bias_act(xs, xl, bs, bl, self.relu)?;
        Ok((out, xl.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// Bilinear x2 upsampling, align_corners=True

struct Upsample2x;

/// Source index and weight of the second tap for output index `i` of an `n -> 2n` align-corners
/// interpolation: `(i0, i1, frac)` with value `(1 - frac) * s[i0] + frac * s[i1]`.
#[inline]
pub(crate) fn ac_taps(i: usize, n: usize) -> (usize, usize, f32) {
    if n == 1 {
        return (0, 0, 0.0);
    }
    let pos = i as f64 * (n - 1) as f64 / (2 * n - 1) as f64;
    let i0 = (pos.floor() as usize).min(n - 1);
    let i1 = (i0 + 1).min(n - 1);
    (i0, i1, (pos - i0 as f64) as f32)
}

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
        Ok((super::cuda_ops::upsample2x(s, l)?, Shape::from((n, c, 2 * h, 2 * w))))
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
        let out = super::cuda_ops::upsample2x_bwd(s, l, self.h, self.w)?;
        Ok((out, Shape::from((n, c, self.h, self.w))))
    }
}

/// 2x2 max pooling, stride 2, floor (odd sizes drop the last row/column). Without a gradient,
/// our own op on the CPU (f32; candle's generic pooling is several times slower) and on CUDA
/// (every dtype: the composition's max reductions over pairs launch one two-thread block per
/// output pair); with one, [`super::maxpool_train`] where it runs, else the composition.
pub fn maxpool2x2(x: &Tensor) -> Result<Tensor> {
    let cuda = cfg!(feature = "cuda") && x.device().is_cuda();
    if ((x.device().is_cpu() && x.dtype() == DType::F32) || cuda) && !x.track_op() {
        x.contiguous()?.apply_op1_no_bwd(&MaxPool2x2)
    } else if super::maxpool_train::supported(x) {
        super::maxpool_train::maxpool2x2_train(x)
    } else {
        // Not candle's max_pool2d: its gradient is a quarter of the right one.
        super::maxpool_train::maxpool2x2_graph(x)
    }
}

pub(crate) struct MaxPool2x2;

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "maxpool2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = cpu_f32(s, l, "maxpool2x2 input")?;
        let (oh, ow) = (h / 2, w / 2);
        if oh == 0 || ow == 0 {
            return Ok((CpuStorage::F32(Vec::new()), Shape::from((n, c, oh, ow))));
        }
        let fill = |out: &mut [MaybeUninit<f32>]| {
            out.par_chunks_mut(oh * ow).enumerate().for_each(|(p, dst)| {
                let src = &x[p * h * w..(p + 1) * h * w];
                for (oy, row) in dst.chunks_mut(ow).enumerate() {
                    let a = &src[2 * oy * w..2 * oy * w + 2 * ow];
                    let b = &src[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
                    for (ox, d) in row.iter_mut().enumerate() {
                        d.write(a[2 * ox].max(a[2 * ox + 1]).max(b[2 * ox].max(b[2 * ox + 1])));
                    }
                }
            })
        };
        // SAFETY: every output row of every plane is written.
        let out = unsafe { filled_f32(n * c * oh * ow, fill) };
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        Ok((super::cuda_ops::maxpool2x2(s, l)?, Shape::from((n, c, h / 2, w / 2))))
    }
}

/// Guards the ops above against a dtype they do not implement on the CPU.
pub(crate) fn check_cpu_dtype(t: &Tensor) -> Result<()> {
    if t.device().is_cpu() && t.dtype() != DType::F32 {
        candle_core::bail!("CPU inference runs in f32, got {:?}", t.dtype())
    }
    Ok(())
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

    /// candle's own ops, layer by layer: grouped conv, bias, 1x1 as a matmul, bias, ReLU.
    fn separable_reference(x: &Tensor, dw_w: &Tensor, dw_b: &Tensor, pw_w: &Tensor, pw_b: &Tensor) -> Result<Tensor> {
        let (n, ci, h, w) = x.dims4()?;
        let co = pw_w.dim(0)?;
        let y = x.conv2d(dw_w, 1, 1, 1, ci)?.broadcast_add(&dw_b.reshape((1, ci, 1, 1))?)?;
        let y = pw_w.reshape((co, ci))?.broadcast_matmul(&y.reshape((n, ci, h * w))?)?;
        y.reshape((n, co, h, w))?.broadcast_add(&pw_b.reshape((1, co, 1, 1))?)?.relu()
    }

    /// The fused separable conv set reads maps, pooled maps and upsampled-padded-concatenated
    /// maps exactly as the layer-by-layer path does, at odd sizes, batch 2, with a depthwise
    /// bias, and with enough channels for several channel chunks and bands.
    #[test]
    fn fused_separable_matches_layer_by_layer() -> Result<()> {
        let dev = Device::Cpu;
        if !super::super::separable_cpu::available(8) {
            eprintln!("skipped: no AVX-512 on this CPU, the fused path does not run here");
            return Ok(());
        }
        let r = |s: &[usize]| Tensor::randn(0f32, 1.0, s, &dev);
        let skip = r(&[2, 24, 37, 21])?;
        let low = r(&[2, 16, 17, 9])?; // upsampled 34x18: padded 1 above and left, 2 below and right
        let big = r(&[2, 136, 75, 43])?; // pooled 37x21, 136 channels: two K chunks
        let map = r(&[1, 8, 300, 17])?; // tall and narrow: many bands, 17 = 16 + 1 lane
        let cases: Vec<(&str, ConvInput)> = vec![
            ("map", ConvInput::Map(&map)),
            ("pool", ConvInput::Pool(&big)),
            ("up", ConvInput::Up { skip: &skip, x: &low }),
        ];
        for (name, input) in cases {
            let x = input.materialize()?;
            let ci = x.dim(1)?;
            for co in [8, 48] {
                let dw_w = r(&[ci, 1, 3, 3])?;
                let dw_b = r(&[ci])?;
                let pw_w = (r(&[co, ci, 1, 1])? * 0.2)?;
                let pw_b = r(&[co])?;
                let want = separable_reference(&x, &dw_w, &dw_b, &pw_w, &pw_b)?;
                let got = separable_fused(input, SeparableWeights { dw_w: &dw_w, dw_b: &dw_b, pw_w: &pw_w, pw_b: &pw_b }, true)?
                    .expect("the fused path runs on AVX-512 CPUs");
                assert_eq!(got.dims(), want.dims(), "{name}");
                let d = (got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(d < 1e-4, "{name} co={co}: max diff {d}");
            }
        }
        // Inputs that track gradients are left to the differentiable path.
        let v = candle_core::Var::from_tensor(&map)?;
        let (dw_w, dw_b, pw_w, pw_b) = (r(&[8, 1, 3, 3])?, r(&[8])?, r(&[8, 8, 1, 1])?, r(&[8])?);
        assert!(separable_fused(ConvInput::Map(v.as_tensor()), SeparableWeights { dw_w: &dw_w, dw_b: &dw_b, pw_w: &pw_w, pw_b: &pw_b }, true)?.is_none());
        Ok(())
    }

    fn weights(t: &[Tensor; 4]) -> SeparableWeights<'_> {
        SeparableWeights { dw_w: &t[0], dw_b: &t[1], pw_w: &t[2], pw_b: &t[3] }
    }

    /// Both sets of a DoubleConv fused (strips, bands, the window of middle rows) agree with
    /// the sets run one after the other: several bands per strip, uneven strips, batch 2, each
    /// kind of input.
    #[test]
    fn fused_double_conv_matches_layer_by_layer() -> Result<()> {
        let dev = Device::Cpu;
        if !super::super::separable_cpu::available(8) {
            eprintln!("skipped: no AVX-512 on this CPU, the fused path does not run here");
            return Ok(());
        }
        let r = |s: &[usize]| Tensor::randn(0f32, 1.0, s, &dev);
        let map = r(&[1, 8, 70, 300])?; // 5-row bands: four bands per strip
        let big = r(&[2, 16, 135, 97])?; // pooled 67x48, batch 2
        let skip = r(&[1, 8, 68, 130])?;
        let low = r(&[1, 8, 33, 64])?; // upsampled 66x128, padded by one on each side
        let cases: Vec<(&str, ConvInput)> = vec![
            ("map", ConvInput::Map(&map)),
            ("pool", ConvInput::Pool(&big)),
            ("up", ConvInput::Up { skip: &skip, x: &low }),
        ];
        // Two threads: strips per thread as on the 2-core machines, whatever this one has.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().map_err(candle_core::Error::wrap)?;
        for (name, input) in cases {
            let x = input.materialize()?;
            let (ci, mid, co) = (x.dim(1)?, 16, 8);
            let set = |ci: usize, co: usize| -> Result<[Tensor; 4]> {
                Ok([r(&[ci, 1, 3, 3])?, r(&[ci])?, (r(&[co, ci, 1, 1])? * 0.3)?, r(&[co])?])
            };
            let (a, b) = (set(ci, mid)?, set(mid, co)?);
            let want = separable_reference(&separable_reference(&x, &a[0], &a[1], &a[2], &a[3])?, &b[0], &b[1], &b[2], &b[3])?;
            let got = pool
                .install(|| double_separable_fused(input, weights(&a), weights(&b), None))?
                .expect("maps this tall take the fused DoubleConv path");
            assert_eq!(got.dims(), want.dims(), "{name}");
            let d = (got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(d < 1e-3, "{name}: max diff {d}");
            // With the network's final 1x1 as a head (no ReLU), only its output comes back.
            let (hw, hb) = (r(&[1, co, 1, 1])?, r(&[1])?);
            let (n, _, h, w) = want.dims4()?;
            let want_head = hw
                .reshape((1, co))?
                .broadcast_matmul(&want.reshape((n, co, h * w))?)?
                .broadcast_add(&hb.reshape((1, 1, 1))?)?
                .reshape((n, 1, h, w))?;
            let got = pool
                .install(|| double_separable_fused(input, weights(&a), weights(&b), Some((&hw, &hb))))?
                .expect("the fused path with a head");
            assert_eq!(got.dims(), want_head.dims(), "{name} head");
            let d = (got - &want_head)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(d < 1e-3, "{name} head: max diff {d}");
        }
        Ok(())
    }
}
