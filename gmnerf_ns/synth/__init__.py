"""Built-in synthetic multi-view human dataset generator (``gmnerf-synth``); see ``generator.py``."""
