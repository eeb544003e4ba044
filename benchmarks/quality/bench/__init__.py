"""Benchmark of gm-nerf-small, its ablations and per-subject nerfacto (development tooling, not installed).

Run by ``benchmarks/quality/benchmark.py``; usage and what is measured: ``benchmarks/quality/README.md``.
:mod:`settings` holds the modes, systems and targets (data), :mod:`tasks` one measurement each, :mod:`run` plans,
runs and assembles them, :mod:`report` writes the tables and plots.
"""
