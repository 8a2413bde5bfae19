//! The training forward and backward of a network whose conv sets are all depthwise separable
//! (Lighter U-net@1) as one op on AVX-512 CPUs: the op-by-op graph's arithmetic, with the
//! activations kept once and the intermediate maps kept in cache.
//!
//! Op by op, a training step wrote and re-read each conv set's depthwise output, 1x1 output,
//! BatchNorm output and every gradient of them (candle's backward adds each node's gradient
//! into a fresh zero tensor), a dozen passes over maps of up to 134 MB per set at batch 8,
//! 256x256. Here, for every conv set:
//!
//! - forward, band of rows by band of rows: the set's input rows are recomputed from the
//!   producing set's stored 1x1 output `Z` (BatchNorm with the batch statistics and ReLU, and on
//!   the way the max-pool, the upsampling and padding, the dropout mask), the depthwise 3x3 runs
//!   on them in cache, the 1x1 writes the band into cache, the band's share of the batch
//!   statistics is taken there, and the band goes to `Z` with non-temporal stores. `Z` is the
//!   only map stored per set. The activations are the op-by-op graph's bit for bit (same
//!   operations in the same order, statistics summed as `ops::batchnorm` sums them), so the
//!   ReLU masks and pooling choices of the backward are the graph's too.
//! - backward, band by band: the input rows and the depthwise output are recomputed, BatchNorm's
//!   input gradient `dZ` is formed in cache, the 1x1's weight gradient (a GEMM over the band's
//!   pixels) and input gradient `dD` (the inference 1x1 kernel with the transposed weight)
//!   follow, then the depthwise weight gradient and the input gradient (the 3x3 with the kernel
//!   reversed, non-temporal stores). A band keeps the last rows of `dD` and of the input for the
//!   next one, as the inference's fused DoubleConv keeps its middle rows. BatchNorm's
//!   per-channel sums over a set's output gradient are taken by whichever pass completed that
//!   gradient, while it passes through the registers or the cache: the next set's input
//!   gradient rows as they are written, the max-pool's adjoint, the upsampling's adjoint; only
//!   the last set's (the head's gradient, never stored) has a pass of its own.
//! - the input gradient is routed to the producers: through the max-pool (to each window's
//!   first maximum, the activations recomputed), through the upsampling's adjoint, or into the
//!   skip connection's gradient.
//!
//! The network's head (the final 1x1) reads the last set's activations on the fly, and its
//! output gradient is the last set's output gradient, never stored. Every sum that crosses
//! tasks is kept per task and added in a fixed order: a step is deterministic for a given
//! thread count.
//!
//! The op takes the input, the dropout mask and every parameter (concatenated, flat) and
//! returns the logits; its backward returns the parameters' gradient. Candle's autograd sees
//! three nodes instead of a few hundred. The buffers of a step are kept by the network and
//! reused by the next step. [`UNet::logits_t_with`] takes this path where [`runs`] says so;
//! `LIGHTUNET_CPU_TRAIN=graph` (read into `Capabilities::cpu_train_fused`) keeps the op-by-op
//! graph. The tests compare the two.

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::arch::{Arch, BlockKind};
use super::capabilities::Capabilities;
use super::layers::{BatchNorm, ConvParams, SeparableConv};
use super::ops::train_cpu::{
    ac_taps, act_axpy, act_row, block, copy_nt, cpu_f32, fence, dw_grad, dz_row, gemm_nt, grad_sums, narrow_chunk, pool_adjoint_sums, pool_row, prefetch,
    shifted_chunk_sums, stencil3x3, stencil3x3_exact, stencil3x3_out, up_adjoint, up_chunks, up_row_exact, ActCoef, Block, DzCoef, UpAdjoint, OutPtr, UpChunk, KC,
    MR, NR, NT_COLS, STAT_CHUNK,
};
use super::ops::up_padding;
use crate::error::{Error, Result};

const BN_EPS: f64 = 1e-5;

/// One conv set and the BatchNorm after it, as the network holds them.
pub(super) struct SetRef<'a> {
    pub conv: &'a SeparableConv,
    pub bn: &'a BatchNorm,
}

/// Where the buffers of one step go back to when the step's graph is dropped, for the next
/// step to reuse (fresh buffers every step cost page faults and zeroing).
#[derive(Clone, Default)]
pub(super) struct BufferPool(Arc<Mutex<Option<Workspace>>>);

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BufferPool")
    }
}

/// Whether the fused step runs for a network of `arch` on `x`: f32 on the CPU, an AVX-512
/// CPU, `Capabilities::cpu_train_fused`, and every conv set depthwise separable with output
/// widths the 1x1 kernel takes (multiples of 8).
pub(super) fn runs(arch: &Arch, sets: &[SetRef], x: &Tensor) -> Result<bool> {
    let caps = Capabilities::detect();
    // An input that wants its own gradient takes the graph (the op gives none for it).
    if !(caps.avx512 && caps.cpu_train_fused && x.device().is_cpu() && x.dtype() == DType::F32) || x.track_op() {
        return Ok(false);
    }
    // The head's gradient path takes one output channel (the family's only head).
    if !super::ops::train_cpu::available() || arch.head().c_out != 1 {
        return Ok(false);
    }
    for s in sets {
        let (ci, k, _, _) = s.conv.grouped.weight.dims4()?;
        let co = s.conv.pointwise.weight.dim(0)?;
        let on_cpu_f32 = [&s.conv.grouped.weight, &s.conv.pointwise.weight, &s.bn.weight].iter().all(|t| t.dtype() == DType::F32 && t.device().is_cpu());
        if k != 1 || co % MR != 0 || (ci >= MR && ci % MR != 0) || !on_cpu_f32 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The training forward (batch statistics, dropout mask `keep`) of the network described by
/// `arch`, `sets` (in network order, two per block) and `head`, as one op: the logits
/// `[N, 1, H, W]`, differentiable in every parameter. The BatchNorm running statistics are
/// updated as the op-by-op graph updates them. The caller checked [`runs`] and `keep`'s shape.
pub(super) fn logits(arch: &Arch, sets: &[SetRef], head: &ConvParams, pool: &BufferPool, x: &Tensor, keep: &Tensor) -> Result<Tensor> {
    let (n, _, h, w) = x.dims4()?;
    let plan = Arc::new(Plan::new(arch, n, h, w)?);
    if plan.sets.len() != sets.len() {
        return Err(Error::Input(format!("fused training: {} conv sets for a plan of {}", sets.len(), plan.sets.len())));
    }
    let mut flat = Vec::with_capacity(6 * sets.len() + 2);
    for s in sets {
        for t in [&s.conv.grouped.weight, &s.conv.grouped.bias, &s.conv.pointwise.weight, &s.conv.pointwise.bias, &s.bn.weight, &s.bn.bias] {
            flat.push(t.flatten_all()?);
        }
    }
    flat.push(head.weight.flatten_all()?);
    flat.push(head.bias.flatten_all()?);
    let params = Tensor::cat(&flat, 0)?;
    if params.elem_count() != plan.total_params() {
        return Err(Error::Input(format!("fused training: {} parameters, the plan expects {}", params.elem_count(), plan.total_params())));
    }
    let stats = Arc::new(OnceLock::new());
    let op = TrainStep { plan: plan.clone(), pool: pool.clone(), ws: Mutex::new(None), stats: stats.clone() };
    let keep = keep.to_dtype(DType::F32)?.contiguous()?;
    let logits = x.contiguous()?.apply_op3(&keep, &params, op)?;
    let stats: &BatchStats = stats.get().ok_or_else(|| Error::Input("fused training: no batch statistics".into()))?;
    for ((s, sp), (mean, var)) in sets.iter().zip(&plan.sets).zip(stats) {
        let (lh, lw) = plan.sizes[sp.level];
        let mean = (Tensor::from_slice(mean, mean.len(), x.device())? + s.conv.pointwise.bias.detach())?;
        let var = Tensor::from_slice(var, var.len(), x.device())?;
        s.bn.update_running(&mean, &var, n * lh * lw)?;
    }
    Ok(logits)
}

/// Where a conv set's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// The network's input.
    Image,
    /// The activations of set `.0`, same size.
    Map(usize),
    /// The activations of set `.0`, max-pooled 2x2.
    Pool(usize),
    /// The activations of `skip`, then those of `x` upsampled 2x, zero-padded to the skip's
    /// size and multiplied by the dropout mask first where `dropout`.
    Up { skip: usize, x: usize, dropout: bool },
}

/// Where the gradient of a set's activations is, when its backward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DyLoc {
    /// From the head: `dY[c] = head_w[c] * dlogits`.
    Head,
    /// Channels from `off` of the input gradient of set `set` (a Map consumer, or the skip part
    /// of an Up consumer, to which a Pool consumer has added its share).
    Dx { set: usize, off: usize },
    /// The upsampling adjoint of the Up set `set`.
    G { set: usize },
}

