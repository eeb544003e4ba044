"""Protocol presets (subject splits, input/target views, resolutions) as data; installed as ``gmnerf_ns.configs``."""
