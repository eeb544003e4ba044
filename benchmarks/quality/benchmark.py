#!/usr/bin/env python
"""Benchmark and ablations of gm-nerf-small, measured side by side in one run (see benchmarks/quality/README.md).

    python benchmarks/quality/benchmark.py --quick               # CI smoke test: tiny data, 2 s per system
    python benchmarks/quality/benchmark.py --budget-seconds 600  # the full table: gmnerf-synth's default data

Writes benchmarks/quality/results/<run-name>/: results.md (tables, PASS/FAIL targets), results.json, plots and
log.txt. The code is in bench/ beside this file (development tooling, not part of the installed package); Python puts
this file's folder on sys.path, so it imports as ``bench``.
"""

import sys

from bench.run import main

if __name__ == "__main__":
    sys.exit(main())