#[derive(Debug, Clone)]
struct SetPlan {
    ci: usize,
    co: usize,
    level: usize,
    input: Input,
    dy: DyLoc,
}

/// The network for one input size: sets in network order, two per block.
#[derive(Debug)]
struct Plan {
    n: usize,
    /// `(h, w)` per level.
    sizes: Vec<(usize, usize)>,
    sets: Vec<SetPlan>,
    /// Output channels of the head.
    head_co: usize,
    /// Offsets of every parameter in the flat vector: six per set (depthwise weight and bias,
    /// 1x1 weight and bias, gamma, beta), then the head's weight and bias, then the total.
    offsets: Vec<usize>,
}

impl Plan {
    fn new(arch: &Arch, n: usize, h: usize, w: usize) -> Result<Plan> {
        let blocks: Vec<_> = arch.blocks().collect();
        let depth = blocks.iter().map(|b| b.level).max().unwrap_or(0) + 1;
        let mut sizes = vec![(h, w)];
        for l in 1..depth {
            let (ph, pw) = sizes[l - 1];
            sizes.push((ph / 2, pw / 2));
        }
        if sizes.iter().any(|&(a, b)| a == 0 || b == 0) {
            return Err(Error::Input(format!("fused training: {h}x{w} is too small for {depth} levels")));
        }
        let bottleneck = arch.bottleneck();
        let mut sets: Vec<SetPlan> = Vec::new();
        let mut down_out: Vec<Option<usize>> = vec![None; depth];
        let mut prev_block_was_bottleneck = false;
        for b in &blocks {
            let s0 = sets.len();
            let input = match b.kind {
                BlockKind::Input => Input::Image,
                BlockKind::Down => Input::Pool(s0 - 1),
                BlockKind::Up => {
                    let skip = down_out[b.level].ok_or_else(|| Error::Input(format!("fused training: no skip connection for {}", b.name)))?;
                    Input::Up { skip, x: s0 - 1, dropout: prev_block_was_bottleneck }
                }
            };
            sets.push(SetPlan { ci: b.c_in, co: b.mid, level: b.level, input, dy: DyLoc::Head });
            sets.push(SetPlan { ci: b.mid, co: b.c_out, level: b.level, input: Input::Map(s0), dy: DyLoc::Head });
            if b.kind != BlockKind::Up {
                down_out[b.level] = Some(s0 + 1);
            }
            prev_block_was_bottleneck = std::ptr::eq(*b, bottleneck);
        }
        // Channel and level consistency of every input, and where each gradient will be.
        let mut dy: Vec<Option<DyLoc>> = vec![None; sets.len()];
        for (u, sp) in sets.iter().enumerate() {
            let bad = |what: &str| Error::Input(format!("fused training: set {u}: {what}"));
            match sp.input {
                Input::Image => {
                    if sp.ci != arch.in_channels() {
                        return Err(bad("input channels"));
                    }
                }
                Input::Map(p) => {
                    if sets[p].co != sp.ci || sets[p].level != sp.level {
                        return Err(bad("map input"));
                    }
                    dy[p] = Some(DyLoc::Dx { set: u, off: 0 });
                }
                Input::Pool(p) => {
                    if sets[p].co != sp.ci || sets[p].level + 1 != sp.level {
                        return Err(bad("pooled input"));
                    }
                }
                Input::Up { skip, x, .. } => {
                    if sets[skip].co + sets[x].co != sp.ci || sets[skip].level != sp.level || sets[x].level != sp.level + 1 {
                        return Err(bad("up input"));
                    }
                    dy[skip] = Some(DyLoc::Dx { set: u, off: 0 });
                    dy[x] = Some(DyLoc::G { set: u });
                }
            }
        }
        let last = sets.len() - 1;
        dy[last] = Some(DyLoc::Head);
        for (s, sp) in sets.iter_mut().enumerate() {
            sp.dy = dy[s].ok_or_else(|| Error::Input(format!("fused training: set {s} has no gradient")))?;
        }
        let head = arch.head();
        if head.c_in != sets[last].co {
            return Err(Error::Input("fused training: head input channels".into()));
        }
        let mut offsets = vec![0];
        let mut push = |len: usize| offsets.push(offsets[offsets.len() - 1] + len);
        for sp in &sets {
            for len in [sp.ci * 9, sp.ci, sp.co * sp.ci, sp.co, sp.co, sp.co] {
                push(len);
            }
        }
        push(head.c_out * head.c_in);
        push(head.c_out);
        Ok(Plan { n, sizes, sets, head_co: head.c_out, offsets })
    }

    fn total_params(&self) -> usize {
        self.offsets[self.offsets.len() - 1]
    }

    /// Parameter `i` of set `s` (0 depthwise weight, 1 depthwise bias, 2 1x1 weight, 3 1x1
    /// bias, 4 gamma, 5 beta) as a range of the flat vector.
    fn range(&self, s: usize, i: usize) -> std::ops::Range<usize> {
        let j = 6 * s + i;
        self.offsets[j]..self.offsets[j + 1]
    }

    fn head_range(&self, i: usize) -> std::ops::Range<usize> {
        let j = 6 * self.sets.len() + i;
        self.offsets[j]..self.offsets[j + 1]
    }

    fn hw(&self, s: usize) -> usize {
        let (h, w) = self.sizes[self.sets[s].level];
        h * w
    }

    /// The up placement of an Up set: `(sh, sw, top, left)`.
    fn up_geometry(&self, s: usize) -> (usize, usize, usize, usize) {
        let l = self.sets[s].level;
        let (sh, sw) = self.sizes[l + 1];
        let (top, _, left, _) = up_padding(self.sizes[l], (2 * sh, 2 * sw));
        (sh, sw, top, left)
    }
}

/// BatchNorm of one set in the forward: the batch statistics of its `Z` and what the
/// activations and the backward derive from them.
#[derive(Debug, Default, Clone)]
struct Stats {
    mean: Vec<f32>,
    var: Vec<f32>,
    invstd: Vec<f32>,
    gamma: Vec<f32>,
    scale: Vec<f32>,
    beta: Vec<f32>,
}

impl Stats {
    fn act(&self, c: usize) -> ActCoef {
        ActCoef { mean: self.mean[c], scale: self.scale[c], beta: self.beta[c] }
    }
}

/// The buffers of a step.
#[derive(Default)]
pub(super) struct Workspace {
    /// Per set: the 1x1 output before its bias, `[N, co, h, w]`.
    z: Vec<AlignedBuf>,
    stats: Vec<Stats>,
    /// Per set: the gradient of its input `[N, ci, h, w]` (none for the image), aligned for
    /// non-temporal stores.
    dx: Vec<AlignedBuf>,
    /// Per Up set: the gradient of the upsampled producer's activations.
    g: Vec<Vec<f32>>,
    /// Per-task partial 1x1 weight gradients.
    partial: Vec<f32>,
    /// Per set: BatchNorm's backward sums per channel (`grad_sums`), left by the pass that
    /// completed the set's output gradient.
    sums: Vec<Vec<[f64; 3]>>,
}

/// A float buffer aligned to a cache line.
#[derive(Default)]
struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

