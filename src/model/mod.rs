//! The Light U-net family (SPEC.md): U-net, Light U-net and Lighter U-net@C in candle, for
//! training and for inference.
//!
//! What each file owns:
//! - `variant`: the members of the family ([`Variant`]) and what distinguishes them (the kind
//!   of each conv set).
//! - `arch`: the architecture as data: blocks with their PyTorch names, levels and widths, the
//!   final 1x1. The state-dict keys and shapes ([`expected_shapes`], [`check_weights`]), variant
//!   detection from a checkpoint's shapes ([`detect_variant`]), parameter and GFLOP counts all
//!   derive from it, and so does [`UNet::new`].
//! - `layers`: the layers with weights (convolution parameters, the separable conv set, a conv set
//!   of either kind, BatchNorm), their training forward, and BatchNorm folding.
//! - `unet`: the trainable network [`UNet`] and its blocks ([`DoubleConv`], [`Down`], [`Up`]):
//!   one struct per PyTorch module, weights looked up only through `vb.pp(..)` paths that spell
//!   the PyTorch keys (`inc.double_conv.0.conv.1.weight`), so original checkpoints load without
//!   a renaming table. [`UNet::forward_t`] runs the training graph (batch statistics, dropout,
//!   candle autograd) or the eval graph.
//! - `inference`: [`InferenceNet`], the folded network with a plan: [`UNet::fold`] (or
//!   [`InferenceNet::load`]) folds BatchNorm into the convolutions and chooses each block's
//!   kernels once ([`BlockPath`], [`InferenceNet::describe`]).
//! - `train_fused`: the training step of a network whose conv sets are all depthwise separable
//!   (Lighter U-net@1) as one op on AVX-512 CPUs, which [`UNet::logits_t_with`] takes where it
//!   runs: the forward and backward of every block band by band in cache, one map stored per
//!   conv set, three autograd nodes instead of a few hundred.
//! - `capabilities`: [`Capabilities`], the CPU features and `LIGHTUNET_CUDA_*` /
//!   `LIGHTUNET_CPU_TRAIN` switches, read once; the only place the model reads the environment.
//! - [`ops`]: the custom ops (kernels), one file per op family; [`profile`]: per-op timing marks
//!   (`lightunet bench model --profile`); [`parity`]: the PyTorch parity fixtures and gradient
//!   checks on any device.
//!
//! How a tensor goes through an inference plan ([`InferenceNet::forward`]): the input is checked
//! and cast; `inc` runs on it; each Down block runs on `ConvInput::Pool(x)`, each Up block on
//! `ConvInput::Up { skip, x }` (the map still in parts, see [`ops::ConvInput`]), and the last Up
//! block takes the final 1x1 as its head. Each block follows the path planned for it: on an
//! AVX-512 CPU with depthwise separable sets, one fused pass over both sets that pools or
//! upsamples its input on the fly and keeps the middle map in cache; otherwise each conv set on
//! its own (fused on the CPU, one CUDA kernel, or layer by layer, the input first made one
//! tensor). Where a fused op declines a call (a map too small to split), the block takes the
//! next path down for that call. A sigmoid ends it.

pub mod arch;
mod capabilities;
mod inference;
mod layers;
pub mod ops;
pub mod parity;
pub mod profile;
#[cfg(target_arch = "x86_64")]
mod train_fused;
mod unet;
mod variant;

pub use arch::{
    check_input, check_weights, detect_variant, expected_shapes, gflops, is_buffer, parameter_count, Arch, MAX_INPUT_SIDE,
    MAX_PASS_PIXELS, MIN_INPUT_SIDE,
};
pub use capabilities::Capabilities;
pub use inference::{BlockPath, InferenceBlock, InferenceNet, SetPath};
pub use layers::{BatchNorm, ConvParams, ConvSet, SeparableConv};
pub use unet::{Dropout, DoubleConv, Down, Up, UNet, DROPOUT_P};
pub use variant::{channels_per_group, ConvSetKind, Variant};
