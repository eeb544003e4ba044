#!/usr/bin/env bash
# The README's main command: set up, generate the built-in humans, render the held-out people zero-shot with the
# pretrained gm-nerf-small shipped in the package, fine-tune it on the training people on CPU, render an orbit of a
# held-out subject and evaluate on the held-out subjects. Prints where everything went and both held-out scores.
# Knobs (environment):
#   GMNERF_DEMO_DATA          dataset folder (default data/synthetic)
#   GMNERF_DEMO_OUT           output folder (default outputs)
#   GMNERF_DEMO_STEPS         training steps of stage 3 (default 1200)
#   GMNERF_DEMO_FROM_SCRATCH  1: stage 3 trains gm-nerf-small from random weights instead of fine-tuning the pretrained one
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -n "${VIRTUAL_ENV:-}" ] || . .venv/bin/activate

DATA=${GMNERF_DEMO_DATA:-data/synthetic}
OUT=${GMNERF_DEMO_OUT:-outputs}
STEPS=${GMNERF_DEMO_STEPS:-1200}  # 1200 keeps the whole demo within 15 minutes on 2 CPU cores
FROM_SCRATCH=${GMNERF_DEMO_FROM_SCRATCH:-0}

# Fine-tuning recipe (chosen on principle, not on the held-out people): start from the pretrained weights at the
# learning rate their own schedule ended at (gm-nerf-small's 1e-3 decayed tenfold; gm-nerf-finetune likewise uses a
# tenth of gm-nerf's), with the usual tenfold decay over this run's steps.
finetune_flags() {  # CHECKPOINT STEPS: ns-train options, one per line
  local group
  echo --pipeline.pretrained-checkpoint; echo "$1"
  for group in encoder fields renderer; do
    printf '%s\n' "--optimizers.$group.optimizer.lr" 1e-4 "--optimizers.$group.scheduler.lr-final" 1e-5 \
      "--optimizers.$group.scheduler.max-steps" "$2"
  done
}

echo "[demo] 1/5 built-in data -> $DATA"
gmnerf-synth --out "$DATA" --skip-if-complete --workers 2  # one process per core; the same data as one process

echo "[demo] 2/5 zero-shot: the pretrained gm-nerf-small on the held-out people, no training"
PRETRAINED=$(gmnerf-pretrained --data "$DATA" --output-dir "$OUT" --experiment-name demo-pretrained \
  --timestamp "$(date +%Y-%m-%d_%H%M%S)" --max-eval-frames-per-subject 1 | tail -n 1)
ns-eval --load-config "$PRETRAINED" --output-path "$(dirname "$PRETRAINED")/eval.json"

if [ "$FROM_SCRATCH" = 1 ]; then
  echo "[demo] 3/5 training gm-nerf-small from scratch for $STEPS steps (CPU)"
  LABEL="trained from scratch $STEPS steps"; STAMP=scratch; TRAIN_FLAGS=()
else
  CHECKPOINT=$(ls "$(dirname "$PRETRAINED")"/nerfstudio_models/step-*.ckpt | tail -n 1)
  echo "[demo] 3/5 fine-tuning the pretrained gm-nerf-small on the training people for $STEPS steps (CPU)"
  LABEL="fine-tuned $STEPS steps"; STAMP=finetune; mapfile -t TRAIN_FLAGS < <(finetune_flags "$CHECKPOINT" "$STEPS")
fi
STAMP="$STAMP-$(date +%Y-%m-%d_%H%M%S)"
ns-train gm-nerf-small --data "$DATA" --output-dir "$OUT" --experiment-name demo --timestamp "$STAMP" \
  --max-num-iterations "$STEPS" --vis tensorboard ${TRAIN_FLAGS[@]+"${TRAIN_FLAGS[@]}"} \
  gmnerf-synthetic --max-eval-frames-per-subject 1
CONFIG="$OUT/demo/gm-nerf-small/$STAMP/config.yml"
RUN=$(dirname "$CONFIG")

echo "[demo] 4/5 orbit of a held-out subject"
gmnerf-render orbit --load-config "$CONFIG" --num-views 24 --output-format images --output-path "$RUN/orbit.mp4"
python - "$RUN/orbit" <<'PY'
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

folder = Path(sys.argv[1])
frames = [imageio.imread(p) for p in sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png"))]
imageio.mimsave(folder / "orbit.gif", frames, duration=1 / 12, loop=0)
imageio.imwrite(folder / "orbit_sheet.png", np.concatenate(frames[:: max(1, len(frames) // 6)][:6], axis=1))
PY

echo "[demo] 5/5 evaluation on the held-out subjects, and a report"
ns-eval --load-config "$CONFIG" --output-path "$RUN/eval.json" --render-output-path "$RUN/eval_images"
gmnerf-report --load-config "$CONFIG" --eval-json "$RUN/eval.json"

echo
echo "[demo] done"
echo "  run:        $RUN"
echo "  checkpoint: $RUN/nerfstudio_models/"
echo "  orbit:      $RUN/orbit/orbit.gif (frames and orbit_sheet.png beside it)"
echo "  metrics:    $RUN/eval.json   (per-image renders in $RUN/eval_images/)"
echo "  report:     $RUN/report/report.html (and report.png)"
echo "  zero-shot:  $(dirname "$PRETRAINED") (the pretrained model as a run: ns-eval, ns-render, ns-viewer work on it)"
python - "$(dirname "$PRETRAINED")/eval.json" "$RUN/eval.json" "$LABEL" <<'PY'
import json, sys
for label, path in (("zero-shot (pretrained, no training)", sys.argv[1]), (sys.argv[3], sys.argv[2])):
    results = json.load(open(path))["results"]
    print(f"  held-out, {label + ':':<37} " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()
                                                      if k in ("psnr", "ssim", "lpips")))
PY