impl AlignedBuf {
    /// `len` floats (reused from step to step; new parts start zeroed).
    fn resize(&mut self, len: usize) {
        let lines = len.div_ceil(16);
        if self.lines.len() < lines {
            self.lines.resize(lines, Line([0.0; 16]));
        }
        self.len = len;
    }

    fn as_slice(&self) -> &[f32] {
        // SAFETY: `lines` holds at least `len` initialised floats, `Line` is 16 floats.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const f32, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as `as_slice`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut f32, self.len) }
    }
}

/// Grows `v` to `len` (buffers are reused from step to step; new parts start zeroed).
fn sized(v: &mut Vec<f32>, len: usize) {
    if v.len() != len {
        v.resize(len, 0.0);
    }
}

struct TrainStep {
    plan: Arc<Plan>,
    pool: BufferPool,
    /// This step's buffers, from the forward to the backward.
    ws: Mutex<Option<Workspace>>,
    /// Per set: batch mean (without the 1x1 bias) and biased variance, for the running
    /// statistics.
    stats: Arc<OnceLock<BatchStats>>,
}

/// Per set: batch mean and biased variance.
type BatchStats = Vec<(Vec<f32>, Vec<f32>)>;

impl Drop for TrainStep {
    fn drop(&mut self) {
        if let (Ok(mut mine), Ok(mut pool)) = (self.ws.lock(), self.pool.0.lock()) {
            if pool.is_none() {
                *pool = mine.take();
            }
        }
    }
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::Msg("fused training: a buffer lock was poisoned".into())
}

impl CustomOp3 for TrainStep {
    fn name(&self) -> &'static str {
        "fused-train-step"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        ps: &CpuStorage,
        pl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let plan = &self.plan;
        let (n, (h, w)) = (plan.n, plan.sizes[0]);
        let x = cpu_f32(xs, xl, "fused training input")?;
        let keep = cpu_f32(ks, kl, "fused training dropout mask")?;
        let p = cpu_f32(ps, pl, "fused training parameters")?;
        let bottleneck = plan.sets.iter().find_map(|s| match s.input {
            Input::Up { x, dropout: true, .. } => Some(x),
            _ => None,
        });
        let keep_len = bottleneck.map_or(0, |b| n * plan.sets[b].co * plan.hw(b));
        if x.len() != n * plan.sets[0].ci * h * w || keep.len() != keep_len || p.len() != plan.total_params() {
            candle_core::bail!("fused training: input {:?}, mask {:?}, parameters {:?} do not fit the plan", xl.dims(), kl.dims(), pl.dims());
        }
        let mut ws = self.pool.0.lock().map_err(|_| poisoned())?.take().unwrap_or_default();
        // SAFETY (of the kernels below): `runs` checked AVX-512; every buffer is sized from the
        // plan, which the slices were just checked against.
        let logits = forward(plan, &mut ws, x, keep, p);
        let stats = ws.stats.iter().map(|s| (s.mean.clone(), s.var.clone())).collect();
        let _ = self.stats.set(stats);
        *self.ws.lock().map_err(|_| poisoned())? = Some(ws);
        Ok((CpuStorage::F32(logits), Shape::from((n, plan.head_co, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        keep: &Tensor,
        params: &Tensor,
        _logits: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut guard = self.ws.lock().map_err(|_| poisoned())?;
        let ws = guard.as_mut().ok_or_else(|| candle_core::Error::Msg("fused training: backward without its forward's buffers".into()))?;
        let (x, keep, params, grad) = (x.contiguous()?, keep.contiguous()?, params.contiguous()?, grad.contiguous()?);
        let guards = [&x, &keep, &params, &grad].map(|t| t.storage_and_layout());
        let mut slices: Vec<&[f32]> = Vec::with_capacity(4);
        for (g, what) in guards.iter().zip(["input", "mask", "parameters", "gradient"]) {
            match &*g.0 {
                candle_core::Storage::Cpu(s) => slices.push(cpu_f32(s, g.1, what)?),
                _ => candle_core::bail!("fused training: {what} is not on the CPU"),
            }
        }
        let plan = &self.plan;
        if slices[3].len() != plan.n * plan.head_co * plan.hw(plan.sets.len() - 1) {
            candle_core::bail!("fused training: gradient {:?}", grad.dims());
        }
        let dp = backward(plan, ws, slices[0], slices[1], slices[2], slices[3])?;
        let dp = Tensor::from_vec(dp, params.dims(), params.device())?;
        Ok((None, None, Some(dp)))
    }
}

/// A source of a conv set's input rows (see [`Input`]), for one image and channel at a time.
#[derive(Clone, Copy)]
enum Src<'a> {
    Image { data: &'a [f32], c: usize },
    Act { z: &'a [f32], c: usize, st: &'a Stats },
    Pool { z: &'a [f32], c: usize, st: &'a Stats, h: usize, w: usize },
    Up { z: &'a [f32], c: usize, st: &'a Stats, keep: Option<&'a [f32]>, h: usize, w: usize, top: usize, left: usize },
}

impl Src<'_> {
    fn channels(&self) -> usize {
        match *self {
            Src::Image { c, .. } | Src::Act { c, .. } | Src::Pool { c, .. } | Src::Up { c, .. } => c,
        }
    }

    /// The memory [`src_row`] reads for row `y` of channel `cc` of image `ni`: start and
    /// length in floats (for prefetching).
    fn run(&self, ni: usize, cc: usize, y: usize, (h, w): (usize, usize)) -> (*const f32, usize) {
        match *self {
            Src::Image { data, c } => (data.as_ptr().wrapping_add(((ni * c + cc) * h + y) * w), w),
            Src::Act { z, c, .. } => (z.as_ptr().wrapping_add(((ni * c + cc) * h + y) * w), w),
            Src::Pool { z, c, h: ih, w: iw, .. } => (z.as_ptr().wrapping_add((ni * c + cc) * ih * iw + 2 * y * iw), 2 * iw),
            Src::Up { z, c, h: sh, w: sw, top, .. } => {
                if y < top || y >= top + 2 * sh {
                    return (z.as_ptr(), 0);
                }
                let (r0, r1, _) = ac_taps(y - top, sh);
                (z.as_ptr().wrapping_add((ni * c + cc) * sh * sw + r0 * sw), (r1 + 1 - r0) * sw)
            }
        }
    }

    fn up_table(&self) -> Option<Vec<UpChunk>> {
        match *self {
            Src::Up { w, .. } => Some(up_chunks(w)),
            _ => None,
        }
    }
}

/// `(source, channel within it)` for every input channel, in order.
fn channel_list(srcs: &[Src]) -> Vec<(usize, usize)> {
    srcs.iter().enumerate().flat_map(|(i, s)| (0..s.channels()).map(move |cc| (i, cc))).collect()
}

/// Prefetches the memory of row `y` of input channel `ch + 1` (if any): each channel's rows
/// are a short run of a map far bigger than the caches, which the hardware prefetcher barely
/// sees.
fn prefetch_next(srcs: &[Src], chans: &[(usize, usize)], ch: usize, ni: usize, y: usize, hw: (usize, usize)) {
    if let Some(&(si, cc)) = chans.get(ch + 1) {
        let (p, len) = srcs[si].run(ni, cc, y, hw);
        prefetch(p, len);
    }
}

/// The row sources of set `s`'s input.
fn sources<'a>(plan: &Plan, s: usize, ws: &'a Workspace, x: &'a [f32], keep: &'a [f32]) -> Vec<Src<'a>> {
    let act = |p: usize| Src::Act { z: ws.z[p].as_slice(), c: plan.sets[p].co, st: &ws.stats[p] };
    match plan.sets[s].input {
        Input::Image => vec![Src::Image { data: x, c: plan.sets[s].ci }],
        Input::Map(p) => vec![act(p)],
        Input::Pool(p) => {
            let (h, w) = plan.sizes[plan.sets[p].level];
            vec![Src::Pool { z: ws.z[p].as_slice(), c: plan.sets[p].co, st: &ws.stats[p], h, w }]
        }
        Input::Up { skip, x: q, dropout } => {
            let (sh, sw, top, left) = plan.up_geometry(s);
            let keep = if dropout { Some(keep) } else { None };
            vec![act(skip), Src::Up { z: ws.z[q].as_slice(), c: plan.sets[q].co, st: &ws.stats[q], keep, h: sh, w: sw, top, left }]
        }
    }
}

/// Scratch rows for producing one input row.
#[derive(Default)]
struct RowTmp {
    a: Vec<f32>,
    b: Vec<f32>,
    blend: Vec<f32>,
}

/// Row `y` (`< h`) of channel `cc` of image `ni` of `src` at the set's size `h x w`: a pointer
/// to the row in place (the image) or to `dst`, where it was produced.
///
/// # Safety
/// AVX-512F; `dst` writable for `w` floats; the source's data sized as its shape says.
#[allow(clippy::too_many_arguments)]
unsafe fn src_row(src: &Src, up: Option<&[UpChunk]>, ni: usize, cc: usize, y: usize, (h, w): (usize, usize), dst: *mut f32, t: &mut RowTmp) -> *const f32 {
    match *src {
        Src::Image { data, c } => data.as_ptr().add(((ni * c + cc) * h + y) * w),
        Src::Act { z, c, st } => {
            act_row(z.as_ptr().add(((ni * c + cc) * h + y) * w), w, st.act(cc), std::ptr::null(), dst);
            dst
        }
        Src::Pool { z, c, st, h: ih, w: iw } => {
            let plane = z.as_ptr().add((ni * c + cc) * ih * iw);
            let a = st.act(cc);
            act_row(plane.add(2 * y * iw), 2 * w, a, std::ptr::null(), t.a.as_mut_ptr());
            act_row(plane.add((2 * y + 1) * iw), 2 * w, a, std::ptr::null(), t.b.as_mut_ptr());
            pool_row(t.a.as_ptr(), t.b.as_ptr(), dst, w);
            dst
        }
        Src::Up { z, c, st, keep, h: sh, w: sw, top, left } => {
            let inside = y >= top && y < top + 2 * sh;
            if !inside || left > 0 || left + 2 * sw < w {
                std::ptr::write_bytes(dst, 0, w);
            }
            if inside {
                let (r0, r1, fy) = ac_taps(y - top, sh);
                let at = (ni * c + cc) * sh * sw;
                let plane = z.as_ptr().add(at);
                let kp = keep.map_or(std::ptr::null(), |k| k.as_ptr().add(at));
                let a = st.act(cc);
                act_row(plane.add(r0 * sw), sw, a, if kp.is_null() { kp } else { kp.add(r0 * sw) }, t.a.as_mut_ptr());
                act_row(plane.add(r1 * sw), sw, a, if kp.is_null() { kp } else { kp.add(r1 * sw) }, t.b.as_mut_ptr());
                up_row_exact(t.a.as_ptr(), t.b.as_ptr(), fy, sw, up.unwrap_or(&[]), dst.add(left));
            }
            dst
        }
    }
}

/// Per-thread buffers, kept between calls.
#[derive(Default)]
struct Scratch {
    /// Forward: the input rows of one channel around a band.
    rows: Vec<f32>,
    ptrs: Vec<*const f32>,
    /// The depthwise output of a band, `[ci][px]`.
    d: Vec<f32>,
    /// Forward: the 1x1 output of a band, `[co][px]`.
    zb: Vec<f32>,
    /// Backward: the input rows of the band and its neighbours, `[ci][xs]`.
    x: Vec<f32>,
    /// Backward: BatchNorm's input gradient of the band, `[co][px]`.
    dz: Vec<f32>,
    /// Backward: the window of depthwise output gradient rows, `[ci][cstride]`.
    win: Vec<f32>,
    packed: Vec<f32>,
    packt: Vec<f32>,
    zero: Vec<f32>,
    tmp: RowTmp,
}

fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

impl Scratch {
    fn rows_for(&mut self, w: usize) {
        grow(&mut self.zero, w);
        grow(&mut self.tmp.a, 2 * w + 16);
        grow(&mut self.tmp.b, 2 * w + 16);
        grow(&mut self.tmp.blend, w + 16);
        grow(&mut self.packed, KC * NR);
        grow(&mut self.packt, KC * NT_COLS);
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// The parameters of set `s` from the flat vector.
struct SetParams<'a> {
    dw_w: &'a [f32],
    dw_b: &'a [f32],
    pw_w: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
}

fn set_params<'a>(plan: &Plan, s: usize, p: &'a [f32]) -> SetParams<'a> {
    SetParams {
        dw_w: &p[plan.range(s, 0)],
        dw_b: &p[plan.range(s, 1)],
        pw_w: &p[plan.range(s, 2)],
        gamma: &p[plan.range(s, 4)],
        beta: &p[plan.range(s, 5)],
    }
}

