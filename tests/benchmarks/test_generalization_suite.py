"""The generalization suite's seed pooling (benchmarks/generalization/generalization_suite.py): runs named
``...-seedN`` are pooled per model, and a model's difference to the reference uses the training seeds both have."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def suite():
    path = ROOT / "benchmarks" / "generalization" / "generalization_suite.py"
    spec = importlib.util.spec_from_file_location("generalization_suite", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["generalization_suite"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _table(suite, offsets):
    """Per-run tables of 4 people at every misfit: person p scores 20 + p + the run's offset."""
    return {name: {("rig6", misfit, f"p{p}"): {"psnr": 20.0 + p + offset} for misfit in suite.MISFITS for p in range(4)}
            for name, offset in offsets.items()}


def test_seed_of_and_group(suite):
    assert suite.seed_of("ablation-gm-nerf-small-full-seed12") == "12"
    assert suite.seed_of("pretrained") is None
    assert suite.seed_group("ablation-full-seed3") == "ablation-full"


def test_pooled_difference_uses_the_seeds_both_models_have(suite):
    # the reference has seeds 0-2 (seed 2 much better); the other model only seeds 0 and 1, each 0.1 dB below
    offsets = {"full-seed0": 0.0, "full-seed1": 0.2, "full-seed2": 3.0, "mean-seed0": -0.1, "mean-seed1": 0.1}
    table = _table(suite, offsets)
    groups = {"full": ["full-seed0", "full-seed1", "full-seed2"], "mean": ["mean-seed0", "mean-seed1"]}
    summary = {}
    lines = suite.pooled_over_seeds(table, groups, summary)
    first = suite.MISFITS[0]
    mean, _, count = summary["pooled:mean"][f"all/misfit{first:g}/diff_to_full"]
    assert mean == pytest.approx(-0.1) and count == 4  # not -1.1, as against all three reference seeds
    assert summary["pooled:full"][f"all/misfit{first:g}/psnr"][0] == pytest.approx(21.5 + 3.2 / 3)
    assert any(line.startswith("| mean | 2 |") and "| 0,1 |" in line for line in lines)


def test_rigs_score_only_novel_views(suite):
    from gmnerf_ns.data.human_record import evenly_spaced

    for rig, (_, options, targets) in suite.RIGS.items():
        words = options.split()
        cameras = int(words[words.index("--num-cameras") + 1])
        assert not set(targets) & set(evenly_spaced(cameras, 4)), rig


def test_condition_table_gives_mean_and_interval_per_condition(suite):
    people = {f"p{i}": {"psnr": 20.0 + i, "ssim": 0.8} for i in range(4)}
    summary = {}
    lines = suite.condition_table({"m": {"res512": people}}, summary)
    mean, half, count = summary["m"]["cond/res512/psnr"]
    assert (mean, count) == (21.5, 4)
    assert abs(half - 3.182446305284263 * 1.2909944487358056 / 2) < 1e-9  # t(0.975, 3) * sd / sqrt(4)
    row = next(line for line in lines if line.startswith("| m |"))
    assert row.split(" | ")[1].startswith("21.50 ± 2.05 / 0.800") and row.count("|") == len(suite.CONDITIONS) + 2
