//! The kernels of the fused CPU training step (`model::train_fused`), for AVX-512 CPUs: rows of
//! activations recomputed from a convolution's stored output (BatchNorm with batch statistics,
//! ReLU, and on the way a 2x2 max-pool, a 2x upsampling or a dropout mask), the depthwise 3x3 and
//! its adjoint over a band of rows, the depthwise weight gradient, the 1x1 weight gradient (a
//! GEMM over pixels), BatchNorm's backward per row, and the adjoints of pooling and upsampling.
//! The 1x1 forward and input gradient are the inference kernel's (`pointwise_cpu::avx512::block`).
//!
//! Every function here that takes raw pointers is `unsafe`: the caller sizes the buffers, and
//! AVX-512F must be available ([`available`]).

use std::arch::x86_64::*;

pub(crate) use super::common::ac_taps;
pub(crate) use super::common::cpu_f32;
use super::pointwise_cpu::avx512::lanes;
pub(crate) use super::pointwise_cpu::avx512::{block, narrow_chunk, Block, OutPtr};
pub(crate) use super::pointwise_cpu::{KC, MR, NR};
pub(crate) use super::separable_cpu::{pool_row, up_chunks, UpChunk};

/// Columns of a packed block of the 1x1 weight gradient ([`gemm_nt`]): three vectors.
pub(crate) const NT_COLS: usize = 48;

/// Whether these kernels run here.
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Asks for the `n` floats from `p` in the L1 cache (a hint: never faults, whatever `p`).
#[inline]
pub(crate) fn prefetch(p: *const f32, n: usize) {
    let mut i = 0;
    while i < n {
        // SAFETY: a prefetch is a hint; it does not access memory architecturally.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(i) as *const i8) };
        i += 16;
    }
}

/// Copies `n` floats to `dst`, non-temporally where `dst` is 64-byte aligned: a band going to a
/// map far bigger than the caches (no read for ownership of the lines it overwrites). Call
/// [`fence`] before the data is read elsewhere.
///
/// # Safety
/// AVX-512F; `src` readable and `dst` writable for `n` floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn copy_nt(src: *const f32, dst: *mut f32, n: usize) {
    let mut i = 0;
    while i < n && !(dst.add(i) as usize).is_multiple_of(64) {
        *dst.add(i) = *src.add(i);
        i += 1;
    }
    while i + 16 <= n {
        _mm512_stream_ps(dst.add(i), _mm512_loadu_ps(src.add(i)));
        i += 16;
    }
    while i < n {
        *dst.add(i) = *src.add(i);
        i += 1;
    }
}

/// Orders the non-temporal stores before it ([`copy_nt`], [`stencil3x3_out`]) before later
/// stores, so that the data is visible to the thread that continues after the task.
#[inline]
pub(crate) fn fence() {
    // SAFETY: a store fence has no preconditions.
    unsafe { _mm_sfence() };
}

/// The training BatchNorm and ReLU of one channel, as the op of `ops::batchnorm` computes them:
/// `y = max((z - mean) * scale + beta, 0)`, separate multiply and add (no FMA), so that an
/// activation recomputed here is the stored one bit for bit and the ReLU mask of the backward
/// agrees with the forward.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActCoef {
    pub mean: f32,
    pub scale: f32,
    pub beta: f32,
}

#[cfg(test)]
impl ActCoef {
    fn apply(self, z: f32) -> f32 {
        ((z - self.mean) * self.scale + self.beta).max(0.0)
    }
}

/// [`ActCoef`] in vectors.
#[derive(Clone, Copy)]
struct ActV {
    mean: __m512,
    scale: __m512,
    beta: __m512,
}

impl ActV {
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn new(a: ActCoef) -> ActV {
        ActV { mean: _mm512_set1_ps(a.mean), scale: _mm512_set1_ps(a.scale), beta: _mm512_set1_ps(a.beta) }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn apply(self, v: __m512) -> __m512 {
        _mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, self.mean), self.scale), self.beta), _mm512_setzero_ps())
    }
}

/// `dst[i] = act(z[i])` (times `keep[i]` when `keep` is not null) for `i < n`.
///
/// # Safety
/// AVX-512F; `z` (and `keep`) readable, `dst` writable for `n` floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn act_row(z: *const f32, n: usize, a: ActCoef, keep: *const f32, dst: *mut f32) {
    let (mv, sv, bv, zero) = (_mm512_set1_ps(a.mean), _mm512_set1_ps(a.scale), _mm512_set1_ps(a.beta), _mm512_setzero_ps());
    let mut i = 0;
    while i < n {
        let k = lanes(n - i);
        let v = _mm512_maskz_loadu_ps(k, z.add(i));
        let mut y = _mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, mv), sv), bv), zero);
        if !keep.is_null() {
            y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(k, keep.add(i)));
        }
        _mm512_mask_storeu_ps(dst.add(i), k, y);
        i += 16;
    }
}

/// `acc[i] += wgt * act(z[i])` for `i < n`: a 1x1 with one output channel (the network's head)
/// over recomputed activations.
///
/// # Safety
/// AVX-512F; `z` readable and `acc` writable for `n` floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn act_axpy(z: *const f32, n: usize, a: ActCoef, wgt: f32, acc: *mut f32) {
    let (mv, sv, bv, zero) = (_mm512_set1_ps(a.mean), _mm512_set1_ps(a.scale), _mm512_set1_ps(a.beta), _mm512_setzero_ps());
    let wv = _mm512_set1_ps(wgt);
    let mut i = 0;
    while i < n {
        let k = lanes(n - i);
        let v = _mm512_maskz_loadu_ps(k, z.add(i));
        let y = _mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v, mv), sv), bv), zero);
        let o = acc.add(i);
        _mm512_mask_storeu_ps(o, k, _mm512_fmadd_ps(wv, y, _mm512_maskz_loadu_ps(k, o)));
        i += 16;
    }
}

