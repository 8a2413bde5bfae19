#!/usr/bin/env bash
# The element's speed target: `lightunet` in every-frame mode through gst-launch-1.0 against
# `lightunet process`, the same clip to the same kind of output (MP4, x264 veryfast, no B-frames,
# as `process` writes it: I420, High profile, index first), the two alternated round by round so that the ratio survives the load
# of a shared machine. Wall time of each whole command (start, model load, every frame, file
# finalised). Target: element / process <= 1.0.
#   scripts/bench-element.sh [clip] [rounds]
# Default clip: ../shared/data/video/sonosite-anon-eye1-video.mp4 (960x720, 100 frames); 3 rounds.
# Both run on the CPU with the shipped weights and the whole frame as ROI. The element's line has
# a `queue` right before and after it, as pipelines/README.md writes it: decoding with the colour
# conversion into the element's format, and conversion with encoding, then run on their own
# threads beside the model (`process` has its own threads for that). With the queue before
# `videoconvert` instead, the conversion ran in the model's thread and the line took 1.27-1.31x
# `process`'s time (measured 2026-11-30). `process` runs its default batch of
# 4 frames per model call; the element, a filter, runs one frame at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
clip=${1:-../shared/data/video/sonosite-anon-eye1-video.mp4}
rounds=${2:-3}
[ -f "$clip" ] || { echo "bench-element: no clip $clip" >&2; exit 1; }
cargo build --release --workspace
export GST_PLUGIN_PATH=$PWD/target/release
weights=pretrained_models/lighter_at1_busi.safetensors
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gst-inspect-1.0 lightunet >/dev/null || { echo "bench-element: GStreamer does not find the element in $GST_PLUGIN_PATH" >&2; exit 1; }

now() { date +%s.%N; }
cli=(); element=()
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ); clip $clip"
for r in $(seq "$rounds"); do
    t=$(now)
    target/release/lightunet process "$clip" -o "$out/process.mp4" --overwrite --weights "$weights" --device cpu 2>"$out/process.log"
    cli+=("$(python3 -c "print($(now) - $t)")")
    t=$(now)
    gst-launch-1.0 -q filesrc location="$clip" ! decodebin ! videoconvert ! queue \
        ! lightunet weights="$weights" device=cpu ! queue ! videoconvert \
        ! video/x-raw,format=I420 ! x264enc speed-preset=veryfast bframes=0 ! video/x-h264,profile=high ! h264parse \
        ! mp4mux faststart=true faststart-file="$out/element.mp4.faststart" ! filesink location="$out/element.mp4" >"$out/element.log"
    element+=("$(python3 -c "print($(now) - $t)")")
    echo "round $r: process ${cli[-1]:0:6} s, element ${element[-1]:0:6} s"
done
# Both outputs must hold every frame, or the times compare different work.
count() { gst-launch-1.0 filesrc location="$1" ! qtdemux ! h264parse ! avdec_h264 ! fakesink sync=false silent=false -v 2>/dev/null | grep -c "fakesink0: last-message = chain" || true; }
echo "frames: process $(count "$out/process.mp4"), element $(count "$out/element.mp4")"
python3 - "${cli[*]}" "${element[*]}" <<'PY'
import sys, statistics as st
a = [float(v) for v in sys.argv[1].split()]
b = [float(v) for v in sys.argv[2].split()]
ratios = [y / x for x, y in zip(a, b)]
print("element / process per round: " + " ".join(f"{r:.3f}" for r in ratios)
      + f"; median {st.median(ratios):.3f} (target <= 1.0)")
PY
