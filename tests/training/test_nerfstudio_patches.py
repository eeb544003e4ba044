"""Importing gmnerf-ns changes no global state; the nerfstudio patches are applied only where they are called
(:mod:`gmnerf_ns.training.nerfstudio_patches`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: snapshots what the patches touch, imports gmnerf-ns, compares; then loads an entry point
# as nerfstudio's plugin discovery does, which is where the YAML guard is applied.
SCRIPT = r'''
import json, sys
import yaml
import nerfstudio.engine.trainer, nerfstudio.pipelines.base_pipeline, nerfstudio.utils.comms
from torch.nn.parallel import DistributedDataParallel

WATCHED = ("nerfstudio", "yaml", "torch.nn.parallel", "torch.distributed")  # and their submodules
LOADERS = (yaml.Loader, yaml.UnsafeLoader, yaml.FullLoader, yaml.SafeLoader)


def loaders():
    return {l.__name__: (l.yaml_multi_constructors, dict(l.yaml_multi_constructors), dict(l.yaml_constructors),
                         vars(l).get("_gmnerf_guard")) for l in LOADERS}


def modules():
    return {name: dict(vars(m)) for name, m in list(sys.modules.items())
            if m is not None and any(name == w or name.startswith(w + ".") for w in WATCHED)}


before_loaders, before_modules = loaders(), modules()
import gmnerf_ns.training.nerfstudio_patches, gmnerf_ns.training.trainer  # noqa: E401
import gmnerf_ns.training.method_configs

changed = []
for name, (table, content, plain, guard) in before_loaders.items():
    now = loaders()[name]
    if now[0] is not table or now[1] != content or now[2] != plain or now[3] != guard:
        changed.append(f"yaml.{name} constructors")
for name, attrs in before_modules.items():
    now = vars(sys.modules[name])
    changed += [f"{name}.{key}" for key, value in attrs.items() if now.get(key, value) is not value]
    changed += [f"{name}.{key} (removed)" for key in attrs if key not in now]
if nerfstudio.pipelines.base_pipeline.DDP is not DistributedDataParallel:
    changed.append("nerfstudio.pipelines.base_pipeline.DDP")
train = sys.modules.get("nerfstudio.scripts.train")
if train is not None and train._distributed_worker.__module__ != "nerfstudio.scripts.train":
    changed.append("nerfstudio.scripts.train._distributed_worker")

from importlib.metadata import entry_points  # as nerfstudio.plugins.registry.discover_methods loads them
spec = entry_points(group="nerfstudio.method_configs")["gm-nerf-small"].load()
guard = gmnerf_ns.training.nerfstudio_patches._yaml_guard("python/name:", frozenset()).__qualname__
def guarded_keys(loader):
    return [k for k, v in loader.yaml_multi_constructors.items() if getattr(v, "__qualname__", "") == guard]
guarded = guarded_keys(yaml.Loader)
gmnerf_ns.training.nerfstudio_patches.install_yaml_guard()  # again: idempotent
print(json.dumps({"changed": changed, "method": spec.config.method_name, "guarded": guarded,
                  "guarded_again": guarded_keys(yaml.Loader),
                  "python_tags": sorted(k for k in yaml.Loader.yaml_multi_constructors if "python/" in k),
                  "unsafe_guarded": sorted(guarded_keys(yaml.UnsafeLoader)) == sorted(guarded_keys(yaml.FullLoader))
                  == sorted(guarded),
                  "fast_listing": getattr(sys.modules["nerfstudio.configs.external_methods"]
                                          .ExternalMethodDummyTrainerConfig.__post_init__, "_gmnerf_fast", False)}))
'''


def test_importing_changes_no_global_state_and_discovery_installs_the_yaml_guard():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["changed"] == []
    assert result["method"] == "gm-nerf-small"
    assert len(result["guarded"]) == 5 and result["guarded_again"] == result["guarded"]
    assert sorted(result["guarded"]) == result["python_tags"]  # every python/* tag goes through the guard
    assert result["unsafe_guarded"]
    assert result["fast_listing"]  # patch 4, installed with the guard


def test_cpu_ddp_support_swaps_nerfstudio_ddp_only_inside_the_block():
    from nerfstudio.pipelines import base_pipeline
    from torch.nn.parallel import DistributedDataParallel

    from gmnerf_ns.training.nerfstudio_patches import CpuDistributedDataParallel, cpu_ddp_support

    original = base_pipeline.DDP
    with cpu_ddp_support("cpu"):
        assert base_pipeline.DDP is CpuDistributedDataParallel
        assert issubclass(base_pipeline.DDP, DistributedDataParallel)
    assert base_pipeline.DDP is original
    try:
        with cpu_ddp_support("cpu"):
            raise RuntimeError("setup failed")
    except RuntimeError:
        pass
    assert base_pipeline.DDP is original
    with cpu_ddp_support("cuda:0"):
        assert base_pipeline.DDP is original


def test_cpu_launcher_is_installed_only_for_multi_process_cpu_runs():
    import nerfstudio.scripts.train as ns_train

    from gmnerf_ns.training.method_configs import gm_nerf_small
    from gmnerf_ns.training.nerfstudio_patches import distributed_worker_cpu, install_cpu_launcher

    original = ns_train._distributed_worker
    config = gm_nerf_small.config
    try:
        install_cpu_launcher(config)  # one process: nothing to launch
        assert ns_train._distributed_worker is original
        machine = type(config.machine)(device_type="cuda", num_devices=2)
        install_cpu_launcher(type(config)(machine=machine))
        assert ns_train._distributed_worker is original
        machine = type(config.machine)(device_type="cpu", num_devices=2)
        install_cpu_launcher(type(config)(machine=machine))
        assert ns_train._distributed_worker is distributed_worker_cpu
    finally:
        ns_train._distributed_worker = original


def test_external_methods_are_listed_without_inspect_stack_and_still_offer_to_install(monkeypatch):
    """Patch 4: nerfstudio lists its external methods (on every ns-* start) without ``inspect.stack()``; a placeholder
    made anywhere else still runs upstream's offer to install (here: the instructions, then exit 0)."""
    import inspect

    from nerfstudio.configs import external_methods as upstream

    from gmnerf_ns.training.nerfstudio_patches import install_fast_external_methods

    install_fast_external_methods()
    install_fast_external_methods()  # idempotent: wraps upstream's once
    post_init = upstream.ExternalMethodDummyTrainerConfig.__post_init__
    assert post_init._gmnerf_fast

    def no_stack(*args, **kwargs):
        raise AssertionError("inspect.stack() called")

    monkeypatch.setattr(inspect, "stack", no_stack)
    configs, descriptions = upstream.get_external_methods()
    assert len(configs) == len(descriptions) >= 20
    monkeypatch.undo()

    printed = []
    monkeypatch.setattr(upstream.CONSOLE, "print", lambda *args, **kwargs: printed.append(args))
    method = upstream.ExternalMethod("pip install something-else", [("other-method", "elsewhere")])
    with pytest.raises(SystemExit) as exit_info:
        upstream.ExternalMethodDummyTrainerConfig(method_name="other-method", method=method)
    assert exit_info.value.code == 0
    assert printed == [("pip install something-else",)]
