"""Device choice: gm-nerf and gm-nerf-finetune train on CUDA when it is available and on the CPU otherwise (with a
one-line notice); an explicit ``--machine.device-type cuda`` without CUDA is one error line; gmnerf-doctor reports the
same decision. CUDA is made unavailable (monkeypatched in process, ``CUDA_VISIBLE_DEVICES=`` for ns-train)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.fixtures.doctor import doctor
from tests.fixtures.training_runs import checkpoints, make_data, ns_train, tiny

ROOT = Path(__file__).resolve().parents[2]
NS_TRAIN = Path(sys.executable).with_name("ns-train")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("device") / "data")


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_gpu_methods_choose_the_device_automatically():
    from gmnerf_ns.training.method_configs import gm_nerf, gm_nerf_finetune, gm_nerf_small

    assert gm_nerf.config.machine.device_type == "auto"
    assert gm_nerf_finetune.config.machine.device_type == "auto"
    assert gm_nerf_small.config.machine.device_type == "cpu"  # sized for the CPU: no notice there


def test_auto_trains_on_the_cpu_with_a_one_line_notice(data, tmp_path, no_cuda, capsys):
    from gmnerf_ns.training.trainer import GMNeRFMachineConfig

    config = tiny(data, tmp_path / "out", steps=2, save_every=2)
    config.machine = GMNeRFMachineConfig()  # gm-nerf's default: auto
    ns_train(config)
    out = capsys.readouterr().out
    notices = [line for line in out.splitlines() if "CUDA is not available" in line]
    assert notices == ["gmnerf: CUDA is not available; training on the CPU (pass --machine.device-type cpu to "
                       "silence this)"], out[-3000:]
    assert config.machine.device_type == "cpu"
    assert checkpoints(config.get_base_dir())[-1].name == "step-000000001.ckpt"
    saved = yaml.load((config.get_base_dir() / "config.yml").read_text(), Loader=yaml.Loader)
    assert saved.machine.device_type == "auto"  # the run's config keeps the choice, not this machine's answer


def test_explicit_cuda_without_cuda_is_one_error_line(data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([str(NS_TRAIN), "gm-nerf", "--data", str(data), "--vis", "tensorboard",
                           "--machine.device-type", "cuda"], check=False, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if line.startswith("gmnerf error:")]
    assert proc.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert len(errors) == 1 and errors[0].startswith("gmnerf error: --machine.device-type cuda: CUDA is not "
                                                     "available on this machine"), output[-3000:]
    assert not (tmp_path / "outputs").exists()


def test_doctor_reports_the_cpu_fallback_and_the_cuda_error(data, no_cuda):
    code, rows, text = doctor(data, method="gm-nerf")
    assert ("device", "warn") in rows and "CUDA is not available, so --machine.device-type auto falls back to the " \
                                          "CPU" in text, text
    assert "device cpu," in text and "ready" in text
    code, rows, text = doctor(data, method="gm-nerf", device_type="cuda")
    assert code == 1 and ("device", "error") in rows and "--machine.device-type cuda: CUDA is not available" in text
    code, rows, text = doctor(data, method="gm-nerf-small")
    assert ("device", "ok") in rows and "trains on cpu" in text


def test_device_names_are_checked_against_the_machine(monkeypatch):
    from gmnerf_ns.core.device import check_device
    from gmnerf_ns.core.errors import DeviceError

    assert check_device("cpu", "--device") == "cpu"
    for bogus in ("bogus", "meta", "cuda:x"):
        with pytest.raises(DeviceError, match=rf"^--device {bogus}: not a device; pass cpu, cuda, cuda:N"):
            check_device(bogus, "--device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"^--device cuda:1: CUDA is not available on this machine .*; pass --device "
                                          r"cpu$"):
        check_device("cuda:1", "--device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1", "--device") == "cuda:1"
    with pytest.raises(DeviceError, match=r"^--device cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1$"):
        check_device("cuda:2", "--device")