/// A depthwise 3x3 over a band: `out[i * out_stride + x] = bias + sum_{dy, dx} k[3 dy + dx] *
/// rows[i + dy][x + dx - 1]` for rows `i < nr` and `x < w`, zero beyond the ends of a row (rows
/// above and below the map are rows of zeros the caller points at). `rows` holds `nr + 2`
/// pointers. With the kernel reversed (`k[8 - t]`) this is the convolution's input gradient.
///
/// # Safety
/// AVX-512F; every row readable for `w` floats, `out` writable for `nr` rows of `w`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn stencil3x3(rows: &[*const f32], nr: usize, w: usize, k: &[f32; 9], bias: f32, out: *mut f32, out_stride: usize) {
    let mut wv = [_mm512_setzero_ps(); 9];
    for (v, &kt) in wv.iter_mut().zip(k) {
        *v = _mm512_set1_ps(kt);
    }
    let bv = _mm512_set1_ps(bias);
    for i in 0..nr {
        let r = [rows[i], rows[i + 1], rows[i + 2]];
        let mut x0 = 0;
        while x0 < w {
            // Lanes whose left / right neighbour lies inside the row: the zero padding at the
            // sides is a mask (masked lanes are not read).
            let mc = lanes(w - x0);
            let ml = if x0 == 0 { mc & !1 } else { mc };
            let mr = lanes(w - x0 - 1);
            let mut acc = bv;
            for (dy, row) in r.iter().enumerate() {
                let p = row.wrapping_add(x0);
                acc = _mm512_fmadd_ps(wv[dy * 3], _mm512_maskz_loadu_ps(ml, p.wrapping_sub(1)), acc);
                acc = _mm512_fmadd_ps(wv[dy * 3 + 1], _mm512_maskz_loadu_ps(mc, p), acc);
                acc = _mm512_fmadd_ps(wv[dy * 3 + 2], _mm512_maskz_loadu_ps(mr, p.wrapping_add(1)), acc);
            }
            _mm512_mask_storeu_ps(out.add(i * out_stride + x0), mc, acc);
            x0 += 16;
        }
    }
}

/// [`stencil3x3`] without bias for a map far bigger than the caches, read again only by a later
/// pass (a convolution's input gradient): rows `w` floats apart, full vectors at 64-byte
/// aligned addresses stored non-temporally (no read for ownership of lines about to be
/// overwritten). With `sums = (z, act)` it also returns BatchNorm's backward sums
/// ([`grad_sums`], without the third) of the values it writes against `z` (same layout), taken
/// from the registers.
///
/// # Safety
/// As [`stencil3x3`]; `z` readable like `out`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn stencil3x3_out(rows: &[*const f32], nr: usize, w: usize, k: &[f32; 9], out: *mut f32, sums: Option<(*const f32, ActCoef)>) -> [f64; 3] {
    let mut wv = [_mm512_setzero_ps(); 9];
    for (v, &kt) in wv.iter_mut().zip(k) {
        *v = _mm512_set1_ps(kt);
    }
    let (zp, a) = sums.unwrap_or((std::ptr::null(), ActCoef { mean: 0.0, scale: 0.0, beta: 0.0 }));
    let (mv, sv, bv, zero) = (_mm512_set1_ps(a.mean), _mm512_set1_ps(a.scale), _mm512_set1_ps(a.beta), _mm512_setzero_ps());
    let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut streamed = false;
    for i in 0..nr {
        let r = [rows[i], rows[i + 1], rows[i + 2]];
        let o = out.add(i * w);
        let aligned = (o as usize).is_multiple_of(64);
        let mut x0 = 0;
        while x0 < w {
            let mc = lanes(w - x0);
            let ml = if x0 == 0 { mc & !1 } else { mc };
            let mr = lanes(w - x0 - 1);
            let mut acc = zero;
            for (dy, row) in r.iter().enumerate() {
                let p = row.wrapping_add(x0);
                acc = _mm512_fmadd_ps(wv[dy * 3], _mm512_maskz_loadu_ps(ml, p.wrapping_sub(1)), acc);
                acc = _mm512_fmadd_ps(wv[dy * 3 + 1], _mm512_maskz_loadu_ps(mc, p), acc);
                acc = _mm512_fmadd_ps(wv[dy * 3 + 2], _mm512_maskz_loadu_ps(mr, p.wrapping_add(1)), acc);
            }
            if aligned && w - x0 >= 16 {
                _mm512_stream_ps(o.add(x0), acc);
                streamed = true;
            } else {
                _mm512_mask_storeu_ps(o.add(x0), mc, acc);
            }
            if !zp.is_null() {
                let xc = _mm512_sub_ps(_mm512_maskz_loadu_ps(mc, zp.add(i * w + x0)), mv);
                let pre = _mm512_add_ps(_mm512_mul_ps(xc, sv), bv);
                let pass = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(mc, pre, zero);
                let gp = _mm512_maskz_mov_ps(pass, acc);
                s0 = _mm512_add_ps(s0, gp);
                s1 = _mm512_fmadd_ps(gp, xc, s1);
            }
            x0 += 16;
        }
    }
    if streamed {
        // Non-temporal stores are weakly ordered: make them visible before the task ends.
        _mm_sfence();
    }
    [f64::from(_mm512_reduce_add_ps(s0)), f64::from(_mm512_reduce_add_ps(s1)), 0.0]
}

/// [`stencil3x3`] in the order and rounding of the training graph's grouped convolution
/// (`grouped_conv::grouped_conv3x3_cpu`): from the bias, per kernel row the centre, left and
/// right taps, each a separate multiply and add. The fused forward uses it so that its
/// activations are the graph's bit for bit (what the backward's ReLU masks and pooling choices
/// depend on); the backward's recomputations need no such care and take the FMA version.
///
/// # Safety
/// As [`stencil3x3`].
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn stencil3x3_exact(rows: &[*const f32], nr: usize, w: usize, k: &[f32; 9], bias: f32, out: *mut f32, out_stride: usize) {
    let mut wv = [_mm512_setzero_ps(); 9];
    for (v, &kt) in wv.iter_mut().zip(k) {
        *v = _mm512_set1_ps(kt);
    }
    let bv = _mm512_set1_ps(bias);
    for i in 0..nr {
        let r = [rows[i], rows[i + 1], rows[i + 2]];
        let mut x0 = 0;
        while x0 < w {
            let mc = lanes(w - x0);
            let ml = if x0 == 0 { mc & !1 } else { mc };
            let mr = lanes(w - x0 - 1);
            let mut acc = bv;
            for (dy, row) in r.iter().enumerate() {
                let p = row.wrapping_add(x0);
                // A tap outside the map adds w * 0 = 0: the value the graph gets by skipping it.
                acc = _mm512_add_ps(acc, _mm512_mul_ps(wv[dy * 3 + 1], _mm512_maskz_loadu_ps(mc, p)));
                acc = _mm512_add_ps(acc, _mm512_mul_ps(wv[dy * 3], _mm512_maskz_loadu_ps(ml, p.wrapping_sub(1))));
                acc = _mm512_add_ps(acc, _mm512_mul_ps(wv[dy * 3 + 2], _mm512_maskz_loadu_ps(mr, p.wrapping_add(1))));
            }
            _mm512_mask_storeu_ps(out.add(i * out_stride + x0), mc, acc);
            x0 += 16;
        }
    }
}

