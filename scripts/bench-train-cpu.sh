#!/usr/bin/env bash
# The CPU training-step table: one `lightunet bench train` step (Lighter U-net@1, batch 8,
# 256x256, Adam, dice loss) alternated with the same step in PyTorch
# (scripts/torch_train_step.py, the network from ../shared/anchors/refnet.py) in the same run, so
# that the ratio survives the load of a shared machine; both on the machine's cores (2 threads
# here). Needs a release build, a Python with PyTorch ($PYTHON, default python3) and
# ../shared/anchors. GRAPH=1 also times the op-by-op graph (LIGHTUNET_CPU_TRAIN=graph) each round.
#   scripts/bench-train-cpu.sh [rounds] [steps]     (defaults 3 rounds, 5 timed steps per side)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
steps=${2:-5}
bin=target/release/lightunet
[ -x "$bin" ] || cargo build --release
py=${PYTHON:-python3}
anchors=../shared/anchors
if [ ! -f "$anchors/refnet.py" ] || ! "$py" -c "import torch" 2>/dev/null; then
    echo "needs $anchors/refnet.py and a Python with PyTorch (set PYTHON)" >&2
    exit 1
fi

ours() { "$bin" bench train --steps "$steps" --warmup 1 --json | "$py" -c 'import json,sys; print(round(json.load(sys.stdin)["median_s_step"] * 1000, 1))'; }
graph() { LIGHTUNET_CPU_TRAIN=graph ours; }
torch_ms() { PYTHONPATH="$anchors" "$py" scripts/torch_train_step.py cpu "$steps" 2 | grep -o '[0-9.]* ms' | cut -d' ' -f1; }

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
a=(); b=(); g=()
for r in $(seq "$rounds"); do
    a+=("$(ours)")
    b+=("$(torch_ms)")
    if [ "${GRAPH:-0}" = 1 ]; then g+=("$(graph)"); fi
    echo "round $r: lightunet ${a[-1]} ms, pytorch ${b[-1]} ms${g:+, op-by-op graph ${g[-1]} ms} (load $(cut -d' ' -f1 /proc/loadavg))"
done
"$py" - "${a[*]}" "${b[*]}" "${g[*]:-}" <<'PY'
import sys, statistics as st
a = [float(v) for v in sys.argv[1].split()]
b = [float(v) for v in sys.argv[2].split()]
r = [x / y for x, y in zip(a, b)]
print(f"lighter@1 train step: lightunet median {st.median(a):.0f} ms, pytorch median {st.median(b):.0f} ms")
print("ratio lightunet / pytorch per round: " + " ".join(f"{v:.3f}" for v in r) + f", median {st.median(r):.3f}")
if sys.argv[3].strip():
    g = [float(v) for v in sys.argv[3].split()]
    print(f"op-by-op graph: median {st.median(g):.0f} ms, fused / graph {st.median(a) / st.median(g):.3f}")
PY
echo "machine after: load average $(cut -d' ' -f1-3 /proc/loadavg)"
