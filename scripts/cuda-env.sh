# Source this file (bash) to get a CUDA 13.0 toolchain for building lightunet's `cuda` feature on a
# machine without a GPU or a CUDA install. It:
#   1. installs nvcc 13.0 from PyPI into .cuda/venv (the GPU machines' driver is CUDA 13.0: a newer
#      nvcc emits PTX they cannot load);
#   2. makes a copy of candle-core 0.11.1 in .cuda/candle-core whose `cuda` feature asks cudarc for
#      `dynamic-loading` instead of `dynamic-linking`, so the binary dlopens libcuda/libcublas at run
#      time and links without them (CPU builds never see this copy: it is only passed as a
#      `--config patch` by scripts/cuda-build.sh);
#   3. offers the static CUDA runtime as libcudart.a to candle-kernels' `-lcudart`.
# Everything lands in .cuda/ (ignored by git) and is reused on the next run.
_lu_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$_lu_root/.cuda"
# Physical path: RUSTFLAGS and the patch path are part of cargo's cache key.
_lu_cuda="$(cd "$_lu_root/.cuda" && pwd -P)"
if [ ! -x "$_lu_cuda/venv/bin/python" ]; then
  python3 -m venv "$_lu_cuda/venv" || return 1
fi
_lu_site="$("$_lu_cuda/venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')"
if [ ! -x "$_lu_site/nvidia/cu13/bin/nvcc" ]; then
  "$_lu_cuda/venv/bin/pip" install -q nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 || return 1
fi
export CUDA_HOME="$_lu_site/nvidia/cu13" CUDA_PATH="$_lu_site/nvidia/cu13" CUDA_ROOT="$_lu_site/nvidia/cu13"
export NVCC="$CUDA_HOME/bin/nvcc" PATH="$CUDA_HOME/bin:$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-2}"
# nvcc's own libraries (libnvvm, ptxas helpers) live beside it.
export LD_LIBRARY_PATH="$CUDA_HOME/lib:$CUDA_HOME/nvvm/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

_lu_reg="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-core-0.11.1 2>/dev/null | head -1)"
if [ ! -f "$_lu_cuda/candle-core/Cargo.toml" ]; then
  if [ -z "$_lu_reg" ]; then (cd "$_lu_root" && cargo fetch -q) || return 1
    _lu_reg="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-core-0.11.1 | head -1)"; fi
  cp -r "$_lu_reg" "$_lu_cuda/candle-core.tmp" && chmod -R u+w "$_lu_cuda/candle-core.tmp"
  grep -q '"dynamic-linking"' "$_lu_cuda/candle-core.tmp/Cargo.toml" || { echo "cuda-env: candle-core layout changed" >&2; return 1; }
  sed -i 's/"dynamic-linking"/"dynamic-loading"/' "$_lu_cuda/candle-core.tmp/Cargo.toml"
  rm -f "$_lu_cuda/candle-core.tmp/.cargo-ok" "$_lu_cuda/candle-core.tmp/.cargo_vcs_info.json"
  mv "$_lu_cuda/candle-core.tmp" "$_lu_cuda/candle-core"
fi
mkdir -p "$_lu_cuda/cudart-static"
ln -sf "$CUDA_HOME/lib/libcudart_static.a" "$_lu_cuda/cudart-static/libcudart.a"
export LIGHTUNET_CUDA_PATCH="$_lu_cuda/candle-core"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$_lu_cuda/cudart-static"
unset _lu_site _lu_reg