/// Elements per chunk of BatchNorm's statistics (`ops::batchnorm`'s `CHUNK`).
pub(crate) const STAT_CHUNK: usize = 1024;

/// `(sum(v - k), sum((v - k)^2))` of one chunk (at most [`STAT_CHUNK`] values) exactly as the
/// training BatchNorm op's `shifted_sums` sums it: eight f32 lanes, the tail into lane 0, the
/// lanes added in f64.
///
/// # Safety
/// AVX-512F; `v` readable for `len` floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn shifted_chunk_sums(v: *const f32, len: usize, k: f32) -> (f64, f64) {
    let kv = _mm256_set1_ps(k);
    let (mut a, mut b) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let full = len / 8 * 8;
    let mut i = 0;
    while i < full {
        let d = _mm256_sub_ps(_mm256_loadu_ps(v.add(i)), kv);
        a = _mm256_add_ps(a, d);
        b = _mm256_add_ps(b, _mm256_mul_ps(d, d));
        i += 8;
    }
    let (mut la, mut lb) = ([0f32; 8], [0f32; 8]);
    _mm256_storeu_ps(la.as_mut_ptr(), a);
    _mm256_storeu_ps(lb.as_mut_ptr(), b);
    for j in full..len {
        let d = *v.add(j) - k;
        la[0] += d;
        lb[0] += d * d;
    }
    (la.iter().map(|&x| f64::from(x)).sum::<f64>(), lb.iter().map(|&x| f64::from(x)).sum::<f64>())
}

/// `2 * sw` values of the 2x align-corners upsampling from source rows `s0` and `s1` (`sw`
/// floats each, blended with weight `fy` on `s1`) in the training graph's order and rounding
/// (`upsample::Upsample2x`): each source row interpolated along x, `a + (b - a) f` with
/// separate operations, then the two rows the same way.
///
/// # Safety
/// AVX-512F; `s0`, `s1` readable for `sw` floats, `dst` writable for `2 * sw`; `chunks` from
/// `up_chunks(sw)`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn up_row_exact(s0: *const f32, s1: *const f32, fy: f32, sw: usize, chunks: &[UpChunk], dst: *mut f32) {
    let ow = 2 * sw;
    let fyv = _mm512_set1_ps(fy);
    for (j, c) in chunks.iter().enumerate() {
        let (i0, i1, fx) = c.taps();
        let m = lanes(sw - c.base());
        let r0 = lerp_x(s0.add(c.base()), m, i0, i1, fx);
        let r1 = lerp_x(s1.add(c.base()), m, i0, i1, fx);
        let v = _mm512_add_ps(r0, _mm512_mul_ps(_mm512_sub_ps(r1, r0), fyv));
        _mm512_mask_storeu_ps(dst.add(16 * j), lanes(ow - 16 * j), v);
    }
}

/// `a + (b - a) fx` with `a`, `b` the floats at offsets `i0`, `i1` from `at`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn lerp_x(at: *const f32, m: __mmask16, i0: __m512i, i1: __m512i, fx: __m512) -> __m512 {
    let v = _mm512_maskz_loadu_ps(m, at);
    let a = _mm512_permutexvar_ps(i0, v);
    let b = _mm512_permutexvar_ps(i1, v);
    _mm512_add_ps(a, _mm512_mul_ps(_mm512_sub_ps(b, a), fx))
}

/// The depthwise weight and bias gradients over a band: `acc[3 dy + dx] += sum_{i < nr, x < w}
/// g[i * g_stride + x] * rows[i + dy][x + dx - 1]` (zero beyond the row ends) and `acc[9] +=
/// sum g`. `rows` holds the `nr + 2` input rows around the band, as for [`stencil3x3`].
///
/// # Safety
/// AVX-512F; rows readable for `w` floats, `g` for `nr` rows of `w`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dw_grad(rows: &[*const f32], g: *const f32, g_stride: usize, nr: usize, w: usize, acc: &mut [f64; 10]) {
    let mut a = [_mm512_setzero_ps(); 10];
    for i in 0..nr {
        let r = [rows[i], rows[i + 1], rows[i + 2]];
        let mut x0 = 0;
        while x0 < w {
            let mc = lanes(w - x0);
            let ml = if x0 == 0 { mc & !1 } else { mc };
            let mr = lanes(w - x0 - 1);
            let gv = _mm512_maskz_loadu_ps(mc, g.add(i * g_stride + x0));
            for (dy, row) in r.iter().enumerate() {
                let p = row.wrapping_add(x0);
                a[dy * 3] = _mm512_fmadd_ps(gv, _mm512_maskz_loadu_ps(ml, p.wrapping_sub(1)), a[dy * 3]);
                a[dy * 3 + 1] = _mm512_fmadd_ps(gv, _mm512_maskz_loadu_ps(mc, p), a[dy * 3 + 1]);
                a[dy * 3 + 2] = _mm512_fmadd_ps(gv, _mm512_maskz_loadu_ps(mr, p.wrapping_add(1)), a[dy * 3 + 2]);
            }
            a[9] = _mm512_add_ps(a[9], gv);
            x0 += 16;
        }
    }
    for (s, v) in acc.iter_mut().zip(a) {
        *s += f64::from(_mm512_reduce_add_ps(v));
    }
}

