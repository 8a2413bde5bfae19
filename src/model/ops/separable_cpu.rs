//! Inference on AVX-512 CPUs: a whole separable conv set (depthwise 3x3, then the 1x1
//! with BatchNorm folded in, bias and ReLU) in one pass, band of rows by band of rows.
//!
//! Done layer by layer, the depthwise output of Lighter U-net@1 (up to 16 MB per layer at
//! 256x256) goes out to memory and comes straight back for the 1x1. Here each task computes
//! the depthwise result of a few rows for all channels into a buffer that stays in the L2 cache
//! and runs the 1x1 kernel on it at once. The input of the conv set may also be produced on
//! the fly, row by row: a 2x2 max-pool of a bigger map (Down blocks), or the concatenation of a
//! skip connection and a 2x bilinear upsample, zero-padded (Up blocks), so those intermediate
//! maps are never written either.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::pointwise_cpu::avx512::{block, lanes as mask, narrow_chunk, Block, OutPtr};
use super::pointwise_cpu::{KC, MR, NR};

/// Where the input channels of the conv set come from; the conv's input is the concatenation
/// of the sources' channels, in order. All maps are NCHW, contiguous, batch `n`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source<'a> {
    /// `c` channels at the output size.
    Map { data: &'a [f32], c: usize },
    /// `c` channels of `h x w`, max-pooled 2x2 with floor: the output is `h/2 x w/2`.
    Pool { data: &'a [f32], c: usize, h: usize, w: usize },
    /// `c` channels of `h x w`, upsampled 2x (bilinear, align corners) and placed with its top
    /// left corner at (`top`, `left`) of the output plane, zeros around.
    Up { data: &'a [f32], c: usize, h: usize, w: usize, top: usize, left: usize },
    /// `c` channels held as a window of rows of the output size: row `y` of channel `cc` at
    /// `data[cc * cstride + (y - first) * w]`, for the rows the caller keeps there.
    Rows { data: &'a [f32], c: usize, cstride: usize, first: usize },
}

impl Source<'_> {
    fn channels(&self) -> usize {
        match *self {
            Source::Map { c, .. } | Source::Pool { c, .. } | Source::Up { c, .. } | Source::Rows { c, .. } => c,
        }
    }
}

/// Weights of the conv set: depthwise `[ci, 9]` + `[ci]` (one input channel per group) and
/// pointwise `[co, ci]` + `[co]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Weights<'a> {
    pub dw_w: &'a [f32],
    pub dw_b: &'a [f32],
    pub pw_w: &'a [f32],
    pub pw_b: &'a [f32],
}

/// A final 1x1 (`b.len()` < 8 output channels, weights `[b.len()][ci]`, no activation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head<'a> {
    pub w: &'a [f32],
    pub b: &'a [f32],
}

/// Whether [`separable`] runs here for `co` output channels (else the caller takes the
/// layer-by-layer path).
pub(crate) fn available(co: usize) -> bool {
    co > 0 && co.is_multiple_of(MR) && std::arch::is_x86_feature_detected!("avx512f")
}

/// Horizontal taps of the 2x upsample for 16 output columns: one source load at `base`, two
/// lane permutations and a blend.
pub(crate) struct UpChunk {
    base: usize,
    idx0: [i32; 16],
    idx1: [i32; 16],
    fx: [f32; 16],
}

impl UpChunk {
    /// The first source column this chunk of 16 outputs reads.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// The two taps (offsets from `base`) and the weight of the second, as vectors.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn taps(&self) -> (__m512i, __m512i, __m512) {
        (
            _mm512_loadu_si512(self.idx0.as_ptr() as *const _),
            _mm512_loadu_si512(self.idx1.as_ptr() as *const _),
            _mm512_loadu_ps(self.fx.as_ptr()),
        )
    }
}

pub(crate) fn up_chunks(w: usize) -> Vec<UpChunk> {
    let ow = 2 * w;
    (0..ow.div_ceil(16))
        .map(|j| {
            let base = super::common::ac_taps(16 * j, w).0;
            let mut c = UpChunk { base, idx0: [0; 16], idx1: [0; 16], fx: [0.0; 16] };
            for l in 0..16.min(ow - 16 * j) {
                let (x0, x1, fx) = super::common::ac_taps(16 * j + l, w);
                // Over 16 output columns the source position moves by < 8, so both taps stay
                // within the 16 floats loaded at `base`.
                c.idx0[l] = (x0 - base) as i32;
                c.idx1[l] = (x1 - base) as i32;
                c.fx[l] = fx;
            }
            c
        })
        .collect()
}

