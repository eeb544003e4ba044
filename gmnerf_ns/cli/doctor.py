"""``gmnerf-doctor``: checks a dataset and this machine before a long run, and says what a run will use.

It parses the dataset with the chosen dataparser and protocol (both splits), decodes a spread-out sample of views as
training does (missing, truncated or corrupt images and masks, empty masks), loads a sample of frames' proxy vertices
(finite, right shape), checks that each sampled proxy projects onto its person (a camera that does not match its
images shows up there), runs ns-train's pre-flight checks (:mod:`gmnerf_ns.data.preflight`: every camera of the first
frame sees its proxy, images the size of their intrinsics, masks the size of the images), and reports the
environment: device, tiny-cuda-nn, distributed backends, pretrained weights (encoder ResNet, VGG for the perceptual
loss, LPIPS backbone: in the cache, or to be downloaded on first use) and body-model files. It prints one table and
exits with status 1 if anything is an error, 0 otherwise (warnings are things a run works around, e.g. a missing VGG
falls back to an SSIM loss).

A picture of the fit: for the first frame of a few subjects (``--overlay-subjects``, spread over both splits) it
writes one PNG per camera into ``--overlay-dir`` (default ``gmnerf_doctor/<dataset folder name>/``), the posed proxy's
silhouette in green over the view with the mask's outline in magenta (:mod:`gmnerf_ns.cli.overlay`), and names the
cameras whose silhouette and mask overlap less than ``--iou-threshold`` (intersection over union). Pictures of an
earlier run are not overwritten without ``--force``. A wrong unit (millimetres, a wrong scale factor) stops the
dataset parse itself with one error naming the factor that fixes it (``check_scale`` in
``gmnerf_ns/data/parsers/scale.py``), which shows up here as the split's error.

The checks live in :mod:`gmnerf_ns.cli.doctor_environment` (this machine), :mod:`gmnerf_ns.cli.doctor_dataset` (the
data) and :mod:`gmnerf_ns.cli.doctor_overlays` (the picture of the fit); :mod:`gmnerf_ns.cli.doctor_table` prints them.

Examples::

    gmnerf-doctor --data data/synthetic
    gmnerf-doctor --dataparser zju-mocap --data zju --method gm-nerf --body-model-dir ~/models
    gmnerf-doctor --data my_capture --overlay-dir checks/my_capture --overlay-subjects 1 --force
"""

from __future__ import annotations

import copy
import sys
from typing import List, Optional

import tyro
from rich.console import Console

from gmnerf_ns.cli.doctor_dataset import check_dataset
from gmnerf_ns.cli.doctor_environment import check_body_models, check_device, check_environment, check_weights
from gmnerf_ns.cli.doctor_options import DoctorConfig
from gmnerf_ns.cli.doctor_overlays import check_overlays
from gmnerf_ns.cli.doctor_table import Check, render


def method_config(name: str):
    """A fresh copy of the config of gm-nerf method ``name``; raises KeyError listing the known names."""
    from gmnerf_ns.training import method_configs

    specs = [method_configs.gm_nerf, method_configs.gm_nerf_small, method_configs.gm_nerf_finetune]
    configs = {spec.config.method_name: spec.config for spec in specs}
    if name not in configs:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(configs)}")
    return copy.deepcopy(configs[name])


def run_checks(cfg: DoctorConfig) -> List[Check]:
    """Every check, in report order."""
    try:
        config = method_config(cfg.method)
    except KeyError as err:
        return [Check("run", "method", "error", str(err.args[0]))]
    rows = check_environment(cfg.method)
    rows += check_weights(config)
    rows += check_body_models(cfg.body_model_dir)
    data_rows, summary, collections = check_dataset(cfg)
    rows += data_rows
    if collections:
        rows += check_overlays(cfg, collections)
    device_row, device = check_device(cfg.device_type or config.machine.device_type)
    rows.append(device_row)
    tcnn = device == "cuda" and any(r.item == "tiny-cuda-nn" and r.status == "ok" for r in rows)
    workers = cfg.num_workers if cfg.num_workers is not None else config.pipeline.datamanager.num_workers
    rows.append(Check("run", cfg.method, "info",
                      f"device {device}, {'tiny-cuda-nn' if tcnn else 'torch'} MLPs, {workers} decoding thread(s), "
                      f"patch {config.pipeline.datamanager.patch_size}px, {config.max_num_iterations} steps"))
    if summary.get("train_subjects"):
        rows.append(Check("run", "data", "info",
                          f"train on {len(summary['train_subjects'])} subjects, evaluate on "
                          f"{', '.join(summary.get('test_subjects', [])) or '-'}; {summary['views']} views at "
                          f"{summary['resolution']}px, m={summary['m']} source views"))
    return rows


def main(cfg: DoctorConfig, console: Optional[Console] = None) -> int:
    """Runs the checks, prints the table, returns the exit status (1 if any check is an error)."""
    rows = run_checks(cfg)
    render(rows, console)
    return 1 if any(r.status == "error" for r in rows) else 0


def entrypoint() -> None:
    """``gmnerf-doctor`` console script."""
    sys.exit(main(tyro.cli(DoctorConfig)))


if __name__ == "__main__":
    entrypoint()