/// Transposes 16 vectors (rows) in place: afterwards `r[j]` holds element `j` of every input row.
#[inline(always)]
unsafe fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + q], 128-bit lane L: element 4L + q of rows 4i .. 4i + 3.
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let (a, b, c, d) = (pd(t[4 * i]), pd(t[4 * i + 1]), pd(t[4 * i + 2]), pd(t[4 * i + 3]));
        u[4 * i] = ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = ps(_mm512_unpackhi_pd(b, d));
    }
    // Element 4L + q of all rows: lane L of u[q], u[4 + q], u[8 + q], u[12 + q].
    for q in 0..4 {
        let (a, b, c, d) = (u[q], u[4 + q], u[8 + q], u[12 + q]);
        let v0 = _mm512_shuffle_f32x4::<0x44>(a, b);
        let v1 = _mm512_shuffle_f32x4::<0xEE>(a, b);
        let v2 = _mm512_shuffle_f32x4::<0x44>(c, d);
        let v3 = _mm512_shuffle_f32x4::<0xEE>(c, d);
        r[q] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
        r[4 + q] = _mm512_shuffle_f32x4::<0xDD>(v0, v2);
        r[8 + q] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
        r[12 + q] = _mm512_shuffle_f32x4::<0xDD>(v1, v3);
    }
}

/// `packed[p * NT_COLS + j] = b[j * ldb + p]` for `j < nj` (zeros for `nj <= j < NT_COLS`) and
/// `p < kc`, in 16 x 16 transposes.
#[target_feature(enable = "avx512f")]
unsafe fn pack_transposed(b: *const f32, ldb: usize, nj: usize, kc: usize, packed: *mut f32) {
    let mut p0 = 0;
    while p0 < kc {
        let m = lanes(kc - p0);
        for g in 0..NT_COLS / 16 {
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, v) in r.iter_mut().enumerate() {
                let j = g * 16 + i;
                if j < nj {
                    *v = _mm512_maskz_loadu_ps(m, b.add(j * ldb + p0));
                }
            }
            transpose16(&mut r);
            // Rows past `kc` land inside the buffer (KC is a multiple of 16) and are not read.
            for (q, v) in r.iter().enumerate() {
                _mm512_storeu_ps(packed.add((p0 + q) * NT_COLS + g * 16), *v);
            }
        }
        p0 += 16;
    }
}

/// The weight gradient of a 1x1 convolution over `k` pixels: `c[o * ldc + j] += sum_{p < k}
/// a[o * lda + p] * b[j * ldb + p]` for `o < m` (a multiple of [`MR`]) and `j < n` (`a` the
/// output gradient, `b` the input, both with pixels contiguous). Blocks of 8 x 48 of `c` stay in
/// registers over a chunk of pixels; `b` is transposed into `packed` once per chunk for every
/// block of rows (the inference kernel's layout). Fewer than 16 columns take [`gemm_nt_narrow`].
///
/// # Safety
/// AVX-512F; the slices behind the pointers hold what the strides and sizes say; `packed` holds
/// at least `KC * NT_COLS` floats.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_nt(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    (m, n, k): (usize, usize, usize),
    c: *mut f32,
    ldc: usize,
    packed: &mut [f32],
) {
    if n < 16 {
        return gemm_nt_narrow(a, lda, b, ldb, (m, n, k), c, ldc);
    }
    let pk = packed.as_mut_ptr();
    let mut j0 = 0;
    while j0 < n {
        let nj = (n - j0).min(NT_COLS);
        let ms = [lanes(nj), lanes(nj.saturating_sub(16)), lanes(nj.saturating_sub(32))];
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            pack_transposed(b.add(j0 * ldb + k0), ldb, nj, kc, pk);
            for ob in 0..m / MR {
                let (ab, cb) = (a.add(ob * MR * lda + k0), c.add(ob * MR * ldc + j0));
                // As many vectors as the block has columns: a narrow last block (64 = 48 + 16
                // columns, the widest layers' common case) costs no FMAs on empty lanes.
                match nj.div_ceil(16) {
                    1 => nt_block::<1>(pk, kc, ab, lda, cb, ldc, ms),
                    2 => nt_block::<2>(pk, kc, ab, lda, cb, ldc, ms),
                    _ => nt_block::<3>(pk, kc, ab, lda, cb, ldc, ms),
                }
            }
            k0 += kc;
        }
        j0 += NT_COLS;
    }
}

/// One block of [`gemm_nt`]: `MR` rows by `NV` vectors of columns over `kc` packed pixels,
/// added into `c`.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn nt_block<const NV: usize>(pk: *const f32, kc: usize, ab: *const f32, lda: usize, cb: *mut f32, ldc: usize, ms: [__mmask16; 3]) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    for (r, row) in acc.iter_mut().enumerate() {
        let cr = cb.add(r * ldc);
        for (v, x) in row.iter_mut().enumerate() {
            *x = _mm512_maskz_loadu_ps(ms[v], cr.add(16 * v));
        }
    }
    for p in 0..kc {
        let xr = pk.add(p * NT_COLS);
        let mut xv = [_mm512_setzero_ps(); NV];
        for (v, x) in xv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(xr.add(16 * v));
        }
        for (r, row) in acc.iter_mut().enumerate() {
            let wv = _mm512_set1_ps(*ab.add(r * lda + p));
            for (x, xv) in row.iter_mut().zip(xv) {
                *x = _mm512_fmadd_ps(wv, xv, *x);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let cr = cb.add(r * ldc);
        for (v, x) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(cr.add(16 * v), ms[v], *x);
        }
    }
}