/// Rows per band: the depthwise buffer (ci x rows x W floats) within about 1 MiB of the L2
/// cache, bands of equal height.
fn band_rows(ci: usize, h: usize, w: usize) -> usize {
    let budget_px = ((256 * 1024) / ci.max(1)).clamp(NR, 32 * NR);
    let r = (budget_px / w.max(1)).clamp(1, h.max(1));
    let bands = h.div_ceil(r);
    h.div_ceil(bands.max(1)).max(1)
}

/// Runs the conv set: returns `[n, co, h, w]` (`h x w` the output size every source maps to).
/// The caller has checked [`available`] and that every slice matches the shapes.
pub(crate) fn separable(srcs: &[Source], wts: Weights, n: usize, h: usize, w: usize, relu: bool) -> Vec<f32> {
    let ci: usize = srcs.iter().map(Source::channels).sum();
    let co = wts.pw_b.len();
    let hw = h * w;
    if n * co * hw == 0 {
        return vec![0.0; n * co * hw];
    }
    let bias = folded_bias(wts, ci);
    let ups = up_tables(srcs);
    let rows = band_rows(ci, h, w);
    let bands = h.div_ceil(rows);
    let cblocks = co / MR;
    let want = 4 * rayon::current_num_threads();
    let parts = if n * bands >= want { 1 } else { want.div_ceil(n * bands).min(cblocks) };
    let fill = |out: &mut [MaybeUninit<f32>]| {
        let optr = OutPtr(out.as_mut_ptr() as *mut f32);
        (0..n * bands * parts).into_par_iter().for_each(|t| {
            let (ni, rest) = (t / (bands * parts), t % (bands * parts));
            let (band, part) = (rest / parts, rest % parts);
            let y0 = band * rows;
            let nr = rows.min(h - y0);
            let px = nr * w;
            let cbs = (cblocks * part / parts)..(cblocks * (part + 1) / parts);
            SCRATCH.with_borrow_mut(|s| {
                s.reserve(ci * px, (rows + 2) * w, w);
                // SAFETY: AVX-512F is checked by `available`; the caller sized the slices, the
                // scratch is sized above; tasks write disjoint (band, channel block) regions.
                unsafe {
                    depthwise_band(srcs, &ups, wts.dw_w, s, ni, h, w, y0, nr);
                    let o = optr.get().add(ni * co * hw + y0 * w);
                    pointwise_band(s, px, wts.pw_w, &bias, ci, cbs.clone(), o, hw, relu);
                }
            });
        });
    };
    // SAFETY: every (image, band, channel block) is one task, and each stores all its pixels.
    unsafe { super::common::filled_f32(n * co * hw, fill) }
}

/// The 1x1 bias with the depthwise bias folded in: the depthwise bias goes through the 1x1 as
/// a constant (loaded models have it folded already, see `ConvSet::fold` in model/layers.rs).
fn folded_bias(wts: Weights, ci: usize) -> Vec<f32> {
    if wts.dw_b.iter().all(|&b| b == 0.0) {
        return wts.pw_b.to_vec();
    }
    (0..wts.pw_b.len())
        .map(|o| {
            let row = &wts.pw_w[o * ci..(o + 1) * ci];
            wts.pw_b[o] + row.iter().zip(wts.dw_b).map(|(a, b)| a * b).sum::<f32>()
        })
        .collect()
}

/// Upsample tables of the Up sources.
fn up_tables(srcs: &[Source]) -> Vec<Option<Vec<UpChunk>>> {
    srcs.iter()
        .map(|s| match *s {
            Source::Up { w, .. } => Some(up_chunks(w)),
            _ => None,
        })
        .collect()
}

/// The 1x1 over the band in `s.dw` (`ci` channels of `px` pixels): output channel blocks
/// `cbs`, written at `out` with channels `out_stride` floats apart.
///
/// # Safety
/// AVX-512F; `s.dw` holds the band; `out` is writable for those channels and pixels.
#[allow(clippy::too_many_arguments)]
unsafe fn pointwise_band(
    s: &mut Scratch,
    px: usize,
    pw_w: &[f32],
    bias: &[f32],
    ci: usize,
    cbs: std::ops::Range<usize>,
    out: *mut f32,
    out_stride: usize,
    relu: bool,
) {
    let mut p0 = 0;
    while p0 < px {
        let at = Block { x: s.dw.as_ptr().add(p0), x_stride: px, out: out.add(p0), out_stride };
        block(at, pw_w, bias, ci, cbs.clone(), NR.min(px - p0), relu, &mut s.packed);
        p0 += NR;
    }
}

