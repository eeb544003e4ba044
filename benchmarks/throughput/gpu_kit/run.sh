#!/usr/bin/env bash
# The GPU kit's measurement (README "GPU kit"): times `ns-train` itself on a lent accelerator, in one call of at most
# about 8 minutes, after benchmarks/throughput/gpu_kit/prepare.sh ran here.
#
#   1. installs .gpu_kit/wheels into $WORK/site (no network) and copies this tree's package sources over the wheel's;
#   2. checks the imports and the device, generates two small built-in datasets (256 px and 512 px);
#   3. in order, each under a hard timeout and only while time is left before the deadline:
#      small    ns-train gm-nerf-small, 400 steps, window 200:400
#      full     ns-train gm-nerf, 300 steps, window 100:300
#      profile  benchmarks/throughput/profile_step.py for both methods on the same data
#      extras   gm-nerf --pipeline.model.autocast bf16; gm-nerf-small --pipeline.datamanager.subjects-per-step 4;
#               gm-nerf --pipeline.model.compile-networks True
#      pretrain all the time left: trains a pretrained run (pretrain.sh; GPU_KIT_PRETRAIN_METHOD, default gm-nerf),
#               resuming from the checkpoint carried in $KIT/resume/, and returns its newest checkpoint in $OUT
#      nvidia-smi samples the GPU every 200 ms during each ns-train run;
#   4. writes $OUT/summary.txt, $OUT/summary.json (benchmarks/throughput/ns_train_timing.py per run) and
#      $OUT/logs.tar.gz (logs, nvidia-smi samples, event files, configs, profile JSONs), even after a failure.
#
# Dry mode on a CPU (tests/benchmarks/test_gpu_kit.py): GPU_KIT_DEVICE=cpu GPU_KIT_INSTALL=0 with the small settings
# below.
# Knobs (environment): OUT (required; the device machine sets it), GPU_KIT_WORK (/tmp/gpu_kit), GPU_KIT_DIR (.gpu_kit),
# GPU_KIT_DEVICE (cuda), GPU_KIT_PYTHON (python3), GPU_KIT_INSTALL (1; 0 = use GPU_KIT_PYTHON's packages as they are),
# GPU_KIT_DEADLINE (450 s: no stage starts after it, each stage's timeout ends by it), GPU_KIT_STAGES
# ("small full profile extras pretrain"), GPU_KIT_STEPS and GPU_KIT_WINDOW (override every run's steps and window),
# GPU_KIT_SMALL_RESOLUTION (256), GPU_KIT_FULL_RESOLUTION (512), GPU_KIT_SUBJECTS (6, one held out), GPU_KIT_FRAMES
# (2), GPU_KIT_CAMERAS (8), GPU_KIT_TRAIN_ARGS (more ns-train options for every run), GPU_KIT_PROFILE_STEPS (20),
# GPU_KIT_PROFILE_ARGS (more profile_step.py options).
set -u
START=$(date +%s)
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
KIT=${GPU_KIT_DIR:-.gpu_kit}
case $KIT in /*) ;; *) KIT=$REPO/$KIT ;; esac
OUT=${OUT:?set OUT to the folder the results go to}
WORK=${GPU_KIT_WORK:-/tmp/gpu_kit}
DEVICE=${GPU_KIT_DEVICE:-cuda}
PY=${GPU_KIT_PYTHON:-python3}
INSTALL=${GPU_KIT_INSTALL:-1}
DEADLINE=${GPU_KIT_DEADLINE:-450}
RESERVE=15  # seconds kept for the summary and the archive
STAGES=" ${GPU_KIT_STAGES:-small full profile extras pretrain} "
SMALL_RES=${GPU_KIT_SMALL_RESOLUTION:-256}
FULL_RES=${GPU_KIT_FULL_RESOLUTION:-512}
TRAIN_ARGS=${GPU_KIT_TRAIN_ARGS:-}
export GMNERF_OFFLINE=1 PYTHONUNBUFFERED=1  # no weight downloads to wait for: there is no network
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
rm -rf "$WORK/logs" "$WORK/runs" "$WORK/runs.tsv" "$WORK/notes.txt" "$WORK/env.json"
mkdir -p "$WORK/logs" "$WORK/runs"
cd "$WORK" || exit 1  # not the repository root: data, runs and logs stay out of the tree

elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( DEADLINE - RESERVE - $(elapsed) )); }
say() { echo "[gpu-kit $(elapsed)s] $*"; }
note() { say "$*"; echo "$*" >> "$WORK/notes.txt"; }
finish() {
  trap - EXIT
  say "summary"
  for run in "$WORK"/runs/kit/*/*; do  # each run's event file and config.yml (not its checkpoints)
    [ -d "$run" ] && mkdir -p "$WORK/logs/runs/${run##*/}" && cp "$run"/events.out.tfevents.* "$run/config.yml" \
      "$WORK/logs/runs/${run##*/}/" 2>/dev/null
  done
  "$PY" "$HERE/kit.py" summary "$WORK" "$OUT" --elapsed "$(elapsed)" \
    || python3 "$HERE/kit.py" summary "$WORK" "$OUT" --elapsed "$(elapsed)"
  tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs runs.tsv notes.txt env.json 2>/dev/null
  say "done: $(ls "$OUT" | tr '\n' ' ')"
}
trap finish EXIT

