"""Built-in synthetic multi-view human dataset generator; see ``generator.py`` (options: ``config.py``, command:
``gmnerf_ns.cli.synth``)."""
