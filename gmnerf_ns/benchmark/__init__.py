"""Side-by-side benchmark of gm-nerf-small, its ablations and per-subject nerfacto (issue #7).

Entry point: ``scripts/benchmark.py`` (``python scripts/benchmark.py --quick`` / ``--budget-seconds 600``).

* :mod:`settings`: the quick and full modes (data, sizes, budget) and the compared systems;
* :mod:`tasks`: what one measurement does (train a system for a wall-clock budget and evaluate it, time one render,
  measure the peak memory of a few training steps, fit nerfacto to one held-out subject-frame's input views);
* :mod:`nerfacto`: the held-out subject-frame -> nerfstudio ``transforms.json`` conversion and nerfacto's config;
* :mod:`run`: the orchestrator (one forked child process per measurement, so each peak RSS is its own);
* :mod:`report`: the Markdown table, the PASS/FAIL targets, the plots.
"""
