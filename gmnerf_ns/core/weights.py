"""Pretrained torchvision weights: found in torch hub's cache, else downloaded into it as torchvision does.

The ResNet image encoder, the perceptual loss (VGG19, or LPIPS on VGG16) and the LPIPS metric (AlexNet) all get their
ImageNet weights here. A checkpoint is looked up in torch hub's cache (``$TORCH_HOME/hub/checkpoints/<file>``, the
file ``torchvision.models.vgg19(weights="DEFAULT")`` downloads) and, when it is missing, downloaded there from
torchvision's URL with torchvision's file name and SHA-256 prefix check. ``GMNERF_OFFLINE=1`` forbids the download.
A path set explicitly in a config is never downloaded to.

When the weights cannot be had (offline, or the download failed), :func:`pretrained_weights_path` raises
:class:`PretrainedWeightsUnavailable` naming the file and where to put it; callers fall back loudly (see
:func:`warn_once`). This module imports nothing from ``gmnerf_ns``, so that the model and the metrics can both use it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, Literal, Optional, Set
from urllib.parse import urlparse

import torch
from nerfstudio.utils.rich_utils import CONSOLE
from rich.markup import escape
from torch import Tensor

TORCHVISION_URLS: Dict[str, str] = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg19": "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
}
"""torchvision's ImageNet checkpoints (``weights="DEFAULT"``) by architecture; the cached file is the URL's name."""
OFFLINE_ENV = "GMNERF_OFFLINE"
"""Set to 1 (or true/yes/on) to forbid downloads: missing weights then fall back as if the machine were offline."""

Availability = Literal["present", "download", "missing"]


class MissingPretrainedWeightsWarning(UserWarning):
    """Pretrained weights could not be found or downloaded, so a weights-free fallback (or no metric) is used."""


class PretrainedWeightsUnavailable(FileNotFoundError):
    """Pretrained weights are neither on disk nor downloadable; the message says which file to put where."""


_WARNED_KEYS: Set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Warns loudly (rich console + ``MissingPretrainedWeightsWarning``) the first time ``key`` is seen."""
    if key in _WARNED_KEYS:
        return
    _WARNED_KEYS.add(key)
    CONSOLE.print(f"[bold yellow]WARNING: {escape(message)}")
    warnings.warn(message, MissingPretrainedWeightsWarning, stacklevel=3)


def downloads_allowed() -> bool:
    """False when ``GMNERF_OFFLINE`` is set to 1/true/yes/on."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def checkpoint_file(arch: str) -> str:
    """torchvision's file name for ``arch``, e.g. ``vgg19-dcbb9e9d.pth``."""
    return os.path.basename(urlparse(TORCHVISION_URLS[arch]).path)


def expected_weights_path(arch: str, weights_path: Optional[Path] = None) -> Path:
    """Where the ``arch`` checkpoint is looked up: ``weights_path`` if given, else torch hub's cache."""
    if weights_path is not None:
        return Path(weights_path).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / checkpoint_file(arch)


def missing_weights_hint(arch: str, path: Path) -> str:
    """One sentence telling the user which file to put where."""
    return f"put torchvision's {checkpoint_file(arch)} ({TORCHVISION_URLS[arch]}) at {path}"


def weights_availability(arch: str, weights_path: Optional[Path] = None) -> Availability:
    """``present`` on disk, ``download`` on first use, or ``missing`` (explicit path absent, or downloads off)."""
    if expected_weights_path(arch, weights_path).is_file():
        return "present"
    return "download" if weights_path is None and downloads_allowed() else "missing"


def pretrained_weights_path(arch: str, weights_path: Optional[Path] = None, progress: bool = True) -> Path:
    """The local path of the ``arch`` checkpoint, downloaded into torch hub's cache first if it is missing there.

    Args:
        arch: A key of :data:`TORCHVISION_URLS`.
        weights_path: An explicit checkpoint; it is never downloaded to.
        progress: Show torch hub's download progress bar.

    Raises:
        PretrainedWeightsUnavailable: If the file is missing and cannot be downloaded (explicit path,
            ``GMNERF_OFFLINE``, no network, or a file whose SHA-256 does not match its name).
    """
    path = expected_weights_path(arch, weights_path)
    if path.is_file():
        return path
    hint = missing_weights_hint(arch, path)
    if weights_path is not None:
        raise PretrainedWeightsUnavailable(f"pretrained {arch} weights not found; {hint}")
    if not downloads_allowed():
        raise PretrainedWeightsUnavailable(
            f"pretrained {arch} weights not found and downloads are off ({OFFLINE_ENV}=1); {hint}"
        )
    url = TORCHVISION_URLS[arch]
    # torchvision's check_hash: the file name carries the first hex digits of the file's SHA-256.
    match = torch.hub.HASH_REGEX.search(path.name)
    CONSOLE.log(f"downloading pretrained {arch} weights: {url} -> {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written to a temporary file and moved into place once complete (and its hash checked).
        torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=progress)
    except Exception as err:
        raise PretrainedWeightsUnavailable(
            f"pretrained {arch} weights not found and their download failed ({type(err).__name__}: {err}); {hint}"
        ) from err
    return path


def load_torchvision_features(path: Path) -> Dict[str, Tensor]:
    """Loads the ``features.*`` part of a torchvision VGG/AlexNet checkpoint, prefix stripped.

    A checkpoint holding only the features (keys ``features.N.weight`` or ``N.weight``) works too.
    """
    try:
        try:
            # mmap: the 500 MB classifier of a VGG checkpoint is never read.
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be mmapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        summary = str(err).strip().split(". ")[0]  # torch's messages run on with advice that doesn't apply here
        raise ValueError(f"{path} is not a readable torch checkpoint ({type(err).__name__}: {summary})") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    if not features:
        features = {k: v for k, v in state.items() if k.split(".")[0].isdigit()}
    if not features:
        raise ValueError(f"{path} holds no 'features.*' tensors; is it a torchvision VGG/AlexNet checkpoint?")
    return features
