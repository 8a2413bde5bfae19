#!/usr/bin/env bash
# The GPU check, run in one go on a GPU machine from the repository root (see README "GPU").
# Expects in .device/ (prepared by scripts/device-pack.sh on the build machine):
#   lightunet.xz (release binary built with --features cuda), find-cuda-libs.sh,
#   refnet.py + bench_gpu.py (PyTorch anchors, measuring tools, not project code).
# Writes everything to $OUT (default ./device-out) and prints one table at the end.
set -u
OUT="${OUT:-$PWD/device-out}"; mkdir -p "$OUT"
D="$PWD/.device"
if [ -z "${LIGHTUNET_INNER:-}" ]; then
  xz -dc "$D/lightunet.xz" > "$D/lightunet" && chmod +x "$D/lightunet" || exit 2
  # find-cuda-libs.sh pins the CUDA libraries and runs its argument with them on LD_LIBRARY_PATH.
  LIGHTUNET_INNER=1 OUT="$OUT" bash "$D/find-cuda-libs.sh" /bin/bash "$0" "$@" 2>&1 | tee "$OUT/device-check.log"
  exit "${PIPESTATUS[0]}"
fi
BIN="$D/lightunet"
# GStreamer is not installed there: use the libraries and plugins device-pack.sh carried.
export LD_LIBRARY_PATH="$D/gst/lib:${LD_LIBRARY_PATH:-}" GST_PLUGIN_SYSTEM_PATH="$D/gst/plugins" \
  GST_REGISTRY="/tmp/lightunet-gst-registry.bin"
# Steps in order. `train` (TRAIN_SECONDS of BUSI training, default 300) and `runs` (the runs of
# .device/runs.txt side by side, default 420 s) are not in the default: with the machine's
# start-up, the rest already takes much of a session's 15 minutes. For a training call:
# STEPS=runs TRAIN_SECONDS=420 scripts/device-check.sh.
STEPS="${STEPS:-parity bench profile fused torch pipeline trainstep torchtrain}"
echo "== $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
# Each step that runs says when it started (seconds into the script), so the next session can
# size its call.
has() { case " $STEPS " in *" $1 "*) echo "-- step $1 at ${SECONDS}s"; return 0;; esac; return 1; }

if has parity; then
  for dt in ${PARITY_DTYPES:-f32 f16 bf16}; do
    echo "== parity cuda $dt"
    grad=""; [ "$dt" = f32 ] && grad="--grad"
    "$BIN" check --device cuda --dtype "$dt" $grad --json > "$OUT/parity_$dt.json"; echo "rc=$?"
    cat "$OUT/parity_$dt.json" | head -c 600; echo
  done
fi

if has bench; then
  : > "$OUT/bench_model.jsonl"
  for v in lighter@1 light lighter@128 unet; do
    for b in 1 16; do
      for dt in f32 f16; do
        timeout 120 "$BIN" bench model --device cuda --model "$v" --batch "$b" --dtype "$dt" --runs 100 --warmup 10 --json >> "$OUT/bench_model.jsonl" \
          || echo "{\"variant\":\"$v\",\"batch\":$b,\"dtype\":\"$dt\",\"error\":true}" >> "$OUT/bench_model.jsonl"
      done
    done
  done
  cat "$OUT/bench_model.jsonl"
fi

if has profile; then
  # Where a pass goes, per kind of op (the device waits after each op, so read the shares):
  # what to make faster next, for the batch-16 and f16 targets and the slower variants.
  echo "== per-op profile (bench model --profile)"
  : > "$OUT/profile.jsonl"
  for spec in "lighter@1 1 f32" "lighter@1 16 f32" "lighter@1 16 f16" "light 1 f32"; do
    set -- $spec
    timeout 60 "$BIN" bench model --device cuda --model "$1" --batch "$2" --dtype "$3" --runs 20 --warmup 5 --profile --json >> "$OUT/profile.jsonl" \
      || echo "{\"variant\":\"$1\",\"batch\":$2,\"dtype\":\"$3\",\"error\":true}" >> "$OUT/profile.jsonl"
  done
  python3 - "$OUT/profile.jsonl" <<'PY'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r.get("error"): print(r); continue
    tot = r["profiled_ms_batch"]
    print("%s batch %d %s: %.3f ms unprofiled, %.3f profiled" % (r["variant"], r["batch"], r["dtype"], r["median_ms_batch"], tot))
    for e in sorted(r["profile"], key=lambda e: -e["ms_batch"]):
        print("   %-30s %8.3f ms %5.1f%% %4d calls" % (e["op"], e["ms_batch"], 100 * e["ms_batch"] / tot, e["calls"]))