/// Strips per image: three per thread, so that uneven strips even out across threads (about 4 %
/// faster than two per thread on Lighter@1, 2 threads), each at least 16 rows (each strip
/// computes two rows of the middle map twice).
fn strips(n: usize, h: usize) -> usize {
    (3 * rayon::current_num_threads()).div_ceil(n.max(1)).clamp(1, (h / 16).max(1))
}

/// Rows per band of [`double_separable`]: the depthwise buffer (up to rows + 2 rows of the
/// wider input) and the window of middle rows within about 1.25 MiB of the L2 cache.
fn double_rows(ci: usize, mid: usize, h: usize, w: usize) -> usize {
    let budget_px = (320 * 1024 / (ci.max(mid) + mid).max(1)).clamp(NR, 32 * NR);
    (budget_px / w.max(1)).clamp(1, h.max(1))
}

/// Whether [`double_separable`] pays on `n` maps of `h x w` from `ci` through `mid` channels:
/// every thread gets strips, and bands hold enough pixels for the 1x1 kernel to reuse the
/// weights it streams (wide deep layers would get one-row bands).
pub(crate) fn double_worthwhile(n: usize, ci: usize, mid: usize, h: usize, w: usize) -> bool {
    n * strips(n, h) >= 2 * rayon::current_num_threads() && double_rows(ci, mid, h, w) * w >= 8 * NR
}

/// Both conv sets of a DoubleConv, each separable with ReLU, in one pass: returns
/// `[n, co, h, w]`. Each task walks down a strip of rows band by band; the first set's output
/// lives only in a window of rows in the L2 cache (the rows the second set's 3x3 needs), so the
/// middle map is never written to memory and read back. Strips overlap by the one row above and
/// below that the second set reads, computed twice.
///
/// With a `head` (the network's last 1x1, fewer than 8 output channels, no ReLU), returns that
/// instead: `[n, head channels, h, w]`; the second set's output then only lives per band in cache.
pub(crate) fn double_separable(
    srcs: &[Source],
    w0: Weights,
    w3: Weights,
    head: Option<Head>,
    n: usize,
    h: usize,
    w: usize,
) -> Vec<f32> {
    let ci: usize = srcs.iter().map(Source::channels).sum();
    let (mid, co) = (w0.pw_b.len(), w3.pw_b.len());
    let oc = head.map_or(co, |hd| hd.b.len());
    let hw = h * w;
    if n * oc * hw == 0 {
        return vec![0.0; n * oc * hw];
    }
    let (bias0, bias3) = (folded_bias(w0, ci), folded_bias(w3, mid));
    let ups = up_tables(srcs);
    let rows = double_rows(ci, mid, h, w);
    let strips = strips(n, h);
    let window = rows + 2;
    let fill = |out: &mut [MaybeUninit<f32>]| {
        let optr = OutPtr(out.as_mut_ptr() as *mut f32);
        (0..n * strips).into_par_iter().for_each(|t| {
            let (ni, k) = (t / strips, t % strips);
            let (ys, ye) = (h * k / strips, h * (k + 1) / strips);
            SCRATCH.with_borrow_mut(|s| {
                s.reserve(ci.max(mid) * window * w, (window + 2) * w, w);
                // Channels a cache line further apart than their rows take: at power-of-two
                // strides the rows the 1x1 kernel stores together would share cache sets.
                let cstride = window * w + 16;
                let mut m = std::mem::take(&mut s.mid);
                if m.len() < mid * cstride {
                    m.resize(mid * cstride, 0.0);
                }
                // Middle rows [lo, hi) are in the window, row `lo` in slot 0.
                let (mut lo, mut hi) = (0, 0);
                let mut y = ys;
                while y < ye {
                    let nr = rows.min(ye - y);
                    let (need_lo, need_hi) = (y.saturating_sub(1), (y + nr + 1).min(h));
                    // Keep the rows this band shares with the last one (at most two), moved
                    // to the top of the window.
                    let keep = if hi > need_lo && lo <= need_lo { hi - need_lo } else { 0 };
                    if keep > 0 && need_lo > lo {
                        for c in 0..mid {
                            let base = c * cstride;
                            m.copy_within(base + (need_lo - lo) * w..base + (hi - lo) * w, base);
                        }
                    }
                    lo = need_lo;
                    let a = lo + keep;
                    // SAFETY: AVX-512F is checked by `available`; buffers are sized above and
                    // by the caller; tasks write disjoint strips of the output.
                    unsafe {
                        if a < need_hi {
                            depthwise_band(srcs, &ups, w0.dw_w, s, ni, h, w, a, need_hi - a);
                            let o = m.as_mut_ptr().add((a - lo) * w);
                            pointwise_band(s, (need_hi - a) * w, w0.pw_w, &bias0, ci, 0..mid / MR, o, cstride, true);
                        }
                        hi = need_hi;
                        let win = [Source::Rows { data: &m, c: mid, cstride, first: lo }];
                        depthwise_band(&win, &[None], w3.dw_w, s, 0, h, w, y, nr);
                        match head {
                            None => {
                                let o = optr.get().add(ni * co * hw + y * w);
                                pointwise_band(s, nr * w, w3.pw_w, &bias3, mid, 0..co / MR, o, hw, true);
                            }
                            Some(hd) => {
                                let px = nr * w;
                                let mut band = std::mem::take(&mut s.band);
                                if band.len() < co * px {
                                    band.resize(co * px, 0.0);
                                }
                                pointwise_band(s, px, w3.pw_w, &bias3, mid, 0..co / MR, band.as_mut_ptr(), px, true);
                                let at = Block {
                                    x: band.as_ptr(),
                                    x_stride: px,
                                    out: optr.get().add(ni * oc * hw + y * w),
                                    out_stride: hw,
                                };
                                narrow_chunk(at, hd.w, hd.b, co, 0, px, false);
                                s.band = band;
                            }
                        }
                    }
                    y += nr;
                }
                s.mid = m;
            });
        });
    };
    // SAFETY: the strips cover every row of every image, and each band stores all channels.
    unsafe { super::common::filled_f32(n * oc * hw, fill) }
}

