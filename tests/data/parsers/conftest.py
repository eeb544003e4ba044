"""Fixtures the dataset parsers' tests share."""

import pytest

from tests.fixtures.body_model import install_fake_smplx


@pytest.fixture
def fake_smplx(monkeypatch, tmp_path):
    """``smplx.create`` replaced by a fake, with empty model files where smplx expects them (no real SMPL here), and
    derived files cached under ``tmp_path``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return install_fake_smplx(monkeypatch, tmp_path / "body_models")
