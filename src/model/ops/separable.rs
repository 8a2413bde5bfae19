//! A separable conv set (grouped 3x3, then 1x1, bias, ReLU) as one fused pass, for inference with
//! BatchNorm folded in:
//!
//! - [`separable_fused`], [`double_separable_fused`]: on AVX-512 CPUs, one or both sets of a
//!   DoubleConv (and the network's final 1x1) in one pass over bands of rows, the input read
//!   straight from a map, a map to max-pool, or a skip connection plus a map to upsample and pad
//!   (the kernels are in `separable_cpu`).
//! - [`separable_cuda`]: one set as one CUDA kernel that keeps the grouped conv's output in shared
//!   memory (`super::cuda`).
//!
//! Which of them a block uses is the inference plan's decision (`model::inference`); these
//! functions still decline (`None`) what they cannot run, and the caller then runs the layers.

use candle_core::{DType, Result, Tensor};

use super::grouped_conv::WIDE_GROUP;
use super::input::ConvInput;
#[cfg(target_arch = "x86_64")]
use super::common::cpu_f32;
#[cfg(target_arch = "x86_64")]
use super::input::up_padding;

/// The weights of one separable conv set: grouped 3x3 `[ci, k, 3, 3]` (k = 1, depthwise, for the
/// CPU passes) and its bias, 1x1 `[co, ci, 1, 1]` (or `[co, ci]`) and its bias.
#[derive(Clone, Copy, Debug)]
pub struct SeparableWeights<'a> {
    pub dw_w: &'a Tensor,
    pub dw_b: &'a Tensor,
    pub pw_w: &'a Tensor,
    pub pw_b: &'a Tensor,
}

impl SeparableWeights<'_> {
    /// Whether [`separable_fused`] and [`double_separable_fused`] run this set: f32 weights on an
    /// AVX-512 CPU, nothing tracking a gradient, a depthwise 3x3, output channels a multiple of 8.
    /// The map (its device, and whether it is big enough) is checked per call.
    pub fn fits_cpu_fused(&self) -> Result<bool> {
        #[cfg(target_arch = "x86_64")]
        {
            let all = [self.dw_w, self.dw_b, self.pw_w, self.pw_b];
            if all.iter().any(|t| !t.device().is_cpu() || t.dtype() != DType::F32 || t.track_op()) {
                return Ok(false);
            }
            let depthwise = self.dw_w.rank() == 4 && self.dw_w.dim(1)? == 1;
            return Ok(depthwise && super::separable_cpu::available(self.pw_w.dim(0)?));
        }
        #[allow(unreachable_code)]
        Ok(false)
    }

    /// Whether [`separable_cuda`] runs this set: built with CUDA, weights on a GPU, fewer than
    /// [`WIDE_GROUP`] input channels per group.
    pub fn fits_cuda_fused(&self) -> Result<bool> {
        Ok(cfg!(feature = "cuda") && self.dw_w.device().is_cuda() && self.dw_w.dims4()?.1 < WIDE_GROUP)
    }
}

/// A folded separable conv set (grouped 3x3 with `K` < [`WIDE_GROUP`] inputs per group, then
/// 1x1, bias, ReLU if `relu`) as one CUDA kernel, which keeps the grouped conv's output in
/// shared memory: `Some` on CUDA builds for an input on the GPU, `None` elsewhere and for
/// anything that needs a gradient. It is opt-in (`LIGHTUNET_CUDA_FUSED=1`, read into
/// `Capabilities::cuda_fused`, which the inference plan consults) until a GPU run has checked
/// and timed it.
pub fn separable_cuda(x: &Tensor, set: SeparableWeights, relu: bool) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    {
        let SeparableWeights { dw_w: gw, dw_b: gb, pw_w: pw, pw_b: pb } = set;
        let k = gw.dims4()?.1;
        let tracked = [x, gw, gb, pw, pb].iter().any(|t| t.track_op());
        if x.device().is_cuda() && k < WIDE_GROUP && !tracked {
            return super::cuda::separable_fused(x, gw, gb, pw, pb, relu).map(Some);
        }
    }
    let _ = (x, set, relu);
    Ok(None)
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

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
