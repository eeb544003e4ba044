"""gmnerf-ns: GM-NeRF (Chen et al., CVPR 2023) as a nerfstudio plugin."""

__version__ = "0.1.0"
