//! 2x2 max-pooling, stride 2, floor (odd sizes drop the last row/column): the Down blocks' pool,
//! for inference and for training.
//!
//! - Inference (nothing tracks a gradient): [`maxpool2x2`] runs our own op on the CPU (f32;
//!   candle's generic pooling is several times slower) and on CUDA (every dtype).
//! - Training: candle 0.11's `max_pool2d` backward is wrong: it multiplies the gradient by the
//!   average of the "is the maximum" mask over the window, so a window's single maximum gets a
//!   quarter of the gradient (PyTorch gives it all of it; `tests` show the 0.25). It is also slow:
//!   five full-resolution passes and as many allocations.
//!   - f32 on the CPU and CUDA: [`maxpool2x2_train`], one op whose backward finds each window's
//!     maximum again and routes the gradient to it. Like PyTorch, a window's gradient goes to its
//!     first maximum (row-major).
//!   - Other devices: [`maxpool2x2_graph`], two max reductions whose candle backward is right
//!     (ties each get the gradient; after a ReLU the ties are zeros whose gradient the ReLU drops
//!     anyway).

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::common::{cpu_f32, filled_f32};
use crate::model::capabilities::Capabilities;

/// 2x2 max pooling, stride 2, floor (odd sizes drop the last row/column). Without a gradient,
/// our own op on the CPU (f32; candle's generic pooling is several times slower) and on CUDA
/// (every dtype: the composition's max reductions over pairs launch one two-thread block per
/// output pair); with one, [`maxpool2x2_train`] where it runs, else the composition.
pub fn maxpool2x2(x: &Tensor) -> Result<Tensor> {
    let cuda = cfg!(feature = "cuda") && x.device().is_cuda();
    if ((x.device().is_cpu() && x.dtype() == DType::F32) || cuda) && !x.track_op() {
        x.contiguous()?.apply_op1_no_bwd(&MaxPool2x2)
    } else if supported(x) {
        maxpool2x2_train(x)
    } else {
        // Not candle's max_pool2d: its gradient is a quarter of the right one.
        maxpool2x2_graph(x)
    }
}

struct MaxPool2x2;

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
        Ok((super::cuda::maxpool2x2(s, l)?, Shape::from((n, c, h / 2, w / 2))))
    }
}

/// Whether [`maxpool2x2_train`] runs for `x` (f32, CPU or CUDA:
/// [`Capabilities::own_train_ops`]).
pub fn supported(x: &Tensor) -> bool {
    Capabilities::detect().own_train_ops(x)
}

/// `x [N, C, H, W]` -> `[N, C, H/2, W/2]` (floor), differentiable.
pub fn maxpool2x2_train(x: &Tensor) -> Result<Tensor> {
    if !supported(x) {
        candle_core::bail!("maxpool2x2_train: f32 on the CPU or CUDA only, got {:?} {:?}", x.device(), x.dtype());
    }
    x.dims4()?;
    x.contiguous()?.apply_op1(MaxPoolTrain)
}

/// The same pooling as candle ops with a correct backward, for any device and dtype.
pub fn maxpool2x2_graph(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h / 2, w / 2);
    let x = x.narrow(2, 0, 2 * oh)?.narrow(3, 0, 2 * ow)?;
    x.reshape((n, c, oh, 2, ow, 2))?.max_keepdim(5)?.max_keepdim(3)?.reshape((n, c, oh, ow))
}

struct MaxPoolTrain;
struct MaxPoolTrainBwd;

/// Offset of the first maximum of the window whose top-left element is `a[i]` (`b` the next row).
#[inline]
fn argmax4(a: &[f32], b: &[f32], i: usize) -> (usize, usize, f32) {
    let mut best = (0, i, a[i]);
    for (row, j, v) in [(0, i + 1, a[i + 1]), (1, i, b[i]), (1, i + 1, b[i + 1])] {
        // Strictly greater: ties keep the earlier element; NaN never wins, as in max().
        if v > best.2 {
            best = (row, j, v);
        }
    }
    best
}

impl CustomOp1 for MaxPoolTrain {
    fn name(&self) -> &'static str {
        "maxpool2x2-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        // The values are the inference op's; only the backward differs from it.
        MaxPool2x2.cpu_fwd(s, l)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        MaxPool2x2.cuda_fwd(s, l)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &MaxPoolTrainBwd)?))
    }
}