/// Per-thread buffers, kept between calls (fresh megabyte buffers per task cost page faults
/// and zeroing).
#[derive(Default)]
struct Scratch {
    /// The depthwise result of the band, `[ci][nr * w]`.
    dw: Vec<f32>,
    packed: Vec<f32>,
    /// Input rows produced on the fly (pooled or upsampled), `(nr + 2) x w`.
    rows: Vec<f32>,
    /// A row of zeros: the padding above and below the image.
    zero: Vec<f32>,
    /// Row pointers of the current channel, rows `y0 - 1 ..= y0 + nr`.
    ptrs: Vec<*const f32>,
    /// One vertically blended source row of an Up source.
    tmp: Vec<f32>,
    /// The window of middle rows of a DoubleConv, `[mid][rows + 2][w]`.
    mid: Vec<f32>,
    /// A band of a DoubleConv's output on its way through the head.
    band: Vec<f32>,
}

impl Scratch {
    fn reserve(&mut self, dw: usize, rows: usize, w: usize) {
        let grow = |v: &mut Vec<f32>, len: usize| {
            if v.len() < len {
                v.resize(len, 0.0);
            }
        };
        grow(&mut self.dw, dw);
        grow(&mut self.packed, KC * NR);
        grow(&mut self.rows, rows);
        grow(&mut self.zero, w);
        grow(&mut self.tmp, w);
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Depthwise 3x3 of rows `y0..y0 + nr` of image `ni`, every input channel, into `s.dw`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_band(
    srcs: &[Source],
    ups: &[Option<Vec<UpChunk>>],
    dw_w: &[f32],
    s: &mut Scratch,
    ni: usize,
    h: usize,
    w: usize,
    y0: usize,
    nr: usize,
) {
    let px = nr * w;
    // `ch` counts channels across the sources: the depthwise weight and the output plane.
    let mut ch = 0;
    for (si, (src, up)) in srcs.iter().zip(ups).enumerate() {
        for cc in 0..src.channels() {
            // The rows a channel reads are a few kilobytes of a map far bigger than the caches,
            // one short run per channel that the hardware prefetcher barely sees: fetch the
            // next channel's, a cache line or two per 16 outputs computed here, so that it is
            // in cache when its turn comes.
            let next = if cc + 1 < src.channels() {
                Some((src, cc + 1))
            } else {
                srcs[si + 1..].iter().find(|s| s.channels() > 0).map(|s| (s, 0))
            };
            let (pf, pf_lines) = match next {
                Some((sn, cn)) => rows_read(sn, ni, cn, h, w, y0, nr),
                None => (std::ptr::null(), 0),
            };
            let steps = nr * w.div_ceil(16);
            let (mut step, mut pf_done) = (0, 0);
            // Rows y0 - 1 ..= y0 + nr of this channel: maps are read in place, pooled and
            // upsampled rows are produced into the scratch; zeros above and below the image.
            s.ptrs.clear();
            for i in 0..nr + 2 {
                let y = (y0 + i) as isize - 1;
                if y < 0 || y >= h as isize {
                    s.ptrs.push(s.zero.as_ptr());
                    continue;
                }
                let y = y as usize;
                let dst = s.rows.as_mut_ptr().add(i * w);
                match *src {
                    Source::Map { data, c } => {
                        s.ptrs.push(data.as_ptr().add(((ni * c + cc) * h + y) * w));
                        continue;
                    }
                    Source::Rows { data, cstride, first, .. } => {
                        s.ptrs.push(data.as_ptr().add(cc * cstride + (y - first) * w));
                        continue;
                    }
                    Source::Pool { data, c, h: ih, w: iw } => {
                        let plane = data.as_ptr().add((ni * c + cc) * ih * iw);
                        pool_row(plane.add(2 * y * iw), plane.add((2 * y + 1) * iw), dst, w);
                    }
                    Source::Up { data, c, h: sh, w: sw, top, left } => {
                        let plane = data.as_ptr().add((ni * c + cc) * sh * sw);
                        let chunks = up.as_deref().unwrap_or(&[]);
                        up_row(plane, sh, sw, y, top, left, chunks, &mut s.tmp, dst, w);
                    }
                }
                s.ptrs.push(dst);
            }
            let k = dw_w.as_ptr().add(ch * 9);
            let mut wv = [_mm512_setzero_ps(); 9];
            for (i, v) in wv.iter_mut().enumerate() {
                *v = _mm512_set1_ps(*k.add(i));
            }
            let out = s.dw.as_mut_ptr().add(ch * px);
            for i in 0..nr {
                let r = [s.ptrs[i], s.ptrs[i + 1], s.ptrs[i + 2]];
                let mut x0 = 0;
                while x0 < w {
                    // Lanes whose left / right neighbour lies inside the row: the zero padding
                    // at the sides is a mask (masked lanes are not read).
                    let mc = mask(w - x0);
                    let ml = if x0 == 0 { mc & !1 } else { mc };
                    let mr = mask(w - x0 - 1);
                    let mut acc = _mm512_setzero_ps();
                    for (dy, row) in r.iter().enumerate() {
                        let p = row.wrapping_add(x0);
                        let l = _mm512_maskz_loadu_ps(ml, p.wrapping_sub(1));
                        acc = _mm512_fmadd_ps(wv[dy * 3], l, acc);
                        acc = _mm512_fmadd_ps(wv[dy * 3 + 1], _mm512_maskz_loadu_ps(mc, p), acc);
                        acc = _mm512_fmadd_ps(wv[dy * 3 + 2], _mm512_maskz_loadu_ps(mr, p.add(1)), acc);
                    }
                    _mm512_mask_storeu_ps(out.add(i * w + x0), mc, acc);
                    x0 += 16;
                    step += 1;
                    while pf_done < pf_lines * step / steps {
                        _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(16 * pf_done) as *const i8);
                        pf_done += 1;
                    }
                }
            }
            ch += 1;
        }
    }
}

/// The run of memory [`depthwise_band`] reads of channel `cc` of `src` for output rows
/// `y0 - 1 ..= y0 + nr` (`h x w` the output size): its start and its length in cache lines.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_read(src: &Source, ni: usize, cc: usize, h: usize, w: usize, y0: usize, nr: usize) -> (*const f32, usize) {
    let (lo, hi) = (y0.saturating_sub(1), (y0 + nr + 1).min(h));
    let (data, start, end) = match *src {
        Source::Map { data, c } => {
            let plane = (ni * c + cc) * h * w;
            (data, plane + lo * w, plane + hi * w)
        }
        Source::Pool { data, c, h: ih, w: iw } => {
            let plane = (ni * c + cc) * ih * iw;
            (data, plane + 2 * lo * iw, plane + (2 * hi).min(ih) * iw)
        }
        Source::Rows { data, cstride, first, .. } => {
            let plane = cc * cstride;
            (data, plane + (lo.max(first) - first) * w, plane + (hi.max(first) - first) * w)
        }
        Source::Up { data, c, h: sh, w: sw, top, .. } => {
            let (a, b) = (lo.saturating_sub(top), hi.saturating_sub(top).min(2 * sh));
            if a >= b {
                return (std::ptr::null(), 0);
            }
            let plane = (ni * c + cc) * sh * sw;
            let (r0, r1) = (super::common::ac_taps(a, sh).0, super::common::ac_taps(b - 1, sh).1);
            (data, plane + r0 * sw, plane + (r1 + 1) * sw)
        }
    };
    let end = end.min(data.len());
    if start >= end {
        return (std::ptr::null(), 0);
    }
    (data[start..].as_ptr(), (end - start).div_ceil(16))
}

