//! The CPU 1x1 convolution: `out[n, co, p] = relu?(b[co] + sum_ci w[co, ci] * x[n, ci, p])`.
//!
//! Lighter U-net@1 spends most of its arithmetic here. The `gemm` crate that candle uses runs
//! AVX2 kernels on stable Rust, about half of what this machine's AVX-512 units can do, so on
//! AVX-512 CPUs a register-blocked kernel of our own runs instead: 8 output channels x 48 pixels
//! of accumulators (24 zmm registers), the input block packed contiguously so that large
//! power-of-two row strides do not thrash the L1 cache, bias and ReLU fused into the stores.
//! Other CPUs (and output channel counts not divisible by 8) use `gemm` with the bias pre-filled.

use rayon::prelude::*;

/// Output channels per register block.
pub(crate) const MR: usize = 8;
/// Pixels per register block: three 16-float vectors.
pub(crate) const NR: usize = 48;
/// Input channels per packed chunk: keeps the packed block (KC x NR floats, 24 KiB) in L1.
pub(crate) const KC: usize = 128;
/// Pixels per parallel task.
const TASK_PX: usize = NR * 8;

/// Sizes of a 1x1 convolution: batch, input and output channels, pixels per image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub n: usize,
    pub ci: usize,
    pub co: usize,
    pub hw: usize,
}

pub(crate) fn pointwise_cpu(x: &[f32], w: &[f32], b: &[f32], d: Dims, relu: bool) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        if d.co.is_multiple_of(MR) {
            return avx512::pointwise(x, w, b, d, relu);
        }
        if d.co < MR {
            return avx512::narrow(x, w, b, d, relu);
        }
    }
    pointwise_gemm(x, w, b, d, relu)
}

