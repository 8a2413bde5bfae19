#!/usr/bin/env bash
# The main job on a built-in input: generate a synthetic B-mode clip with a moving lesion (the
# phantom), segment every frame with Lighter U-net@1 and write the annotated video, per-frame
# metadata and a latency report to out/demo/. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
mkdir -p out/demo
./target/release/lightunet process phantom:640x480 --frames 100 --overwrite \
  -o out/demo/annotated.mp4 --masks out/demo/masks.mp4 \
  --metadata out/demo/frames.jsonl --report out/demo/latency.json "$@"
echo "demo: wrote out/demo/annotated.mp4, masks.mp4, frames.jsonl, latency.json"
