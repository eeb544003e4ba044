"""A training checkpoint through the device machine's file limits (the GPU kit's ``pretrain`` stage and ``prepare.sh``).

A device call returns files of at most 16 MiB and carries at most 64 MiB in all, the kit's wheels included. A
``gm-nerf-small`` checkpoint (7 MB) passes as it is; a ``gm-nerf`` one (4.9 M parameters with Adam's two moments,
about 56 MB) does not. So:

* ``compact``: the checkpoint without Adam's moments (each optimizer keeps its parameter groups, so the learning rates
  stay where the schedule had them; the model, schedulers, sampler and random state are kept). Resuming from it is
  exact except that Adam's moment estimates start again from zero.
* ``pack``: the checkpoint as it is when it fits, else compacted, and split into ``NAME.part-0``, ``NAME.part-1``, ...
  of at most ``--max-bytes`` each when still too large. ``scripts/train_pretrained.py --resume-from NAME.part-0``
  joins them.

    python checkpoint_parts.py compact CKPT OUT_CKPT
    python checkpoint_parts.py pack CKPT OUT_DIR [--max-bytes 16777216]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from gmnerf_ns.core.checkpoints import read_checkpoint

MAX_BYTES = 16 * 1048576
"""The largest file a device call returns."""


def compact_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """``state`` with every optimizer's per-parameter state (Adam's moments) dropped and its parameter groups kept."""
    optimizers = {name: {"state": {}, "param_groups": optimizer["param_groups"]}
                  for name, optimizer in state.get("optimizers", {}).items()}
    return {**state, "optimizers": optimizers, "compact": True}


def compact(source: Path, target: Path) -> Path:
    """Writes :func:`compact_state` of the checkpoint ``source`` to ``target``."""
    torch.save(compact_state(read_checkpoint(source)), target)
    return target


def pack(source: Path, out_dir: Path, max_bytes: int = MAX_BYTES) -> List[Path]:
    """The files to return for checkpoint ``source``: itself if it fits ``max_bytes``, else its compact form, split
    into parts of at most ``max_bytes`` when still too large."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    if len(data) > max_bytes:
        buffer = io.BytesIO()
        torch.save(compact_state(read_checkpoint(source)), buffer)
        data = buffer.getvalue()
    if len(data) <= max_bytes:
        target = out_dir / source.name
        target.write_bytes(data)
        return [target]
    parts = []
    for index, start in enumerate(range(0, len(data), max_bytes)):
        part = out_dir / f"{source.name}.part-{index}"
        part.write_bytes(data[start:start + max_bytes])
        parts.append(part)
    return parts


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    each = sub.add_parser("compact", help="the checkpoint without Adam's moments")
    each.add_argument("source", type=Path)
    each.add_argument("target", type=Path)
    each = sub.add_parser("pack", help="the files to return: as is, compact, or compact and split")
    each.add_argument("source", type=Path)
    each.add_argument("out_dir", type=Path)
    each.add_argument("--max-bytes", type=int, default=MAX_BYTES)
    args = parser.parse_args(argv)
    if args.command == "compact":
        print(compact(args.source, args.target))
    else:
        for path in pack(args.source, args.out_dir, args.max_bytes):
            print(path)


if __name__ == "__main__":
    main()
