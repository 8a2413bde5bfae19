#!/usr/bin/env bash
# The CPU speed table: `lightunet bench model` for each variant, Lighter@1 alternated with ONNX
# Runtime (../shared/anchors/bench_ort.py, the same weights exported by the anchors) in the same
# run, so that the ratio survives the load of a shared machine. Needs a release build and, for
# the ONNX Runtime column, `pip install onnxruntime numpy` and ../shared/anchors.
#   scripts/bench-cpu.sh [rounds]          (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=target/release/lightunet
[ -x "$bin" ] || cargo build --release
ort=../shared/anchors/bench_ort.py
have_ort=0
if [ -f "$ort" ] && python3 -c "import onnxruntime" 2>/dev/null; then have_ort=1; fi

median() { "$bin" bench model --model "$1" --runs "$2" --json | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["median_ms_frame"],1))'; }

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
ours=(); theirs=()
for r in $(seq "$rounds"); do
    ours+=("$(median lighter@1 30)")
    if [ $have_ort = 1 ]; then
        theirs+=("$(python3 "$ort" --runs 30 | grep -o '[0-9.]* ms/frame' | cut -d' ' -f1)")
    fi
done
echo "lighter@1: lightunet ${ours[*]} ms"
if [ $have_ort = 1 ]; then
    echo "lighter@1: onnxruntime ${theirs[*]} ms"
    python3 - "${ours[*]}" "${theirs[*]}" <<'EOF'
import sys, statistics as st
a = [float(v) for v in sys.argv[1].split()]
b = [float(v) for v in sys.argv[2].split()]
ratios = [x / y for x, y in zip(a, b)]
print("lighter@1: ratio per round " + " ".join(f"{r:.2f}" for r in ratios) + f", median {st.median(ratios):.2f}")
EOF
else
    echo "(ONNX Runtime or ../shared/anchors missing: no anchor column)"
fi
for v in light lighter@128 unet; do
    echo "$v: lightunet $(median "$v" 10) ms"
done
