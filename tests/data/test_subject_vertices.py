"""A frame's proxy must have every vertex its subject's faces index: training's source loading and gmnerf-doctor refuse
fewer with the same one-line error, from one check (``load_subject_vertices``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import FrameRecord, SubjectRecord, load_subject_vertices
from tests.fixtures.datasets_zju import make_synthetic_dataset

FACES = np.array([[0, 1, 2], [2, 3, 5]], dtype=np.int32)  # index vertices 0..5


def frame_with(tmp_path: Path, num_vertices: int) -> FrameRecord:
    path = tmp_path / f"{num_vertices}.npy"
    np.save(path, np.arange(num_vertices * 3, dtype=np.float32).reshape(num_vertices, 3))
    return FrameRecord(subject="s", frame_id=0, views=(), vertices_path=path)


def test_fewer_vertices_than_the_faces_index_is_one_error(tmp_path):
    frame = frame_with(tmp_path, 5)
    with pytest.raises(HumanDataError) as err:
        load_subject_vertices(SubjectRecord("s", (), (frame,), faces=FACES), frame)
    assert str(err.value) == f"{frame.vertices_path}: 5 vertices but the faces index 6"
    assert load_subject_vertices(SubjectRecord("s", (), (frame,)), frame).shape == (5, 3)  # no faces: nothing to check
    enough = frame_with(tmp_path, 6)
    np.testing.assert_array_equal(load_subject_vertices(SubjectRecord("s", (), (enough,), faces=FACES), enough),
                                  np.load(enough.vertices_path))


def test_source_loading_and_the_doctor_report_the_same_line(tmp_path):
    from rich.console import Console

    from gmnerf_ns.cli.doctor import run_checks
    from gmnerf_ns.cli.doctor_options import DoctorConfig
    from gmnerf_ns.cli.doctor_table import render
    from gmnerf_ns.data.parsers.synthetic import SyntheticDataParserConfig
    from gmnerf_ns.data.source_views import load_sources

    data = tmp_path / "data"
    make_synthetic_dataset(data, subjects=(0, 1), test=(1,), num_frames=2, num_vertices=600)
    short = data / "subject_000" / "vertices" / "1.npy"
    np.save(short, np.load(short)[:100])
    expected = f"{short}: 100 vertices but the faces index 600"

    subject = SyntheticDataParserConfig(data=data, resolution=48).setup().collect("train").subjects[0]
    with pytest.raises(HumanDataError) as err:
        load_sources(lambda view: (torch.zeros(48, 48, 3), torch.ones(48, 48, 1)), subject, subject.frames[1], (0, 1),
                     padding=0.1, subject_index=0)
    assert str(err.value) == expected

    rows = run_checks(DoctorConfig(data=data, resolution=48, num_input_views=3, sample_views=1, sample_frames=0,
                                   overlay_subjects=0))
    console = Console(file=io.StringIO(), width=400)
    render(rows, console)
    row = next(r for r in rows if r.item == "proxy vertices")
    assert (row.status, row.detail) == ("error", f"1 of 4 frames failed: {expected}")
    assert f"error proxy vertices: 1 of 4 frames failed: {expected}" in console.file.getvalue()
