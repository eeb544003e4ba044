"""gmnerf-doctor's checks of this machine: versions, device, tiny-cuda-nn, distributed backends, the pretrained weights
a run uses (present, or downloaded on first use) and the body-model files."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from gmnerf_ns.cli.doctor_table import Check, Status
from gmnerf_ns.core.weights import OFFLINE_ENV, TORCHVISION_URLS, expected_weights_path, weights_availability


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def check_environment(method_name: str) -> List[Check]:
    from gmnerf_ns import __version__

    rows = [Check("environment", "versions", "info",
                  f"python {platform.python_version()}, torch {torch.__version__}, nerfstudio {_version('nerfstudio')}, "
                  f"gmnerf-ns {__version__}")]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        rows.append(Check("environment", "device", "ok", f"CUDA {torch.version.cuda}: {names} (--machine.device-type "
                                                         "cuda)"))
    else:
        status: Status = "warn" if method_name == "gm-nerf" else "info"
        hint = "; gm-nerf is sized for a GPU, use gm-nerf-small" if method_name == "gm-nerf" else ""
        rows.append(Check("environment", "device", status, f"CPU only ({os.cpu_count()} cores){hint}"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from nerfstudio.utils.external import TCNN_EXISTS
    except Exception:  # pragma: no cover - nerfstudio itself is broken
        TCNN_EXISTS = False
    if TCNN_EXISTS:
        rows.append(Check("environment", "tiny-cuda-nn", "ok", "present: fused MLPs on CUDA"))
    else:
        status = "warn" if torch.cuda.is_available() else "info"
        rows.append(Check("environment", "tiny-cuda-nn", status,
                          "absent: pure-torch MLPs (pip install git+https://github.com/NVlabs/tiny-cuda-nn/"
                          "#subdirectory=bindings/torch on a CUDA machine)"))
    backends = [name for name, ok in (("gloo", torch.distributed.is_gloo_available()),
                                      ("nccl", torch.distributed.is_nccl_available())) if ok]
    rows.append(Check("environment", "multi-process", "info" if backends else "warn",
                      f"torch.distributed backends: {', '.join(backends) or 'none'} (--machine.num-devices N)"))
    return rows


def check_device(requested: str) -> Tuple[Check, str]:
    """(report row, device) of what ns-train decides for ``--machine.device-type requested`` on this machine, by the
    trainer's own rule (:func:`gmnerf_ns.core.device.choose_device`): the device, the CPU fallback (a warning) or the
    error (then "cpu" is returned for the rest of the report)."""
    from gmnerf_ns.core.device import choose_device
    from gmnerf_ns.core.errors import DeviceError

    try:
        device, notice = choose_device(requested)
    except DeviceError as err:
        return Check("run", "device", "error", str(err)), "cpu"
    if notice is not None:
        return Check("run", "device", "warn", f"trains on the CPU: CUDA is not available, so --machine.device-type "
                                              f"{requested} falls back to the CPU"), device
    return Check("run", "device", "ok", f"trains on {device} (--machine.device-type {requested})"), device


def weights_check(item: str, arch: str, weights_path: Optional[Path], used: str, fallback: str,
                  missing_status: Status = "warn") -> Check:
    """One row for a pretrained checkpoint: present, to be downloaded on first use, or missing (and what happens)."""
    path = expected_weights_path(arch, weights_path)
    availability = weights_availability(arch, weights_path)
    if availability == "present":
        return Check("weights", item, "ok", f"{used}: {path}")
    if availability == "download":
        return Check("weights", item, "info", f"{used}: not in the cache yet, downloaded on first use from "
                                              f"{TORCHVISION_URLS[arch]} to {path} (set {OFFLINE_ENV}=1 to forbid)")
    offline = f" and downloads are off ({OFFLINE_ENV}=1)" if weights_path is None else ""
    return Check("weights", item, missing_status, f"{path} not found{offline}: {fallback}")


def check_weights(config) -> List[Check]:
    """Pretrained weights a run of ``config`` (a TrainerConfig) uses, and which would be downloaded; downloads none."""
    import lpips

    model = config.pipeline.model
    rows = []
    encoder = model.encoder
    if encoder.backbone == "small":
        rows.append(Check("weights", "image encoder", "ok", "small CNN trained from scratch (needs no weights)"))
    else:
        rows.append(weights_check("image encoder", encoder.backbone, encoder.pretrained_weights,
                                  f"{encoder.backbone} ImageNet weights", "the encoder trains from scratch"))
    if model.perceptual_loss_mult > 0:
        perceptual = model.perceptual_loss
        arch = "vgg19" if perceptual.backbone == "vgg" else "vgg16"
        after = "falls back to 1 - MS-SSIM" if perceptual.allow_fallback else "training cannot start"
        rows.append(weights_check("perceptual loss", arch, perceptual.weights_path, f"{perceptual.backbone} on {arch}",
                                  after, "warn" if perceptual.allow_fallback else "error"))
    else:
        rows.append(Check("weights", "perceptual loss", "info", "disabled (perceptual_loss_mult = 0)"))
    linear = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    if linear.is_file():
        rows.append(weights_check("LPIPS metric", "alexnet", None, "AlexNet + lpips linear layers",
                                  "ns-eval reports LPIPS as unavailable (PSNR/SSIM unaffected)"))
    else:
        rows.append(Check("weights", "LPIPS metric", "warn", f"{linear} not found: ns-eval reports LPIPS as "
                                                            "unavailable (PSNR/SSIM unaffected)"))
    return rows


def check_body_models(body_model_dir: Optional[Path]) -> List[Check]:
    if body_model_dir is None:
        return [Check("body model", "SMPL / SMPL-X", "info", "no --body-model-dir: only gmnerf-render-scans needs the "
                                                             "files (THuman2.0, Multi-garment); training does not")]
    found = []
    for kind, names in (("smpl", ["SMPL_NEUTRAL.pkl", "SMPL_MALE.pkl", "SMPL_FEMALE.pkl"]),
                        ("smplx", [f"SMPLX_{g}.{e}" for g in ("NEUTRAL", "MALE", "FEMALE") for e in ("npz", "pkl")])):
        found += [f"{kind}/{n}" for n in names if (Path(body_model_dir) / kind / n).is_file()]
    if not Path(body_model_dir).is_dir():
        return [Check("body model", "SMPL / SMPL-X", "error", f"--body-model-dir {body_model_dir} does not exist")]
    if not found:
        return [Check("body model", "SMPL / SMPL-X", "warn", f"{body_model_dir} holds no smpl/SMPL_*.pkl or "
                                                             "smplx/SMPLX_*.npz files")]
    return [Check("body model", "SMPL / SMPL-X", "ok", f"{body_model_dir}: {', '.join(found)}")]
