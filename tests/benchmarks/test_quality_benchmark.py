"""benchmarks/quality/benchmark.py (code in benchmarks/quality/bench/): the --quick smoke run writes its files with
every system and finite metrics; target logic."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK = ROOT / "benchmarks" / "quality"
sys.path.insert(0, str(BENCHMARK))  # the benchmark is development tooling, not part of the package

from bench.report import evaluate_targets  # noqa: E402
from bench.settings import FULL_RES, GM_SYSTEMS, NERFACTO, NO_ATTENTION, NO_PROXY, QUICK, REFERENCE  # noqa: E402


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("benchmark")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(BENCHMARK / "benchmark.py"), "--quick", "--out", str(tmp / "benchmarks"),
         "--run-name", "ci", "--data", str(tmp / "data")],
        cwd=tmp, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    print(f"benchmark --quick took {elapsed:.0f} s")
    return tmp / "benchmarks" / "ci"


@pytest.mark.slow
def test_quick_run_writes_table_plots_and_json(quick_run):
    for name in ("results.md", "results.json", "log.txt", "quality.png", "render_time.png", "train_memory.png",
                 "loss_curves.png", "qualitative.png"):
        assert (quick_run / name).is_file(), name
        assert (quick_run / name).stat().st_size > 0, name
    table = (quick_run / "results.md").read_text()
    for heading in ("## Machine", "## Protocol", "## Quality", "## Speed", "## Training memory", "## Targets"):
        assert heading in table
    for system in [*GM_SYSTEMS, NERFACTO]:
        assert f"| {system} |" in table
    assert "python benchmarks/quality/benchmark.py --quick" in table
    tmp = str(quick_run.parents[1])  # absolute paths appear only where the command line itself named them
    doc = json.loads((quick_run / "results.json").read_text())
    assert tmp not in json.dumps({k: v for k, v in doc.items() if k != "command"})
    assert all(tmp not in line for line in (quick_run / "log.txt").read_text().splitlines() if "Command:" not in line)


@pytest.mark.slow
def test_quick_run_json_has_every_system_with_finite_metrics(quick_run):
    doc = json.loads((quick_run / "results.json").read_text())
    assert doc["mode"] == "quick"
    assert set(doc["systems"]) == {*GM_SYSTEMS, NERFACTO}
    for name, entry in doc["systems"].items():
        assert "error" not in entry, (name, entry.get("error"))
        assert entry["steps"] >= 1, name
        for key in ("train_seconds", "steps_per_second", "rays_per_second", "pixels_per_second", "peak_rss_mb",
                    "cpu_utilisation"):
            assert finite(entry[key]) and entry[key] > 0, (name, key, entry.get(key))
        quality = entry["quality"]
        assert quality["num_images"] >= 1
        assert finite(quality["psnr"]) and 0 < quality["ssim"] <= 1, (name, quality)
        if quality["lpips"] is None:  # only without local weights, and then the reason is given
            assert not quality["lpips_status"]["available"] and quality["lpips_status"]["reason"]
        else:
            assert finite(quality["lpips"])
        geometry = entry["geometry"]
        if geometry["available"]:
            assert finite(geometry["chamfer_cm"]) and finite(geometry["p2s_cm"]), name
        else:
            assert geometry["reason"], name
    for name in GM_SYSTEMS:  # the geometry tools exist: gm-nerf systems get Chamfer/P2S at quick mode's iso-level
        assert doc["systems"][name]["geometry"]["available"], (name, doc["systems"][name]["geometry"])

    renders = {(r["system"], r["variant"], r["resolution"]): r for r in doc["render"]}
    for res in QUICK.render_resolutions:
        for variant in ("trained", "volume-full-res"):
            entry = renders[(REFERENCE, variant, res)]
            assert "error" not in entry, entry.get("error")
            assert finite(entry["warm_seconds"]) and entry["warm_seconds"] > 0
            assert finite(entry["peak_rss_mb"])
    assert (FULL_RES, "trained", QUICK.render_resolution) in renders
    memory = {(m["patch_size"], m["grad_ray_fraction"]) for m in doc["train_memory"] if "error" not in m}
    assert {(QUICK.patch_size, 0.25), (QUICK.patch_size, 1.0)} <= memory

    full_res = renders[(REFERENCE, "volume-full-res", QUICK.render_resolution)]  # built with neural_renderer=False
    assert full_res["volume_rays"] == QUICK.render_resolution ** 2
    for entry in renders.values():  # cold (encoding included) and warm (encoding cached), split into phases
        if "error" not in entry:
            assert finite(entry["cold_seconds"]) and finite(entry["warm_seconds"]) and finite(entry["encode_seconds"])
            assert entry["warm_seconds"] < entry["cold_seconds"] + 1.0
            assert set(entry["warm_breakdown"]) == {"rays_seconds", "renderer_seconds", "other_seconds"}
    for entry in doc["train_memory"]:  # activation memory next to RSS, by phase; the gradient rays' part shrinks
        assert entry["saved_mb"] > 0 and set(entry["saved_mb_by_phase"]) == {"encode", "rays", "renderer", "losses",
                                                                           "other"}
        assert entry["device_peak_mb"] is None  # CPU
    part = next(m for m in doc["train_memory"] if m["grad_ray_fraction"] == 0.25)
    full = next(m for m in doc["train_memory"] if m["grad_ray_fraction"] == 1.0)
    assert full["saved_mb_by_phase"]["rays"] > 2 * part["saved_mb_by_phase"]["rays"]
    assert full["saved_mb_by_phase"]["encode"] == pytest.approx(part["saved_mb_by_phase"]["encode"])
    memory_target = next(t for t in doc["targets"] if t["target"].startswith("training peak memory"))
    render_target = next(t for t in doc["targets"] if t["target"].startswith("render"))
    assert "activations" in memory_target["measured"]
    assert "warm" in render_target["measured"] and "cold" in render_target["measured"]
    psnr_targets = [t["target"] for t in doc["targets"] if t["target"].startswith("held-out PSNR")]
    assert any(NO_PROXY in t for t in psnr_targets) and any("nerfacto" in t for t in psnr_targets)
    assert any(NO_ATTENTION in t for t in psnr_targets)  # geometry-guided attention vs naive mean

    assert len(doc["targets"]) == 5
    for target in doc["targets"]:
        assert target["verdict"] in ("PASS", "FAIL"), target
        assert "quick mode" in target["caveats"]
    machine = doc["machine"]
    assert machine["cpu_model"] and machine["usable_cores"] >= 1 and machine["torch"]
    assert finite(doc["load"]["start"]["load1"]) and finite(doc["load"]["end"]["load1"])
    scene = json.loads(next((quick_run.parents[1] / doc["work_dir"]).glob("nerfacto-*/scene/transforms.json"))
                       .read_text())
    assert len(scene["frames"]) == doc["split"]["protocol"]["num_input_views"] == 4


@pytest.mark.slow
def test_resume_reuses_finished_measurements_and_refuses_other_settings(quick_run):
    tmp = quick_run.parents[1]
    work = tmp / "work-resumed"
    shutil.copytree(tmp / "outputs" / "benchmark-work" / "ci", work)  # a copy: the other tests read the original
    base = [sys.executable, str(BENCHMARK / "benchmark.py"), "--quick", "--out", str(tmp / "resumed"),
            "--run-name", "ci", "--data", str(tmp / "data"), "--work-dir", str(work), "--resume",
            "--systems", REFERENCE, "--skip-speed"]
    proc = subprocess.run(base, cwd=tmp, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads((tmp / "resumed" / "ci" / "results.json").read_text())
    assert set(doc["reused"]) == {"inspect", f"train-{REFERENCE}"}  # nothing was trained again
    assert "Resumed run" in (tmp / "resumed" / "ci" / "results.md").read_text()
    proc = subprocess.run(base + ["--budget-seconds", "3"], cwd=tmp, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 2 and "other settings" in proc.stderr


def _doc(psnr_ref, psnr_none, psnr_nerfacto, render_fast, render_slow, mem_partial, mem_full, psnr_no_attention=24.0):
    def system(psnr):
        return {"steps": 10, "train_seconds": 1.0, "quality": {"per_image": [{"index": 0, "psnr": psnr}]}}

    return {
        "mode": "full", "settings": {"budget_seconds": 1, "render_resolution": 512, "patch_size": 64,
                                     "gm_nerf_small_grad_ray_fraction": 0.25},
        "load": {"under_load": False, "max_load1": 0.5}, "machine": {"usable_cores": 2},
        "systems": {REFERENCE: system(psnr_ref), NO_PROXY: system(psnr_none), NERFACTO: system(psnr_nerfacto),
                    NO_ATTENTION: system(psnr_no_attention)},
        "render": [
            {"system": REFERENCE, "variant": "trained", "resolution": 512, "warm_seconds": render_fast,
             "encode_seconds": 0.1, "volume_rays": 256 * 256},
            {"system": REFERENCE, "variant": "volume-full-res", "resolution": 512, "warm_seconds": render_slow,
             "encode_seconds": 0.1, "volume_rays": 512 * 512},
        ],
        "train_memory": [
            {"patch_size": 64, "grad_ray_fraction": 0.25, "peak_increment_mb": mem_partial,
             "peak_rss_mb": 500 + mem_partial, "rss_ready_mb": 500},
            {"patch_size": 64, "grad_ray_fraction": 1.0, "peak_increment_mb": mem_full, "peak_rss_mb": 500 + mem_full,
             "rss_ready_mb": 500},
        ],
    }


def test_render_target_is_judged_warm_and_memory_target_on_the_peak():
    doc = _doc(25.0, 22.5, 20.0, 1.0, 3.5, 100, 150)
    for entry, (warm, cold) in zip(doc["render"], ((1.0, 3.0), (3.5, 5.5))):  # 3.5x warm, 1.8x cold
        entry.update(warm_seconds=warm, cold_seconds=cold, encode_seconds=2.0)
    for entry, saved in zip(doc["train_memory"], (100.0, 400.0)):  # 4x activations, 1.5x peak RSS increment
        entry.update(saved_mb=saved, saved_mb_by_phase={"encode": 50.0, "rays": saved - 60.0, "renderer": 5.0,
                                                        "losses": 5.0, "other": 0.0}, device_peak_mb=None)
    render, memory = evaluate_targets(doc)[2:4]
    assert render["verdict"] == "PASS" and "1.83x cold" in render["measured"]
    assert memory["verdict"] == "FAIL" and "1.50x peak" in memory["measured"] and "4.00x activations" in memory["measured"]
    for entry, peak in zip(doc["train_memory"], (100.0, 250.0)):  # on CUDA the device's peak is judged
        entry["device_peak_mb"] = peak
    assert evaluate_targets(doc)[3]["verdict"] == "PASS"


def test_saved_tensor_meter_counts_activations_once_per_storage_by_phase():
    from bench.probes import SavedTensorMeter, model_phases

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(8, 8)

        def encode(self, x):
            return self.layer(x)  # saves x and the weight (a parameter: not counted)

        def render_rays(self, x):
            y = torch.relu(x)  # saves its output
            return y * y  # saves y once (same storage twice)

    model = Toy()
    x = torch.randn(100, 8, requires_grad=True)  # so that the linear layer also saves its weight
    meter = SavedTensorMeter(model)
    with meter.measure(model):
        model.render_rays(model.encode(x)).sum().backward()
    assert meter.bytes["encode"] == 100 * 8 * 4
    assert meter.bytes["rays"] == 100 * 8 * 4
    assert meter.excluded_hits >= 1
    assert "encode" not in vars(model) and "render_rays" not in vars(model)  # the wrappers are removed
    with model_phases(model, []) as state:
        assert state.current == "other"


def test_targets_pass_and_fail_on_the_measured_numbers():
    verdicts = [t["verdict"] for t in evaluate_targets(_doc(25.0, 22.5, 20.0, 1.0, 3.5, 100, 250))]
    assert verdicts == ["PASS", "PASS", "PASS", "PASS", "PASS"]
    verdicts = [t["verdict"] for t in evaluate_targets(_doc(25.0, 23.5, 26.0, 1.0, 2.5, 100, 150, 25.0))]
    assert verdicts == ["FAIL", "FAIL", "FAIL", "FAIL", "FAIL"]  # a tie with the attention ablation is no win
    doc = _doc(25.0, 22.5, 20.0, 1.0, 3.5, 100, 250)
    doc["train_memory"][1]["error"] = "killed"
    assert evaluate_targets(doc)[3]["verdict"] == "n/a"
