//! What this machine and this process let the model run: CPU features and the `LIGHTUNET_CUDA_*`
//! and `LIGHTUNET_CPU_TRAIN` switches, read once by [`Capabilities::detect`]. The inference plan (`model::inference`)
//! consults it when it chooses each block's kernels, the training graph's ops when they choose
//! between our own op and a candle composition; nothing else reads the environment.

use std::sync::OnceLock;

use candle_core::{DType, Tensor};

/// The capabilities the model's kernel choices depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The CPU has AVX-512F: the fused separable conv sets run (the kernels check it again
    /// before they execute an AVX-512 instruction).
    pub avx512: bool,
    /// Folded separable conv sets run as one CUDA kernel: built with `cuda` and
    /// `LIGHTUNET_CUDA_FUSED=1` (opt-in until a GPU run has checked and timed it).
    pub cuda_fused: bool,
    /// The training graph's ops of our own (BatchNorm with bias and ReLU, 2x2 max-pooling,
    /// per-channel sums) run on CUDA: built with `cuda`, unless `LIGHTUNET_CUDA_TRAIN_OPS=graph`
    /// asks for the candle-op compositions instead (to time both in one run, and as a way around
    /// a kernel fault).
    pub cuda_train_ops: bool,
    /// A training step of Lighter U-net@1 runs as one fused op on the CPU (`model::train_fused`,
    /// AVX-512), unless `LIGHTUNET_CPU_TRAIN=graph` asks for the op-by-op graph (to time both
    /// in one run, and as a way around a fault).
    pub cpu_train_fused: bool,
}

impl Capabilities {
    /// This machine's and this process's capabilities, read on the first call and the same for
    /// the rest of the process.
    pub fn detect() -> Capabilities {
        static CAPS: OnceLock<Capabilities> = OnceLock::new();
        *CAPS.get_or_init(|| {
            let env_is = |name: &str, value: &str| std::env::var(name).is_ok_and(|v| v == value);
            Capabilities {
                avx512: avx512(),
                cuda_fused: cfg!(feature = "cuda") && env_is("LIGHTUNET_CUDA_FUSED", "1"),
                cuda_train_ops: cfg!(feature = "cuda") && !env_is("LIGHTUNET_CUDA_TRAIN_OPS", "graph"),
                cpu_train_fused: !env_is("LIGHTUNET_CPU_TRAIN", "graph"),
            }
        })
    }

    /// Whether the training graph's ops of our own run for `t`: f32 on the CPU, and on CUDA when
    /// [`Capabilities::cuda_train_ops`]. Other devices and dtypes use the candle compositions.
    pub fn own_train_ops(&self, t: &Tensor) -> bool {
        if t.dtype() != DType::F32 {
            return false;
        }
        let device = t.device();
        device.is_cpu() || (device.is_cuda() && self.cuda_train_ops)
    }
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx512() -> bool {
    false
}