/// Rows per band of the forward: the band's depthwise and 1x1 outputs (`ci + co` x rows x
/// `w`) within about 1 MiB of the L2 cache, in whole chunks of the statistics (a multiple of
/// [`STAT_CHUNK`] pixels, or the whole plane).
fn forward_rows(ci: usize, co: usize, h: usize, w: usize) -> usize {
    let budget_px = ((256 * 1024) / (ci + co).max(1)).clamp(NR, 32 * NR);
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let align = STAT_CHUNK / gcd(w.max(1), STAT_CHUNK);
    let r = (budget_px / w.max(1) / align).max(1) * align;
    r.min(h.max(1))
}

/// Rows per band of the backward: the band's input rows, depthwise output, `dZ` and `dD`
/// window together within about 1.5 MiB (most of the L2 cache; the rest spills to L3), but at
/// least 512 pixels: the 1x1 weight gradient adds each band's share into a `co x ci` block
/// that goes through the cache once per band, which one-row bands of the deep layers (1024 x
/// 512 floats for 32 pixels) made a stream of memory traffic (their backward took four times
/// their forward).
fn backward_rows(ci: usize, co: usize, h: usize, w: usize) -> usize {
    let budget = 384 * 1024 / w.max(1); // floats per row of pixels
    // x: ci (nr + 2), d: ci nr, dz: co (nr + 1), win: ci (nr + 3)
    let fixed = 5 * ci + co;
    let per_row = 3 * ci + co;
    let min_rows = 512usize.div_ceil(w.max(1));
    (budget.saturating_sub(fixed) / per_row).max(min_rows).clamp(1, h.max(1))
}

/// Strips per image in the backward: each strip computes the `dD` rows next to it again, so
/// few and tall; enough of them for every thread.
fn strips(n: usize, h: usize) -> usize {
    (2 * rayon::current_num_threads()).div_ceil(n.max(1)).clamp(1, (h / 16).max(1))
}

fn forward(plan: &Plan, ws: &mut Workspace, x: &[f32], keep: &[f32], p: &[f32]) -> Vec<f32> {
    let ns = plan.sets.len();
    ws.z.resize_with(ns, AlignedBuf::default);
    ws.stats.resize_with(ns, Stats::default);
    ws.dx.resize_with(ns, AlignedBuf::default);
    ws.g.resize_with(ns, Vec::new);
    ws.sums.resize_with(ns, Vec::new);
    for s in 0..ns {
        let mut z = std::mem::take(&mut ws.z[s]);
        let stats = {
            let srcs = sources(plan, s, ws, x, keep);
            forward_set(plan, s, &srcs, &set_params(plan, s, p), &mut z)
        };
        ws.z[s] = z;
        ws.stats[s] = stats;
    }
    head_forward(plan, ws, &p[plan.head_range(0)], &p[plan.head_range(1)])
}