/// [`gemm_nt`] for fewer than 16 columns (the first 1x1 of the network, 3 input channels): dot
/// products along the pixels, 8 rows by up to 3 columns of accumulators.
#[target_feature(enable = "avx512f")]
unsafe fn gemm_nt_narrow(a: *const f32, lda: usize, b: *const f32, ldb: usize, (m, n, k): (usize, usize, usize), c: *mut f32, ldc: usize) {
    let mut j0 = 0;
    while j0 < n {
        let nj = (n - j0).min(3);
        for ob in 0..m / MR {
            let o0 = ob * MR;
            let mut acc = [[_mm512_setzero_ps(); 3]; MR];
            let mut p = 0;
            while p < k {
                let mk = lanes(k - p);
                let mut bv = [_mm512_setzero_ps(); 3];
                for (j, v) in bv.iter_mut().enumerate().take(nj) {
                    *v = _mm512_maskz_loadu_ps(mk, b.add((j0 + j) * ldb + p));
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_maskz_loadu_ps(mk, a.add((o0 + r) * lda + p));
                    for (x, bj) in row.iter_mut().zip(bv) {
                        *x = _mm512_fmadd_ps(av, bj, *x);
                    }
                }
                p += 16;
            }
            for (r, row) in acc.iter().enumerate() {
                for (j, x) in row.iter().enumerate().take(nj) {
                    *c.add((o0 + r) * ldc + j0 + j) += _mm512_reduce_add_ps(*x);
                }
            }
        }
        j0 += 3;
    }
}

/// Per-channel constants of BatchNorm's backward (`ops::batchnorm`): the input gradient is
/// `a g' + b (z - mean) + c0`, `g'` the output gradient where the ReLU let it through.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DzCoef {
    pub a: f32,
    pub b: f32,
    pub c0: f32,
    pub act: ActCoef,
}

/// BatchNorm + ReLU backward for `n` values: `out = a g' + b (z - mean) + c0` with `g' = dy *
/// dy_scale` where `act(z) > 0` (PyTorch's ReLU rule: zero where the value before the ReLU was
/// not positive), else 0. Returns the sum of what it wrote.
///
/// # Safety
/// AVX-512F; `dy`, `z` readable and `out` writable for `n` floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dz_row(dy: *const f32, dy_scale: f32, z: *const f32, n: usize, k: DzCoef, out: *mut f32) -> f64 {
    let (mv, sv, bv) = (_mm512_set1_ps(k.act.mean), _mm512_set1_ps(k.act.scale), _mm512_set1_ps(k.act.beta));
    let (av, bb, cv, ds) = (_mm512_set1_ps(k.a), _mm512_set1_ps(k.b), _mm512_set1_ps(k.c0), _mm512_set1_ps(dy_scale));
    let zero = _mm512_setzero_ps();
    let mut sum = _mm512_setzero_ps();
    let mut i = 0;
    while i < n {
        let m = lanes(n - i);
        let xc = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, z.add(i)), mv);
        let pre = _mm512_add_ps(_mm512_mul_ps(xc, sv), bv);
        let pass = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(m, pre, zero);
        let g = _mm512_mul_ps(_mm512_maskz_loadu_ps(pass, dy.add(i)), ds);
        let v = _mm512_add_ps(_mm512_fmadd_ps(av, g, _mm512_mul_ps(bb, xc)), cv);
        _mm512_mask_storeu_ps(out.add(i), m, v);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, v));
        i += 16;
    }
    f64::from(_mm512_reduce_add_ps(sum))
}

/// BatchNorm + ReLU backward sums over `n` values: `(sum g', sum g' (z - mean), sum dy act(z))`,
/// `g' = dy * dy_scale` where `act(z) > 0`. The third is the weight gradient of a 1x1 that
/// read these activations (the network's head), with `dy` its output gradient.
///
/// # Safety
/// AVX-512F; `dy` and `z` readable for `n` floats.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn grad_sums(dy: *const f32, dy_scale: f32, z: *const f32, n: usize, a: ActCoef) -> [f64; 3] {
    let (mv, sv, bv, ds) = (_mm512_set1_ps(a.mean), _mm512_set1_ps(a.scale), _mm512_set1_ps(a.beta), _mm512_set1_ps(dy_scale));
    let zero = _mm512_setzero_ps();
    let mut total = [0f64; 3];
    // f32 lanes over a chunk, then f64: as `ops::batchnorm`.
    let mut c0 = 0;
    while c0 < n {
        let end = (c0 + 1024).min(n);
        let mut s = [_mm512_setzero_ps(); 3];
        let mut i = c0;
        while i < end {
            let m = lanes(end - i);
            let xc = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, z.add(i)), mv);
            let pre = _mm512_add_ps(_mm512_mul_ps(xc, sv), bv);
            let pass = _mm512_mask_cmp_ps_mask::<_CMP_GT_OQ>(m, pre, zero);
            let dyv = _mm512_maskz_loadu_ps(m, dy.add(i));
            let g = _mm512_maskz_mul_ps(pass, dyv, ds);
            s[0] = _mm512_add_ps(s[0], g);
            s[1] = _mm512_fmadd_ps(g, xc, s[1]);
            s[2] = _mm512_fmadd_ps(dyv, _mm512_max_ps(pre, zero), s[2]);
            i += 16;
        }
        for (t, v) in total.iter_mut().zip(s) {
            *t += f64::from(_mm512_reduce_add_ps(v));
        }
        c0 = end;
    }
    total
}

/// The backward of a 2x2 max-pool over activations: each window's gradient `g[oy][ox]` is added
/// to `dy` at the window's first maximum (row-major, as PyTorch and `ops::maxpool`), the
/// activations recomputed from `z` (`h x w`; the pooled plane is `h/2 x w/2`). The plain
/// version of [`pool_adjoint_sums`], its test's reference.
#[cfg(test)]
fn pool_adjoint(g: &[f32], z: &[f32], h: usize, w: usize, a: ActCoef, dy: &mut [f32]) {
    let (oh, ow) = (h / 2, w / 2);
    for oy in 0..oh {
        let (r0, r1) = (2 * oy * w, (2 * oy + 1) * w);
        for ox in 0..ow {
            let i = 2 * ox;
            let mut best = (r0 + i, a.apply(z[r0 + i]));
            for at in [r0 + i + 1, r1 + i, r1 + i + 1] {
                let v = a.apply(z[at]);
                // Strictly greater: ties keep the earlier element.
                if v > best.1 {
                    best = (at, v);
                }
            }
            dy[best.0] += g[oy * ow + ox];
        }
    }
}

