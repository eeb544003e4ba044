#!/usr/bin/env python
"""Benchmark and ablations of gm-nerf-small, measured side by side in one run (see benchmarks/README.md).

    python scripts/benchmark.py --quick                  # CI smoke test: tiny data, 2 s per system
    python scripts/benchmark.py --budget-seconds 600     # README table: gmnerf-synth's default data

Writes benchmarks/<run-name>/: results.md (tables, PASS/FAIL targets), results.json, plots and log.txt. The code is
in scripts/bench/ (development tooling, not part of the installed package).
"""

import sys

from bench.run import main

if __name__ == "__main__":
    sys.exit(main())