/// One set's forward: `z` gets its 1x1 output, the return value its BatchNorm statistics.
///
/// The statistics are the training BatchNorm op's to the bit: its shift (the channel's first
/// value), its chunks of [`STAT_CHUNK`] values summed in the same lanes, the chunks of a plane
/// and then the planes added in the same order. Bands are whole chunks (or whole planes) so
/// that each chunk is summed by one task while it is in cache.
fn forward_set(plan: &Plan, s: usize, srcs: &[Src], wt: &SetParams, z: &mut AlignedBuf) -> Stats {
    let sp = &plan.sets[s];
    let (n, (h, w)) = (plan.n, plan.sizes[sp.level]);
    let (ci, co, hw) = (sp.ci, sp.co, h * w);
    z.resize(n * co * hw);
    let rows = forward_rows(ci, co, h, w);
    let bands = h.div_ceil(rows);
    let per_band = (rows * w).div_ceil(STAT_CHUNK);
    let ups: Vec<Option<Vec<UpChunk>>> = srcs.iter().map(Src::up_table).collect();
    let band = BandFwd { h, w, ci, co, srcs, ups: &ups, wt, zero_bias: &vec![0f32; co], chans: channel_list(srcs) };
    // The shift: the first value of each channel (image 0, pixel 0), from the first row
    // computed alone; the band that computes it again gets the same bits.
    let shift: Vec<f32> = SCRATCH.with_borrow_mut(|sc| {
        // SAFETY: AVX-512F (`runs`); the band's output is `co` rows of `w` in `sc.zb`.
        unsafe { band.run(sc, 0, 0, 1) };
        (0..co).map(|o| sc.zb[o * w]).collect()
    });
    let mut sums = vec![(0f64, 0f64); n * bands * co * per_band];
    let zp = OutPtr(z.as_mut_slice().as_mut_ptr());
    sums.par_chunks_mut(co * per_band).enumerate().for_each(|(t, sums)| {
        let (ni, b) = (t / bands, t % bands);
        let y0 = b * rows;
        let nr = rows.min(h - y0);
        let px = nr * w;
        SCRATCH.with_borrow_mut(|sc| {
            // SAFETY: AVX-512F (`runs`); the maps are sized by the plan; tasks write disjoint
            // bands of `z`.
            unsafe {
                band.run(sc, ni, y0, nr);
                let zo = zp.get().add(ni * co * hw + y0 * w);
                for o in 0..co {
                    let plane = sc.zb.as_ptr().add(o * px);
                    for (j, c0) in (0..px).step_by(STAT_CHUNK).enumerate() {
                        sums[o * per_band + j] = shifted_chunk_sums(plane.add(c0), STAT_CHUNK.min(px - c0), shift[o]);
                    }
                    copy_nt(plane, zo.add(o * hw), px);
                }
                fence();
            }
        });
    });
    let m = (n * hw) as f64;
    let mut st = Stats { gamma: wt.gamma.to_vec(), beta: wt.beta.to_vec(), ..Stats::default() };
    for o in 0..co {
        let (mut s1, mut s2) = (0f64, 0f64);
        for ni in 0..n {
            let (mut a, mut b) = (0f64, 0f64);
            for bd in 0..bands {
                let px = rows.min(h - bd * rows) * w;
                for j in 0..px.div_ceil(STAT_CHUNK) {
                    let c = sums[((ni * bands + bd) * co + o) * per_band + j];
                    a += c.0;
                    b += c.1;
                }
            }
            s1 += a;
            s2 += b;
        }
        let d = s1 / m;
        let (mean, var) = (f64::from(shift[o]) + d, (s2 / m - d * d).max(0.0));
        let invstd = (1.0 / (var + BN_EPS).sqrt()) as f32;
        st.mean.push(mean as f32);
        st.var.push(var as f32);
        st.invstd.push(invstd);
        st.scale.push(wt.gamma[o] * invstd);
    }
    st
}

/// What a forward band needs: the set's geometry, input sources and weights.
struct BandFwd<'a> {
    h: usize,
    w: usize,
    ci: usize,
    co: usize,
    srcs: &'a [Src<'a>],
    ups: &'a [Option<Vec<UpChunk>>],
    wt: &'a SetParams<'a>,
    zero_bias: &'a [f32],
    chans: Vec<(usize, usize)>,
}

impl BandFwd<'_> {
    /// Rows `y0 .. y0 + nr` of image `ni`: the input rows around them recomputed, the
    /// depthwise 3x3 into the scratch, the 1x1 into `sc.zb` (`[co][nr * w]`): the band's share
    /// of the statistics is taken there, in cache, before it goes to the map.
    ///
    /// # Safety
    /// AVX-512F.
    unsafe fn run(&self, sc: &mut Scratch, ni: usize, y0: usize, nr: usize) {
        let (h, w, ci, co) = (self.h, self.w, self.ci, self.co);
        let px = nr * w;
        sc.rows_for(w);
        grow(&mut sc.rows, (nr + 2) * w);
        grow(&mut sc.d, ci * px);
        grow(&mut sc.zb, co * px);
        let out = sc.zb.as_mut_ptr();
        for (c, &(si, cc)) in self.chans.iter().enumerate() {
            let (src, up) = (&self.srcs[si], &self.ups[si]);
            sc.ptrs.clear();
            for i in 0..nr + 2 {
                let y = (y0 + i) as isize - 1;
                if y < 0 || y >= h as isize {
                    sc.ptrs.push(sc.zero.as_ptr());
                } else {
                    prefetch_next(self.srcs, &self.chans, c, ni, y as usize, (h, w));
                    let dst = sc.rows.as_mut_ptr().add(i * w);
                    let row = src_row(src, up.as_deref(), ni, cc, y as usize, (h, w), dst, &mut sc.tmp);
                    sc.ptrs.push(row);
                }
            }
            stencil3x3_exact(&sc.ptrs, nr, w, kernel(self.wt.dw_w, c), self.wt.dw_b[c], sc.d.as_mut_ptr().add(c * px), w);
        }
        let mut p0 = 0;
        while p0 < px {
            let at = Block { x: sc.d.as_ptr().add(p0), x_stride: px, out: out.add(p0), out_stride: px };
            block(at, self.wt.pw_w, self.zero_bias, ci, 0..co / MR, NR.min(px - p0), false, &mut sc.packed);
            p0 += NR;
        }
    }
}

/// The 3x3 kernel of depthwise channel `c`.
fn kernel(dw_w: &[f32], c: usize) -> &[f32; 9] {
    let k: &[f32] = &dw_w[c * 9..c * 9 + 9];
    // The slice is nine long by construction.
    k.try_into().unwrap_or(&[0.0; 9])
}

/// The head over the last set's activations: `[N, head_co, h, w]`.
fn head_forward(plan: &Plan, ws: &Workspace, hw_: &[f32], hb: &[f32]) -> Vec<f32> {
    let s = plan.sets.len() - 1;
    let (n, co, hw) = (plan.n, plan.sets[s].co, plan.hw(s));
    let k = plan.head_co;
    let mut out = vec![0f32; n * k * hw];
    const CHUNK: usize = 4096;
    let (z, st) = (ws.z[s].as_slice(), &ws.stats[s]);
    // One task per (image, output channel, chunk of pixels): chunks never cross a plane.
    let planes: Vec<(usize, &mut [f32])> = out.chunks_mut(hw).enumerate().collect();
    planes.into_par_iter().for_each(|(plane, dst)| {
        let (ni, o) = (plane / k, plane % k);
        dst.par_chunks_mut(CHUNK).enumerate().for_each(|(j, d)| {
            d.fill(hb[o]);
            let p0 = j * CHUNK;
            for c in 0..co {
                // SAFETY: AVX-512F (`runs`); `z` holds `n * co * hw` floats, `d` is in bounds.
                unsafe { act_axpy(z.as_ptr().add((ni * co + c) * hw + p0), d.len(), st.act(c), hw_[o * co + c], d.as_mut_ptr()) };
            }
        });
    });
    out
}

/// The gradient of a set's activations, plane by plane: a pointer and a factor.
#[derive(Clone, Copy)]
enum DySrc<'a> {
    Map { data: &'a [f32], img: usize, off: usize },
    Head { g: &'a [f32], wh: &'a [f32] },
}

