"""Suite-wide settings (no test ever downloads pretrained weights) and the fixtures tests of several folders share."""

import os

import pytest

from gmnerf_ns.core.weights import OFFLINE_ENV


def pytest_configure(config):
    """Forbids weight downloads for the whole run, subprocesses included (tests of the download path opt back in)."""
    os.environ[OFFLINE_ENV] = "1"


@pytest.fixture(scope="module")
def one_thread():
    """Small tensor ops on shared CPUs: one torch thread avoids thread-pool spin-waits (restored afterwards). A module
    opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def body():
    """The built-in body model in float64, as the generator poses it."""
    import torch

    from gmnerf_ns.synth.body import BodyModel

    return BodyModel.load(dtype=torch.float64)