PY
fi

if has fused; then
  # The opt-in one-kernel separable conv set (LIGHTUNET_CUDA_FUSED=1): parity first, then each
  # case timed with and without it, alternating, in this call.
  echo "== fused separable conv set (LIGHTUNET_CUDA_FUSED=1)"
  for dt in f32 f16; do
    LIGHTUNET_CUDA_FUSED=1 "$BIN" check --device cuda --dtype "$dt" --json > "$OUT/parity_fused_$dt.json"; echo "parity fused $dt rc=$?"
    head -c 300 "$OUT/parity_fused_$dt.json"; echo
  done
  : > "$OUT/bench_fused.jsonl"
  for spec in "lighter@1 1 f32" "lighter@1 1 f16" "lighter@1 16 f32" "lighter@1 16 f16" "lighter@4 1 f32"; do
    set -- $spec
    for fused in 0 1 0 1; do
      r=$(LIGHTUNET_CUDA_FUSED=$fused timeout 60 "$BIN" bench model --device cuda --model "$1" --batch "$2" --dtype "$3" --runs 100 --warmup 10 --json) \
        && echo "{\"fused\":$fused,\"r\":$r}" >> "$OUT/bench_fused.jsonl"
    done
  done
  python3 - "$OUT/bench_fused.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = []
for x in rows:
    k = (x["r"]["variant"], x["r"]["batch"], x["r"]["dtype"])
    if k not in keys: keys.append(k)
for k in keys:
    t = {f: [x["r"]["median_ms_batch"] for x in rows if (x["r"]["variant"], x["r"]["batch"], x["r"]["dtype"]) == k and x["fused"] == f] for f in (0, 1)}
    if t[0] and t[1]:
        a, b = min(t[0]), min(t[1])
        print("%-10s batch %2d %s: default %.3f ms, fused %.3f ms (best of 2 each), fused/default %.2f" % (k + (a, b, b / a)))
PY
fi

if has torch && [ -f "$D/bench_gpu.py" ]; then
  echo "== PyTorch anchors (same card, same call)"
  (cd "$D" && SKIP_COMPILE=1 OUT="$OUT" timeout 300 python3 bench_gpu.py)
fi

if has pipeline && "$BIN" bench pipeline --help >/dev/null 2>&1; then
  # The shipped weights (tracked, so they are in the copied tree): random weights can give noise
  # masks, which are no frame's real cost. (The H200 run of docs/measurements/h200-run2 spent
  # 7 ms in preprocess and 32 ms in postprocess a frame: that was before 3b90861 moved the mask
  # work to model size.) The phantom is what a scanner shows; the videotestsrc ball is the
  # earlier runs' source, for comparison.
  for src in "phantom:1920x1080@30" "videotestsrc is-live=true pattern=ball ! video/x-raw,width=1920,height=1080,framerate=30/1"; do
    name=pipeline_1080p; case "$src" in phantom*) name=pipeline_1080p_phantom;; esac
    echo "== pipeline 1080p live, cuda: $src"
    GST_PLUGIN_SYSTEM_PATH="$D/gst/plugins" GST_REGISTRY="/tmp/lightunet-gst-registry.bin" \
      LD_LIBRARY_PATH="$D/gst/lib:${LD_LIBRARY_PATH:-}" timeout 120 "$BIN" bench pipeline --device cuda --source "$src" \
      --mode live --frames 300 --report "$OUT/$name.json" --plot "$OUT/$name.png" 2>&1 | tail -25
  done
fi

if has trainstep; then
  # Our training step, split into forward+loss / backward / optimizer (device synchronised
  # between them): where the GPU step's time goes, beside torch_train_step.py's number.
  echo "== training step lighter@1 batch 8, cuda, phases"
  timeout 120 "$BIN" bench train --device cuda --steps 10 --warmup 3 --json > "$OUT/train_step.json"; echo "rc=$?"
  cat "$OUT/train_step.json"; echo
  # The same with BatchNorm and max-pooling as candle-op compositions (what ran before our CUDA
  # kernels for them): the kernels' share of the step, measured side by side.
  echo "== training step, candle-op BatchNorm and max-pool (LIGHTUNET_CUDA_TRAIN_OPS=graph)"
  LIGHTUNET_CUDA_TRAIN_OPS=graph timeout 120 "$BIN" bench train --device cuda --steps 10 --warmup 3 --json > "$OUT/train_step_graph.json"; echo "rc=$?"
  cat "$OUT/train_step_graph.json"; echo
