//! The CUDA kernels of kernels/ops.cu, run on the CPU: kernels/host/check.cpp compiles them as
//! C++ with a small shim (each block's threads are real threads, `__syncthreads` a barrier) and
//! compares the f32 kernels (grouped 3x3 conv and its weight gradient, bias + ReLU, bilinear
//! x2 upsampling and its adjoint, training BatchNorm forward and backward, per-channel sums, 2x2
//! max-pooling, the fused separable conv set) with plain loops, using the launch geometry of
//! src/model/ops/cuda.rs. This checks their indexing, reductions and edges on machines
//! without a GPU; the device check still times them and covers f16/bf16.

use std::path::Path;
use std::process::Command;

#[test]
fn cuda_kernels_compute_the_same_on_the_cpu() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    if Command::new(&cxx).arg("--version").output().is_err() {
        // scripts/setup.sh --test installs g++; without it this check cannot run.
        eprintln!("SKIP cuda_kernels_compute_the_same_on_the_cpu: no C++ compiler ({cxx}); run scripts/setup.sh --test");
        return;
    }
    let dir = std::env::temp_dir().join(format!("lightunet-kernel-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("check");
    let build = Command::new(&cxx)
        .args(["-std=c++20", "-O2", "-pthread", "-w"])
        .arg(root.join("kernels/host/check.cpp"))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(build.status.success(), "compiling kernels/host/check.cpp failed:\n{}", String::from_utf8_lossy(&build.stderr));
    let run = Command::new(&exe).output().unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.status.success(), "kernel check failed:\n{report}{}", String::from_utf8_lossy(&run.stderr));
    // Every family was checked, and nothing failed.
    for what in ["batch norm", "channel sums", "maxpool 2x2", "separable set fused", "grouped conv 3x3", "bias + ReLU", "upsample x2 backward", "upsample x2 [", "upsample x2 forward/backward adjoint"] {
        assert!(report.lines().any(|l| l.starts_with(what) && l.ends_with(" ok")), "no passing case for {what}:\n{report}");
    }
    assert!(!report.contains("FAIL"), "{report}");
}
