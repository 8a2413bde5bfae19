//! Custom operations the Light U-net family needs and candle does not do fast (or at all), one
//! file per op family:
//!
//! - `grouped_conv`: [`grouped_conv3x3`], a grouped/depthwise 3x3 convolution with bias, forward
//!   and backward (candle runs a grouped convolution as one convolution per group plus a
//!   concat); [`conv3x3_bias_act`], a regular 3x3 convolution with bias and ReLU for inference.
//! - `pointwise`: [`pointwise`], the 1x1 convolution of inference with bias and an optional fused
//!   ReLU, as one GEMM per image (`pointwise_cpu` holds the AVX-512 kernel), and [`bias_act`];
//!   `pointwise_train`, the 1x1 of the training graph with its backward.
//! - `upsample`: [`upsample2x`], bilinear x2 with align_corners=True, with the backward pass candle
//!   lacks.
//! - `maxpool`: [`maxpool2x2`] for inference and training (candle's backward is wrong).
//! - `batchnorm`: BatchNorm in training mode (bias, batch statistics, ReLU) as one op.
//! - `input`: [`ConvInput`], a conv set's input still in parts (a map to pool, a skip connection
//!   and a map to upsample).
//! - `separable`: a whole separable conv set (or both sets of a DoubleConv) as one fused pass: on
//!   AVX-512 CPUs ([`separable_fused`], [`double_separable_fused`]; kernels in `separable_cpu`),
//!   or as one CUDA kernel ([`separable_cuda`]).
//! - `train_cpu`: the AVX-512 kernels of the fused CPU training step (`model::train_fused`):
//!   activations recomputed from a stored map, the depthwise 3x3 and its adjoint over bands,
//!   weight gradients, BatchNorm's backward per row, the pooling and upsampling adjoints.
//! - `cuda` (feature `cuda`): the launchers of the CUDA kernels in `kernels/ops.cu`.
//! - `common`: what several kernels share (uninitialised buffers, CPU storage views, conv
//!   geometry, upsampling taps). A leaf: no op module imports another through this facade.
//!
//! All take contiguous NCHW tensors (they make them contiguous if needed). CPU code runs on rayon.
//! Which op runs for which block of the network is decided by the inference plan
//! (`model::inference`) and, for training, by `model::Capabilities`.

pub mod batchnorm;
mod common;
#[cfg(feature = "cuda")]
mod cuda;
mod grouped_conv;
mod input;
pub mod maxpool;
mod pointwise;
mod pointwise_cpu;
pub mod pointwise_train;
mod separable;
#[cfg(target_arch = "x86_64")]
mod separable_cpu;
#[cfg(target_arch = "x86_64")]
pub(crate) mod train_cpu;
mod upsample;

pub use grouped_conv::{conv3x3_bias_act, grouped_conv3x3, WIDE_GROUP};
pub use input::ConvInput;
pub(crate) use input::up_padding;
pub use pointwise::{bias_act, pointwise};
pub use separable::{double_separable_fused, separable_cuda, separable_fused, SeparableWeights};
pub use upsample::upsample2x;
pub use maxpool::maxpool2x2;
