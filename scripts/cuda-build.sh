#!/usr/bin/env bash
# Builds (or checks) lightunet with the `cuda` feature on any machine, GPU or not.
#   scripts/cuda-build.sh [cargo subcommand and args]   default: build --release --features cuda
# Output goes to target/cuda so that CPU and CUDA builds keep separate caches. The first build
# compiles candle's CUDA kernels with nvcc: about 10 minutes on 2 cores; later ones take seconds.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=cuda-env.sh
source scripts/cuda-env.sh
[ $# -eq 0 ] && set -- build --release --features cuda
# The patch rewrites Cargo.lock's entry for candle-core: keep the committed lock file as it was.
cp Cargo.lock .cuda/Cargo.lock.saved 2>/dev/null || true
restore() { [ -f .cuda/Cargo.lock.saved ] && cp .cuda/Cargo.lock.saved Cargo.lock; }
trap restore EXIT
cargo "$1" --target-dir target/cuda \
  --config "patch.crates-io.candle-core.path=\"$LIGHTUNET_CUDA_PATCH\"" "${@:2}"
