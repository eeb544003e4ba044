#!/usr/bin/env bash
# The ablation runs of the generalization suite: gm-nerf-small trained with the pretrained model's recipe (its world,
# seed 100, and its misfit-robust training options) in four variants x two training seeds, all at once on one GPU:
#
#   full       geometry-guided registration at the vertex projections (the default model)
#   regmean    --pipeline.model.registration mean        (vertex codes: mean of the visible views' features)
#   attnmean   --pipeline.model.appearance-fusion mean   (3D samples: mean over views instead of attention)
#   window3    --pipeline.model.registration-window 3    (each vertex attends over a 3 x 3 pixel window per view)
#   window5    --pipeline.model.registration-window 5    (a 5 x 5 window: +-6 px at 256 px, the size of a 0.05 rad misfit)
#
# Every run has the same schedule (STEPS, learning rates decaying over STEPS). Training stops at STEPS or at the
# wall-clock DEADLINE (seconds after this script starts), whichever comes first; the runs are then compared at the
# newest checkpoint step that all of them reached, which is exported (model weights only) as one tar per variant.
# Evaluate the exported runs with scripts/generalization_suite.py (README.md beside this file).
#
#   OUT=out bash benchmarks/generalization/train_ablations.sh                      # on a GPU machine
#   OUT=out DEVICE=cpu SUBJECTS=4 STEPS=6 SAVE=2 PROFILE=0 bash benchmarks/generalization/train_ablations.sh  # smoke test
set -u
START=$(date +%s)
OUT=${OUT:?set OUT to the folder the exports go to}
WORK=${WORK:-/tmp/gmnerf-ablation}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-3000}
SAVE=${SAVE:-250}
DEADLINE=${DEADLINE:-510}
SUBJECTS=${SUBJECTS:-160}
WORKERS=${WORKERS:-12}
SEEDS=${SEEDS:-"0 1"}
PROFILE=${PROFILE:-1}
VARIANTS=${VARIANTS:-"full regmean attnmean window3 window5"}
export GMNERF_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK/logs"
elapsed() { echo $(( $(date +%s) - START )); }
flags() {
  case $1 in
    full) echo "" ;;
    regmean) echo "--pipeline.model.registration mean" ;;
    attnmean) echo "--pipeline.model.appearance-fusion mean" ;;
    window3) echo "--pipeline.model.registration-window 3" ;;
    window5) echo "--pipeline.model.registration-window 5" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

# 1. the training world (the pretrained recipe's options; SUBJECTS overrides the count for smoke tests)
WORLD_OPTIONS=$(python3 -c "import sys; sys.path.insert(0, 'scripts'); import train_pretrained as t; print(t.WORLD_OPTIONS)")
WORLD_OPTIONS=$(echo "$WORLD_OPTIONS" | sed "s/--num-subjects 160/--num-subjects $SUBJECTS/")
if [ "$SUBJECTS" -le 8 ]; then WORLD_OPTIONS=$(echo "$WORLD_OPTIONS" | sed "s/--num-test-subjects 8/--num-test-subjects 1/"); fi
echo "[$(elapsed)s] world: gmnerf-synth $WORLD_OPTIONS"
gmnerf-synth --out "$WORK/world" $WORLD_OPTIONS --workers "$WORKERS" --no-progress --skip-if-complete \
  > "$WORK/logs/world.log" 2>&1 &
WORLD_PID=$!

# 2. while the world is generated (on the other cores): the GPU step profile of issue #15
PIN=""; command -v taskset > /dev/null && [ "$(nproc)" -ge 16 ] && PIN="taskset -c 12-15"
if [ "$PROFILE" = 1 ]; then
  # gm-nerf-small first: it is the model trained below, so a failure here stops the script at once
  for method in gm-nerf-small gm-nerf; do
    res=""; [ $method = gm-nerf ] && res="--resolution 512"
    $PIN timeout 100 python3 scripts/profile_step.py --method $method --device "$DEVICE" --steps 20 \
      --warmup 3 $res --json-path "$WORK/logs/profile-$method-$DEVICE.json" > "$WORK/logs/profile-$method.log" 2>&1
    status=$?
    echo "[$(elapsed)s] profile $method (exit $status): $(tail -5 "$WORK/logs/profile-$method.log" | tr '\n' ' ')"
    if [ $status != 0 ] && [ $method = gm-nerf-small ]; then
      tail -40 "$WORK/logs/profile-$method.log"; kill $WORLD_PID; exit 1
    fi
  done
