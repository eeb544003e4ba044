"""Optional bf16 autocast and ``torch.compile`` of the learned networks (``--pipeline.model.autocast``,
``--pipeline.model.compile-networks``); both are off by default, and then nothing here changes a computation.

Only the learned layers run under autocast: the image encoder, the proxy registration and volume, the field's view
attention and MLPs, and the 2D renderer. Camera projections, ray sampling, grid lookups and the volume-rendering
weights stay fp32 outside it: a bf16 projection (8 mantissa bits) is off by up to a pixel at 256 px, and a cumulative
product of bf16 transmittances drifts. Each network's output is cast back to fp32 where it leaves autocast, so the
compositing, the ``index_add_``/``index_copy`` scatters and the losses see fp32 tensors; parameters, gradients and the
optimizer stay fp32.

Compiling swaps a module's call for a ``torch.compile``'d one (:meth:`torch.nn.Module.compile`): the module and its
parameters stay where they are, so ``state_dict`` keys, and therefore checkpoints, are the same with or without it.
Inductor compiles again for each new grad mode and sample-count range; a failure of ``torch.compile`` (no C++ compiler
for inductor, an unsupported Python) ends the run with one :class:`CompileError` naming the option.

Both stay off by default: neither speeds up the small networks' step on a CPU, and bf16's held-out quality at
gm-nerf's scale is not established yet (benchmarks/throughput/README.md holds the runs). TF32 is not an option:
PyTorch's switch is process-wide and the viewer renders from another thread, so it cannot be scoped to one model
(``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1`` turns it on for a whole process; cuDNN convolutions use TF32 by default).
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Dict, Iterator, Optional

import torch
from torch import Tensor, nn

from gmnerf_ns.core.errors import RunInputError

AUTOCAST_DTYPES: Dict[str, Optional[torch.dtype]] = {"off": None, "bf16": torch.bfloat16}
"""``--pipeline.model.autocast`` value -> the dtype the learned layers compute in (None: fp32, no autocast)."""

COMPILE_OPTION = "--pipeline.model.compile-networks"
"""How the compile option is spelled on the command line (named in every compile error)."""


class CompileError(RunInputError):
    """``torch.compile`` of the networks is unavailable or failed; the message names the option to turn off."""


def networks_autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type (cpu, cuda); a no-op context for None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_fp32(x: Tensor, dtype: Optional[torch.dtype]) -> Tensor:
    """``x`` as fp32 after a network ran under autocast to ``dtype``; ``x`` itself (no op at all) without autocast."""
    return x if dtype is None else x.float()


def compile_modules(*modules: Optional[nn.Module], backend: str = "inductor") -> None:
    """Compiles each module's call in place, lazily: ``torch.compile`` traces and compiles at the first call, so
    building the model stays fast. Parameters and ``state_dict`` keys are unchanged.

    Raises:
        CompileError: ``torch.compile`` is not supported on this Python/platform.
    """
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise CompileError(f"{COMPILE_OPTION}: torch.compile is not supported here (torch {torch.__version__}); "
                           "train without it")
    for module in modules:
        if module is not None:
            # dynamic: the sample count changes at every call; static shapes would recompile until dynamo gives up
            module.compile(backend=backend, dynamic=True)


@contextlib.contextmanager
def compile_errors(enabled: bool) -> Iterator[None]:
    """Turns a failure of ``torch.compile`` (tracing or the backend's compiler, e.g. no C++ compiler for inductor on
    the CPU) inside the block into one :class:`CompileError` naming the option; other errors pass through."""
    if not enabled:
        yield
        return
    from torch._dynamo.exc import TorchDynamoException

    try:
        yield
    except TorchDynamoException as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = " ".join(lines[:2])[:300] or type(err).__name__  # e.g. "backend='inductor' raised: <the error>"
        raise CompileError(f"{COMPILE_OPTION}: torch.compile failed ({reason}); train without it") from err
