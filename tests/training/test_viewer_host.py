"""The viewer of every gm-nerf method listens on the loopback interface only: it has no
authentication, and anyone who reaches its port can watch and steer the run."""

from __future__ import annotations

import pytest


def registered_gm_nerf_methods():
    from nerfstudio.plugins.registry import discover_methods

    methods, _ = discover_methods()
    return {name: config for name, config in methods.items() if name.startswith("gm-nerf")}


def test_every_gm_nerf_method_binds_the_viewer_to_loopback():
    methods = registered_gm_nerf_methods()
    assert {"gm-nerf", "gm-nerf-small", "gm-nerf-finetune"} <= set(methods)
    for name, config in methods.items():
        assert config.viewer.websocket_host == "127.0.0.1", name


@pytest.mark.parametrize("argv, host", [([], "127.0.0.1"), (["--viewer.websocket-host", "0.0.0.0"], "0.0.0.0")])
def test_ns_train_command_line_keeps_loopback_unless_exposed_on_purpose(argv, host):
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    config = tyro.cli(AnnotatedBaseConfigUnion, args=["gm-nerf-small", *argv, "--data", "data/synthetic"])
    assert config.viewer.websocket_host == host