/// `dst[x] = max(a[2x], a[2x+1], b[2x], b[2x+1])` for `x < w`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pool_row(a: *const f32, b: *const f32, dst: *mut f32, w: usize) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let mut x0 = 0;
    while x0 < w {
        let n = (w - x0).min(16);
        let (m0, m1) = (mask(2 * n), mask((2 * n).saturating_sub(16)));
        let lo = _mm512_max_ps(_mm512_maskz_loadu_ps(m0, a.add(2 * x0)), _mm512_maskz_loadu_ps(m0, b.add(2 * x0)));
        let hi = _mm512_max_ps(
            _mm512_maskz_loadu_ps(m1, a.add(2 * x0 + 16)),
            _mm512_maskz_loadu_ps(m1, b.add(2 * x0 + 16)),
        );
        let v = _mm512_max_ps(_mm512_permutex2var_ps(lo, even, hi), _mm512_permutex2var_ps(lo, odd, hi));
        _mm512_mask_storeu_ps(dst.add(x0), mask(n), v);
        x0 += 16;
    }
}

/// Output row `y` of an Up source: zeros, with the upsampled row `y - top` at `left`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn up_row(
    plane: *const f32,
    sh: usize,
    sw: usize,
    y: usize,
    top: usize,
    left: usize,
    chunks: &[UpChunk],
    tmp: &mut [f32],
    dst: *mut f32,
    w: usize,
) {
    let ow = 2 * sw;
    if left > 0 || left + ow < w || y < top || y >= top + 2 * sh {
        std::ptr::write_bytes(dst, 0, w);
    }
    if y < top || y >= top + 2 * sh {
        return;
    }
    let (r0, r1, fy) = super::common::ac_taps(y - top, sh);
    up_blend(plane.add(r0 * sw), plane.add(r1 * sw), fy, sw, chunks, tmp, dst.add(left));
}

