#!/usr/bin/env bash
# On the build machine: builds the CUDA release binary and packs what scripts/device-check.sh
# needs into .device/ (ignored by git; carried to the GPU machine).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"; cd "$root"
scripts/cuda-build.sh build --release --features cuda
mkdir -p .device
strip -o .device/lightunet.stripped target/cuda/release/lightunet
xz -T2 -6 -c .device/lightunet.stripped > .device/lightunet.xz && rm .device/lightunet.stripped
shared="${SHARED:-$root/../shared}"
cp "$shared/gpu/find-cuda-libs.sh" .device/
cp "$shared/anchors/refnet.py" "$shared/anchors/bench_gpu.py" .device/ 2>/dev/null || true
du -sh .device
