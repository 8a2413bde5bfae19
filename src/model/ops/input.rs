//! The input of a conv set before it is one tensor: a map, a map still to max-pool (Down
//! blocks), or an Up block's skip connection and the map still to upsample, pad and concatenate.
//! The fused CPU path reads it from those parts; every other path materializes it first.

use candle_core::{Result, Tensor, D};

use super::maxpool::maxpool2x2;
use super::upsample::upsample2x;
use crate::model::profile::mark;

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
pub(crate) fn up_padding((sh, sw): (usize, usize), (uh, uw): (usize, usize)) -> (usize, usize, usize, usize) {
    let (dy, dx) = (sh.saturating_sub(uh), sw.saturating_sub(uw));
    (dy / 2, dy - dy / 2, dx / 2, dx - dx / 2)
}
