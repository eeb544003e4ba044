#!/usr/bin/env bash
# Prepares the GPU kit HERE (a machine that reaches PyPI), for run.sh on a lent accelerator machine (python 3.12 with
# torch, no network): the project's wheel and the wheels of the dependencies its image lacks, in .gpu_kit/ (ignored
# by git, sent with the run call's carry list), and an empty fpsample module (no python 3.12 wheel exists; nerfstudio
# only imports it). Idempotent: re-running rebuilds the project's wheel and downloads only what is missing.
# Prints the one device call to make.
#
#   bash benchmarks/throughput/gpu_kit/prepare.sh
#
# Knobs (environment): GPU_KIT_DIR (default .gpu_kit), GPU_KIT_PYTHON_VERSION (3.12), GPU_KIT_EXTRA (more packages,
# e.g. "tensorboard" if the image lacks it), GPU_KIT_LIMIT_MB (56), GPU_KIT_BUILD_PYTHON (.venv/bin/python),
# GPU_KIT_PRETRAIN_METHOD (gm-nerf) and GPU_KIT_PRETRAIN_STEPS (40000): the pretrained run whose newest
# checkpoint the pretrain stage resumes from (GPU_KIT_RESUME_RUN, default outputs/pretrained/METHOD/world-seed0-STEPS);
# one over 16 MiB (gm-nerf's) is carried without Adam's moments, to keep the call under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$(pwd)
KIT=${GPU_KIT_DIR:-$ROOT/.gpu_kit}
PYV=${GPU_KIT_PYTHON_VERSION:-3.12}
PY=${GPU_KIT_BUILD_PYTHON:-$ROOT/.venv/bin/python}
LIMIT_MB=${GPU_KIT_LIMIT_MB:-56}
HERE=benchmarks/throughput/gpu_kit
mkdir -p "$KIT/wheels" "$KIT/stub"

echo "[prepare] the project's wheel"
rm -f "$KIT"/wheels/gmnerf_ns-*.whl
"$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w "$KIT/wheels" "$ROOT" \
  > "$KIT/build.log" 2>&1 || { tail -n 30 "$KIT/build.log" >&2; exit 1; }
"$PY" "$HERE/kit.py" tree-hash "$ROOT" > "$KIT/tree.sha256"

echo "[prepare] dependency wheels for CPython $PYV (x86-64 Linux) -> $KIT/wheels"
# shellcheck disable=SC2086
"$PY" "$HERE/kit.py" download "$KIT/wheels" --python-version "$PYV" --extra ${GPU_KIT_EXTRA:-}
"$PY" "$HERE/kit.py" check-wheels "$KIT/wheels" --python-version "$PYV"
echo '"""Empty stand-in: fpsample has no python 3.12 wheel; nerfstudio imports it but gm-nerf never calls it."""' \
  > "$KIT/stub/fpsample.py"

# The pretrain stage goes on from this machine's newest checkpoint of the pretrained run, if there is one.
METHOD=${GPU_KIT_PRETRAIN_METHOD:-gm-nerf}
RUN=${GPU_KIT_RESUME_RUN:-$ROOT/outputs/pretrained/$METHOD/world-seed0-${GPU_KIT_PRETRAIN_STEPS:-40000}}
NEWEST=$(ls "$RUN"/nerfstudio_models/step-*.ckpt 2>/dev/null | sort -V | tail -n 1)
rm -rf "$KIT/resume"
if [ -n "$NEWEST" ]; then
  mkdir -p "$KIT/resume"
  if [ "$(stat -c %s "$NEWEST")" -gt $((16 * 1048576)) ]; then
    "$PY" "$HERE/checkpoint_parts.py" compact "$NEWEST" "$KIT/resume/$(basename "$NEWEST")" > /dev/null
    echo "[prepare] the pretrain stage resumes from $NEWEST (without Adam's moments)"
  else
    cp "$NEWEST" "$KIT/resume/"
    echo "[prepare] the pretrain stage resumes from $NEWEST"
  fi
  [ ! -f "$RUN/train_seconds.txt" ] || cp "$RUN/train_seconds.txt" "$KIT/resume/"  # the time so far goes on counting
fi

kit_bytes=$(du -sb "$KIT" | cut -f1)
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
echo "[prepare] $(ls "$KIT"/wheels/*.whl | wc -l) wheels, kit $((kit_bytes / 1000000)) MB, working tree $((tree_bytes / 1000000)) MB" \
  "(a run call carries at most 64 MiB in all)"
if [ "$kit_bytes" -gt $((LIMIT_MB * 1000000)) ] || [ $((kit_bytes + tree_bytes)) -gt $((60 * 1048576)) ]; then
  echo "[prepare] too large: keep the kit under $LIMIT_MB MB and kit + tree under 60 MiB" >&2
  exit 1
fi
REL=$(realpath --relative-to="$ROOT" "$KIT")
case $REL in ..*) echo "[prepare] done; $KIT is outside the repository, so a run call cannot carry it"; exit 0 ;; esac
PREFIX=""; [ "$REL" = .gpu_kit ] || PREFIX="GPU_KIT_DIR=$REL "
METHOD_PREFIX=""; [ "$METHOD" = gm-nerf ] || METHOD_PREFIX="GPU_KIT_PRETRAIN_METHOD=$METHOD "
cat <<EOF
[prepare] ready. On a session with a lent accelerator, make ONE device call (run.sh ends by about 460 s):
  run(command="${PREFIX}${METHOD_PREFIX}bash $HERE/run.sh", carry=["$REL"], timeout_s=500)
It writes summary.txt, summary.json and logs.tar.gz under \$OUT (README: "GPU kit").
EOF
