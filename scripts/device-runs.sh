#!/usr/bin/env bash
# Several training runs side by side on one device, each stopped after LIMIT seconds and
# resumable from what comes back: the GPU part of the weights work (more seeds, recipes at full
# length). One small network leaves most of a big GPU idle, so runs share it. Called by
# scripts/device-check.sh (step `runs`); runs anywhere with DEVICE=cpu for a check.
#
#   BIN=lightunet DATA=busi OUT=out [DEVICE=cuda] [LIMIT=420] [RESUME=dir] scripts/device-runs.sh RUNS
#
# RUNS: a file, one run a line: `NAME train flags...` (for example `seed1 --seed 1` or
# `bce-us --loss bce-dice --augment us`); `#` starts a comment. Each run trains lighter@1 on DATA
# into a folder of its own. RESUME: a folder of NAME/ folders, the ones an earlier call brought
# back or run folders of `lightunet train`; a run whose folder holds a checkpoint (whole, or in
# parts) continues from it (its flags come from its checkpoint).
# Back in OUT/runs/NAME/: log.jsonl, config.json, curves.png, best.safetensors, train.log and
# the resumable checkpoint in 15 MB parts (`cat checkpoint.part-* > checkpoint.safetensors`).
set -u
runs_file=${1:?usage: device-runs.sh RUNS}
: "${BIN:?BIN: the lightunet binary}" "${DATA:?DATA: a prepared data folder}" "${OUT:?OUT: where results go}"
device=${DEVICE:-cuda}
limit=${LIMIT:-420}
work=${WORK:-/tmp/lightunet-runs}
mkdir -p "$work" "$OUT/runs"
pids=()
names=()
while read -r name flags; do
  case "$name" in ''|'#'*) continue ;; esac
  run="$work/$name"
  prev="${RESUME:-/nonexistent}/$name"
  if [ -f "$prev/checkpoint.safetensors" ] || ls "$prev"/checkpoint.part-* >/dev/null 2>&1; then
    rm -rf "$run" && mkdir -p "$run"
    cp "$prev"/*.json "$prev"/*.jsonl "$prev"/*.safetensors "$run"/ 2>/dev/null
    if ls "$prev"/checkpoint.part-* >/dev/null 2>&1; then
      cat "$prev"/checkpoint.part-* > "$run/checkpoint.safetensors"
    fi
    set -- train --device "$device" --resume "$run" --quiet
  else
    # shellcheck disable=SC2086 # the flags are words on purpose
    set -- train --device "$device" --data "$DATA" --model lighter@1 --out "$run" --quiet $flags
  fi
  echo "-- $name: $*"
  # SIGTERM at the limit: the trainer finishes its step and writes the checkpoint.
  timeout -s TERM -k 120 "$limit" "$BIN" "$@" > "$work/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
done < "$runs_file"
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; rc=$?
  name=${names[$i]}
  dest="$OUT/runs/$name"
  mkdir -p "$dest"
  for f in log.jsonl config.json curves.png best.safetensors; do
    [ -f "$work/$name/$f" ] && cp "$work/$name/$f" "$dest/"
  done
  tail -n 30 "$work/$name.log" > "$dest/train.log"
  [ -f "$work/$name/checkpoint.safetensors" ] && split -b 15M "$work/$name/checkpoint.safetensors" "$dest/checkpoint.part-"
  # 124: stopped at the limit (resumable); 0: finished by early stopping or the epoch limit.
  case $rc in 0|124) ;; *) status=1 ;; esac
  epochs=$(wc -l < "$dest/log.jsonl" 2>/dev/null || echo 0)
  echo "== $name: exit $rc, $epochs epochs logged; $(tail -n 1 "$dest/train.log")"
done
exit $status
