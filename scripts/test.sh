#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, run the test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -n "${VIRTUAL_ENV:-}" ] || . .venv/bin/activate
export ANNY_CACHE_DIR="${ANNY_CACHE_DIR:-$PWD/.cache/anny}"
echo "[test] ruff"
ruff check gmnerf_ns dataparsers configs scripts tests
echo "[test] pytest"
python -m pytest -q "$@"
