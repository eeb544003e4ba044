#!/usr/bin/env bash
# The GPU kit's training stage (run.sh stage "pretrain"): trains a pretrained run (scripts/train_pretrained.py) on the
# accelerator for the time it is given, resuming from the newest checkpoint carried in $KIT/resume/ (prepare.sh puts
# this machine's newest there), and returns the newest checkpoint in $OUT so that the next run, here or on the CPU
# (train_pretrained.py --resume-from), goes on from it. A checkpoint over 16 MiB (gm-nerf's) comes back without
# Adam's moments, in parts if still too large (checkpoint_parts.py pack); every other one comes back whole, and the
# resume is exact. train_seconds.txt (the training time, summed over machines) goes with the checkpoint both ways.
#
#   pretrain.sh SECONDS      (run.sh's environment: PY, REPO, KIT, WORK, OUT, DEVICE)
#
# Knobs (environment): GPU_KIT_PRETRAIN_METHOD (gm-nerf, on a 512-px world; gm-nerf-small's v2 run is finished),
# GPU_KIT_PRETRAIN_STEPS (40000), GPU_KIT_PRETRAIN_SUBJECTS (320) and GPU_KIT_PRETRAIN_TEST_SUBJECTS (8): the run (its
# learning-rate schedule and world; they must match the carried checkpoint's run); GPU_KIT_PRETRAIN_SAVE (250 steps
# between checkpoints); GPU_KIT_PRETRAIN_WORKERS (world generation processes, default: the CPU count);
# GPU_KIT_MAX_BYTES (16 MiB: the largest file returned).
set -u
LIMIT=${1:?seconds}
METHOD=${GPU_KIT_PRETRAIN_METHOD:-gm-nerf}
STEPS=${GPU_KIT_PRETRAIN_STEPS:-40000}
SUBJECTS=${GPU_KIT_PRETRAIN_SUBJECTS:-320}
TEST_SUBJECTS=${GPU_KIT_PRETRAIN_TEST_SUBJECTS:-8}
SAVE=${GPU_KIT_PRETRAIN_SAVE:-250}
WORKERS=${GPU_KIT_PRETRAIN_WORKERS:-$(nproc)}
MAX_BYTES=${GPU_KIT_MAX_BYTES:-$((16 * 1048576))}  # the largest file a device call returns
T0=$(date +%s)
say() { echo "[gpu-kit pretrain] $*"; }
RECIPE=("$PY" "$REPO/scripts/train_pretrained.py" --method "$METHOD" --steps "$STEPS" --subjects "$SUBJECTS" --test-subjects "$TEST_SUBJECTS" --world "$WORK/world-$METHOD"
        --runs "$WORK/pretrain" --workers "$WORKERS" --device "$DEVICE" --steps-per-save "$SAVE")

say "$METHOD world: $SUBJECTS people"
timeout -k 10 "$LIMIT" "${RECIPE[@]}" --only world > "$WORK/logs/pretrain-world.log" 2>&1 \
  || { say "world generation failed: $(tail -n 1 "$WORK/logs/pretrain-world.log")"; exit 1; }
RESUME=$(ls "$KIT"/resume/step-*.ckpt 2>/dev/null | sort -V | tail -n 1)
REST=$(( LIMIT - ($(date +%s) - T0) ))
if [ "$REST" -lt 60 ]; then say "not trained: $REST s left after the world"; exit 0; fi
say "training ${REST} s${RESUME:+ from $(basename "$RESUME")}"
timeout -k 20 "$REST" "${RECIPE[@]}" --only train ${RESUME:+--resume-from "$RESUME"} > "$WORK/logs/pretrain-train.log" 2>&1
say "training stopped (exit $?)"

RUN=$(ls -d "$WORK"/pretrain/pretrained/"$METHOD"/* 2>/dev/null | head -n 1)
NEWEST=$(ls "$RUN"/nerfstudio_models/step-*.ckpt 2>/dev/null | sort -V | tail -n 1)
if [ -z "$NEWEST" ]; then say "no checkpoint written"; exit 1; fi
mkdir -p "$WORK/logs/pretrain"
cp "$RUN"/config.yml "$RUN"/train_seconds.txt "$RUN"/events.out.tfevents.* "$WORK/logs/pretrain/" 2>/dev/null
RETURNED=$("$PY" "$(dirname "$0")/checkpoint_parts.py" pack "$NEWEST" "$OUT" --max-bytes "$MAX_BYTES") \
  || { say "$(basename "$NEWEST") could not be packed for return"; exit 1; }
for file in $RETURNED; do say "returned $(basename "$file") ($(( $(stat -c %s "$file") / 1048576 )) MiB)"; done
cp "$RUN/train_seconds.txt" "$OUT/" 2>/dev/null && say "training time so far: $(cat "$OUT/train_seconds.txt") s"
