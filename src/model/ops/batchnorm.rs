//! BatchNorm in training mode on the CPU as one op: the convolution's bias, batch-statistics
//! normalisation, gamma/beta and the ReLU after it, forward and backward.
//!
//! Built from candle ops, each training BatchNorm was a dozen passes over the activation, and
//! candle reduces over dims (0, 2, 3), both for the statistics and in the backward of every
//! broadcast op, on one thread through a strided index: that was most of a Lighter U-net@1
//! training step. Here the forward is two passes (statistics per channel, then normalise), the
//! backward two (per-channel sums, then the input gradient), all on rayon.
//!
//! The convolution's bias is taken in rather than added before: batch statistics remove it from
//! the output, so it only shifts the batch mean (and so the running mean), and its gradient is
//! the per-channel sum of the input gradient, which the second backward pass gets for free. The
//! results are those of the candle-op composition up to rounding (tests compare both).
//! f32 on the CPU and on CUDA ([`supported`]; the CUDA kernels in kernels/ops.cu follow the CPU
//! code step by step, and `lightunet check --grad` compares the two); other devices and dtypes
//! keep the composition.

use std::mem::MaybeUninit;
use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::common::{cpu_f32, filled_f32};
use crate::model::capabilities::Capabilities;

/// Whether [`batch_norm_relu_train`] runs for `x` (f32, CPU or CUDA:
/// [`Capabilities::own_train_ops`]).
pub fn supported(x: &Tensor) -> bool {
    Capabilities::detect().own_train_ops(x)
}

/// What one training BatchNorm computed: the output and the batch statistics of its input
/// (convolution bias included), detached, for the running-statistics update.
#[derive(Debug, Clone)]
pub struct BatchNormTrain {
    /// `[N, C, H, W]`.
    pub y: Tensor,
    /// `[C]`, mean of `x + bias`.
    pub mean: Tensor,
    /// `[C]`, biased variance (divided by `N * H * W`).
    pub var: Tensor,
}

