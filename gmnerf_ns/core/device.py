"""Which device a run trains on: ``--machine.device-type auto`` picks CUDA when available, else the CPU with a notice.

:func:`resolve_device` runs before anything else reads the device (``save_config`` under ns-train, the trainer for
trainers built directly). config.yml keeps what was asked for, so an ``auto`` run picks again wherever it is resumed.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.core.errors import DeviceError

CPU_FALLBACK_NOTICE = ("gmnerf: CUDA is not available; training on the CPU (pass --machine.device-type cpu to silence "
                       "this)")


def _check_available(kind: str, flag: str, name: str) -> None:
    """Raises :class:`DeviceError` if the ``cuda`` or ``mps`` device ``name`` (given with ``flag``) is not available;
    the choices it offers include ``auto`` only for ``--machine.device-type``."""
    auto = flag == "--machine.device-type"
    if kind == "cuda" and not torch.cuda.is_available():
        why = (f"this torch build ({torch.__version__}) has no CUDA support" if torch.version.cuda is None
               else "no NVIDIA driver or GPU was found")
        raise DeviceError(f"{flag} {name}: CUDA is not available on this machine ({why}); pass {flag} cpu"
                          + (", or auto to use CUDA only where it is available" if auto else ""))
    if kind == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"{flag} {name}: Apple's MPS is not available on this machine; pass {flag} cpu"
                          + (" or auto" if auto else ""))


def choose_device(requested: str) -> Tuple[str, Optional[str]]:
    """The device type a run asking for ``requested`` trains on, and the notice to print about it (or None).

    Raises:
        DeviceError: ``cuda`` or ``mps`` was asked for and is not available.
    """
    if requested == "auto":
        return ("cuda", None) if torch.cuda.is_available() else ("cpu", CPU_FALLBACK_NOTICE)
    _check_available(requested, "--machine.device-type", requested)
    return requested, None


def check_device(device: str, flag: str) -> str:
    """``device`` (``cpu``, ``cuda``, ``cuda:N`` or ``mps``, as torch writes them) if this machine has it; for tools
    that take a torch device name (``flag`` is their option, named in the error).

    Raises:
        DeviceError: not a device name, or a device this machine does not have.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"{flag} {device}: not a device; pass cpu, cuda, cuda:N (the N-th GPU) or mps")
    _check_available(parsed.type, flag, device)
    count = torch.cuda.device_count() if parsed.type == "cuda" else 0
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= count:
        raise DeviceError(f"{flag} {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


def resolve_device(config: TrainerConfig) -> None:
    """Replaces ``config.machine.device_type`` by the device :func:`choose_device` picks, printing its notice. Every
    later reader (nerfstudio's launcher and Trainer, the CPU launcher) then sees cpu, cuda or mps, never auto.

    Raises:
        DeviceError: as :func:`choose_device`.
    """
    device, notice = choose_device(config.machine.device_type)
    if notice is not None:
        CONSOLE.print(f"[bold yellow]{notice}", soft_wrap=True, highlight=False)
    config.machine.device_type = device  # type: ignore[assignment]
