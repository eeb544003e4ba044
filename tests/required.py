"""External programs some tests drive (Chromium, ffmpeg): skipped on a developer's machine without them, but a
failure under ``CI=true``, where scripts/setup.sh and scripts/test.sh install them, so CI runs what users run."""

from __future__ import annotations

import os

import pytest


def missing(what: str) -> None:
    """Skips the calling test, or fails it under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing on CI (scripts/setup.sh and scripts/test.sh install it)")
    pytest.skip(f"{what} is not installed")
