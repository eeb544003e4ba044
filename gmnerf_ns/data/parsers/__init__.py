"""Dataset parsers, one thin module per dataset, with the helpers they share (layouts, files, safe unpickling).

Every dataset's module is imported here, so each registers its config (``base.DATASET_CONFIGS``) before any folder is
detected: gmnerf-auto and the parsers' "looks like another dataset" hints ask all of them.
"""

from . import dnarendering, easymocap, genebody, humman, multigarment, mvhumannet, synthetic, thuman2, zju_mocap

__all__ = ["dnarendering", "easymocap", "genebody", "humman", "multigarment", "mvhumannet", "synthetic", "thuman2",
           "zju_mocap"]
