#!/usr/bin/env bash
# The live targets of issue 13 (every frame shown with the latest mask), on this machine's CPU:
# `lightunet bench pipeline --mode live` on the phantom at 1280x720, 30 fps, with the shipped
# Lighter U-net@1 weights into fakesink, for 300 frames and for a 60 s run (1800 frames), then the
# 300 frames again with a recording (--record) to show that it does not cost the display. Each
# run prints its table and its targets beside their bars; a summary of both cases follows.
#   scripts/bench-live.sh [extra bench pipeline options, e.g. --model-threads 1 --model-nice 0]
# A smoke check of the script itself (no numbers): BENCH_LIVE_FRAMES="60 90" BENCH_LIVE_MODEL_RUNS=4
# scripts/bench-live.sh (the frame counts of the two cases, the model-only runs).
# Run it on a quiet machine (no build, no training): the targets are about scheduling, and a
# shared machine measures the other programs. Reports (JSON) go to target/bench-live/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin lightunet
out=target/bench-live
mkdir -p "$out"
bin=target/release/lightunet
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
read -r -a cases <<<"${BENCH_LIVE_FRAMES:-300 1800}"
common=(--mode live --source phantom:1280x720@30 --sink fakesink --device cpu --model-runs "${BENCH_LIVE_MODEL_RUNS:-40}" --overwrite)
names=()
for frames in "${cases[@]}"; do
    echo "== $frames frames ($((frames / 30)) s) =="
    "$bin" bench pipeline "${common[@]}" --frames "$frames" --report "$out/live-$frames.json" "$@"
    names+=("live-$frames")
done
first=${cases[0]}
echo "== $first frames with a recording =="
"$bin" bench pipeline "${common[@]}" --frames "$first" --record "$out/recording.mkv" --report "$out/live-$first-record.json" "$@"
names+=("live-$first-record")
python3 - "$out" "${names[@]}" <<'PY'
import json, sys
out = sys.argv[1]
print("\nsummary (bars: issue 13):")
for name in sys.argv[2:]:
    r = json.load(open(f"{out}/{name}.json"))
    c = r["counters"]
    print(f"{name}: {c['frames_in']} captured, {c['frames_at_sink']} at the sink, {c['dropped']} dropped; "
          f"model alone {r['model_only']['fps']:.2f} frames/s, masks {r['masks']['refresh_fps']:.2f}/s")
    for t in r["targets"]:
        v = "-" if t["value"] is None else f"{t['value']:.3f}"
        verdict = {True: "PASS", False: "FAIL", None: ""}[t["pass"]]
        print(f"  {t['name']:<48} {v:>10}   bar {t['bar']:<30} {verdict}")
PY