/// [`pool_adjoint`] for one pair of rows, 16 windows at a time: `g` the `ow` pooled gradients of
/// the pair, `z0`, `z1` the two rows of the map (at least `2 ow` floats), `d0`, `d1` the two
/// rows of its gradient, added into.
///
/// # Safety
/// AVX-512F; the rows readable (and `d0`, `d1` writable) for `2 ow` floats, `g` for `ow`.
#[target_feature(enable = "avx512f")]
unsafe fn pool_adjoint_pair(g: *const f32, z0: *const f32, z1: *const f32, ow: usize, a: ActCoef, d0: *mut f32, d1: *mut f32) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let il_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let il_hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let av = ActV::new(a);
    let act = |v: __m512| av.apply(v);
    let mut x0 = 0;
    while x0 < ow {
        let n = (ow - x0).min(16);
        let (m0, m1) = (lanes(2 * n), lanes((2 * n).saturating_sub(16)));
        let (p0, p1) = (z0.add(2 * x0), z1.add(2 * x0));
        let (a_lo, a_hi) = (act(_mm512_maskz_loadu_ps(m0, p0)), act(_mm512_maskz_loadu_ps(m1, p0.add(16))));
        let (b_lo, b_hi) = (act(_mm512_maskz_loadu_ps(m0, p1)), act(_mm512_maskz_loadu_ps(m1, p1.add(16))));
        let (ae, ao) = (_mm512_permutex2var_ps(a_lo, even, a_hi), _mm512_permutex2var_ps(a_lo, odd, a_hi));
        let (be, bo) = (_mm512_permutex2var_ps(b_lo, even, b_hi), _mm512_permutex2var_ps(b_lo, odd, b_hi));
        // The first maximum in row-major order: a later element wins only if strictly greater.
        let k1 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(ao, ae);
        let best = _mm512_mask_blend_ps(k1, ae, ao);
        let k2 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(be, best);
        let best = _mm512_mask_blend_ps(k2, best, be);
        let k3 = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(bo, best);
        let (s3, s2) = (k3, k2 & !k3);
        let s1 = k1 & !k2 & !k3;
        let s0 = !(k1 | k2 | k3);
        let gv = _mm512_maskz_loadu_ps(lanes(n), g.add(x0));
        let (g0, g1, g2, g3) = (_mm512_maskz_mov_ps(s0, gv), _mm512_maskz_mov_ps(s1, gv), _mm512_maskz_mov_ps(s2, gv), _mm512_maskz_mov_ps(s3, gv));
        for (d, ge, go) in [(d0.add(2 * x0), g0, g1), (d1.add(2 * x0), g2, g3)] {
            let lo = _mm512_permutex2var_ps(ge, il_lo, go);
            let hi = _mm512_permutex2var_ps(ge, il_hi, go);
            _mm512_mask_storeu_ps(d, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, d), lo));
            _mm512_mask_storeu_ps(d.add(16), m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, d.add(16)), hi));
        }
        x0 += 16;
    }
}

/// The backward of a 2x2 max-pool for one plane ([`pool_adjoint`], vectorised), then
/// BatchNorm's backward sums ([`grad_sums`]) over the plane's completed gradient `dy`, row
/// pair by row pair while the rows are in cache: `g` the pooled gradient (`h/2 x w/2`), `z` the
/// map (`h x w`).
///
/// # Safety
/// AVX-512F; `g`, `z` and `dy` sized as the shapes say.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pool_adjoint_sums(g: *const f32, z: *const f32, h: usize, w: usize, a: ActCoef, dy: *mut f32) -> [f64; 3] {
    let ow = w / 2;
    let mut total = [0f64; 3];
    let mut add = |s: [f64; 3]| {
        for (t, v) in total.iter_mut().zip(s) {
            *t += v;
        }
    };
    for oy in 0..h / 2 {
        let (r0, r1) = (2 * oy * w, (2 * oy + 1) * w);
        pool_adjoint_pair(g.add(oy * ow), z.add(r0), z.add(r1), ow, a, dy.add(r0), dy.add(r1));
        add(grad_sums(dy.add(r0), 1.0, z.add(r0), 2 * w, a));
    }
    if h % 2 == 1 {
        let r = (h - 1) * w;
        add(grad_sums(dy.add(r), 1.0, z.add(r), w, a));
    }
    total
}

/// The taps of the 2x align-corners upsampling's adjoint along a row of `sw` source values:
/// source `sx` receives `(1 - fx)` times outputs `s0[sx] .. s0[sx] + n0[sx]` and `fx` times
/// outputs `s1[sx] .. s1[sx] + n1[sx]` (contiguous: both taps move monotonically with the
/// output), at most `k` of each.
pub(crate) struct UpAdjoint {
    sw: usize,
    s0: Vec<i32>,
    n0: Vec<i32>,
    s1: Vec<i32>,
    n1: Vec<i32>,
    /// Per output: `1 - fx` and `fx`.
    w0: Vec<f32>,
    w1: Vec<f32>,
    k: usize,
}

impl UpAdjoint {
    pub(crate) fn new(sw: usize) -> UpAdjoint {
        let ow = 2 * sw;
        let taps: Vec<(usize, usize, f32)> = (0..ow).map(|i| ac_taps(i, sw)).collect();
        let range = |f: &dyn Fn(&(usize, usize, f32)) -> usize| -> (Vec<i32>, Vec<i32>) {
            let (mut start, mut len) = (vec![0i32; sw], vec![0i32; sw]);
            for (ox, t) in taps.iter().enumerate() {
                let sx = f(t);
                if len[sx] == 0 {
                    start[sx] = ox as i32;
                }
                len[sx] += 1;
            }
            (start, len)
        };
        let (s0, n0) = range(&|t| t.0);
        let (s1, n1) = range(&|t| t.1);
        let k = n0.iter().chain(&n1).copied().max().unwrap_or(0) as usize;
        let w0 = taps.iter().map(|t| 1.0 - t.2).collect();
        let w1 = taps.iter().map(|t| t.2).collect();
        UpAdjoint { sw, s0, n0, s1, n1, w0, w1, k }
    }
}

