"""Run machinery every layer may use: user errors, option checks, device choice, RNG state, run folders, checkpoints,
pretrained backbone weights. Imports nothing else from ``gmnerf_ns`` but its version."""
