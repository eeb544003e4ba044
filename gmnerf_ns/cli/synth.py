"""``gmnerf-synth``: command line of the built-in synthetic dataset generator."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import tyro

from gmnerf_ns.synth.config import SynthConfig, SynthError
from gmnerf_ns.synth.generator import dataset_complete, generate


def output_problem(out: Path) -> Optional[str]:
    """Why ``--out`` cannot become the dataset folder (it, or a folder above it, is a file), or None."""
    for path in (out, *out.parents):
        if path.exists():
            if path.is_dir():
                return None
            why = "is a file, not a folder" if path == out else f"cannot be created: {path} is a file"
            return f"--out {out} {why}; choose another --out"
    return None


def main(config: SynthConfig) -> int:
    """Runs the generator; returns the process exit code."""
    start = time.time()
    problem = output_problem(config.out)
    if problem is not None:
        print(f"gmnerf-synth: {problem}", file=sys.stderr)
        return 1
    try:
        if config.skip_if_complete and dataset_complete(config):
            print(f"gmnerf-synth: {config.out} already holds the complete dataset with these settings; nothing to do")
            generate(config)  # still validates the manifest's settings
            return 0
        out = generate(config)
    except SynthError as err:
        print(f"gmnerf-synth: {err}", file=sys.stderr)
        return 1
    print(f"gmnerf-synth: wrote {out} in {time.time() - start:.1f} s")
    return 0


def entrypoint() -> None:
    """Console-script entry point (``gmnerf-synth --help``)."""
    config = tyro.cli(
        SynthConfig, description="Generate the built-in synthetic multi-view human dataset (ZJU-MoCap layout)."
    )
    sys.exit(main(config))


if __name__ == "__main__":
    entrypoint()