/// The adjoint of the 2x align-corners upsampling of an `sh x sw` plane placed at (`top`,
/// `left`) of an `h x w` plane: the gradient `g` of the big plane to `out` (`sh x sw`,
/// overwritten), times `keep` where given (a dropout mask applied before the upsampling).
/// Separable: first along y at the full width into `tmp` (`sh` rows of `2 sw`), then along x
/// per source row, 16 sources at a time gathering the outputs each one feeds.
///
/// # Safety
/// AVX-512F; `g` holds the `h x w` plane, `out` (and `keep`) `sh x sw`, `t` built for `sw`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn up_adjoint(
    g: &[f32],
    w: usize,
    (sh, sw, top, left): (usize, usize, usize, usize),
    keep: Option<&[f32]>,
    out: &mut [f32],
    t: &UpAdjoint,
    tmp: &mut Vec<f32>,
) {
    let ow = 2 * sw;
    debug_assert_eq!(t.sw, sw);
    if tmp.len() < sh * ow {
        tmp.resize(sh * ow, 0.0);
    }
    let tp = tmp.as_mut_ptr();
    std::ptr::write_bytes(tp, 0, sh * ow);
    for oy in 0..2 * sh {
        let row = g.as_ptr().add((top + oy) * w + left);
        let (y0, y1, fy) = ac_taps(oy, sh);
        let (a, b) = (_mm512_set1_ps(1.0 - fy), _mm512_set1_ps(fy));
        let (r0, r1) = (tp.add(y0 * ow), tp.add(y1 * ow));
        let mut x = 0;
        while x < ow {
            let m = lanes(ow - x);
            let v = _mm512_maskz_loadu_ps(m, row.add(x));
            _mm512_mask_storeu_ps(r0.add(x), m, _mm512_fmadd_ps(v, a, _mm512_maskz_loadu_ps(m, r0.add(x))));
            // Rows y0 and y1 may be one row (a single source row): added in turn.
            _mm512_mask_storeu_ps(r1.add(x), m, _mm512_fmadd_ps(v, b, _mm512_maskz_loadu_ps(m, r1.add(x))));
            x += 16;
        }
    }
    for y in 0..sh {
        let r = tp.add(y * ow);
        let dst = out.as_mut_ptr().add(y * sw);
        let kp = keep.map(|k| k.as_ptr().add(y * sw));
        let mut x0 = 0;
        while x0 < sw {
            let m = lanes(sw - x0);
            let (s0, n0) = (_mm512_maskz_loadu_epi32(m, t.s0.as_ptr().add(x0)), _mm512_maskz_loadu_epi32(m, t.n0.as_ptr().add(x0)));
            let (s1, n1) = (_mm512_maskz_loadu_epi32(m, t.s1.as_ptr().add(x0)), _mm512_maskz_loadu_epi32(m, t.n1.as_ptr().add(x0)));
            let mut acc = _mm512_setzero_ps();
            for k in 0..t.k as i32 {
                let kv = _mm512_set1_epi32(k);
                let m0 = _mm512_mask_cmpgt_epi32_mask(m, n0, kv);
                let i0 = _mm512_add_epi32(s0, kv);
                let u = _mm512_mul_ps(
                    _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), m0, i0, r as *const f32),
                    _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), m0, i0, t.w0.as_ptr()),
                );
                let m1 = _mm512_mask_cmpgt_epi32_mask(m, n1, kv);
                let i1 = _mm512_add_epi32(s1, kv);
                let v = _mm512_mul_ps(
                    _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), m1, i1, r as *const f32),
                    _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), m1, i1, t.w1.as_ptr()),
                );
                acc = _mm512_add_ps(acc, _mm512_add_ps(u, v));
            }
            if let Some(kp) = kp {
                acc = _mm512_mul_ps(acc, _mm512_maskz_loadu_ps(m, kp.add(x0)));
            }
            _mm512_mask_storeu_ps(dst.add(x0), m, acc);
            x0 += 16;
        }
    }
}