impl CustomOp2 for MaxPoolTrainBwd {
    fn name(&self) -> &'static str {
        "maxpool2x2-train-bwd"
    }

    /// `(x, grad_out) -> grad_x`.
    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout, gs: &CpuStorage, gl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = xl.shape().dims4()?;
        let (oh, ow) = (h / 2, w / 2);
        if gl.shape().dims() != [n, c, oh, ow] {
            candle_core::bail!("maxpool backward: gradient {:?} for input {:?}", gl.shape(), xl.shape());
        }
        let x = cpu_f32(xs, xl, "maxpool input")?;
        let g = cpu_f32(gs, gl, "maxpool gradient")?;
        let plane = h * w;
        let fill = |out: &mut [MaybeUninit<f32>]| {
            out.par_chunks_mut(plane.max(1)).enumerate().for_each(|(p, dst)| {
                dst.iter_mut().for_each(|v| {
                    v.write(0.0);
                });
                // SAFETY: every element was just written.
                let dst = unsafe { super::common::assume_init_mut(dst) };
                let src = &x[p * plane..(p + 1) * plane];
                let gp = &g[p * oh * ow..(p + 1) * oh * ow];
                for oy in 0..oh {
                    let (r0, r1) = (2 * oy * w, (2 * oy + 1) * w);
                    let (a, b) = (&src[r0..r0 + w], &src[r1..r1 + w]);
                    for ox in 0..ow {
                        let (row, j, _) = argmax4(a, b, 2 * ox);
                        dst[if row == 0 { r0 } else { r1 } + j] = gp[oy * ow + ox];
                    }
                }
            })
        };
        // SAFETY: every plane is zeroed before the maxima get their gradient.
        let dx = unsafe { filled_f32(n * c * plane, fill) };
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
        let (n, c, h, w) = xl.shape().dims4()?;
        if gl.shape().dims() != [n, c, h / 2, w / 2] {
            candle_core::bail!("maxpool backward: gradient {:?} for input {:?}", gl.shape(), xl.shape());
        }
        Ok((super::cuda::maxpool2x2_bwd(xs, xl, gs, gl)?, xl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn grad_of(f: fn(&Tensor) -> Result<Tensor>, x: &[f32], shape: (usize, usize, usize, usize)) -> Result<Vec<f32>> {
        let x = Var::from_tensor(&Tensor::from_slice(x, shape, &Device::Cpu)?)?;
        let g = f(&x)?.sum_all()?.backward()?;
        g.get(&x).expect("gradient").flatten_all()?.to_vec1::<f32>()
    }

    /// The window maximum gets the whole gradient (PyTorch); candle's own max_pool2d gives it a
    /// quarter, which is why neither training path uses it.
    #[test]
    fn gradient_goes_to_the_maximum() -> Result<()> {
        let x = [1f32, 2.0, 3.0, 4.0, -1.0, 7.0, 5.0, 0.5];
        for f in [maxpool2x2_train, maxpool2x2_graph] {
            assert_eq!(grad_of(f, &x, (2, 1, 2, 2))?, [0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
        }
        assert_eq!(grad_of(|x| x.max_pool2d(2), &x, (2, 1, 2, 2))?, [0.0, 0.0, 0.0, 0.25, 0.0, 0.25, 0.0, 0.0]);
        Ok(())
    }

    /// The op against the reduction composition: output and gradient on random data (no ties),
    /// odd sizes (the last row and column are dropped), batch 1.
    #[test]
    fn op_matches_graph() -> Result<()> {
        let dev = Device::Cpu;
        for &(n, c, h, w) in &[(1, 3, 4, 6), (2, 5, 7, 9), (3, 2, 16, 33), (1, 1, 3, 3)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?)?;
            let r = Tensor::randn(0f32, 1.0, (n, c, h / 2, w / 2), &dev)?;
            let got = maxpool2x2_train(&x)?;
            let want = maxpool2x2_graph(&x)?;
            let d = (&got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert_eq!(d, 0.0, "[{n}, {c}, {h}, {w}]: output");
            let ga = (got * &r)?.sum_all()?.backward()?;
            let gb = (want * &r)?.sum_all()?.backward()?;
            let (ga, gb) = (ga.get(&x).expect("gradient"), gb.get(&x).expect("gradient"));
            let d = (ga - gb)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert_eq!(d, 0.0, "[{n}, {c}, {h}, {w}]: gradient");
        }
        // A window of equal values: the whole gradient goes to the first element.
        let x = Var::from_tensor(&Tensor::zeros((1, 1, 2, 2), DType::F32, &dev)?)?;
        let g = maxpool2x2_train(&x)?.sum_all()?.backward()?;
        assert_eq!(g.get(&x).expect("gradient").flatten_all()?.to_vec1::<f32>()?, [1.0, 0.0, 0.0, 0.0]);
        Ok(())
    }
}