/// `relu?(gamma * (x + bias - mean) / sqrt(var + eps) + beta)` with the batch's `mean` and
/// biased `var` per channel: `x [N, C, H, W]` (a convolution's output before its bias), `bias`,
/// `gamma`, `beta` `[C]`. Differentiable in all four. The ReLU gradient is PyTorch's (zero where
/// the normalised value is not positive).
pub fn batch_norm_relu_train(
    x: &Tensor,
    bias: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<BatchNormTrain> {
    let (_, c, _, _) = x.dims4()?;
    for (what, t) in [("bias", bias), ("gamma", gamma), ("beta", beta)] {
        if t.dims() != [c] {
            candle_core::bail!("batch_norm_relu_train: input {:?} but {what} {:?}", x.dims(), t.dims());
        }
    }
    if !supported(x) {
        candle_core::bail!("batch_norm_relu_train: f32 on the CPU or CUDA only, got {:?} {:?}", x.device(), x.dtype());
    }
    // One parameter tensor, so a two-input op carries all three; `stack` routes their
    // gradients back to each.
    let params = Tensor::stack(&[bias, gamma, beta], 0)?.to_dtype(DType::F32)?; // [3, C]
    let stats = Arc::new(OnceLock::new());
    let y = x.contiguous()?.apply_op2(&params, BnTrain { eps, relu, stats: stats.clone() })?;
    let (mean, var) = match stats.get() {
        Some(Saved::Cpu(s)) => (Tensor::from_slice(&s.mean, c, x.device())?, Tensor::from_slice(&s.var, c, x.device())?),
        Some(Saved::Device(t)) => (t.get(0)?, t.get(1)?),
        None => candle_core::bail!("batch norm: no statistics"),
    };
    let mean = (mean + bias.detach())?;
    Ok(BatchNormTrain { y, mean, var })
}

/// Per-channel sums of `t [N, C, H, W]` -> `[C]` (not differentiable): the bias gradient of a
/// convolution. Our own op where [`supported`] (candle's CUDA reduction over dims (0, 2, 3) runs
/// one block per channel); candle's `sum((0, 2, 3))` elsewhere.
pub fn channel_sums(t: &Tensor) -> Result<Tensor> {
    if supported(t) {
        t.contiguous()?.apply_op1_no_bwd(&ChannelSums)
    } else {
        t.sum((0, 2, 3))
    }
}

/// What the forward saved for the backward, where it ran.
#[derive(Debug)]
enum Saved {
    Cpu(Stats),
    /// `[6, C]` on the device: mean (without the bias), var, invstd, gamma, scale, beta.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Device(Tensor),
}

/// Per-channel values the forward computed and the backward reuses.
#[derive(Debug)]
struct Stats {
    /// Mean of the input without the bias.
    mean: Vec<f32>,
    var: Vec<f32>,
    invstd: Vec<f32>,
    gamma: Vec<f32>,
    /// `gamma * invstd`: the forward is `(x - mean) * scale + beta` (centred first, so that a
    /// channel with no spread gives exactly beta). The backward recomputes the ReLU mask from
    /// it instead of reading the output.
    scale: Vec<f32>,
    beta: Vec<f32>,
}

struct BnTrain {
    eps: f64,
    relu: bool,
    stats: Arc<OnceLock<Saved>>,
}

struct BnTrainBwd {
    relu: bool,
    stats: Arc<OnceLock<Saved>>,
    /// `[3 * C]` (any shape of that size): gradients of bias, gamma, beta, filled by the op.
    dparams: Arc<OnceLock<Tensor>>,
}

struct ChannelSums;


/// Elements summed in f32 before going into the f64 total: short enough that f32 rounding
/// stays far below what the tests and training notice, long enough to vectorise.
const CHUNK: usize = 1024;
const LANES: usize = 8;

/// `(sum(v - k), sum((v - k)^2))` of one plane. Shifting by a value of the channel keeps the
/// one-pass variance from cancelling when the mean is large against the spread.
fn shifted_sums(plane: &[f32], k: f32) -> (f64, f64) {
    let (mut s1, mut s2) = (0f64, 0f64);
    for chunk in plane.chunks(CHUNK) {
        let (mut a, mut b) = ([0f32; LANES], [0f32; LANES]);
        let mut it = chunk.chunks_exact(LANES);
        for v in &mut it {
            for l in 0..LANES {
                let d = v[l] - k;
                a[l] += d;
                b[l] += d * d;
            }
        }
        for &v in it.remainder() {
            let d = v - k;
            a[0] += d;
            b[0] += d * d;
        }
        s1 += a.iter().map(|&v| f64::from(v)).sum::<f64>();
        s2 += b.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    (s1, s2)
}

/// The incoming gradient through the ReLU: zero where the forward's output before the ReLU was
/// not positive (PyTorch's rule). `xc` is the centred input `x - mean`.
#[inline(always)]
fn through_relu<const RELU: bool>(g: f32, xc: f32, scale: f32, beta: f32) -> f32 {
    if RELU && xc * scale + beta <= 0.0 {
        0.0
    } else {
        g
    }
}

/// `(sum(g'), sum(g' * (x - mean)))` of one plane, `g'` the gradient through the ReLU.
fn grad_sums<const RELU: bool>(g: &[f32], x: &[f32], mean: f32, scale: f32, beta: f32) -> (f64, f64) {
    let (mut s1, mut s2) = (0f64, 0f64);
    for (gc, xc) in g.chunks(CHUNK).zip(x.chunks(CHUNK)) {
        let (mut a, mut b) = ([0f32; LANES], [0f32; LANES]);
        let mut gi = gc.chunks_exact(LANES);
        let mut xi = xc.chunks_exact(LANES);
        for (gv, xv) in (&mut gi).zip(&mut xi) {
            for l in 0..LANES {
                let xc = xv[l] - mean;
                let gg = through_relu::<RELU>(gv[l], xc, scale, beta);
                a[l] += gg;
                b[l] += gg * xc;
            }
        }
        for (&gv, &xv) in gi.remainder().iter().zip(xi.remainder()) {
            let xc = xv - mean;
            let gg = through_relu::<RELU>(gv, xc, scale, beta);
            a[0] += gg;
            b[0] += gg * xc;
        }
        s1 += a.iter().map(|&v| f64::from(v)).sum::<f64>();
        s2 += b.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    (s1, s2)
}

/// Per-channel constants of the input gradient: `dx = a g' + b (x - mean) + c0`.
#[derive(Clone, Copy)]
struct DxCoef {
    a: f32,
    b: f32,
    c0: f32,
    mean: f32,
    scale: f32,
    beta: f32,
}

/// Writes one plane of the input gradient and returns its sum (the bias gradient's share).
fn dx_plane<const RELU: bool>(d: &mut [MaybeUninit<f32>], x: &[f32], g: &[f32], k: DxCoef) -> f64 {
    let mut total = 0f64;
    for ((dc, xc), gc) in d.chunks_mut(CHUNK).zip(x.chunks(CHUNK)).zip(g.chunks(CHUNK)) {
        let mut acc = [0f32; LANES];
        let mut di = dc.chunks_exact_mut(LANES);
        let mut xi = xc.chunks_exact(LANES);
        let mut gi = gc.chunks_exact(LANES);
        for ((dv, xv), gv) in (&mut di).zip(&mut xi).zip(&mut gi) {
            for l in 0..LANES {
                let xc = xv[l] - k.mean;
                let gg = through_relu::<RELU>(gv[l], xc, k.scale, k.beta);
                let v = k.a * gg + k.b * xc + k.c0;
                dv[l].write(v);
                acc[l] += v;
            }
        }
        for ((o, &xv), &gv) in di.into_remainder().iter_mut().zip(xi.remainder()).zip(gi.remainder()) {
            let xc = xv - k.mean;
            let gg = through_relu::<RELU>(gv, xc, k.scale, k.beta);
            let v = k.a * gg + k.b * xc + k.c0;
            o.write(v);
            acc[0] += v;
        }
        total += acc.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    total
}

impl CustomOp2 for BnTrain {
    fn name(&self) -> &'static str {
        "batch-norm-relu-train"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, ps: &CpuStorage, pl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let hw = h * w;
        let m = n * hw;
        if m == 0 {
            candle_core::bail!("batch norm over an empty batch {:?}", xl.shape().dims());
        }
        let x = cpu_f32(xs, xl, "batch norm input")?;
        let p = cpu_f32(ps, pl, "batch norm parameters")?;
        let (gamma, beta) = (&p[c..2 * c], &p[2 * c..3 * c]);
        let moments: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let k = x[ch * hw];
                let (mut s1, mut s2) = (0f64, 0f64);
                for i in 0..n {
                    let (a, b) = shifted_sums(&x[(i * c + ch) * hw..][..hw], k);
                    s1 += a;
                    s2 += b;
                }
                let d = s1 / m as f64;
                (f64::from(k) + d, (s2 / m as f64 - d * d).max(0.0))
            })
            .collect();
        let mean: Vec<f32> = moments.iter().map(|&(mu, _)| mu as f32).collect();
        let var: Vec<f32> = moments.iter().map(|&(_, v)| v as f32).collect();
        let invstd: Vec<f32> = moments.iter().map(|&(_, v)| (1.0 / (v + self.eps).sqrt()) as f32).collect();
        let scale: Vec<f32> = (0..c).map(|ch| gamma[ch] * invstd[ch]).collect();
        let relu = self.relu;
        // SAFETY: every plane of the output is written below.
        let y = unsafe {
            filled_f32(n * c * hw, |dst: &mut [MaybeUninit<f32>]| {
                dst.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(i, (d, s))| {
                    let (mu, sc, b) = (mean[i % c], scale[i % c], beta[i % c]);
                    if relu {
                        d.iter_mut().zip(s).for_each(|(o, &v)| {
                            o.write(((v - mu) * sc + b).max(0.0));
                        });
                    } else {
                        d.iter_mut().zip(s).for_each(|(o, &v)| {
                            o.write((v - mu) * sc + b);
                        });
                    }
                })
            })
        };
        let (gamma, beta) = (gamma.to_vec(), beta.to_vec());
        // A second forward with the same op (never done) would keep the first statistics.
        let _ = self.stats.set(Saved::Cpu(Stats { mean, var, invstd, gamma, scale, beta }));
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ps: &candle_core::CudaStorage,
        pl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let c = xl.shape().dims4()?.1;
        let (y, saved) = super::cuda::bn_train_fwd(xs, xl, ps, pl, self.eps, self.relu)?;
        let saved = Tensor::from_storage(candle_core::Storage::Cuda(saved), (6, c), candle_core::op::BackpropOp::none(), false);
        let _ = self.stats.set(Saved::Device(saved));
        Ok((y, xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, params: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dparams = Arc::new(OnceLock::new());
        let op = BnTrainBwd { relu: self.relu, stats: self.stats.clone(), dparams: dparams.clone() };
        let dx = x.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &op)?;
        let dp = dparams.get().ok_or_else(|| candle_core::Error::Msg("batch norm: no parameter gradients".into()))?;
        Ok((Some(dx), Some(dp.reshape(params.dims())?)))
    }
}

impl CustomOp2 for BnTrainBwd {
    fn name(&self) -> &'static str {
        "batch-norm-relu-train-bwd"
    }

    /// `(x, grad_y) -> grad_x`, with the parameter gradients left in `dparams`.
    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        if gl.shape() != xl.shape() {
            candle_core::bail!("batch norm backward: gradient {:?} for input {:?}", gl.shape(), xl.shape());
        }
        let hw = h * w;
        let m = (n * hw) as f64;
        let x = cpu_f32(xs, xl, "batch norm input")?;
        let g = cpu_f32(gs, gl, "batch norm gradient")?;
        let s = match self.stats.get() {
            Some(Saved::Cpu(s)) => s,
            Some(Saved::Device(_)) => candle_core::bail!("batch norm backward: forward ran on another device"),
            None => candle_core::bail!("batch norm backward before forward"),
        };
        let relu = self.relu;
        // dbeta = sum g', dgamma = sum g' * xhat.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut a, mut b) = (0f64, 0f64);
                for i in 0..n {
                    let at = (i * c + ch) * hw;
                    let (gp, xp) = (&g[at..at + hw], &x[at..at + hw]);
                    let (mean, sc, bt) = (s.mean[ch], s.scale[ch], s.beta[ch]);
                    let (sa, sb) = if relu {
                        grad_sums::<true>(gp, xp, mean, sc, bt)
                    } else {
                        grad_sums::<false>(gp, xp, mean, sc, bt)
                    };
                    a += sa;
                    b += sb;
                }
                (a, b * f64::from(s.invstd[ch]))
            })
            .collect();
        // dx = gamma * invstd * (g' - dbeta / M - xhat * dgamma / M) = a g' + b (x - mean) + c0.
        let coef: Vec<DxCoef> = (0..c)
            .map(|ch| {
                let (dbeta, dgamma) = sums[ch];
                let a = f64::from(s.gamma[ch]) * f64::from(s.invstd[ch]);
                let b = -a * f64::from(s.invstd[ch]) * dgamma / m;
                DxCoef {
                    a: a as f32,
                    b: b as f32,
                    c0: (-a * dbeta / m) as f32,
                    mean: s.mean[ch],
                    scale: s.scale[ch],
                    beta: s.beta[ch],
                }
            })
            .collect();
        let mut plane_sums = Vec::new();
        // SAFETY: dx_plane writes every element of each plane.
        let dx = unsafe {
            filled_f32(n * c * hw, |dst: &mut [MaybeUninit<f32>]| {
                plane_sums = dst
                    .par_chunks_mut(hw)
                    .zip(x.par_chunks(hw).zip(g.par_chunks(hw)))
                    .enumerate()
                    .map(|(i, (d, (xp, gp)))| {
                        if relu {
                            dx_plane::<true>(d, xp, gp, coef[i % c])
                        } else {
                            dx_plane::<false>(d, xp, gp, coef[i % c])
                        }
                    })
                    .collect::<Vec<f64>>();
            })
        };
        let mut dp = vec![0f32; 3 * c];
        for ch in 0..c {
            dp[ch] = (0..n).map(|i| plane_sums[i * c + ch]).sum::<f64>() as f32;
            dp[c + ch] = sums[ch].1 as f32;
            dp[2 * c + ch] = sums[ch].0 as f32;
        }
        let _ = self.dparams.set(Tensor::from_vec(dp, 3 * c, &candle_core::Device::Cpu)?);
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        if gl.shape() != xl.shape() {
            candle_core::bail!("batch norm backward: gradient {:?} for input {:?}", gl.shape(), xl.shape());
        }
        let saved = match self.stats.get() {
            Some(Saved::Device(t)) => t,
            Some(Saved::Cpu(_)) => candle_core::bail!("batch norm backward: forward ran on another device"),
            None => candle_core::bail!("batch norm backward before forward"),
        };
        let c = xl.shape().dims4()?.1;
        let (storage, layout) = saved.storage_and_layout();
        let candle_core::Storage::Cuda(ss) = &*storage else {
            candle_core::bail!("batch norm backward: statistics are not on the GPU")
        };
        let (dx, dp) = super::cuda::bn_train_bwd(xs, xl, gs, gl, ss, layout, self.relu)?;
        let dp = Tensor::from_storage(candle_core::Storage::Cuda(dp), 3 * c, candle_core::op::BackpropOp::none(), false);
        let _ = self.dparams.set(dp);
        Ok((dx, xl.shape().clone()))
    }
}

