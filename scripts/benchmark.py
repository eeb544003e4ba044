#!/usr/bin/env python
"""Benchmark and ablations of gm-nerf-small, measured side by side in one run (issue #7).

    python scripts/benchmark.py --quick                  # CI smoke test: tiny data, 2 s per system, < 60 s quiet
    python scripts/benchmark.py --budget-seconds 600     # README table: gmnerf-synth's default data

Writes benchmarks/<run-name>/results.md (tables, PASS/FAIL targets, machine and load), results.json (raw), plots
(PNG) and log.txt. See benchmarks/README.md and gmnerf_ns/benchmark/.
"""

import sys

from gmnerf_ns.benchmark.run import main

if __name__ == "__main__":
    sys.exit(main())
