#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, run the test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -n "${VIRTUAL_ENV:-}" ] || . .venv/bin/activate
export ANNY_CACHE_DIR="${ANNY_CACHE_DIR:-$PWD/.cache/anny}"
# The viewer test drives a headless Chromium: install Debian's when it is missing and we may (root, apt).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing chromium for the viewer test (log: $VIRTUAL_ENV/gmnerf_apt.log)"
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
      >>"$VIRTUAL_ENV/gmnerf_apt.log" 2>&1; then
    echo "[test] could not install chromium; the viewer test will say so"
  fi
fi
echo "[test] ruff"
ruff check gmnerf_ns scripts tests benchmarks
echo "[test] pytest"
python -m pytest -q "$@"
