//! Lists pipelines/*.toml for the binary to embed (src/assets/pipelines.rs), and compiles
//! kernels/ops.cu to PTX when the `cuda` feature is on (nvcc from scripts/cuda-env.sh or $NVCC /
//! $CUDA_HOME). CPU builds need nothing else.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels/ops.cu");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    embed_pipelines(&out);
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
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

/// `$OUT_DIR/embedded_pipelines.rs`: `static EMBEDDED: &[(&str, &str)]`, (name, text) of every
/// pipelines/*.toml sorted by name, each through `include_str!` so that an edited file rebuilds.
/// A new or removed file reruns this script (cargo watches the folder).
fn embed_pipelines(out: &Path) {
    println!("cargo::rerun-if-changed=pipelines");
    let dir = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("pipelines");
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())).path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or_else(|| panic!("{}: not a UTF-8 name", p.display()));
            (name.to_string(), p.clone())
        })
        .collect();
    files.sort();
    let mut code = String::from("static EMBEDDED: &[(&str, &str)] = &[\n");
    for (name, path) in &files {
        let path = path.to_str().unwrap_or_else(|| panic!("{}: not a UTF-8 path", path.display()));
        code.push_str(&format!("    ({name:?}, include_str!({path:?})),\n"));
    }
    code.push_str("];\n");
    std::fs::write(out.join("embedded_pipelines.rs"), code).unwrap_or_else(|e| panic!("writing embedded_pipelines.rs: {e}"));
}
