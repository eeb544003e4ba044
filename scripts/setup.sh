#!/usr/bin/env bash
# Idempotent setup: a venv (unless one is active), pinned torch first, then gmnerf-ns in editable mode with dev extras.
# Re-running when nothing changed takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    python3 -m venv .venv
  fi
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
PY=python
LOG="$VIRTUAL_ENV/gmnerf_setup.log"
quiet() {  # run a pip step with its chatter in the log; show the log's tail if it fails
  if ! "$@" >>"$LOG" 2>&1; then
    echo "[setup] failed: $*  (last lines of $LOG follow)" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
}
STAMP="$VIRTUAL_ENV/.gmnerf_setup_stamp"
HASH=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

link_ffmpeg() {  # ns-render stops with "Could not find ffmpeg" otherwise: use imageio-ffmpeg's bundled binary
  if ! command -v ffmpeg >/dev/null 2>&1; then
    local exe
    if exe=$($PY -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())" 2>/dev/null) && [ -x "$exe" ]; then
      ln -sf "$exe" "$VIRTUAL_ENV/bin/ffmpeg"
      echo "[setup] no system ffmpeg: linked imageio-ffmpeg's into $VIRTUAL_ENV/bin/ffmpeg"
    fi
  fi
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && $PY -c "import gmnerf_ns, nerfstudio" 2>/dev/null; then
  link_ffmpeg
  echo "[setup] up to date ($VIRTUAL_ENV)"
  exit 0
fi

# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build from the registry.
if ! $PY -c "import torch, torchvision, sys; sys.exit(0 if (torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')) else 1)" 2>/dev/null; then
  echo "[setup] installing torch==2.14.1 torchvision==0.29.1"
  quiet $PY -m pip install --upgrade pip
  quiet $PY -m pip install torch==2.14.1 torchvision==0.29.1
fi
echo "[setup] installing gmnerf-ns (editable, with dev extras) and nerfstudio==1.1.5"
quiet $PY -m pip install -e ".[dev]" torch==2.14.1 torchvision==0.29.1
link_ffmpeg
echo "$HASH" > "$STAMP"
echo "[setup] done: $(python -c 'import nerfstudio, torch; print("torch", torch.__version__, "| nerfstudio", nerfstudio.__version__ if hasattr(nerfstudio, "__version__") else "1.1.5")') in $VIRTUAL_ENV"
echo "[setup] activate with: source $ROOT/.venv/bin/activate"