/// Portable path: one `gemm` call per image into an output pre-filled with the bias.
pub(crate) fn pointwise_gemm(x: &[f32], w: &[f32], b: &[f32], d: Dims, relu: bool) -> Vec<f32> {
    let Dims { n, ci, co, hw } = d;
    let mut out = vec![0f32; n * co * hw];
    let threads = candle_core::utils::get_num_threads();
    for ni in 0..n {
        let dst = &mut out[ni * co * hw..(ni + 1) * co * hw];
        for (o, row) in dst.chunks_mut(hw).enumerate() {
            row.fill(b[o]);
        }
        let src = &x[ni * ci * hw..(ni + 1) * ci * hw];
        // SAFETY: dst is co x hw, w is co x ci, src is ci x hw, all row-major and in bounds.
        unsafe {
            gemm::gemm(
                co,
                hw,
                ci,
                dst.as_mut_ptr(),
                1,
                hw as isize,
                true,
                w.as_ptr(),
                1,
                ci as isize,
                src.as_ptr(),
                1,
                hw as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                if threads > 1 {
                    gemm::Parallelism::Rayon(threads)
                } else {
                    gemm::Parallelism::None
                },
            );
        }
        if relu {
            dst.par_chunks_mut(16384)
                .for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0)));
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::*;
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Mask of the first `n` lanes of a 16-float vector (all 16 for `n >= 16`).
    #[inline(always)]
    pub(crate) fn lanes(n: usize) -> __mmask16 {
        ((1u32 << n.min(16)) - 1) as __mmask16
    }

    /// A raw output pointer that tasks writing disjoint pixel ranges may share.
    #[derive(Clone, Copy)]
    pub(crate) struct OutPtr(pub(crate) *mut f32);
    unsafe impl Send for OutPtr {}
    unsafe impl Sync for OutPtr {}
    impl OutPtr {
        // A method (not `.0`) so closures capture the whole Send + Sync wrapper.
        pub(crate) fn get(self) -> *mut f32 {
            self.0
        }
    }

    pub(super) fn pointwise(x: &[f32], w: &[f32], b: &[f32], d: Dims, relu: bool) -> Vec<f32> {
        let Dims { n, ci, co, hw } = d;
        let tasks_per_image = hw.div_ceil(TASK_PX);
        let fill = |out: &mut [std::mem::MaybeUninit<f32>]| {
            let optr = OutPtr(out.as_mut_ptr() as *mut f32);
            (0..n * tasks_per_image).into_par_iter().for_each_init(
                || vec![0f32; KC * NR],
                |packed, t| {
                    let (ni, tp) = (t / tasks_per_image, t % tasks_per_image);
                    let p_end = ((tp + 1) * TASK_PX).min(hw);
                    let xs = &x[ni * ci * hw..(ni + 1) * ci * hw];
                    let mut p0 = tp * TASK_PX;
                    while p0 < p_end {
                        let cols = NR.min(p_end - p0);
                        // SAFETY: AVX-512F was detected; every pointer stays inside its slice (the
                        // tail block is masked), and tasks write disjoint pixel ranges of `out`.
                        unsafe {
                            let o = optr.get().add(ni * co * hw + p0);
                            let blk = Block { x: xs.as_ptr().add(p0), x_stride: hw, out: o, out_stride: hw };
                            block(blk, w, b, ci, 0..co / MR, cols, relu, packed);
                        }
                        p0 += NR;
                    }
                },
            );
        };
        // SAFETY: the first input-channel chunk stores every pixel of every output channel
        // (co is a multiple of MR, the tasks cover all pixels, tail lanes are masked).
        unsafe { crate::model::ops::common::filled_f32(n * co * hw, fill) }
    }

    /// Few output channels (the network's last 1x1 has one): per output channel, 64 pixels of
    /// accumulators over all input channels. `gemm` spends more time packing than computing here.
    pub(super) fn narrow(x: &[f32], w: &[f32], b: &[f32], d: Dims, relu: bool) -> Vec<f32> {
        let Dims { n, ci, co, hw } = d;
        const CHUNK: usize = 4096;
        let chunks = hw.div_ceil(CHUNK);
        let mut out = vec![0f32; n * co * hw];
        let optr = OutPtr(out.as_mut_ptr());
        (0..n * chunks).into_par_iter().for_each(|t| {
            let (ni, k) = (t / chunks, t % chunks);
            let (p_lo, p_hi) = (k * CHUNK, ((k + 1) * CHUNK).min(hw));
            // SAFETY: AVX-512F was detected; loads and stores stay within image `ni`'s planes
            // (the tail is masked); tasks write disjoint pixel ranges.
            unsafe {
                let (x, out) = (x.as_ptr().add(ni * ci * hw), optr.get().add(ni * co * hw));
                narrow_chunk(Block { x, x_stride: hw, out, out_stride: hw }, w, b, ci, p_lo, p_hi, relu)
            }
        });
        out
    }

    /// Pixels `p_lo..p_hi` of a 1x1 with few output channels (`b.len()`), `at` pointing at pixel 0.
    ///
    /// # Safety
    /// AVX-512F; `at.x` readable for `ci` channels and `at.out` writable for `b.len()` channels
    /// over those pixels.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn narrow_chunk(at: Block, w: &[f32], b: &[f32], ci: usize, p_lo: usize, p_hi: usize, relu: bool) {
        let (x, out) = (at.x, at.out);
        let zero = _mm512_setzero_ps();
        for (o, &bias) in b.iter().enumerate() {
            let mut p = p_lo;
            while p < p_hi {
                let m: [__mmask16; 4] = std::array::from_fn(|j| lanes((p_hi - p).saturating_sub(16 * j)));
                let mut acc = [_mm512_set1_ps(bias); 4];
                for c in 0..ci {
                    let wv = _mm512_set1_ps(w[o * ci + c]);
                    let row = x.add(c * at.x_stride + p);
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m[j], row.add(16 * j)), *a);
                    }
                }
                for (j, a) in acc.iter().enumerate() {
                    let v = if relu { _mm512_max_ps(*a, zero) } else { *a };
                    _mm512_mask_storeu_ps(out.add(o * at.out_stride + p + 16 * j), m[j], v);
                }
                p += 64;
            }
        }
    }

    /// Where one block of pixels lives: `x` points at the block's first pixel of input channel
    /// 0, channels `x_stride` floats apart; `out` likewise for output channel 0.
    #[derive(Clone, Copy)]
    pub(crate) struct Block {
        pub x: *const f32,
        pub x_stride: usize,
        pub out: *mut f32,
        pub out_stride: usize,
    }

    /// `out[o][p] = relu?(b[o] + sum_c w[o][c] x[c][p])` for `cols <= NR` pixels and the output
    /// channels of register blocks `cbs` (`MR` channels each). `w` is `[co][ci]` row-major:
    /// the eight weights broadcast per input channel come from eight rows, each read in order,
    /// so no weight packing is needed.
    ///
    /// # Safety
    /// AVX-512F must be available; `x` must be readable for `ci` channels of `cols` pixels and
    /// `out` writable for the blocks' channels; `packed` holds at least `KC * NR` floats.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn block(
        at: Block,
        w: &[f32],
        b: &[f32],
        ci: usize,
        cbs: Range<usize>,
        cols: usize,
        relu: bool,
        packed: &mut [f32],
    ) {
        // Lane masks for the three vectors of a (possibly short) block of `cols` pixels.
        let (m0, m1, m2) = (lanes(cols), lanes(cols.saturating_sub(16)), lanes(cols.saturating_sub(32)));
        let zero = _mm512_setzero_ps();
        let mut k0 = 0;
        while k0 < ci {
            let kc = KC.min(ci - k0);
            // Pack x[k0..k0+kc][0..cols] contiguously, zero past `cols`: large power-of-two
            // channel strides would otherwise alias in the L1 cache.
            for c in 0..kc {
                let src = at.x.add((k0 + c) * at.x_stride);
                let dst = packed.as_mut_ptr().add(c * NR);
                _mm512_storeu_ps(dst, _mm512_maskz_loadu_ps(m0, src));
                _mm512_storeu_ps(dst.add(16), _mm512_maskz_loadu_ps(m1, src.add(16)));
                _mm512_storeu_ps(dst.add(32), _mm512_maskz_loadu_ps(m2, src.add(32)));
            }
            let first = k0 == 0;
            let last = k0 + kc == ci;
            for cb in cbs.clone() {
                let mut acc = [[zero; 3]; MR];
                for (r, a) in acc.iter_mut().enumerate() {
                    let row = at.out.add((cb * MR + r) * at.out_stride);
                    *a = if first {
                        let bias = _mm512_set1_ps(b[cb * MR + r]);
                        [bias; 3]
                    } else {
                        [
                            _mm512_maskz_loadu_ps(m0, row),
                            _mm512_maskz_loadu_ps(m1, row.add(16)),
                            _mm512_maskz_loadu_ps(m2, row.add(32)),
                        ]
                    };
                }
                let wblk = w.as_ptr().add(cb * MR * ci + k0);
                for c in 0..kc {
                    let xr = packed.as_ptr().add(c * NR);
                    let x0 = _mm512_loadu_ps(xr);
                    let x1 = _mm512_loadu_ps(xr.add(16));
                    let x2 = _mm512_loadu_ps(xr.add(32));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let wv = _mm512_set1_ps(*wblk.add(r * ci + c));
                        a[0] = _mm512_fmadd_ps(wv, x0, a[0]);
                        a[1] = _mm512_fmadd_ps(wv, x1, a[1]);
                        a[2] = _mm512_fmadd_ps(wv, x2, a[2]);
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let row = at.out.add((cb * MR + r) * at.out_stride);
                    let v = if last && relu {
                        [
                            _mm512_max_ps(a[0], zero),
                            _mm512_max_ps(a[1], zero),
                            _mm512_max_ps(a[2], zero),
                        ]
                    } else {
                        *a
                    };
                    _mm512_mask_storeu_ps(row, m0, v[0]);
                    _mm512_mask_storeu_ps(row.add(16), m1, v[1]);
                    _mm512_mask_storeu_ps(row.add(32), m2, v[2]);
                }
            }
            k0 += kc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], b: &[f32], d: Dims, relu: bool) -> Vec<f32> {
        let Dims { n, ci, co, hw } = d;
        let mut out = vec![0f32; n * co * hw];
        for ni in 0..n {
            for o in 0..co {
                for p in 0..hw {
                    let mut s = b[o] as f64;
                    for c in 0..ci {
                        s += w[o * ci + c] as f64 * x[(ni * ci + c) * hw + p] as f64;
                    }
                    out[(ni * co + o) * hw + p] = if relu { s.max(0.0) as f32 } else { s as f32 };
                }
            }
        }
        out
    }

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

    #[test]
    fn matches_reference_on_awkward_shapes() {
        // Pixel counts with a tail block, channel counts across the KC chunk boundary, batch 2.
        for &(n, ci, co, hw, relu) in &[
            (1, 3, 64, 100, true),
            (2, 130, 16, 77, true),
            (1, 256, 8, 48 * 9 + 5, false),
            (1, 64, 1, 50, false),
            (2, 64, 1, 4096 + 70, true),
            (1, 9, 3, 200, false),
            (2, 5, 12, 33, true),
        ] {
            let x = data(n * ci * hw, 1);
            let w = data(co * ci, 2);
            let b = data(co, 3);
            let d = Dims { n, ci, co, hw };
            let want = reference(&x, &w, &b, d, relu);
            for got in [
                pointwise_cpu(&x, &w, &b, d, relu),
                pointwise_gemm(&x, &w, &b, d, relu),
            ] {
                let d = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(d < 1e-3, "n={n} ci={ci} co={co} hw={hw}: {d}");
            }
        }
    }
}