impl DySrc<'_> {
    /// Plane `(ni, o)` of `hw` values: `(pointer, factor)`.
    fn plane(&self, ni: usize, o: usize, hw: usize) -> (*const f32, f32) {
        match *self {
            DySrc::Map { data, img, off } => (data[ni * img + off + o * hw..].as_ptr(), 1.0),
            DySrc::Head { g, wh } => (g[ni * hw..].as_ptr(), wh[o]),
        }
    }
}

fn backward(plan: &Plan, ws: &mut Workspace, x: &[f32], keep: &[f32], p: &[f32], g: &[f32]) -> candle_core::Result<Vec<f32>> {
    let mut dp = vec![0f32; plan.total_params()];
    let hb = plan.head_range(1);
    let hw0 = plan.hw(plan.sets.len() - 1);
    for (o, d) in dp[hb].iter_mut().enumerate() {
        *d = (0..plan.n).map(|ni| g[(ni * plan.head_co + o) * hw0..][..hw0].iter().map(|&v| f64::from(v)).sum::<f64>()).sum::<f64>() as f32;
    }
    // Every set's sums come from this step's passes (a missing one is an error, not last
    // step's numbers).
    for sums in &mut ws.sums {
        sums.clear();
    }
    for s in (0..plan.sets.len()).rev() {
        backward_set(plan, s, ws, x, keep, p, g, &mut dp)?;
        route(plan, s, ws, keep);
    }
    Ok(dp)
}

/// One set's backward: its parameter gradients into `dp`, its input gradient into `ws.dx[s]`
/// (and, for a Map input, the producer's BatchNorm sums into `ws.sums`).
#[allow(clippy::too_many_arguments)]
fn backward_set(plan: &Plan, s: usize, ws: &mut Workspace, x: &[f32], keep: &[f32], p: &[f32], g: &[f32], dp: &mut [f32]) -> candle_core::Result<()> {
    let mut dx = std::mem::take(&mut ws.dx[s]);
    let mut partial = std::mem::take(&mut ws.partial);
    let done = backward_set_in(plan, s, ws, (x, keep, p, g), &mut dx, &mut partial, dp);
    ws.dx[s] = dx;
    ws.partial = partial;
    if let (Input::Map(pr), Some(sums)) = (plan.sets[s].input, done?) {
        ws.sums[pr] = sums;
    }
    Ok(())
}

/// [`backward_set`] with the set's own buffers taken out of the workspace; returns the sums of
/// a Map input's producer.
#[allow(clippy::too_many_arguments)]
fn backward_set_in(
    plan: &Plan,
    s: usize,
    ws: &Workspace,
    (x, keep, p, g): (&[f32], &[f32], &[f32], &[f32]),
    dx: &mut AlignedBuf,
    partial: &mut Vec<f32>,
    dp: &mut [f32],
) -> candle_core::Result<Option<Vec<[f64; 3]>>> {
    let sp = &plan.sets[s];
    let (n, (h, w)) = (plan.n, plan.sizes[sp.level]);
    let (ci, co, hw) = (sp.ci, sp.co, h * w);
    let wt = set_params(plan, s, p);
    let st = &ws.stats[s];
    let z = ws.z[s].as_slice();
    let dy = match sp.dy {
        DyLoc::Head => DySrc::Head { g, wh: &p[plan.head_range(0)] },
        DyLoc::Dx { set: u, off } => DySrc::Map { data: ws.dx[u].as_slice(), img: plan.sets[u].ci * hw, off: off * hw },
        DyLoc::G { set: u } => DySrc::Map { data: &ws.g[u], img: co * hw, off: 0 },
    };

    // BatchNorm's sums over the output gradient: from the pass that completed it, or (the
    // head's gradient, never stored) here, per plane, added over images in order.
    let totals: Vec<[f64; 3]> = if sp.dy == DyLoc::Head {
        let sums: Vec<[f64; 3]> = (0..n * co)
            .into_par_iter()
            .map(|t| {
                let (ni, o) = (t / co, t % co);
                let (d, f) = dy.plane(ni, o, hw);
                // SAFETY: AVX-512F (`runs`); planes of `hw` floats inside their maps.
                unsafe { grad_sums(d, f, z.as_ptr().add((ni * co + o) * hw), hw, st.act(o)) }
            })
            .collect();
        (0..co).map(|o| add_in_order((0..n).map(|ni| sums[ni * co + o]))).collect()
    } else {
        ws.sums[s].clone()
    };
    if totals.len() != co {
        candle_core::bail!("fused training: set {s} has {} BatchNorm sums for {co} channels", totals.len());
    }
    let m = (n * hw) as f64;
    let mut coef = Vec::with_capacity(co);
    for (o, total) in totals.iter().enumerate() {
        let invstd = f64::from(st.invstd[o]);
        let (dbeta, dgamma) = (total[0], total[1] * invstd);
        let a = f64::from(st.gamma[o]) * invstd;
        let b = -a * invstd * dgamma / m;
        coef.push(DzCoef { a: a as f32, b: b as f32, c0: (-a * dbeta / m) as f32, act: st.act(o) });
        dp[plan.range(s, 4).start + o] = dgamma as f32;
        dp[plan.range(s, 5).start + o] = dbeta as f32;
        if sp.dy == DyLoc::Head {
            // The head's weight `[1, co]` (one output channel: `runs`).
            dp[plan.head_range(0).start + o] = total[2] as f32;
        }
    }

    // The band pass.
    let has_dx = sp.input != Input::Image;
    if has_dx {
        dx.resize(n * ci * hw);
    }
    let nr = backward_rows(ci, co, h, w);
    let strips = strips(n, h);
    let tasks = n * strips;
    sized(partial, tasks * co * ci);
    partial.par_iter_mut().for_each(|v| *v = 0.0);
    let mut pwb = vec![0f64; tasks * co];
    let mut dwg = vec![0f64; tasks * ci * 10];
    // A Map input's producer gets its BatchNorm sums from the input gradient rows as they are
    // written.
    let emit_sums = match sp.input {
        Input::Map(pr) => Some((ws.z[pr].as_slice(), &ws.stats[pr])),
        _ => None,
    };
    let esum_len = if emit_sums.is_some() { ci } else { 0 };
    let mut esum = vec![[0f64; 3]; tasks * esum_len];
    // 1x1 weight transposed: the input gradient's GEMM weight, [ci][co].
    let mut pw_t = vec![0f32; ci * co];
    for o in 0..co {
        for c in 0..ci {
            pw_t[c * co + o] = wt.pw_w[o * ci + c];
        }
    }
    let zero_ci = vec![0f32; ci];
    let srcs = sources(plan, s, ws, x, keep);
    let ups: Vec<Option<Vec<UpChunk>>> = srcs.iter().map(Src::up_table).collect();
    let chans = channel_list(&srcs);
    let dxp = OutPtr(dx.as_mut_slice().as_mut_ptr());
    let geo = BandGeo { h, w, ci, co, nr, has_dx };
    let mut esum_chunks: Vec<&mut [[f64; 3]]> =
        if esum_len > 0 { esum.chunks_mut(esum_len).collect() } else { (0..tasks).map(|_| &mut [][..]).collect() };
    partial
        .par_chunks_mut(co * ci)
        .zip(pwb.par_chunks_mut(co))
        .zip(dwg.par_chunks_mut(ci * 10))
        .zip(esum_chunks.par_iter_mut())
        .enumerate()
        .for_each(|(t, (((dpw, dpwb), ddw), es))| {
            let (ni, k) = (t / strips, t % strips);
            let (ys, ye) = (h * k / strips, h * (k + 1) / strips);
            SCRATCH.with_borrow_mut(|sc| {
                let ctx = BandCtx { geo, ni, srcs: &srcs, ups: &ups, chans: &chans, wt: &wt, pw_t: &pw_t, zero_ci: &zero_ci, coef: &coef, dy, z, dx: dxp, emit_sums };
                let out = Partials { dpw, dpwb, ddw, esum: es };
                // SAFETY: AVX-512F (`runs`); buffers sized from the plan and in `Strip::new`;
                // tasks write disjoint row ranges of `dx` and their own partial sums.
                unsafe { Strip::new(sc, &ctx, ys, ye).run(sc, &ctx, ys, ye, out) };
            });
        });
    drop(esum_chunks);

    // Per-task sums, added in task order.
    let pw = plan.range(s, 2);
    dp[pw].par_iter_mut().enumerate().for_each(|(i, d)| {
        let mut acc = 0f64;
        for t in 0..tasks {
            acc += f64::from(partial[t * co * ci + i]);
        }
        *d = acc as f32;
    });
    let pb = plan.range(s, 3).start;
    let (dwr, dbr) = (plan.range(s, 0).start, plan.range(s, 1).start);
    for o in 0..co {
        dp[pb + o] = (0..tasks).map(|t| pwb[t * co + o]).sum::<f64>() as f32;
    }
    for c in 0..ci {
        for k in 0..9 {
            dp[dwr + c * 9 + k] = (0..tasks).map(|t| dwg[(t * ci + c) * 10 + k]).sum::<f64>() as f32;
        }
        dp[dbr + c] = (0..tasks).map(|t| dwg[(t * ci + c) * 10 + 9]).sum::<f64>() as f32;
    }
    Ok(emit_sums.map(|_| (0..ci).map(|c| add_in_order((0..tasks).map(|t| esum[t * ci + c]))).collect()))
}

