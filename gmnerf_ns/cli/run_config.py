"""``--load-config`` of the gm-nerf tools: the config.yml of a gm-nerf run, or one line saying what it is instead."""

from __future__ import annotations

from pathlib import Path

import yaml

from gmnerf_ns.core.errors import CleanExit, RunInputError
from gmnerf_ns.training.nerfstudio_patches import install_yaml_guard
from gmnerf_ns.training.pipeline import GMNeRFPipelineConfig


def require_config(path, tool: str) -> None:
    """Exits with one line when ``--load-config`` is not the config.yml of a gm-nerf run: a missing file, a file that
    is not a config, a config of another gmnerf-ns version, or a run of another method (nerfacto...), whose
    datamanager would otherwise fail on a transforms.json that a gm-nerf dataset does not have."""
    if not Path(path).is_file():
        raise SystemExit(f"{tool}: {path} not found; pass --load-config outputs/<experiment>/<method>/<timestamp>/"
                         "config.yml of a gm-nerf run")
    install_yaml_guard()  # also what nerfstudio's eval_setup, which reads it next, relies on
    path = Path(path)
    try:
        config = yaml.load(path.read_text("utf8"), Loader=yaml.Loader)  # as nerfstudio's eval_setup reads it
    except CleanExit as err:  # a tag that would run code (the YAML guard names the file)
        raise SystemExit(f"{tool}: {err.error}") from err
    except RunInputError as err:  # written by another gmnerf-ns version (the YAML guard)
        raise SystemExit(f"{tool}: {path}: {err}") from err
    except (yaml.YAMLError, UnicodeDecodeError, ImportError, AttributeError, TypeError) as err:
        raise SystemExit(f"{tool}: {path} is not a readable nerfstudio config.yml ({type(err).__name__})") from err
    if not isinstance(getattr(config, "pipeline", None), GMNeRFPipelineConfig):
        method = getattr(config, "method_name", None) or type(config).__name__
        raise SystemExit(f"{tool}: {path} is not a gm-nerf run (method {method}); pass the config.yml of a gm-nerf "
                         "run")
