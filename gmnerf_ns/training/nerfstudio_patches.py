"""Every change gmnerf-ns makes to nerfstudio's (and PyYAML's) global state, each applied explicitly by its caller.

Importing this module changes nothing (``tests/training/test_nerfstudio_patches.py`` checks it). Each patch works
around one behaviour of nerfstudio 1.1.5 (the version pinned in pyproject.toml); on an upgrade, check each one and drop
those that are fixed.

1. **YAML guard** (:func:`install_yaml_guard`; applied when nerfstudio's plugin discovery loads a ``gm-nerf*`` entry
   point, see :mod:`gmnerf_ns.training.method_configs`, and by the gm-nerf tools before they read a config.yml).
   Upstream: ``eval_setup`` (ns-eval, ns-render, the viewer) and ``ns-train --load-config`` read config.yml with
   ``yaml.load(..., Loader=yaml.Loader)``; a config naming a ``gmnerf_ns`` class that this version no longer has fails
   with PyYAML's bare "cannot find ... in the module". Patch: a multi-constructor for the ``gmnerf_ns.`` tags on
   ``yaml.Loader`` and ``yaml.UnsafeLoader`` that checks the name and raises :class:`IncompatibleConfigError` naming
   it; a name under a module that moved (:data:`MOVED_MODULES`, e.g. ``gmnerf_ns.pipeline`` of the 0.1.0 layout) is
   read from its new module, so older runs keep loading; loads that succeed are otherwise unchanged (the node goes to
   PyYAML's own constructor). There is no loader argument to pass instead: nerfstudio hard-codes ``yaml.Loader``. To
   drop it: delete the function and its two call sites; such configs then fail with PyYAML's message (the
   renamed-class half of ``test_reliability.test_config_of_another_version_is_one_error`` goes too) and runs saved
   with the 0.1.0 layout no longer load. A changed config *format* is caught without it, by
   ``GMNeRFTrainerConfig.__setstate__``.
2. **CPU launcher** (:func:`install_cpu_launcher`; applied by ``GMNeRFTrainerConfig.save_config``, the last thing
   ``ns-train`` calls before ``launch``, and only for ``--machine.device-type cpu`` with more than one process).
   Upstream: ``nerfstudio.scripts.train._distributed_worker`` asserts ``torch.cuda.is_available()`` and
   ``num_devices <= torch.cuda.device_count()``, so its gloo branch is unreachable and multi-process CPU training
   fails. Patch: ``_distributed_worker`` of ``nerfstudio.scripts.train`` (and of ``__main__`` when run as
   ``python -m nerfstudio.scripts.train``) is replaced by :func:`distributed_worker_cpu`: gloo, no CUDA checks, the
   machine's cores split between the processes. It stays replaced for the rest of the process (``launch`` runs after
   ``save_config`` returns; there is no scope to restore it in). To drop it: once the worker only checks CUDA for
   ``device_type == "cuda"``, delete the function and its call in ``save_config``.
3. **CPU DDP** (:func:`cpu_ddp_support`; a context manager around ``Trainer.setup`` in ``GMNeRFTrainer._setup``,
   active only on non-CUDA devices).
   Upstream: ``VanillaPipeline.__init__`` wraps the model in ``DDP(model, device_ids=[local_rank], ...)`` whenever
   ``world_size > 1``; torch rejects ``device_ids`` for a CPU module. Patch: while the pipeline is built,
   ``nerfstudio.pipelines.base_pipeline.DDP`` is :class:`CpuDistributedDataParallel`, a subclass that drops
   ``device_ids`` (so nerfstudio's ``isinstance(model, DDP)`` checks still hold); the original is restored on exit.
   To drop it: once nerfstudio passes ``device_ids`` only for CUDA, delete the class, the context manager and the
   ``with`` in ``GMNeRFTrainer._setup``.

4. **Fast external-method listing** (:func:`install_fast_external_methods`; applied with the YAML guard when plugin
   discovery loads a ``gm-nerf*`` entry point, which nerfstudio does just before it lists the external methods).
   Upstream: ``nerfstudio.configs.method_configs``, imported by every ns-* command, builds 26 placeholder configs
   of external methods, and each one's ``ExternalMethodDummyTrainerConfig.__post_init__`` calls ``inspect.stack()``
   only to read the name of its caller's caller. ``inspect.stack()`` reads the source of every frame and scans all of
   ``sys.modules`` (thousands of modules with torch loaded) per frame: seconds of every ns-train, ns-eval and
   ns-render start (benchmarks/throughput/README.md). Patch: ``__post_init__`` reads that name from
   ``sys._getframe(2)`` (the same frame) and returns early as upstream does; otherwise it runs upstream's
   ``__post_init__`` (the offer to install a method named on the command line). To drop it: once upstream stops
   calling ``inspect.stack()`` there, delete the function and its call in :mod:`gmnerf_ns.training.method_configs`.

5. **Local ns-viewer** (:func:`install_local_viewer_default`; applied with the YAML guard when plugin discovery loads a
   ``gm-nerf*`` entry point, which ``ns-viewer`` does while importing, before it defines its options).
   Upstream: ``ns-viewer`` takes its viewer options from its own command line, ``ViewerConfigWithoutNumRays``, a
   subclass of ``ViewerConfig`` whose ``websocket_host`` defaults to ``0.0.0.0``: every ``ns-viewer --load-config``
   exposes the run, without authentication, on every interface. Patch: the default of the ``websocket_host`` field of
   ``ViewerConfig`` becomes ``127.0.0.1`` for dataclasses defined from then on (``ns-viewer``'s subclass); configs
   built before keep theirs, and ``--viewer.websocket-host 0.0.0.0`` still exposes it on purpose. To drop it: once
   upstream defaults to loopback, delete the function and its call in :mod:`gmnerf_ns.training.method_configs`.

6. **ns-eval checkpoint fallback** (:func:`install_eval_checkpoint_fallback`; applied by
   ``GMNeRFTrainerConfig.__setstate__``, i.e. once ``eval_setup`` has read a gm-nerf config.yml and before it loads the
   checkpoint).
   Upstream: ``eval_setup`` (ns-eval, ns-render, the viewer) ``torch.load``s the newest ``step-*.ckpt`` as it is: a
   truncated one is a traceback even when the one before it is intact. Patch: ``eval_load_checkpoint`` of
   ``nerfstudio.utils.eval_utils`` loads a gm-nerf run's newest readable checkpoint with
   :func:`gmnerf_ns.core.checkpoints.eval_load_checkpoint` (a warning names a skipped one); runs of other methods keep
   upstream's loader. Nothing changes while that module is not (fully) imported. To drop it: once upstream falls back
   to an older checkpoint itself, delete the function and its call.

Not patches: :class:`~gmnerf_ns.training.trainer.GMNeRFTrainer` changes resume, checkpointing and step counting by
overriding ``Trainer`` methods in its subclass, which affects only gm-nerf runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import os
import sys
from datetime import timedelta
from pathlib import Path, PurePath
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
import yaml
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.utils import comms
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gmnerf_ns import __version__
from gmnerf_ns.core.checkpoints import eval_load_checkpoint
from gmnerf_ns.core.errors import CleanExit, IncompatibleConfigError, UnsafeConfigError

# ----------------------------------------------------------------------------------------------------------------------
# 1. YAML guard
# ----------------------------------------------------------------------------------------------------------------------
_YAML_TAGS = ("python/object:", "python/object/apply:", "python/object/new:", "python/name:", "python/module:")
_CONFIG_PACKAGES = ("nerfstudio", "gmnerf_ns")
"""Packages whose config classes a config.yml may name, besides those of installed nerfstudio plugins."""

MOVED_MODULES = {
    "gmnerf_ns.camera_math": "gmnerf_ns.geometry.camera_math",
    "gmnerf_ns.checkpoints": "gmnerf_ns.core.checkpoints",
    "gmnerf_ns.dataparser_configs": "gmnerf_ns.training.dataparser_configs",
    "gmnerf_ns.data.human_dataparser": "gmnerf_ns.data.parsers.base",
    "gmnerf_ns.dataparsers": "gmnerf_ns.data.parsers",
    "gmnerf_ns.dataparsers._body_models": "gmnerf_ns.data.parsers._body_models",
    "gmnerf_ns.dataparsers._derived": "gmnerf_ns.data.parsers._derived",
    "gmnerf_ns.dataparsers._files": "gmnerf_ns.data.parsers._files",
    "gmnerf_ns.dataparsers._layouts": "gmnerf_ns.data.parsers._layouts",
    "gmnerf_ns.dataparsers._safe_pickle": "gmnerf_ns.data.parsers._safe_pickle",
    "gmnerf_ns.dataparsers.auto": "gmnerf_ns.data.parsers.auto",
    "gmnerf_ns.dataparsers.dnarendering": "gmnerf_ns.data.parsers.dnarendering",
    "gmnerf_ns.dataparsers.easymocap": "gmnerf_ns.data.parsers.easymocap",
    "gmnerf_ns.dataparsers.genebody": "gmnerf_ns.data.parsers.genebody",
    "gmnerf_ns.dataparsers.humman": "gmnerf_ns.data.parsers.humman",
    "gmnerf_ns.dataparsers.multigarment": "gmnerf_ns.data.parsers.multigarment",
    "gmnerf_ns.dataparsers.mvhumannet": "gmnerf_ns.data.parsers.mvhumannet",
    "gmnerf_ns.dataparsers.smpl_proxy": "gmnerf_ns.data.parsers.smpl_proxy",
    "gmnerf_ns.dataparsers.synthetic": "gmnerf_ns.data.parsers.synthetic",
    "gmnerf_ns.dataparsers.thuman2": "gmnerf_ns.data.parsers.thuman2",
    "gmnerf_ns.dataparsers.zju_mocap": "gmnerf_ns.data.parsers.zju_mocap",
    "gmnerf_ns.device": "gmnerf_ns.core.device",
    "gmnerf_ns.doctor": "gmnerf_ns.cli.doctor",
    "gmnerf_ns.errors": "gmnerf_ns.core.errors",
    "gmnerf_ns.method_configs": "gmnerf_ns.training.method_configs",
    "gmnerf_ns.metrics": "gmnerf_ns.model.metrics",
    "gmnerf_ns.nerfstudio_patches": "gmnerf_ns.training.nerfstudio_patches",
    "gmnerf_ns.optimizers": "gmnerf_ns.training.optimizers",
    "gmnerf_ns.options": "gmnerf_ns.core.options",
    "gmnerf_ns.pipeline": "gmnerf_ns.training.pipeline",
    "gmnerf_ns.pretrained": "gmnerf_ns.cli.pretrained",
    "gmnerf_ns.render.rasterize": "gmnerf_ns.geometry.rasterize",
    "gmnerf_ns.rng_state": "gmnerf_ns.core.rng_state",
    "gmnerf_ns.run_folder": "gmnerf_ns.core.run_folder",
    "gmnerf_ns.scan_render": "gmnerf_ns.cli.scan_render",
    "gmnerf_ns.schedulers": "gmnerf_ns.training.schedulers",
    "gmnerf_ns.synth.cli": "gmnerf_ns.cli.synth",
    "gmnerf_ns.tools.cameras": "gmnerf_ns.geometry.cameras",
    "gmnerf_ns.tools.conditioning": "gmnerf_ns.training.conditioning",
    "gmnerf_ns.tools.evaluation": "gmnerf_ns.eval.evaluation",
    "gmnerf_ns.tools.export_mesh": "gmnerf_ns.cli.export_mesh",
    "gmnerf_ns.tools.geometry": "gmnerf_ns.eval.geometry",
    "gmnerf_ns.tools.overlay": "gmnerf_ns.cli.overlay",
    "gmnerf_ns.tools.render": "gmnerf_ns.cli.render",
    "gmnerf_ns.tools.report": "gmnerf_ns.cli.report",
    "gmnerf_ns.tools.run_config": "gmnerf_ns.cli.run_config",
    "gmnerf_ns.tools.viewer": "gmnerf_ns.training.viewer",
    "gmnerf_ns.trainer": "gmnerf_ns.training.trainer",
    "gmnerf_ns.weights": "gmnerf_ns.core.weights",
}
"""Modules of gmnerf-ns 0.1.0's layout and where they are now: a config.yml naming ``<old module>.<name>`` loads
``<new module>.<name>``, so runs saved before the layout changed keep loading."""


def moved_name(name: str) -> str:
    """Where the ``module.name`` a config.yml names lives now (:data:`MOVED_MODULES`); unchanged if it did not move."""
    module, _, attr = name.rpartition(".")
    return f"{MOVED_MODULES[module]}.{attr}" if module in MOVED_MODULES else name


def _plugin_packages() -> frozenset:
    """Top-level packages of every installed nerfstudio method or dataparser plugin (read from package metadata, so
    nothing is imported to find them)."""
    from importlib.metadata import entry_points

    groups = ("nerfstudio.method_configs", "nerfstudio.dataparser_configs")
    return frozenset(_CONFIG_PACKAGES) | {ep.value.split(":")[0].split(".")[0] for g in groups for ep in
                                          entry_points(group=g)}


def _config_file(loader: yaml.Loader) -> str:
    """The config.yml being read: the loaders get its text, so look for the path in the callers' frames
    (``eval_setup``'s ``config_path``, ``ns-train``'s ``config.load_config``, the gm-nerf tools' ``path``)."""
    text = getattr(loader, "buffer", "")[:-1]  # PyYAML's reader appends a NUL
    frame = sys._getframe(2)
    while frame is not None:
        for value in list(frame.f_locals.values()):
            for path in (value, getattr(value, "load_config", None)):
                if isinstance(path, PurePath) and path.suffix in (".yml", ".yaml") and _holds(path, text):
                    return str(path)
        frame = frame.f_back
    return "config.yml"


def _holds(path: PurePath, text: str) -> bool:
    try:
        return Path(path).stat().st_size < (1 << 24) and Path(path).read_text() == text
    except (OSError, ValueError):
        return False


def _allowed(kind: str, name: str, packages: frozenset) -> bool:
    """Whether a config.yml may name ``name`` under the tag ``kind``: the config classes (dataclasses deriving from
    nerfstudio's ``PrintableConfig``) and enums of nerfstudio and its plugins, the classes a config names as
    ``_target`` (torch's optimizers and schedulers among them), generic forms of those, nerfstudio's collate
    functions, and pathlib paths. Nothing is imported before the package is known to be one of these."""
    if kind == "python/object/apply:" and name in ("_operator.getitem", "operator.getitem"):
        return True  # a generic class, e.g. ``VanillaDataManager[DepthDataset]``: its items pass through here too
    module = name.rpartition(".")[0]
    root = module.split(".")[0]
    if kind == "python/module:" or root not in packages | {"pathlib", "torch"}:
        return False
    if root == "torch" and not module.startswith("torch.optim"):
        return False
    try:
        value = getattr(importlib.import_module(module), name.rpartition(".")[2])
    except (ImportError, AttributeError):
        return True  # not there: PyYAML's own constructor says so (or the gmnerf_ns version check does)
    from enum import Enum

    from nerfstudio.configs.base_config import PrintableConfig

    is_class = isinstance(value, type)
    if root == "pathlib":
        return kind == "python/object/apply:" and is_class and issubclass(value, PurePath)
    if kind in ("python/object:", "python/object/new:"):
        return is_class and dataclasses.is_dataclass(value) and issubclass(value, PrintableConfig)
    if kind == "python/object/apply:":
        return is_class and issubclass(value, Enum)
    # python/name: a class a config instantiates (its _target, an optimizer) or nerfstudio's collate function
    return is_class or (module.startswith("nerfstudio.data.utils") and inspect.isfunction(value))


def _yaml_guard(kind: str, packages: frozenset) -> Callable[[yaml.Loader, str, yaml.Node], Any]:
    method = {
        "python/object:": "construct_python_object",
        "python/object/apply:": "construct_python_object_apply",
        "python/object/new:": "construct_python_object_new",
        "python/name:": "construct_python_name",
        "python/module:": "construct_python_module",
    }[kind]

    def construct(loader: yaml.Loader, suffix: str, node: yaml.Node):
        name = moved_name(suffix)
        line = node.start_mark.line + 1
        if not _allowed(kind, name, packages):
            raise CleanExit(UnsafeConfigError(
                f"{_config_file(loader)}: refuses !!{kind}{suffix} (line {line}): a config.yml may only hold "
                "nerfstudio config classes, paths and plain values, and this tag would run code. Do not use this "
                "file; train again or ask its author for a clean one"))
        if name.startswith("gmnerf_ns."):
            try:
                loader.find_python_name(name, node.start_mark)
            except yaml.constructor.ConstructorError as err:
                raise IncompatibleConfigError(
                    f"this config.yml was written by another gmnerf-ns version: it refers to {suffix} (line {line}), "
                    f"which gmnerf-ns {__version__} does not have. Load it with the gmnerf-ns version that wrote it, "
                    "or train again with this one"
                ) from err
        return getattr(loader, method)(name, node)

    return construct


def install_yaml_guard() -> None:
    """Makes ``yaml.load`` with PyYAML's ``Loader``/``UnsafeLoader``/``FullLoader`` (what nerfstudio reads a config.yml
    with) accept only the python tags a nerfstudio run writes, refusing any other with one line
    (:class:`~gmnerf_ns.core.errors.UnsafeConfigError` in a :class:`~gmnerf_ns.core.errors.CleanExit`), read a class
    of a moved module from its new module (:data:`MOVED_MODULES`), and report a gmnerf_ns class this version no longer
    has as :class:`IncompatibleConfigError` (patch 1 of the module docstring). Idempotent."""
    packages = _plugin_packages()
    for loader in (yaml.Loader, yaml.UnsafeLoader, yaml.FullLoader):
        if vars(loader).get("_gmnerf_guard", False):
            continue
        # Every python/<kind>:<name> tag, whatever the name: ours replace PyYAML's constructors of the same prefixes
        # and call them once the name has passed.
        guards = {f"tag:yaml.org,2002:{kind}": _yaml_guard(kind, packages) for kind in _YAML_TAGS}
        loader.yaml_multi_constructors = {**loader.yaml_multi_constructors, **guards}
        loader._gmnerf_guard = True


# ----------------------------------------------------------------------------------------------------------------------
# 2. CPU launcher
# ----------------------------------------------------------------------------------------------------------------------
def distributed_worker_cpu(local_rank: int, main_func, world_size: int, num_devices_per_machine: int,
                           machine_rank: int, dist_url: str, config: TrainerConfig,
                           timeout: timedelta = timedelta(minutes=30), device_type: str = "cpu") -> Any:
    """nerfstudio's ``_distributed_worker`` for ``--machine.device-type cpu``: gloo, no CUDA assertions, and the
    machine's cores split between its processes."""
    global_rank = machine_rank * num_devices_per_machine + local_rank
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_devices_per_machine))
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank,
                            timeout=timeout)
    for machine in range(world_size // num_devices_per_machine):
        ranks = list(range(machine * num_devices_per_machine, (machine + 1) * num_devices_per_machine))
        group = dist.new_group(ranks)
        if machine == machine_rank:
            comms.LOCAL_PROCESS_GROUP = group
    try:
        output = main_func(local_rank, world_size, config, global_rank)
        comms.synchronize()
    finally:
        dist.destroy_process_group()
    return output


def install_cpu_launcher(config: TrainerConfig) -> None:
    """Points ``ns-train``'s launcher at :func:`distributed_worker_cpu` for multi-process CPU runs (patch 2 of the
    module docstring); does nothing for CUDA or single-process runs."""
    machine = config.machine
    if machine.device_type == "cuda" or machine.num_devices * machine.num_machines <= 1:
        return
    import nerfstudio.scripts.train as ns_train

    # `python -m nerfstudio.scripts.train` runs the launcher as __main__, a second copy of the module.
    for module in (ns_train, sys.modules.get("__main__")):
        spec = getattr(module, "__spec__", None)
        if module is ns_train or (spec is not None and spec.name == ns_train.__name__):
            module._distributed_worker = distributed_worker_cpu


# ----------------------------------------------------------------------------------------------------------------------
# 3. CPU DDP
# ----------------------------------------------------------------------------------------------------------------------
class CpuDistributedDataParallel(DistributedDataParallel):
    """DDP that ignores ``device_ids``: torch accepts them only for single-GPU modules, nerfstudio always passes them."""

    def __init__(self, module: nn.Module, *args, device_ids=None, **kwargs):
        super().__init__(module, *args, **kwargs)


@contextlib.contextmanager
def cpu_ddp_support(device: str) -> Iterator[None]:
    """While the pipeline is built, nerfstudio's DDP wrapping of a CPU model uses :class:`CpuDistributedDataParallel`
    (patch 3 of the module docstring); on CUDA this does nothing."""
    from nerfstudio.pipelines import base_pipeline

    if device.startswith("cuda"):
        yield
        return
    original = base_pipeline.DDP
    base_pipeline.DDP = CpuDistributedDataParallel
    try:
        yield
    finally:
        base_pipeline.DDP = original


# ----------------------------------------------------------------------------------------------------------------------
# 4. Fast external-method listing
# ----------------------------------------------------------------------------------------------------------------------


def install_fast_external_methods() -> None:
    """Lets nerfstudio list its external methods without ``inspect.stack()`` (patch 4 of the module docstring).
    Idempotent; a no-op if nerfstudio no longer has the class."""
    try:
        from nerfstudio.configs.external_methods import ExternalMethodDummyTrainerConfig
    except ImportError:  # pragma: no cover - a nerfstudio without external methods
        return
    upstream = ExternalMethodDummyTrainerConfig.__post_init__
    if getattr(upstream, "_gmnerf_fast", False):
        return

    def __post_init__(self) -> None:
        # frames: 0 this function, 1 the dataclass __init__, 2 its caller (upstream reads inspect.stack()[2])
        if sys._getframe(2).f_code.co_name == "get_external_methods":
            return
        upstream(self)

    __post_init__._gmnerf_fast = True  # type: ignore[attr-defined]
    ExternalMethodDummyTrainerConfig.__post_init__ = __post_init__  # type: ignore[method-assign]


# ----------------------------------------------------------------------------------------------------------------------
# 5. Local ns-viewer
# ----------------------------------------------------------------------------------------------------------------------
LOOPBACK = "127.0.0.1"


def install_local_viewer_default() -> None:
    """Makes the viewer options that ``ns-viewer`` defines after plugin discovery listen on loopback by default (patch 5
    of the module docstring). Idempotent."""
    from nerfstudio.configs.base_config import ViewerConfig

    ViewerConfig.__dataclass_fields__["websocket_host"].default = LOOPBACK


# ----------------------------------------------------------------------------------------------------------------------
# 6. ns-eval checkpoint fallback
# ----------------------------------------------------------------------------------------------------------------------
def install_eval_checkpoint_fallback(config_type: type) -> None:
    """Makes nerfstudio's ``eval_setup`` load the checkpoint of a run whose config is a ``config_type`` with
    :func:`gmnerf_ns.core.checkpoints.eval_load_checkpoint` (patch 6 of the module docstring). Idempotent."""
    eval_utils = sys.modules.get("nerfstudio.utils.eval_utils")
    upstream = getattr(eval_utils, "eval_load_checkpoint", None)
    if upstream is None or getattr(upstream, "_gmnerf", False):
        return

    def load(config: TrainerConfig, pipeline):
        if isinstance(config, config_type):
            return eval_load_checkpoint(config, pipeline)
        return upstream(config, pipeline)

    load._gmnerf = True  # type: ignore[attr-defined]
    eval_utils.eval_load_checkpoint = load