# -------------------------------------------------------------------------------------------- 1. install
if [ "$INSTALL" = 1 ]; then
  SITE=$WORK/site
  STAMP=$(ls "$KIT"/wheels/*.whl 2>/dev/null | xargs -r -n1 basename | sha256sum | cut -c1-16)
  if [ ! -f "$SITE/.kit-stamp" ] || [ "$(cat "$SITE/.kit-stamp")" != "$STAMP" ]; then
    say "installing $(ls "$KIT"/wheels/*.whl 2>/dev/null | wc -l) wheels into $SITE"
    rm -rf "$SITE"
    if ! timeout 180 "$PY" -m pip install --no-index --no-deps --disable-pip-version-check --quiet --target "$SITE" \
        "$KIT"/wheels/*.whl > "$WORK/logs/install.log" 2>&1; then
      note "pip install of all wheels failed; installing them one by one (install.log)"
      for wheel in "$KIT"/wheels/*.whl; do
        timeout 60 "$PY" -m pip install --no-index --no-deps --disable-pip-version-check --quiet --target "$SITE" \
          "$wheel" >> "$WORK/logs/install.log" 2>&1 || note "could not install $(basename "$wheel")"
      done
    fi
    echo "$STAMP" > "$SITE/.kit-stamp"
  fi
  # The sources measured are this tree's, whatever the wheel was built from (the wheel supplies the entry points).
  # Replaced, not merged: modules the wheel has and the tree no longer has must not stay importable.
  rm -rf "$SITE/gmnerf_ns" && cp -r "$REPO/gmnerf_ns" "$SITE/gmnerf_ns" \
    || note "could not copy the tree's sources into $SITE"
  export PYTHONPATH="$SITE:$KIT/stub${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$SITE/bin:$PATH"
fi

# -------------------------------------------------------------------------------------------- 2. data and checks
SUBJECTS=${GPU_KIT_SUBJECTS:-6}
synth() {  # OUTDIR RESOLUTION
  timeout 120 "$PY" "$HERE/launch.py" gmnerf-synth --out "$1" --num-subjects "$SUBJECTS" --num-test-subjects 1 \
    --num-cameras "${GPU_KIT_CAMERAS:-8}" --num-frames "${GPU_KIT_FRAMES:-2}" --resolution "$2" --workers 4 \
    --no-progress --skip-if-complete > "$WORK/logs/synth-$2.log" 2>&1
}
DATA_SMALL=$WORK/data-$SMALL_RES
DATA_FULL=$WORK/data-$FULL_RES
RESOLUTIONS=$SMALL_RES
case $STAGES in *" full "*|*" profile "*|*" extras "*) [ "$FULL_RES" = "$SMALL_RES" ] || RESOLUTIONS="$SMALL_RES $FULL_RES" ;; esac
say "generating the data in the background ($SUBJECTS people at $RESOLUTIONS px)"
SYNTH_PIDS=""
for res in $RESOLUTIONS; do synth "$WORK/data-$res" "$res" & SYNTH_PIDS="$SYNTH_PIDS $!"; done

say "checking imports and the device"
TREE_HASH=$("$PY" "$HERE/kit.py" tree-hash "$REPO" 2>/dev/null)
WHEEL_HASH=$(cat "$KIT/tree.sha256" 2>/dev/null)
if ! timeout 120 "$PY" - "$DEVICE" "$WORK/env.json" "$TREE_HASH" "$WHEEL_HASH" > "$WORK/logs/preflight.log" 2>&1 <<'EOF'
import importlib, json, os, platform, sys
device, path, tree, wheel = sys.argv[1:5]
missing = {}
REQUIRED = ("torch", "cv2", "tensorboard", "nerfstudio.scripts.train", "gmnerf_ns.training.method_configs",
            "gmnerf_ns.data.parsers.auto", "gmnerf_ns.training.pipeline", "gmnerf_ns.synth.generator")
for name in REQUIRED + ("numpy", "yaml", "scipy", "matplotlib", "skimage", "PIL", "jaxtyping", "rich", "tyro",
                        "trimesh", "smplx", "lpips", "viser"):
    try:
        importlib.import_module(name)
    except Exception as err:
        missing[name] = f"{type(err).__name__}: {err}"
import torch
env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(), "device": device,
       "cuda_available": torch.cuda.is_available(), "torch_threads": torch.get_num_threads(),
       "tree_hash": tree, "wheel_tree_hash": wheel or None, "missing_modules": missing}
if torch.cuda.is_available():
    env["device_name"] = torch.cuda.get_device_name()
else:
    env["device_name"] = platform.processor() or "cpu"
try:
    from nerfstudio.plugins.registry import discover_methods
    env["methods"] = sorted(m for m in discover_methods()[0] if m.startswith("gm-nerf"))
except Exception as err:
    missing["discover_methods"] = f"{type(err).__name__}: {err}"
json.dump(env, open(path, "w"), indent=2)
print(json.dumps(env, indent=2))
if any(name in missing for name in REQUIRED) or "gm-nerf" not in env.get("methods", []):
    sys.exit("missing: " + "; ".join(f"{k} ({v})" for k, v in missing.items()))
if device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("GPU_KIT_DEVICE is cuda but torch sees no CUDA device")
EOF
then
  note "preflight failed: $(tail -n 1 "$WORK/logs/preflight.log")"
  # shellcheck disable=SC2086
  kill $SYNTH_PIDS 2>/dev/null
  exit 1
fi
[ -n "$TREE_HASH" ] && [ -n "$WHEEL_HASH" ] && [ "$TREE_HASH" != "$WHEEL_HASH" ] \
  && note "the wheel was built from other sources than this tree's (entry points from the wheel, code from the tree)"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
  --format=csv > "$WORK/logs/nvidia-smi-device.csv" 2>&1

DATA_OK=1
for pid in $SYNTH_PIDS; do wait "$pid" || DATA_OK=0; done
if [ "$DATA_OK" != 1 ]; then
  note "data generation failed: $(tail -q -n 2 "$WORK"/logs/synth-*.log | tr '\n' ' ')"
  exit 1
fi
say "data ready"

# -------------------------------------------------------------------------------------------- 3. the runs
SMI_PID=""
smi_start() {
  SMI_PID=""
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 200 > "$1" 2>&1 &
    SMI_PID=$!
  fi
}
smi_stop() {
  if [ -n "$SMI_PID" ]; then kill "$SMI_PID" 2>/dev/null; wait "$SMI_PID" 2>/dev/null; fi
  SMI_PID=""
}
limit_for() {  # CAP: the stage's timeout (CAP, or less to end by the deadline); empty when under 30 s are left
  local cap=$1 rest
  rest=$(left)
  [ "$rest" -ge 30 ] && echo $(( cap < rest ? cap : rest ))
}
train() {  # NAME METHOD DATA RESOLUTION STEPS WINDOW SUBJECTS_PER_STEP CAP [ns-train options...]
  local name=$1 method=$2 data=$3 res=$4 steps=${GPU_KIT_STEPS:-$5} window=${GPU_KIT_WINDOW:-$6} per=$7 cap=$8 limit rc t0
  shift 8
  limit=$(limit_for "$cap")
  if [ -z "$limit" ]; then note "$name: not run ($(left) s left before the deadline)"; return; fi
  say "$name: ns-train $method, $steps steps, window $window, timeout ${limit}s $*"
  smi_start "$WORK/logs/$name-smi.csv"
  t0=$(date +%s)
  # shellcheck disable=SC2086
  timeout -k 15 "$limit" "$PY" "$HERE/launch.py" ns-train "$method" --data "$data" --output-dir "$WORK/runs" \
    --experiment-name kit --timestamp "$name" --max-num-iterations "$steps" --vis tensorboard \
    --machine.device-type "$DEVICE" --pipeline.datamanager.subjects-per-step "$per" $TRAIN_ARGS "$@" \
    gmnerf-auto --resolution "$res" > "$WORK/logs/$name.log" 2>&1
  rc=$?
  smi_stop
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$method" "$WORK/runs/kit/$method/$name" \
    "$WORK/logs/$name-smi.csv" "$window" "$per" "$rc" "$(( $(date +%s) - t0 ))" "$limit" "$*" >> "$WORK/runs.tsv"
  say "$name: exit $rc; $("$PY" "$HERE/../ns_train_timing.py" "$WORK/runs/kit/$method/$name" --window "$window" \
    --subjects-per-step "$per" $( [ -s "$WORK/logs/$name-smi.csv" ] && echo --smi "$WORK/logs/$name-smi.csv") 2>&1 | tail -n 1)"
}
profile() {  # METHOD DATA RESOLUTION CAP
  local limit
  limit=$(limit_for "$4")
  if [ -z "$limit" ]; then note "profile $1: not run ($(left) s left before the deadline)"; return; fi
  say "profile_step.py $1, timeout ${limit}s"
  # shellcheck disable=SC2086
  timeout -k 10 "$limit" "$PY" "$HERE/../profile_step.py" --method "$1" --device "$DEVICE" \
    --steps "${GPU_KIT_PROFILE_STEPS:-20}" --warmup 3 --data "$2" --resolution "$3" \
    --json-path "$WORK/logs/profile-$1.json" ${GPU_KIT_PROFILE_ARGS:-} > "$WORK/logs/profile-$1.log" 2>&1 \
    || note "profile $1: exit $? ($(tail -n 1 "$WORK/logs/profile-$1.log"))"
}

case $STAGES in *" small "*) train small gm-nerf-small "$DATA_SMALL" "$SMALL_RES" 400 200:400 1 150 ;; esac
case $STAGES in *" full "*) train full gm-nerf "$DATA_FULL" "$FULL_RES" 300 100:300 1 120 ;; esac
case $STAGES in *" profile "*)
  profile gm-nerf-small "$DATA_SMALL" "$SMALL_RES" 75
  profile gm-nerf "$DATA_FULL" "$FULL_RES" 90 ;;
esac
case $STAGES in *" extras "*)
  train full-bf16 gm-nerf "$DATA_FULL" "$FULL_RES" 300 100:300 1 100 --pipeline.model.autocast bf16
  train small-p4 gm-nerf-small "$DATA_SMALL" "$SMALL_RES" 200 100:200 4 100
  train full-compile gm-nerf "$DATA_FULL" "$FULL_RES" 300 150:300 1 150 --pipeline.model.compile-networks True ;;
esac
case $STAGES in *" pretrain "*)
  limit=$(limit_for 100000)
  if [ -z "$limit" ]; then note "pretrain: not run ($(left) s left before the deadline)"
  else PY=$PY REPO=$REPO KIT=$KIT WORK=$WORK OUT=$OUT DEVICE=$DEVICE bash "$HERE/pretrain.sh" "$limit" \
         || note "pretrain: exit $? (logs/pretrain-*.log)"
  fi ;;
esac
say "stages done"