fi
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv -l 15 > "$WORK/logs/nvidia-smi.csv" 2>&1 &
fi
wait $WORLD_PID || { echo "world generation failed"; tail -20 "$WORK/logs/world.log"; }
echo "[$(elapsed)s] world done: $(ls "$WORK/world" | head -3 | tr '\n' ' ')..."

# 3. all runs at once
PIDS=()
for variant in $VARIANTS; do
  for seed in $SEEDS; do
    decay=""
    for group in encoder fields renderer; do decay="$decay --optimizers.$group.scheduler.max-steps $STEPS"; done
    OMP_NUM_THREADS=2 ns-train gm-nerf-small --data "$WORK/world" --output-dir "$WORK/runs" --experiment-name ablation \
      --timestamp "$variant-seed$seed" --max-num-iterations "$STEPS" --steps-per-save "$SAVE" --keep-checkpoints 1000 \
      --steps-per-eval-batch 1000000 --steps-per-eval-image 1000000 --vis tensorboard --machine.device-type "$DEVICE" \
      --pipeline.datamanager.seed "$seed" $decay $(flags "$variant") > "$WORK/logs/train-$variant-seed$seed.log" 2>&1 &
    PIDS+=($!)
  done
done
echo "[$(elapsed)s] started ${#PIDS[@]} runs"
CHECKED=0
while :; do
  running=0
  for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && running=$((running + 1)); done
  [ $running = 0 ] && break
  if [ $CHECKED = 0 ] && [ $running -lt ${#PIDS[@]} ]; then  # a run died early: show why
    CHECKED=1; for log in "$WORK"/logs/train-*.log; do echo "== $log"; tail -5 "$log"; done
  fi
  if [ "$(elapsed)" -ge "$DEADLINE" ]; then
    echo "[$(elapsed)s] deadline: stopping $running runs"
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 5
    break
  fi
  sleep 5
done
for log in "$WORK"/logs/train-*.log; do echo "== $log"; grep -v "^\s*$" "$log" | tail -3; done

# 4. export every run at the newest checkpoint step all runs reached
python3 - "$WORK" "$OUT" "$VARIANTS" <<'EOF'
import re, sys, tarfile, torch
from pathlib import Path
work, out, variants = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split()
runs = sorted((work / "runs" / "ablation" / "gm-nerf-small").glob("*-seed*"))
steps = [{int(re.search(r"step-(\d+)", p.name).group(1)) for p in (r / "nerfstudio_models").glob("step-*.ckpt")}
         for r in runs]
common = set.intersection(*steps) if steps else set()
print("runs:", [r.name for r in runs], "newest steps:", [max(s) if s else None for s in steps])
if not common:
    sys.exit("no checkpoint step shared by all runs")
step = max(common)
print("exporting step", step)
for variant in variants:
    with tarfile.open(out / f"ablation-{variant}.tar", "w") as tar:
        for run in runs:
            if not run.name.startswith(variant + "-seed"):
                continue
            ckpt = torch.load(run / "nerfstudio_models" / f"step-{step:09d}.ckpt", map_location="cpu", weights_only=True)
            slim = run / "export" / "nerfstudio_models" / f"step-{step:09d}.ckpt"
            slim.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"step": ckpt["step"], "pipeline": ckpt["pipeline"]}, slim)
            tar.add(run / "config.yml", arcname=f"{run.name}/config.yml")
            tar.add(slim, arcname=f"{run.name}/nerfstudio_models/{slim.name}")
EOF
tar -cf "$OUT/logs.tar" -C "$WORK" logs
echo "[$(elapsed)s] done"; ls -la "$OUT"
