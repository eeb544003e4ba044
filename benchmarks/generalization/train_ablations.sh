#!/usr/bin/env bash
# The ablation runs of the generalization suite: gm-nerf-small trained with the pretrained model's recipe (its world,
# seed 100, and its misfit-robust training options), on one GPU. A run is VARIANT:SEED:
#
#   full       geometry-guided registration at the vertex projections (the default model)
#   regmean    --pipeline.model.registration mean        (vertex codes: mean of the visible views' features)
#   attnmean   --pipeline.model.appearance-fusion mean   (3D samples: mean over views instead of attention)
#   window3    --pipeline.model.registration-window 3    (each vertex attends over a 3 x 3 pixel window per view)
#   window5    --pipeline.model.registration-window 5    (a 5 x 5 window: +-6 px at 256 px, the size of a 0.05 rad misfit)
#
# Every run has the same schedule as the CPU runs (STEPS, learning rates decaying over STEPS). Up to PARALLEL runs
# train at once, in the order of RUNS, each with THREADS torch threads; a run still going at the wall-clock DEADLINE
# (seconds after this script starts) is stopped and not exported. Measured on 16-core GPU machines: ten runs at once
# (H200, OMP_NUM_THREADS=2) made about 15 steps/s together; one run alone (H100, torch's default 16 threads, before
# the decoding threads were made single-threaded) only 1-1.7 steps/s. Each finished run's last checkpoint is exported
# (model weights only), one tar per variant. Evaluate them with benchmarks/generalization/generalization_suite.py.
#
#   OUT=out bash benchmarks/generalization/train_ablations.sh                      # on a GPU machine
#   OUT=out DEVICE=cpu SUBJECTS=4 STEPS=6 SAVE=2 PROFILE=0 RUNS="full:0 regmean:0" \
#     bash benchmarks/generalization/train_ablations.sh                           # smoke test
set -u
START=$(date +%s)
OUT=${OUT:?set OUT to the folder the exports go to}
WORK=${WORK:-/tmp/gmnerf-ablation}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-1500}
SAVE=${SAVE:-250}
DEADLINE=${DEADLINE:-510}
SUBJECTS=${SUBJECTS:-160}
WORKERS=${WORKERS:-12}
PROFILE=${PROFILE:-1}
PARALLEL=${PARALLEL:-10}
THREADS=${THREADS:-2}
RUNS=${RUNS:-"full:0 regmean:0 attnmean:0 window3:0 full:1 regmean:1 attnmean:1 window3:1"}
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
    $PIN timeout 100 python3 benchmarks/throughput/profile_step.py --method $method --device "$DEVICE" --steps 20 \
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

# 3. the runs, PARALLEL at a time
decay=""
for group in encoder fields renderer; do decay="$decay --optimizers.$group.scheduler.max-steps $STEPS"; done
PIDS=()
running() { local n=0 pid; for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && n=$((n + 1)); done; echo $n; }
for run in $RUNS; do
  while [ "$(running)" -ge "$PARALLEL" ] && [ "$(elapsed)" -lt "$DEADLINE" ]; do sleep 2; done
  [ "$(elapsed)" -ge "$DEADLINE" ] && break
  variant=${run%%:*}; seed=${run##*:}
  echo "[$(elapsed)s] starting $run"
  OMP_NUM_THREADS=$THREADS ns-train gm-nerf-small --data "$WORK/world" --output-dir "$WORK/runs" \
    --experiment-name ablation --timestamp "$variant-seed$seed" --max-num-iterations "$STEPS" --steps-per-save "$SAVE" \
    --steps-per-eval-batch 1000000 --steps-per-eval-image 1000000 --vis tensorboard --machine.device-type "$DEVICE" \
    --pipeline.datamanager.seed "$seed" $decay $(flags "$variant") > "$WORK/logs/train-$variant-seed$seed.log" 2>&1 &
  PIDS+=($!)
done
while [ "$(running)" -gt 0 ] && [ "$(elapsed)" -lt "$DEADLINE" ]; do sleep 2; done
if [ "$(running)" -gt 0 ]; then
  echo "[$(elapsed)s] deadline: stopping $(running) runs"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 5
fi
for log in "$WORK"/logs/train-*.log; do echo "== $log"; grep -v "^\s*$" "$log" | tail -3; done  # progress, or the error

# 4. export each finished run's last checkpoint (model weights only), one tar per variant
python3 - "$WORK" "$OUT" "$STEPS" <<'EOF'
import sys, tarfile, torch
from pathlib import Path
work, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
name = f"step-{steps - 1:09d}.ckpt"
for run in sorted((work / "runs" / "ablation" / "gm-nerf-small").glob("*-seed*")):
    ckpt_path = run / "nerfstudio_models" / name
    if not ckpt_path.exists():
        print("not finished, not exported:", run.name)
        continue
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    slim = run / "export" / "nerfstudio_models" / name
    slim.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": ckpt["step"], "pipeline": ckpt["pipeline"]}, slim)
    with tarfile.open(out / f"ablation-{run.name.rsplit('-seed', 1)[0]}.tar", "a") as tar:
        tar.add(run / "config.yml", arcname=f"{run.name}/config.yml")
        tar.add(slim, arcname=f"{run.name}/nerfstudio_models/{slim.name}")
    print("exported", run.name)
EOF
tar -cf "$OUT/logs.tar" -C "$WORK" logs
echo "[$(elapsed)s] done"; ls -la "$OUT"