/// The plain adjoint of the upsampling, [`up_adjoint`]'s test reference.
#[cfg(test)]
fn up_adjoint_plain(g: &[f32], w: usize, (sh, sw, top, left): (usize, usize, usize, usize), keep: Option<&[f32]>, out: &mut [f32]) {
    out.fill(0.0);
    for oy in 0..2 * sh {
        let (y0, y1, fy) = ac_taps(oy, sh);
        for ox in 0..2 * sw {
            let v = f64::from(g[(top + oy) * w + left + ox]);
            let (x0, x1, fx) = ac_taps(ox, sw);
            let (fx, fy) = (f64::from(fx), f64::from(fy));
            out[y0 * sw + x0] += (v * (1.0 - fy) * (1.0 - fx)) as f32;
            out[y0 * sw + x1] += (v * (1.0 - fy) * fx) as f32;
            out[y1 * sw + x0] += (v * fy * (1.0 - fx)) as f32;
            out[y1 * sw + x1] += (v * fy * fx) as f32;
        }
    }
    if let Some(k) = keep {
        for (o, k) in out.iter_mut().zip(k) {
            *o *= k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).max(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Aligned([f32; 16]);

    fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
        }
    }

    /// The stencil and the depthwise gradient against plain loops, widths with tails.
    #[test]
    fn stencil_and_dw_grad_match_loops() {
        if !available() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        for &(nr, w) in &[(1usize, 1usize), (3, 5), (2, 16), (4, 33), (2, 70)] {
            let rows: Vec<Vec<f32>> = (0..nr + 2).map(|i| data(w, 10 + i as u32)).collect();
            let k: [f32; 9] = std::array::from_fn(|t| t as f32 * 0.1 - 0.4);
            let ptrs: Vec<*const f32> = rows.iter().map(|r| r.as_ptr()).collect();
            let mut out = vec![0f32; nr * w];
            unsafe { stencil3x3(&ptrs, nr, w, &k, 0.5, out.as_mut_ptr(), w) };
            let at = |r: &Vec<f32>, x: isize| if x < 0 || x >= w as isize { 0.0 } else { r[x as usize] };
            let mut want = vec![0f32; nr * w];
            for i in 0..nr {
                for x in 0..w {
                    let mut s = 0.5f32;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            s += k[dy * 3 + dx] * at(&rows[i + dy], x as isize + dx as isize - 1);
                        }
                    }
                    want[i * w + x] = s;
                }
            }
            close(&out, &want, 1e-5, &format!("stencil {nr}x{w}"));
            // Without the bias, into an aligned buffer (non-temporal stores) and at an odd
            // offset, with the sums of what it wrote.
            let z = data(nr * w, 55);
            let a = ActCoef { mean: 0.1, scale: 1.3, beta: -0.05 };
            for offset in [0usize, 3] {
                let mut buf = vec![Aligned([0f32; 16]); (nr * w + offset).div_ceil(16) + 1];
                let base = unsafe { (buf.as_mut_ptr() as *mut f32).add(offset) };
                let sums = unsafe { stencil3x3_out(&ptrs, nr, w, &k, base, Some((z.as_ptr(), a))) };
                let got = unsafe { std::slice::from_raw_parts(base, nr * w) }.to_vec();
                let want_nb: Vec<f32> = want.iter().map(|v| v - 0.5).collect();
                close(&got, &want_nb, 1e-5, &format!("stencil out {nr}x{w} +{offset}"));
                let plain = unsafe { grad_sums(got.as_ptr(), 1.0, z.as_ptr(), nr * w, a) };
                for t in 0..2 {
                    assert!((sums[t] - plain[t]).abs() < 1e-4 * (1.0 + plain[t].abs()), "stencil out sums {t}: {} vs {}", sums[t], plain[t]);
                }
            }
            let g = data(nr * w, 99);
            let mut acc = [0f64; 10];
            unsafe { dw_grad(&ptrs, g.as_ptr(), w, nr, w, &mut acc) };
            let mut want = [0f64; 10];
            for i in 0..nr {
                for x in 0..w {
                    for dy in 0..3 {
                        for dx in 0..3 {
                            want[dy * 3 + dx] += f64::from(g[i * w + x] * at(&rows[i + dy], x as isize + dx as isize - 1));
                        }
                    }
                    want[9] += f64::from(g[i * w + x]);
                }
            }
            for t in 0..10 {
                assert!((acc[t] - want[t]).abs() < 1e-4 * (1.0 + want[t].abs()), "dw_grad {nr}x{w} [{t}]: {} vs {}", acc[t], want[t]);
            }
        }
    }

    /// The 1x1 weight gradient against a plain triple loop: column counts across the 48-wide
    /// blocks and the narrow path, pixel counts across the KC chunks, accumulation into `c`.
    #[test]
    fn gemm_nt_matches_loops() {
        if !available() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        for &(m, n, k) in &[(8usize, 3usize, 50usize), (16, 16, 7), (8, 64, 300), (24, 100, 129), (8, 1, 17), (16, 49, 1)] {
            let (lda, ldb) = (k + 3, k + 5);
            let a = data(m * lda, 1);
            let b = data(n * ldb, 2);
            let mut c = data(m * n, 3);
            let mut want: Vec<f64> = c.iter().map(|&v| f64::from(v)).collect();
            for o in 0..m {
                for j in 0..n {
                    for p in 0..k {
                        want[o * n + j] += f64::from(a[o * lda + p]) * f64::from(b[j * ldb + p]);
                    }
                }
            }
            let mut packed = vec![0f32; KC * NT_COLS];
            unsafe { gemm_nt(a.as_ptr(), lda, b.as_ptr(), ldb, (m, n, k), c.as_mut_ptr(), n, &mut packed) };
            let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            close(&c, &want, 1e-4, &format!("gemm_nt {m}x{n}x{k}"));
        }
    }

    /// The vectorised pool backward against the plain one, with ties (zeros after the ReLU and
    /// repeated values) and odd sizes; the sums against a plain loop.
    #[test]
    fn pool_adjoint_vector_matches_plain() {
        if !available() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        let a = ActCoef { mean: 0.1, scale: 1.5, beta: -0.2 };
        for &(h, w) in &[(2usize, 2usize), (5, 7), (4, 34), (9, 65), (1, 9)] {
            // Rounded to tenths: many equal values within windows.
            let z: Vec<f32> = data(h * w, 7).iter().map(|v| (v * 10.0).round() / 10.0).collect();
            let g = data((h / 2) * (w / 2), 8);
            let base = data(h * w, 9);
            let mut want = base.clone();
            pool_adjoint(&g, &z, h, w, a, &mut want);
            let mut got = base.clone();
            let sums = unsafe { pool_adjoint_sums(g.as_ptr(), z.as_ptr(), h, w, a, got.as_mut_ptr()) };
            assert_eq!(got, want, "{h}x{w}");
            let mut s = [0f64; 3];
            for (&d, &zv) in want.iter().zip(&z) {
                let xc = zv - a.mean;
                let pre = xc * a.scale + a.beta;
                let gp = if pre > 0.0 { d } else { 0.0 };
                s[0] += f64::from(gp);
                s[1] += f64::from(gp * xc);
                s[2] += f64::from(d * pre.max(0.0));
            }
            for t in 0..3 {
                assert!((sums[t] - s[t]).abs() < 1e-4 * (1.0 + s[t].abs()), "{h}x{w} sum {t}: {} vs {}", sums[t], s[t]);
            }
        }
    }

    /// The vectorised upsampling adjoint against the plain one: placements with padding,
    /// single-row and single-column sources, a dropout mask.
    #[test]
    fn up_adjoint_matches_plain() {
        if !available() {
            eprintln!("skipped: no AVX-512");
            return;
        }
        for &(sh, sw, top, left, extra_h, extra_w) in &[(1usize, 1usize, 0usize, 0usize, 0usize, 0usize), (2, 2, 0, 1, 1, 1), (3, 5, 1, 0, 2, 1), (17, 33, 0, 0, 1, 0), (8, 40, 1, 2, 3, 3)] {
            let (h, w) = (2 * sh + extra_h, 2 * sw + extra_w);
            let g = data(h * w, 21);
            let keep: Vec<f32> = data(sh * sw, 22).iter().map(|&v| if v > 0.0 { 2.0 } else { 0.0 }).collect();
            for k in [None, Some(keep.as_slice())] {
                let mut want = vec![0f32; sh * sw];
                up_adjoint_plain(&g, w, (sh, sw, top, left), k, &mut want);
                let mut got = vec![1f32; sh * sw];
                let t = UpAdjoint::new(sw);
                unsafe { up_adjoint(&g, w, (sh, sw, top, left), k, &mut got, &t, &mut Vec::new()) };
                close(&got, &want, 1e-5, &format!("up adjoint {sh}x{sw} at ({top}, {left})"));
            }
        }
    }
}