/// Adds per-task (or per-plane) sums in the order given.
fn add_in_order(parts: impl Iterator<Item = [f64; 3]>) -> [f64; 3] {
    parts.fold([0f64; 3], |a, v| [a[0] + v[0], a[1] + v[1], a[2] + v[2]])
}

/// What one backward task adds up: its share of the 1x1 weight and bias gradients, of the
/// depthwise weight and bias gradients (`[ci][10]`), and of the Map producer's BatchNorm sums.
struct Partials<'a> {
    dpw: &'a mut [f32],
    dpwb: &'a mut [f64],
    ddw: &'a mut [f64],
    esum: &'a mut [[f64; 3]],
}

#[derive(Clone, Copy)]
struct BandGeo {
    h: usize,
    w: usize,
    ci: usize,
    co: usize,
    nr: usize,
    has_dx: bool,
}

struct BandCtx<'a> {
    geo: BandGeo,
    ni: usize,
    srcs: &'a [Src<'a>],
    ups: &'a [Option<Vec<UpChunk>>],
    chans: &'a [(usize, usize)],
    wt: &'a SetParams<'a>,
    pw_t: &'a [f32],
    zero_ci: &'a [f32],
    coef: &'a [DzCoef],
    dy: DySrc<'a>,
    z: &'a [f32],
    dx: OutPtr,
    /// The Map producer's `Z` and statistics, for its BatchNorm sums.
    emit_sums: Option<(&'a [f32], &'a Stats)>,
}

/// The state of one strip of the backward: which rows of the input and of `dD` are in the
/// scratch windows, and which input gradient rows are written.
struct Strip {
    /// Input rows `[xlo, xhi)` in `Scratch::x`, channel stride `xs`.
    xlo: usize,
    xhi: usize,
    xs: usize,
    /// `dD` rows `[lo, hi)` in `Scratch::win`, channel stride `cs`.
    lo: usize,
    hi: usize,
    cs: usize,
    /// Input gradient rows `[.., e)` are written.
    e: usize,
    /// Row pointers handed to the stencils (kept to save an allocation per channel and band).
    ptrs: Vec<*const f32>,
}

impl Strip {
    fn new(sc: &mut Scratch, c: &BandCtx, ys: usize, _ye: usize) -> Strip {
        let g = c.geo;
        let (xs, cs) = ((g.nr + 2) * g.w, (g.nr + 3) * g.w + 16);
        sc.rows_for(g.w);
        grow(&mut sc.x, g.ci * xs);
        grow(&mut sc.d, g.ci * g.nr * g.w);
        grow(&mut sc.dz, g.co * (g.nr + 1) * g.w);
        grow(&mut sc.win, g.ci * cs);
        Strip { xlo: ys, xhi: ys, xs, lo: ys, hi: ys, cs, e: ys, ptrs: Vec::with_capacity(g.nr + 3) }
    }

    unsafe fn run(&mut self, sc: &mut Scratch, c: &BandCtx, ys: usize, ye: usize, mut out: Partials) {
        let g = c.geo;
        if g.has_dx && ys > 0 {
            self.lo = ys - 1;
            self.hi = ys - 1;
            self.produce(sc, c, ys - 1, ys, None, &mut out);
        }
        let mut y = ys;
        while y < ye {
            let y1 = (y + g.nr).min(ye);
            let extra = usize::from(g.has_dx && y1 == ye && ye < g.h);
            self.produce(sc, c, y, y1 + extra, Some((y, y1)), &mut out);
            if g.has_dx {
                self.emit(sc, c, ye, out.esum);
            }
            y = y1;
        }
    }

    /// `dZ` and `dD` for rows `[a, b)`; for the owned rows among them also the input rows, the
    /// depthwise output, and their share of the parameter gradients.
    unsafe fn produce(&mut self, sc: &mut Scratch, c: &BandCtx, a: usize, b: usize, owned: Option<(usize, usize)>, out: &mut Partials) {
        let g = c.geo;
        let (w, ci, co, hw) = (g.w, g.ci, g.co, g.h * g.w);
        // The window keeps the rows the next input gradient rows still need.
        let keep_from = self.e.saturating_sub(1).max(self.lo).min(self.hi);
        if keep_from > self.lo {
            let (from, len) = ((keep_from - self.lo) * w, (self.hi - keep_from) * w);
            for ch in 0..ci {
                sc.win.copy_within(ch * self.cs + from..ch * self.cs + from + len, ch * self.cs);
            }
            self.lo = keep_from;
        }
        debug_assert_eq!(a, self.hi);
        let px = (b - a) * w;
        for (o, bias_grad) in out.dpwb.iter_mut().enumerate().take(co) {
            if o + 1 < co {
                let (d, _) = c.dy.plane(c.ni, o + 1, hw);
                prefetch(d.wrapping_add(a * w), px);
                prefetch(c.z.as_ptr().wrapping_add((c.ni * co + o + 1) * hw + a * w), px);
            }
            let (d, f) = c.dy.plane(c.ni, o, hw);
            let zp = c.z.as_ptr().add((c.ni * co + o) * hw);
            let dzo = sc.dz.as_mut_ptr().add(o * px);
            match owned {
                Some((oa, ob)) => {
                    // Owned rows count towards the bias gradient; a halo row below does not.
                    let (h0, h1) = ((oa - a) * w, (ob - a) * w);
                    if h0 > 0 {
                        dz_row(d.add(a * w), f, zp.add(a * w), h0, c.coef[o], dzo);
                    }
                    *bias_grad += dz_row(d.add(oa * w), f, zp.add(oa * w), h1 - h0, c.coef[o], dzo.add(h0));
                    if px > h1 {
                        dz_row(d.add(ob * w), f, zp.add(ob * w), px - h1, c.coef[o], dzo.add(h1));
                    }
                }
                None => {
                    dz_row(d.add(a * w), f, zp.add(a * w), px, c.coef[o], dzo);
                }
            }
        }
        if let Some((oa, ob)) = owned {
            self.input_rows(sc, c, oa, ob);
            let own = (ob - oa) * w;
            for ch in 0..ci {
                self.x_rows(sc, ch, oa, ob, g);
                stencil3x3(&self.ptrs, ob - oa, w, kernel(c.wt.dw_w, ch), c.wt.dw_b[ch], sc.d.as_mut_ptr().add(ch * own), w);
            }
            gemm_nt(sc.dz.as_ptr().add((oa - a) * w), px, sc.d.as_ptr(), own, (co, ci, own), out.dpw.as_mut_ptr(), ci, &mut sc.packt);
        }
        // dD = W^T dZ into the window.
        let dd = sc.win.as_mut_ptr().add((a - self.lo) * w);
        if ci % MR == 0 {
            let mut p0 = 0;
            while p0 < px {
                let at = Block { x: sc.dz.as_ptr().add(p0), x_stride: px, out: dd.add(p0), out_stride: self.cs };
                block(at, c.pw_t, c.zero_ci, co, 0..ci / MR, NR.min(px - p0), false, &mut sc.packed);
                p0 += NR;
            }
        } else {
            narrow_chunk(Block { x: sc.dz.as_ptr(), x_stride: px, out: dd, out_stride: self.cs }, c.pw_t, c.zero_ci, co, 0, px, false);
        }
        self.hi = b;
        if let Some((oa, ob)) = owned {
            for ch in 0..ci {
                self.x_rows(sc, ch, oa, ob, g);
                let gp = sc.win.as_ptr().add(ch * self.cs + (oa - self.lo) * w);
                let acc: &mut [f64; 10] = (&mut out.ddw[ch * 10..ch * 10 + 10]).try_into().unwrap_or_else(|_| unreachable!());
                dw_grad(&self.ptrs, gp, w, ob - oa, w, acc);
            }
        }
    }

