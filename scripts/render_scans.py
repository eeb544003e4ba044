#!/usr/bin/env python
"""Render THuman2.0 / Multi-garment scans into gmnerf-ns' built-in dataset layout (see docs/datasets.md).

    python scripts/render_scans.py thuman2 --scans THuman2.0_Release --smplx-params THuman2.0_Smpl_X_Paras \\
        --body-model-dir ~/models --output data/thuman2_render
    python scripts/render_scans.py multigarment --scans Multi-Garment_dataset --body-model-dir ~/models \\
        --output data/multigarment_render
"""

from gmnerf_ns.cli.scan_render import entrypoint

if __name__ == "__main__":
    entrypoint()
