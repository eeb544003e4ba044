"""Fixtures the data-layer tests share."""

from pathlib import Path

import pytest

from tests.fixtures.datasets_zju import make_synthetic_dataset


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """Three built-in-layout people (one held out), two frames each: enough for the datamanager's sampling tests."""
    data = tmp_path_factory.mktemp("small") / "data"
    make_synthetic_dataset(data, subjects=(0, 1, 2), test=(2,), num_frames=2, num_vertices=600)
    return data