    /// Makes input rows `[oa - 1, ob + 1)` (inside the map) present in the `x` window, keeping
    /// those already there.
    unsafe fn input_rows(&mut self, sc: &mut Scratch, c: &BandCtx, oa: usize, ob: usize) {
        let g = c.geo;
        let w = g.w;
        let (na, nb) = (oa.saturating_sub(1), (ob + 1).min(g.h));
        let mut from = na;
        if self.xlo <= na && na < self.xhi {
            let (src, len) = ((na - self.xlo) * w, (self.xhi - na) * w);
            if src > 0 {
                for ch in 0..g.ci {
                    sc.x.copy_within(ch * self.xs + src..ch * self.xs + src + len, ch * self.xs);
                }
            }
            from = self.xhi;
        }
        for (ch, &(si, cc)) in c.chans.iter().enumerate() {
            let (src, up) = (&c.srcs[si], &c.ups[si]);
            for y in from..nb {
                prefetch_next(c.srcs, c.chans, ch, c.ni, y, (g.h, g.w));
                let dst = sc.x.as_mut_ptr().add(ch * self.xs + (y - na) * w);
                let row = src_row(src, up.as_deref(), c.ni, cc, y, (g.h, g.w), dst, &mut sc.tmp);
                if !std::ptr::eq(row, dst) {
                    std::ptr::copy_nonoverlapping(row, dst, w);
                }
            }
        }
        self.xlo = na;
        self.xhi = nb;
    }

    /// Pointers to input rows `oa - 1 ..= ob` of channel `ch` (zero rows outside the map) into
    /// `self.ptrs`.
    fn x_rows(&mut self, sc: &Scratch, ch: usize, oa: usize, ob: usize, g: BandGeo) {
        self.ptrs.clear();
        for y in oa as isize - 1..=ob as isize {
            self.ptrs.push(if y < 0 || y >= g.h as isize {
                sc.zero.as_ptr()
            } else {
                sc.x[ch * self.xs + (y as usize - self.xlo) * g.w..].as_ptr()
            });
        }
    }

    /// Writes the input gradient rows whose `dD` neighbours are all in the window.
    unsafe fn emit(&mut self, sc: &mut Scratch, c: &BandCtx, ye: usize, esum: &mut [[f64; 3]]) {
        let g = c.geo;
        let (w, hw) = (g.w, g.h * g.w);
        let limit = if self.hi == g.h { g.h } else { self.hi - 1 }.min(ye);
        if limit <= self.e {
            return;
        }
        let nr = limit - self.e;
        for ch in 0..g.ci {
            let k = &c.wt.dw_w[ch * 9..ch * 9 + 9];
            let flipped: [f32; 9] = std::array::from_fn(|t| k[8 - t]);
            self.ptrs.clear();
            for y in self.e as isize - 1..=limit as isize {
                self.ptrs.push(if y < 0 || y >= g.h as isize {
                    sc.zero.as_ptr()
                } else {
                    sc.win[ch * self.cs + (y as usize - self.lo) * w..].as_ptr()
                });
            }
            let out = c.dx.get().add((c.ni * g.ci + ch) * hw + self.e * w);
            let sums = c.emit_sums.map(|(zp, st)| (zp.as_ptr().add((c.ni * g.ci + ch) * hw + self.e * w), st.act(ch)));
            let v = stencil3x3_out(&self.ptrs, nr, w, &flipped, out, sums);
            if let Some(es) = esum.get_mut(ch) {
                for (t, x) in es.iter_mut().zip(v) {
                    *t += x;
                }
            }
        }
        self.e = limit;
    }
}

/// Sends set `s`'s input gradient on to its producers (through the max-pool or the upsampling).
fn route(plan: &Plan, s: usize, ws: &mut Workspace, keep: &[f32]) {
    let sp = &plan.sets[s];
    let n = plan.n;
    match sp.input {
        Input::Image | Input::Map(_) => {}
        Input::Pool(p) => {
            let DyLoc::Dx { set: u, off } = plan.sets[p].dy else { return };
            let cp = plan.sets[p].co;
            let (ih, iw) = plan.sizes[plan.sets[p].level];
            let (ihw, hw) = (ih * iw, plan.hw(s));
            let img_u = plan.sets[u].ci * ihw;
            let mut buf = std::mem::take(&mut ws.dx[u]);
            let (g, z, st) = (ws.dx[s].as_slice(), ws.z[p].as_slice(), &ws.stats[p]);
            let mut sums = vec![[0f64; 3]; n * cp];
            buf.as_mut_slice().par_chunks_mut(img_u).zip(sums.par_chunks_mut(cp)).enumerate().for_each(|(ni, (img, sums))| {
                img[off * ihw..(off + cp) * ihw].par_chunks_mut(ihw).zip(sums.par_iter_mut()).enumerate().for_each(|(c, (dyp, sum))| {
                    let gp = &g[(ni * cp + c) * hw..][..hw];
                    let zp = &z[(ni * cp + c) * ihw..][..ihw];
                    // SAFETY: AVX-512F (`runs`); planes of the sizes the kernel takes.
                    *sum = unsafe { pool_adjoint_sums(gp.as_ptr(), zp.as_ptr(), ih, iw, st.act(c), dyp.as_mut_ptr()) };
                });
            });
            ws.dx[u] = buf;
            ws.sums[p] = (0..cp).map(|c| add_in_order((0..n).map(|ni| sums[ni * cp + c]))).collect();
        }
        Input::Up { skip, x: q, dropout } => {
            let (cs, cx) = (plan.sets[skip].co, plan.sets[q].co);
            let (sh, sw, top, left) = plan.up_geometry(s);
            let ((_, w), hw, shw) = (plan.sizes[sp.level], plan.hw(s), sh * sw);
            let mut gq = std::mem::take(&mut ws.g[s]);
            sized(&mut gq, n * cx * shw);
            let dx = ws.dx[s].as_slice();
            let taps = UpAdjoint::new(sw);
            let (zq, st) = (ws.z[q].as_slice(), &ws.stats[q]);
            let mut sums = vec![[0f64; 3]; n * cx];
            gq.par_chunks_mut(shw).zip(sums.par_iter_mut()).enumerate().for_each_init(Vec::new, |tmp, (plane, (out, sum))| {
                let (ni, c) = (plane / cx, plane % cx);
                let gp = &dx[(ni * sp.ci + cs + c) * hw..][..hw];
                let kp = if dropout { Some(&keep[plane * shw..][..shw]) } else { None };
                // SAFETY: AVX-512F (`runs`); planes of `hw` and `shw` floats, `taps` for `sw`.
                *sum = unsafe {
                    up_adjoint(gp, w, (sh, sw, top, left), kp, out, &taps, tmp);
                    grad_sums(out.as_ptr(), 1.0, zq.as_ptr().add(plane * shw), shw, st.act(c))
                };
            });
            ws.g[s] = gq;
            ws.sums[q] = (0..cx).map(|c| add_in_order((0..n).map(|ni| sums[ni * cx + c]))).collect();
        }
    }
}