impl CustomOp1 for ChannelSums {
    fn name(&self) -> &'static str {
        "channel-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let hw = h * w;
        let t = cpu_f32(s, l, "channel sums input")?;
        let sums: Vec<f32> = (0..c)
            .into_par_iter()
            .map(|ch| (0..n).map(|i| shifted_sums(&t[(i * c + ch) * hw..][..hw], 0.0).0).sum::<f64>() as f32)
            .collect();
        Ok((CpuStorage::F32(sums), Shape::from(c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let c = l.shape().dims4()?.1;
        Ok((super::cuda::channel_sums(s, l)?, Shape::from(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    const EPS: f64 = 1e-5;

    /// The candle-op composition the fused op replaces: `relu?(bn_train(x + bias))`.
    fn reference(x: &Tensor, bias: &Tensor, gamma: &Tensor, beta: &Tensor, relu: bool) -> Result<Tensor> {
        let c = bias.dim(0)?;
        let z = x.broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
        let mean = z.mean_keepdim((0, 2, 3))?;
        let centred = z.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
        let y = centred
            .broadcast_div(&(var + EPS)?.sqrt()?)?
            .broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?
            .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale)
    }

    /// Forward, statistics and the gradients of all four inputs against the composition, on
    /// `L = sum(y * r)`. The input has a channel offset (the mean is far from zero, as after a
    /// convolution with a bias) so the one-pass variance is exercised.
    fn check(n: usize, c: usize, h: usize, w: usize, relu: bool) -> Result<()> {
        let dev = Device::Cpu;
        let offset = Tensor::arange(0f32, c as f32, &dev)?.affine(3.0, -4.0)?.reshape((1, c, 1, 1))?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (n, c, h, w), &dev)?.broadcast_add(&offset)?)?;
        let bias = Var::from_tensor(&Tensor::randn(0f32, 1.0, c, &dev)?)?;
        let gamma = Var::from_tensor(&Tensor::rand(0.5f32, 1.5, c, &dev)?)?;
        let beta = Var::from_tensor(&Tensor::randn(0f32, 1.0, c, &dev)?)?;
        let r = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?;
        let got = batch_norm_relu_train(&x, &bias, &gamma, &beta, EPS, relu)?;
        let want = reference(&x, &bias, &gamma, &beta, relu)?;
        let what = format!("[{n}, {c}, {h}, {w}] relu {relu}");
        let d = max_rel_diff(&got.y, &want)?;
        assert!(d < 1e-5, "{what}: output differs by {d:e}");

        let z = x.broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
        let mean = z.mean_keepdim((0, 2, 3))?.flatten_all()?;
        let var = z.broadcast_sub(&mean.reshape((1, c, 1, 1))?)?.sqr()?.mean_keepdim((0, 2, 3))?.flatten_all()?;
        assert!(max_rel_diff(&got.mean, &mean)? < 1e-5, "{what}: mean");
        assert!(max_rel_diff(&got.var, &var)? < 1e-5, "{what}: var");

        let g_got = (got.y * &r)?.sum_all()?.backward()?;
        let g_want = (want * &r)?.sum_all()?.backward()?;
        for (name, v) in [("x", &x), ("gamma", &gamma), ("beta", &beta)] {
            let (a, b) = (g_got.get(v).expect("gradient"), g_want.get(v).expect("gradient"));
            if name == "x" && n * h * w == 1 {
                // One value per channel: the true input gradient is 0 and both are rounding
                // noise (of size gamma / sqrt(eps) * eps_f32), so compare absolutely.
                for t in [a, b] {
                    let m = t.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(m < 1e-3, "{what}: dx should vanish, max |dx| {m:e}");
                }
                continue;
            }
            let d = max_rel_diff(a, b)?;
            assert!(d < 1e-4, "{what}: d{name} differs by {d:e}");
        }
        // The bias gradient is zero up to rounding (batch statistics remove the bias): compare
        // on the scale of the input gradient it sums.
        let gx_sum = g_want.get(&x).expect("gradient").abs()?.sum((0, 2, 3))?.max_all()?.to_scalar::<f32>()?;
        let db = (g_got.get(&bias).expect("gradient") - g_want.get(&bias).expect("gradient"))?;
        let db = db.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(db <= 1e-4 * gx_sum.max(1.0), "{what}: dbias differs by {db:e} (sum |dx| {gx_sum:e})");
        Ok(())
    }

    #[test]
    fn matches_candle_composition() -> Result<()> {
        check(1, 3, 5, 7, true)?; // batch 1, odd sizes
        check(2, 4, 3, 3, false)?;
        check(3, 5, 17, 9, true)?;
        check(2, 2, 40, 37, true)?; // planes longer than one summation chunk
        check(1, 6, 1, 1, true)?; // one value per channel: variance 0
        Ok(())
    }

    #[test]
    fn channel_sums_match_sum() -> Result<()> {
        let t = Tensor::randn(0f32, 1.0, (3, 5, 33, 41), &Device::Cpu)?;
        let d = max_rel_diff(&channel_sums(&t)?, &t.sum((0, 2, 3))?)?;
        assert!(d < 1e-5, "{d:e}");
        Ok(())
    }
}
