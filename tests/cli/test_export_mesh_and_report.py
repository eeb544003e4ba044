"""gmnerf-export-mesh and gmnerf-report on the shared tiny run."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest
import trimesh

from gmnerf_ns.cli import export_mesh, report
from gmnerf_ns.cli.export_mesh import ExportMesh
from gmnerf_ns.cli.report import Report
from gmnerf_ns.core.checkpoints import DiskFullError, full_disk_ends
from tests.fixtures.shared_run import TEST_SUBJECT, shared_eval, shared_run


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory) / "config.yml"


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_export_mesh_writes_a_closed_surface_inside_the_proxy_box(config, tmp_path, suffix):
    path = tmp_path / f"mesh{suffix}"
    # iso-level just above 0: a 3-step model has low density everywhere inside the proxy occupancy
    ExportMesh(load_config=config, output_path=path, subject=TEST_SUBJECT, frame=1, resolution=16,
               threshold=1e-3).main()
    mesh = trimesh.load(path, force="mesh")
    assert len(mesh.faces) > 100
    lo, hi = mesh.bounds  # the fixture's person: ellipsoid around (0, 0, 0.9), semi-axes (0.25, 0.15, 0.8) m
    assert (lo > [-0.6, -0.5, -0.3]).all() and (hi < [0.6, 0.5, 2.1]).all()
    with pytest.raises(SystemExit, match="--force"):
        ExportMesh(load_config=config, output_path=path).main()


def test_export_mesh_errors_are_clear(config, tmp_path):
    with pytest.raises(SystemExit, match="available subjects"):
        ExportMesh(load_config=config, output_path=tmp_path / "m.ply", subject="nobody").main()
    with pytest.raises(SystemExit, match=r"\.ply or \.obj"):
        ExportMesh(load_config=config, output_path=tmp_path / "m.stl").main()
    with pytest.raises(SystemExit, match="never crosses the threshold"):
        ExportMesh(load_config=config, output_path=tmp_path / "m.ply", resolution=8, threshold=1e9).main()


def test_report_writes_html_and_png(config, tmp_path):
    out = Report(load_config=config, output_dir=tmp_path / "report", num_examples=2).main()
    html = (out / "report.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())["results"]
    assert TEST_SUBJECT in html and "PSNR" in html and "data:image/png;base64," in html
    assert f"{metrics['psnr']:.2f}" in html
    assert metrics["geometry"]["available"]  # the tiny config's geometry settings, as for ns-eval
    image = imageio.imread(out / "report.png")
    assert image.shape[0] > 400 and image.shape[1] > 400
    with pytest.raises(SystemExit, match="--force"):
        Report(load_config=config, output_dir=out).main()


def test_report_from_an_ns_eval_json(config, tmp_path, tmp_path_factory):
    eval_json = shared_eval(tmp_path_factory) / "eval.json"
    out = Report(load_config=config, output_dir=tmp_path / "report", eval_json=eval_json, num_examples=1).main()
    assert (out / "report.png").is_file() and (out / "report.html").is_file()
    assert json.loads((out / "metrics.json").read_text())["results"] == json.loads(eval_json.read_text())["results"]


def _disk_full(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_ends_a_command_with_one_line():
    with pytest.raises(SystemExit) as stop:
        with full_disk_ends("gmnerf-x"):
            raise _disk_full("/out/a.png")
    assert stop.value.code == (f"gmnerf-x: /out/a.png: not written, the disk is full ({os.strerror(errno.ENOSPC)}); "
                               "free some space there and run again")
    with pytest.raises(SystemExit, match=r"^gmnerf-x: /out/b.json: not written"):
        with full_disk_ends("gmnerf-x"):
            raise DiskFullError("/out/b.json: not written, the disk is full")
    with pytest.raises(PermissionError):  # other OS errors are not a full disk
        with full_disk_ends("gmnerf-x"):
            raise PermissionError(errno.EACCES, "Permission denied", "/out/c.png")


def test_report_and_export_mesh_on_a_full_disk_are_one_line(config, tmp_path, monkeypatch):
    import matplotlib.figure

    out = tmp_path / "report"
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, path, *a, **k: (_ for _ in ()).throw(
        _disk_full(path)))
    monkeypatch.setattr(sys, "argv", ["gmnerf-report", "--load-config", str(config), "--output-dir", str(out),
                                      "--num-examples", "1"])
    with pytest.raises(SystemExit) as stop:
        report.entrypoint()
    assert str(stop.value.code).startswith(f"gmnerf-report: {out / 'report.png'}: not written, the disk is full")

    mesh = tmp_path / "mesh.ply"
    monkeypatch.setattr(export_mesh.geometry, "write_mesh", lambda m, path: (_ for _ in ()).throw(_disk_full(path)))
    monkeypatch.setattr(sys, "argv", ["gmnerf-export-mesh", "--load-config", str(config), "--output-path", str(mesh),
                                      "--resolution", "8", "--threshold", "1e-3"])
    with pytest.raises(SystemExit) as stop:
        export_mesh.entrypoint()
    assert str(stop.value.code).startswith(f"gmnerf-export-mesh: {mesh}: not written, the disk is full")