fi

if has torchtrain && [ -f "$D/torch_train_step.py" ]; then
  echo "== PyTorch training step (same card)"
  (cd "$D" && OUT="$OUT" timeout 120 python3 torch_train_step.py cuda)
fi

if has train && [ -d "$D/train-data" ]; then
  # The shipped weights: the original recipe on BUSI train (val for model selection), stopped by
  # TRAIN_SECONDS if early stopping has not ended it. One run of scripts/device-runs.sh (the
  # SIGTERM, the checkpoint in parts, the resume), continuing the run device-pack.sh put in
  # .device/resume if there is one; it comes back in $OUT/train.
  echo "== training lighter@1 on BUSI, cuda, up to ${TRAIN_SECONDS:-300} s"
  t=/tmp/lightunet-train
  rm -rf "$t" && mkdir -p "$t/resume"
  echo train > "$t/runs.txt"
  [ -f "$D/resume/checkpoint.safetensors" ] && ln -s "$D/resume" "$t/resume/train"
  BIN="$BIN" DATA="$D/train-data" OUT="$t/out" DEVICE=cuda LIMIT="${TRAIN_SECONDS:-300}" RESUME="$t/resume" \
    WORK="$t/work" bash "$D/device-runs.sh" "$t/runs.txt"
  echo "rc=$?"
  rm -rf "$OUT/train" && mv "$t/out/runs/train" "$OUT/train"
fi

if has runs && [ -d "$D/train-data" ] && [ -f "$D/runs.txt" ]; then
  # Several runs side by side on the GPU (more seeds, recipes at full length), each stopped after
  # TRAIN_SECONDS (default 420) and resumable from what comes back (scripts/device-runs.sh).
  echo "== training runs side by side, cuda, up to ${TRAIN_SECONDS:-420} s: $(grep -cv '^#' "$D/runs.txt") runs"
  BIN="$BIN" DATA="$D/train-data" OUT="$OUT" DEVICE=cuda LIMIT="${TRAIN_SECONDS:-420}" RESUME="$D/resume-runs" \
    bash "$D/device-runs.sh" "$D/runs.txt"
  echo "rc=$?"
fi

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(out, "bench_model.jsonl")) if l.strip()] if os.path.exists(os.path.join(out, "bench_model.jsonl")) else []
torch = json.load(open(os.path.join(out, "torch_gpu.json"))) if os.path.exists(os.path.join(out, "torch_gpu.json")) else []
def t(v, b, mode):
    for r in torch:
        if r["variant"] == v and r["batch"] == b and r["mode"] == mode: return r["ms"]
print("\n%-12s %5s %5s %12s %10s %14s %12s %14s" % ("variant", "batch", "dtype", "ours ms", "ours fps", "torch fp32 ms", "torch f16+graph", "ratio vs fp32"))
for r in rows:
    if r.get("error"): print("%-12s %5s %5s  ERROR" % (r["variant"], r["batch"], r["dtype"])); continue
    tf = t(r["variant"], r["batch"], "fp32"); tg = t(r["variant"], r["batch"], "fp16-cl-graph")
    print("%-12s %5d %5s %12.3f %10.0f %14s %12s %14s" % (r["variant"], r["batch"], r["dtype"], r["median_ms_batch"], r["frames_per_s"],
          "%.3f" % tf if tf else "-", "%.3f" % tg if tg else "-", "%.2fx" % (r["median_ms_batch"] / tf) if tf else "-"))
for name in ("train_step", "train_step_graph"):
    p = os.path.join(out, name + ".json")
    if os.path.exists(p):
        try:
            j = json.load(open(p)); print("%-17s median %.4f s/step %s" % (name, j["median_s_step"], j.get("median_phase_s", "")))
        except Exception as e: print(name, "unreadable", e)
for dt in ("f32", "f16", "bf16"):
    p = os.path.join(out, "parity_%s.json" % dt)
    if os.path.exists(p):
        try:
            j = json.load(open(p)); print("parity %-4s %s; worst: %s" % (dt, "PASS" if j["ok"] else "FAIL", j["worst"]))
        except Exception as e: print("parity", dt, "unreadable", e)
PY
# At most a few files come back from a device run: pack the small ones.
(cd "$OUT" && tar czf results.tar.gz --exclude=device-check.log --exclude=results.tar.gz \
  $(ls *.json *.jsonl train/config.json train/log.jsonl 2>/dev/null) && \
  rm -f ./*.json ./*.jsonl train/config.json train/log.jsonl)
echo "-- all steps done at ${SECONDS}s"
