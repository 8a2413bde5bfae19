//! Compiles kernels/ops.cu to PTX when the `cuda` feature is on (nvcc from scripts/cuda-env.sh or
//! $NVCC / $CUDA_HOME). CPU builds need nothing.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels/ops.cu");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = std::env::var("NVCC").ok().or_else(|| {
        std::env::var("CUDA_HOME").ok().map(|h| format!("{h}/bin/nvcc"))
    }).unwrap_or_else(|| "nvcc".into());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    println!("cargo::rerun-if-env-changed=NVCC");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    // PTX for compute_<cap>: the driver JIT-compiles it for the card it finds (same or newer).
    let status = std::process::Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{cap}"), "kernels/ops.cu", "-o"])
        .arg(out.join("ops.ptx"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{nvcc} failed on kernels/ops.cu ({s}); source scripts/cuda-env.sh first"),
        Err(e) => panic!("cannot run {nvcc} ({e}); build the cuda feature with scripts/cuda-build.sh"),
    }
}
