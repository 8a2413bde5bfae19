//! Launchers for the CUDA kernels of `kernels/ops.cu` (compiled to PTX by build.rs), called from
//! the custom ops of the sibling modules (grouped_conv, pointwise, upsample, maxpool, batchnorm,
//! separable). Inputs arrive contiguous (the ops make them so); offsets from the layout are
//! honoured.

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Storage, Tensor};
use half::{bf16, f16};

use super::common::ConvDims;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/ops.ptx"));
const MODULE: &str = "lightunet_ops";

fn view<'a, T: candle_core::cuda_backend::CudaDType>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, T>> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("cuda op: input is not contiguous".into()))?;
    Ok(s.as_cuda_slice::<T>()?.slice(a..b))
}

fn suffix(dt: DType) -> Result<&'static str> {
    match dt {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        other => candle_core::bail!("cuda op: unsupported dtype {other:?}"),
    }
}

fn grid1(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(256).clamp(1, 65535 * 8) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

fn wrap<T: candle_core::cuda_backend::CudaDType>(s: CudaSlice<T>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(s, dev.clone())
}

pub fn grouped_conv3x3(
    xs: &CudaStorage,
    xl: &Layout,
    ws: &CudaStorage,
    wl: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
    d: ConvDims,
) -> Result<CudaStorage> {
    fn run<T: candle_core::cuda_backend::CudaDType + DeviceRepr>(
        name: &str,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        bias: Option<(&CudaStorage, &Layout)>,
        d: ConvDims,
    ) -> Result<CudaStorage> {
        let dev = xs.device();
        let x = view::<T>(xs, xl)?;
        let w = view::<T>(ws, wl)?;
        // Without a bias the kernel never reads `b`; pass the weights as a valid pointer.
        let b = match bias {
            Some((bs, bl)) => view::<T>(bs, bl)?,
            None => view::<T>(ws, wl)?,
        };
        let y = unsafe { dev.alloc::<T>(d.n * d.c * d.h * d.w)? };
        let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let (c, h, wd, k, hb) = (d.c as i32, d.h as i32, d.w as i32, d.k as i32, bias.is_some() as i32);
        let cfg = LaunchConfig {
            grid_dim: (d.w.div_ceil(32) as u32, d.h.div_ceil(8) as u32, (d.n * d.c) as u32),
            block_dim: (32, 8, 1),
            shared_mem_bytes: 0,
        };
        let mut bld = func.builder();
        bld.arg(&x).arg(&w).arg(&b).arg(&y).arg(&c).arg(&h).arg(&wd).arg(&k).arg(&hb);
        unsafe { bld.launch(cfg) }.w()?;
        Ok(wrap(y, dev))
    }
    match xs.dtype() {
        DType::F32 => run::<f32>("gconv3x3_f32", xs, xl, ws, wl, bias, d),
        DType::F16 => run::<f16>("gconv3x3_f16", xs, xl, ws, wl, bias, d),
        DType::BF16 => run::<bf16>("gconv3x3_bf16", xs, xl, ws, wl, bias, d),
        other => candle_core::bail!("grouped_conv3x3: unsupported dtype {other:?}"),
    }
}

pub fn grouped_conv3x3_grad_w(
    gs: &CudaStorage,
    gl: &Layout,
    xs: &CudaStorage,
    xl: &Layout,
    d: ConvDims,
) -> Result<CudaStorage> {
    if gs.dtype() != DType::F32 {
        candle_core::bail!("grouped_conv3x3 backward runs in f32, got {:?}", gs.dtype())
    }
    let dev = gs.device();
    let g = view::<f32>(gs, gl)?;
    let x = view::<f32>(xs, xl)?;
    let gw = dev.alloc_zeros::<f32>(d.c * d.k * 9)?;
    let func = dev.get_or_load_custom_func("gconv3x3_grad_w_f32", MODULE, PTX)?;
    // Enough blocks to fill the GPU even when C*K is small; each adds its partial sums atomically.
    let work = d.n * d.h * d.w;
    let splits = (work / (256 * 32)).clamp(1, 64) as u32;
    let cfg = LaunchConfig { grid_dim: ((d.c * d.k) as u32, splits, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let (n, c, h, w, k) = (d.n as i32, d.c as i32, d.h as i32, d.w as i32, d.k as i32);
    let mut bld = func.builder();
    bld.arg(&g).arg(&x).arg(&gw).arg(&n).arg(&c).arg(&h).arg(&w).arg(&k);
    unsafe { bld.launch(cfg) }.w()?;
    Ok(wrap(gw, dev))
}

pub fn bias_act(xs: &CudaStorage, xl: &Layout, bs: &CudaStorage, bl: &Layout, relu: bool) -> Result<CudaStorage> {
    fn run<T: candle_core::cuda_backend::CudaDType + DeviceRepr>(
        xs: &CudaStorage,
        xl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
        relu: bool,
    ) -> Result<CudaStorage> {
        let dev = xs.device();
        let (_, c, h, w) = xl.shape().dims4()?;
        let total = xl.shape().elem_count();
        let x = view::<T>(xs, xl)?;
        let b = view::<T>(bs, bl)?;
        let y = unsafe { dev.alloc::<T>(total)? };
        let func = dev.get_or_load_custom_func(&format!("bias_act_{}", suffix(xs.dtype())?), MODULE, PTX)?;
        let (total_u, ci, plane, r) = (total as u64, c as i32, (h * w) as u64, relu as i32);
        let mut bld = func.builder();
        bld.arg(&x).arg(&b).arg(&y).arg(&total_u).arg(&ci).arg(&plane).arg(&r);
        unsafe { bld.launch(grid1(total)) }.w()?;
        Ok(wrap(y, dev))
    }
    match xs.dtype() {
        DType::F32 => run::<f32>(xs, xl, bs, bl, relu),
        DType::F16 => run::<f16>(xs, xl, bs, bl, relu),
        DType::BF16 => run::<bf16>(xs, xl, bs, bl, relu),
        other => candle_core::bail!("bias_act: unsupported dtype {other:?}"),
    }
}

/// Bilinear x2 upsampling, align_corners: `[N, C, H, W]` -> `[N, C, 2H, 2W]`, f32, f16 or bf16.
pub fn upsample2x(s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
    let (_, _, h, w) = l.shape().dims4()?;
    per_plane("upsample2x", s, l, 4 * h * w)
}

/// Launches `<kernel>_<dtype>(x, y, planes, h, w)`, a kernel that maps each `h x w` plane of a
/// contiguous `[N, C, H, W]` input to `out_plane` outputs, one thread per output.
fn per_plane(kernel: &str, s: &CudaStorage, l: &Layout, out_plane: usize) -> Result<CudaStorage> {
    fn run<T: candle_core::cuda_backend::CudaDType + DeviceRepr>(
        name: &str,
        s: &CudaStorage,
        l: &Layout,
        out_plane: usize,
    ) -> Result<CudaStorage> {
        let dev = s.device();
        let (n, c, h, w) = l.shape().dims4()?;
        let x = view::<T>(s, l)?;
        let total = n * c * out_plane;
        let y = unsafe { dev.alloc::<T>(total)? };
        if total == 0 {
            return Ok(wrap(y, dev));
        }
        let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        let (planes, hi, wi) = ((n * c) as u64, h as i32, w as i32);
        let mut bld = func.builder();
        bld.arg(&x).arg(&y).arg(&planes).arg(&hi).arg(&wi);
        unsafe { bld.launch(grid1(total)) }.w()?;
        Ok(wrap(y, dev))
    }
    let name = format!("{kernel}_{}", suffix(s.dtype())?);
    match s.dtype() {
        DType::F32 => run::<f32>(&name, s, l, out_plane),
        DType::F16 => run::<f16>(&name, s, l, out_plane),
        DType::BF16 => run::<bf16>(&name, s, l, out_plane),
        other => candle_core::bail!("{kernel}: unsupported dtype {other:?}"),
    }
}

pub fn upsample2x_bwd(s: &CudaStorage, l: &Layout, h: usize, w: usize) -> Result<CudaStorage> {
    if s.dtype() != DType::F32 {
        candle_core::bail!("upsample2x backward runs in f32, got {:?}", s.dtype())
    }
    let dev = s.device();
    let (n, c, _, _) = l.shape().dims4()?;
    let g = view::<f32>(s, l)?;
    let gx = dev.alloc_zeros::<f32>(n * c * h * w)?;
    let func = dev.get_or_load_custom_func("upsample2x_bwd_f32", MODULE, PTX)?;
    let (planes, hi, wi) = ((n * c) as u64, h as i32, w as i32);
    let mut bld = func.builder();
    bld.arg(&g).arg(&gx).arg(&planes).arg(&hi).arg(&wi);
    unsafe { bld.launch(grid1(n * c * 4 * h * w)) }.w()?;
    Ok(wrap(gx, dev))
}

// ---------------------------------------------------------------------------------------------
// Training BatchNorm, per-channel sums and 2x2 max-pooling (f32; see kernels/ops.cu)

/// Threads of a per-channel reduction block (`RED_THREADS` in ops.cu).
const RED_THREADS: usize = 256;

/// Per-channel reduction geometry: `q` blocks per plane, about 16 values per thread, so that a
/// [8, 32, 256, 256] activation runs on 8 * 16 * 32 blocks and a 16x16 plane on one per plane.
#[derive(Clone, Copy)]
struct Reduce {
    n: usize,
    c: usize,
    hw: usize,
    q: usize,
}

impl Reduce {
    fn new(l: &Layout) -> Result<Self> {
        let (n, c, h, w) = l.shape().dims4()?;
        if n * h * w == 0 || c == 0 {
            candle_core::bail!("per-channel reduction over an empty tensor {:?}", l.shape().dims());
        }
        let hw = h * w;
        Ok(Self { n, c, hw, q: hw.div_ceil(RED_THREADS * 16).clamp(1, 64) })
    }

    /// Partial sums per channel.
    fn partials(&self) -> usize {
        self.q * self.n
    }

    fn grid(&self) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.partials() as u32, self.c as u32, 1),
            block_dim: (RED_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// One thread per channel.
    fn per_channel(&self) -> LaunchConfig {
        LaunchConfig { grid_dim: (self.c.div_ceil(128) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 }
    }

    fn args(&self) -> (i32, u64, i32, i32) {
        (self.c as i32, self.hw as u64, self.q as i32, self.partials() as i32)
    }
}

/// Partial sums per block of every channel of `x` into `partial` (`bn_sums_f32`), shifted by
/// each channel's first value when `shift` (statistics) or not (plain sums).
fn launch_sums(dev: &CudaDevice, x: &CudaView<f32>, partial: &CudaSlice<f64>, r: &Reduce, shift: bool) -> Result<()> {
    let (c, hw, q, _) = r.args();
    let shift = shift as i32;
    let func = dev.get_or_load_custom_func("bn_sums_f32", MODULE, PTX)?;
    let mut bld = func.builder();
    bld.arg(x).arg(partial).arg(&c).arg(&hw).arg(&q).arg(&shift);
    unsafe { bld.launch(r.grid()) }.w()?;
    Ok(())
}

fn f32_only(s: &CudaStorage, what: &str) -> Result<()> {
    if s.dtype() != DType::F32 {
        candle_core::bail!("{what} runs in f32 on CUDA, got {:?}", s.dtype())
    }
    Ok(())
}

/// `[N, C, H, W]` -> `[C]`: the sum of each channel.
pub fn channel_sums(s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
    f32_only(s, "channel sums")?;
    let dev = s.device();
    let r = Reduce::new(l)?;
    let x = view::<f32>(s, l)?;
    let partial = unsafe { dev.alloc::<f64>(2 * r.c * r.partials())? };
    let out = unsafe { dev.alloc::<f32>(r.c)? };
    let (c, _, _, p) = r.args();
    launch_sums(dev, &x, &partial, &r, false)?;
    let fin = dev.get_or_load_custom_func("channel_sums_finalize", MODULE, PTX)?;
    let mut bld = fin.builder();
    bld.arg(&partial).arg(&out).arg(&c).arg(&p);
    unsafe { bld.launch(r.per_channel()) }.w()?;
    Ok(wrap(out, dev))
}

/// Training BatchNorm forward: `x [N, C, H, W]` (before the conv bias), `params [3, C]` (bias,
/// gamma, beta) -> `(y, saved)`, `saved [6, C]` as bn_finalize writes it.
pub fn bn_train_fwd(
    xs: &CudaStorage,
    xl: &Layout,
    ps: &CudaStorage,
    pl: &Layout,
    eps: f64,
    relu: bool,
) -> Result<(CudaStorage, CudaStorage)> {
    f32_only(xs, "training batch norm")?;
    f32_only(ps, "training batch norm")?;
    let dev = xs.device();
    let r = Reduce::new(xl)?;
    let x = view::<f32>(xs, xl)?;
    let params = view::<f32>(ps, pl)?;
    let partial = unsafe { dev.alloc::<f64>(2 * r.c * r.partials())? };
    let saved = unsafe { dev.alloc::<f32>(6 * r.c)? };
    let total = r.n * r.c * r.hw;
    let y = unsafe { dev.alloc::<f32>(total)? };
    let (c, hw, _, p) = r.args();
    let (m, relu, total_u) = ((r.n * r.hw) as f64, relu as i32, total as u64);

    launch_sums(dev, &x, &partial, &r, true)?;
    let fin = dev.get_or_load_custom_func("bn_finalize", MODULE, PTX)?;
    let mut bld = fin.builder();
    bld.arg(&partial).arg(&x).arg(&params).arg(&saved).arg(&c).arg(&p).arg(&hw).arg(&m).arg(&eps);
    unsafe { bld.launch(r.per_channel()) }.w()?;
    let apply = dev.get_or_load_custom_func("bn_apply_f32", MODULE, PTX)?;
    let mut bld = apply.builder();
    bld.arg(&x).arg(&saved).arg(&y).arg(&total_u).arg(&c).arg(&hw).arg(&relu);
    unsafe { bld.launch(grid1(total)) }.w()?;
    Ok((wrap(y, dev), wrap(saved, dev)))
}

/// Training BatchNorm backward: `(x, grad_y, saved)` -> `(grad_x, dparams [3, C])` (bias,
/// gamma, beta).
pub fn bn_train_bwd(
    xs: &CudaStorage,
    xl: &Layout,
    gs: &CudaStorage,
    gl: &Layout,
    ss: &CudaStorage,
    sl: &Layout,
    relu: bool,
) -> Result<(CudaStorage, CudaStorage)> {
    f32_only(xs, "training batch norm backward")?;
    f32_only(gs, "training batch norm backward")?;
    let dev = xs.device();
    let r = Reduce::new(xl)?;
    let x = view::<f32>(xs, xl)?;
    let g = view::<f32>(gs, gl)?;
    let saved = view::<f32>(ss, sl)?;
    let partial = unsafe { dev.alloc::<f64>(2 * r.c * r.partials())? };
    let coef = unsafe { dev.alloc::<f32>(3 * r.c)? };
    let dparams = unsafe { dev.alloc::<f32>(3 * r.c)? };
    let dx = unsafe { dev.alloc::<f32>(r.n * r.c * r.hw)? };
    let (c, hw, q, p) = r.args();
    let (m, relu) = ((r.n * r.hw) as f64, relu as i32);

    let sums = dev.get_or_load_custom_func("bn_bwd_sums_f32", MODULE, PTX)?;
    let mut bld = sums.builder();
    bld.arg(&x).arg(&g).arg(&saved).arg(&partial).arg(&c).arg(&hw).arg(&q).arg(&relu);
    unsafe { bld.launch(r.grid()) }.w()?;
    let fin = dev.get_or_load_custom_func("bn_bwd_finalize", MODULE, PTX)?;
    let mut bld = fin.builder();
    bld.arg(&partial).arg(&saved).arg(&coef).arg(&dparams).arg(&c).arg(&p).arg(&m);
    unsafe { bld.launch(r.per_channel()) }.w()?;
    let dxk = dev.get_or_load_custom_func("bn_bwd_dx_f32", MODULE, PTX)?;
    let mut bld = dxk.builder();
    bld.arg(&x).arg(&g).arg(&saved).arg(&coef).arg(&dx).arg(&dparams).arg(&c).arg(&hw).arg(&q).arg(&relu);
    unsafe { bld.launch(r.grid()) }.w()?;
    Ok((wrap(dx, dev), wrap(dparams, dev)))
}

/// 2x2 max-pooling, stride 2, floor: `[N, C, H, W]` -> `[N, C, H/2, W/2]`, f32, f16 or bf16.
pub fn maxpool2x2(s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
    let (_, _, h, w) = l.shape().dims4()?;
    per_plane("maxpool2x2", s, l, (h / 2) * (w / 2))
}

/// The max-pooling gradient: `(x, grad_out)` -> `grad_x`, each window's gradient to its first
/// maximum.
pub fn maxpool2x2_bwd(xs: &CudaStorage, xl: &Layout, gs: &CudaStorage, gl: &Layout) -> Result<CudaStorage> {
    f32_only(xs, "2x2 max-pooling backward")?;
    f32_only(gs, "2x2 max-pooling backward")?;
    let dev = xs.device();
    let (n, c, h, w) = xl.shape().dims4()?;
    let x = view::<f32>(xs, xl)?;
    let g = view::<f32>(gs, gl)?;
    let gx = dev.alloc_zeros::<f32>(n * c * h * w)?;
    let total = n * c * (h / 2) * (w / 2);
    if total == 0 {
        return Ok(wrap(gx, dev));
    }
    let func = dev.get_or_load_custom_func("maxpool2x2_bwd_f32", MODULE, PTX)?;
    let (planes, hi, wi) = ((n * c) as u64, h as i32, w as i32);
    let mut bld = func.builder();
    bld.arg(&x).arg(&g).arg(&gx).arg(&planes).arg(&hi).arg(&wi);
    unsafe { bld.launch(grid1(total)) }.w()?;
    Ok(wrap(gx, dev))
}

// ---------------------------------------------------------------------------------------------
// A separable conv set in one kernel (inference)

fn as_cuda(s: &Storage) -> Result<&CudaStorage> {
    match s {
        Storage::Cuda(c) => Ok(c),
        _ => candle_core::bail!("separable conv: a tensor is not on the GPU"),
    }
}

/// `relu?(pointwise(grouped3x3(x, gw) + gb) + pb)` in one pass (`sep_conv_fused`): `x [N, CI, H,
/// W]`, `gw [CI, K, 3, 3]`, `gb [CI]`, `pw [CO, CI, 1, 1]`, `pb [CO]`, one dtype. Not
/// differentiable (inference with BatchNorm folded).
pub fn separable_fused(x: &Tensor, gw: &Tensor, gb: &Tensor, pw: &Tensor, pb: &Tensor, relu: bool) -> Result<Tensor> {
    let (n, ci, h, w) = x.dims4()?;
    let k = gw.dims4()?.1;
    let co = pw.dim(0)?;
    let dtype = x.dtype();
    let [x, gw, gb, pw, pb] = [x, gw, gb, pw, pb].map(|t| t.contiguous());
    let (x, gw, gb, pw, pb) = (x?, gw?, gb?, pw?, pb?);
    for t in [&gw, &gb, &pw, &pb] {
        if t.dtype() != dtype {
            candle_core::bail!("separable conv: weights in {:?}, input in {dtype:?}", t.dtype());
        }
    }
    let ((xs, xl), (gws, gwl), (gbs, gbl), (pws, pwl), (pbs, pbl)) =
        (x.storage_and_layout(), gw.storage_and_layout(), gb.storage_and_layout(), pw.storage_and_layout(), pb.storage_and_layout());
    let parts = [(as_cuda(&xs)?, xl), (as_cuda(&gws)?, gwl), (as_cuda(&gbs)?, gbl), (as_cuda(&pws)?, pwl), (as_cuda(&pbs)?, pbl)];
    let dims = (n, ci, co, h, w, k);

    fn run<T: candle_core::cuda_backend::CudaDType + DeviceRepr>(
        name: &str,
        parts: [(&CudaStorage, &Layout); 5],
        (n, ci, co, h, w, k): (usize, usize, usize, usize, usize, usize),
        relu: bool,
    ) -> Result<CudaStorage> {
        let dev = parts[0].0.device();
        let [x, gw, gb, pw, pb] = parts.map(|(s, l)| view::<T>(s, l));
        let (x, gw, gb, pw, pb) = (x?, gw?, gb?, pw?, pb?);
        let y = unsafe { dev.alloc::<T>(n * co * h * w)? };
        let func = dev.get_or_load_custom_func(name, MODULE, PTX)?;
        // SEP_TW x SEP_TH pixel tiles, SEP_CO outputs per block (kernels/ops.cu).
        let tiles = w.div_ceil(16) * h.div_ceil(4);
        let cfg = LaunchConfig { grid_dim: (tiles as u32, co.div_ceil(64) as u32, n as u32), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let (ci, co, h, w, k, relu) = (ci as i32, co as i32, h as i32, w as i32, k as i32, relu as i32);
        let mut bld = func.builder();
        bld.arg(&x).arg(&gw).arg(&gb).arg(&pw).arg(&pb).arg(&y).arg(&ci).arg(&co).arg(&h).arg(&w).arg(&k).arg(&relu);
        unsafe { bld.launch(cfg) }.w()?;
        Ok(wrap(y, dev))
    }
    let name = format!("sep_conv_fused_{}", suffix(dtype)?);
    let y = match dtype {
        DType::F32 => run::<f32>(&name, parts, dims, relu)?,
        DType::F16 => run::<f16>(&name, parts, dims, relu)?,
        DType::BF16 => run::<bf16>(&name, parts, dims, relu)?,
        other => candle_core::bail!("separable conv: unsupported dtype {other:?}"),
    };
    Ok(Tensor::from_storage(Storage::Cuda(y), (n, co, h, w), candle_core::op::BackpropOp::none(), false))
}
