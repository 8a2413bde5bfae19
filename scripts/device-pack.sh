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
cp scripts/torch_train_step.py .device/
# Training data for the GPU run, if given: a copy made by `lightunet train --data DIR
# --write-resized COPY` (the loader's own resize, so it trains exactly like DIR; about 27 MB for
# BUSI train+val). A copy resized by another tool would train on different pixels: the first
# shipped weights were trained on a PIL-resized copy (PIL filters when it shrinks; the loader,
# like predict/process/live and the original's cv2.resize, does not).
if [ -n "${TRAIN_DATA:-}" ]; then rm -rf .device/train-data; cp -r "$TRAIN_DATA" .device/train-data; fi
# A run to continue there (RESUME_RUN: a run folder with checkpoint.safetensors, or with the
# checkpoint.part-* files a device run brought back), if given.
rm -rf .device/resume
if [ -n "${RESUME_RUN:-}" ]; then
  mkdir -p .device/resume && cp "$RESUME_RUN"/*.json* "$RESUME_RUN"/*.safetensors .device/resume/ 2>/dev/null || true
  ls "$RESUME_RUN"/checkpoint.part-* >/dev/null 2>&1 && cat "$RESUME_RUN"/checkpoint.part-* > .device/resume/checkpoint.safetensors
fi
# Training runs side by side there (device-check.sh step `runs`): RUNS, a file of `NAME flags`
# lines (see scripts/device-runs.sh), and RESUME_RUNS, the `runs/` folder an earlier call brought
# back, to continue those runs.
cp scripts/device-runs.sh .device/
rm -rf .device/runs.txt .device/resume-runs
if [ -n "${RUNS:-}" ]; then cp "$RUNS" .device/runs.txt; fi
if [ -n "${RESUME_RUNS:-}" ]; then cp -r "$RESUME_RUNS" .device/resume-runs; fi
# GStreamer for `bench pipeline` there: the libraries the binary and a few plugins link against
# (system libraries excluded), and the plugins a videotestsrc -> appsink / appsrc -> fakesink
# benchmark uses.
rm -rf .device/gst && mkdir -p .device/gst/lib .device/gst/plugins
plugdir=/usr/lib/x86_64-linux-gnu/gstreamer-1.0
for p in coreelements app videoconvertscale videotestsrc videobox videorate; do
  cp "$plugdir/libgst$p.so" .device/gst/plugins/
done
for f in target/cuda/release/lightunet .device/gst/plugins/*.so; do
  ldd "$f" | awk '$3 ~ /^\// {print $3}'
done | sort -u | grep -vE '/(libc|libm|libgcc_s|libstdc\+\+|libpthread|libdl|librt)\.so' | xargs -r -I{} cp -L {} .device/gst/lib/
du -sh .device
