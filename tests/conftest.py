"""Suite-wide settings: no test ever downloads pretrained weights."""

import os

from gmnerf_ns.core.weights import OFFLINE_ENV


def pytest_configure(config):
    """Forbids weight downloads for the whole run, subprocesses included (tests of the download path opt back in)."""
    os.environ[OFFLINE_ENV] = "1"
