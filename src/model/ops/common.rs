//! What several kernels share, and nothing else: buffers allocated without a zero fill, the f32
//! view of a CPU storage, the geometry of a grouped convolution, and the taps of the 2x
//! align-corners upsampling (which the fused separable path computes too). A leaf: it imports no
//! other op module, so every kernel file can import it.

use std::mem::MaybeUninit;

use candle_core::{backend::BackendStorage, CpuStorage, Layout, Result};

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
