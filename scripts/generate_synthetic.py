"""Generate the built-in synthetic dataset: the same as the ``gmnerf-synth`` console script.

Usage: ``python scripts/generate_synthetic.py --out data/synthetic`` (``--help`` lists every option).
"""

from gmnerf_ns.cli.synth import entrypoint

if __name__ == "__main__":
    entrypoint()