/// `2 * sw` upsampled values at `dst` from two source rows `s0`, `s1` (`sw` floats each) blended
/// with weight `fy` on `s1`: blend the two rows first (contiguous), then interpolate along x with
/// permutes. `tmp` holds at least `sw` floats.
#[target_feature(enable = "avx512f")]
unsafe fn up_blend(
    s0: *const f32,
    s1: *const f32,
    fy: f32,
    sw: usize,
    chunks: &[UpChunk],
    tmp: &mut [f32],
    dst: *mut f32,
) {
    let ow = 2 * sw;
    let fyv = _mm512_set1_ps(fy);
    let t = tmp.as_mut_ptr();
    let mut x0 = 0;
    while x0 < sw {
        let m = mask(sw - x0);
        let a = _mm512_maskz_loadu_ps(m, s0.add(x0));
        let b = _mm512_maskz_loadu_ps(m, s1.add(x0));
        _mm512_mask_storeu_ps(t.add(x0), m, _mm512_fmadd_ps(_mm512_sub_ps(b, a), fyv, a));
        x0 += 16;
    }
    for (j, c) in chunks.iter().enumerate() {
        let v = _mm512_maskz_loadu_ps(mask(sw - c.base), t.add(c.base));
        let a = _mm512_permutexvar_ps(_mm512_loadu_si512(c.idx0.as_ptr() as *const _), v);
        let b = _mm512_permutexvar_ps(_mm512_loadu_si512(c.idx1.as_ptr() as *const _), v);
        let fx = _mm512_loadu_ps(c.fx.as_ptr());
        _mm512_mask_storeu_ps(dst.add(16 * j), mask(ow - 16 * j), _mm512_fmadd_ps(_mm512_sub_ps(b, a), fx, a));
    }
}
