"""The GPU kit (benchmarks/throughput/gpu_kit): run.sh's own code path on the CPU in its dry mode, and the analysis
of ns-train's step times and nvidia-smi samples (benchmarks/throughput/ns_train_timing.py) on known values."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "benchmarks" / "throughput" / "gpu_kit"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


timing = _load("ns_train_timing", ROOT / "benchmarks" / "throughput" / "ns_train_timing.py")
kit = _load("gpu_kit_kit", KIT / "kit.py")

FAKE_SMI = """#!/usr/bin/env bash
# nvidia-smi stand-in: one GPU, 40% busy, 1234 MiB used, sampled every 20 ms (a tiny CPU run's window of two steps
# can be shorter than the real 200 ms period)
case "$*" in
  *timestamp*)
    echo "timestamp, utilization.gpu [%], memory.used [MiB]"
    while true; do echo "$(date '+%Y/%m/%d %H:%M:%S.%3N'), 40 %, 1234 MiB"; sleep 0.02; done ;;
  *) echo "name, driver_version"; echo "Fake GPU, 1.0" ;;
esac
"""


def _stamp(t: float) -> str:
    """nvidia-smi's timestamp format (local time, milliseconds)."""
    return datetime.fromtimestamp(t).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]


def _nerfstudio_like_events(folder: Path, durations, buffer_size: int, start: float, eval_steps=()):
    """An event file as nerfstudio writes it: at the end of each step, the running mean of the last ``buffer_size``
    iteration times under "Train Iter (time)" (and "Eval Loss" at ``eval_steps``), stamped with the step's end."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    now, buffer = start, []
    for step, duration in enumerate(durations):
        now += duration
        buffer = (buffer + [duration])[-buffer_size:]
        writer.add_scalar("Train Iter (time)", sum(buffer) / len(buffer), step, walltime=now)
        if step in eval_steps:
            writer.add_scalar("Eval Loss", 0.5, step, walltime=now)
    writer.close()


DURATIONS = [0.9, 0.1, 0.12, 0.08, 0.31, 0.1, 0.11, 0.09, 0.1, 0.1]
"""Seconds per step (step 4 holds an eval)."""
T0 = 1_700_000_000.0


def test_step_times_from_events(tmp_path):
    _nerfstudio_like_events(tmp_path, DURATIONS, buffer_size=3, start=T0, eval_steps=(4,))
    scalars = timing.read_scalars(tmp_path)
    assert [e.step for e in scalars["Train Iter (time)"]] == list(range(10))
    own = timing.iteration_times({e.step: e.value for e in scalars["Train Iter (time)"]}, buffer_size=3)
    assert [round(v, 5) for v in own.values()] == DURATIONS  # nerfstudio's running mean undone

    result = timing.analyse(scalars, window=(2, 8), subjects_per_step=2, buffer_size=3)
    window = DURATIONS[2:8]
    assert result["window"] == [2, 8] and result["steps_in_window"] == 6 and not result["window_clipped"]
    assert result["ms_per_step"] == pytest.approx(1000 * sum(window) / 6, abs=1e-3)
    assert result["ms_per_sample"] == pytest.approx(1000 * sum(window) / 12, abs=1e-3)
    assert result["ms_per_step_median"] == pytest.approx(105.0, abs=1e-3)  # median of .12 .08 .31 .1 .11 .09
    assert result["ms_per_step_max"] == pytest.approx(310.0, abs=1e-3)
    assert result["iteration_ms_per_step"] == pytest.approx(1000 * sum(window) / 6, abs=1e-3)
    assert result["eval_steps_in_window"] == [4]
    assert result["wall_window"] == pytest.approx([T0 + sum(DURATIONS[:2]), T0 + sum(DURATIONS[:8])])


def test_events_decoded_like_tensorboard(tmp_path):
    """The built-in decoder reads what tensorboard's own reader reads, and skips a record cut short by a kill."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    _nerfstudio_like_events(tmp_path, DURATIONS, buffer_size=20, start=T0)
    reader = event_accumulator.EventAccumulator(str(tmp_path))
    reader.Reload()
    expected = [(e.wall_time, e.step, e.value) for e in reader.Scalars("Train Iter (time)")]
    assert [(e.wall_time, e.step, e.value) for e in timing.read_scalars(tmp_path)["Train Iter (time)"]] == expected

    (file,) = timing.event_files(tmp_path)
    file.write_bytes(file.read_bytes()[:-7])
    assert [e.step for e in timing.read_scalars(file)["Train Iter (time)"]] == list(range(9))


def test_window_clipped_to_the_steps_run(tmp_path):
    _nerfstudio_like_events(tmp_path, DURATIONS, buffer_size=20, start=T0)
    scalars = timing.read_scalars(tmp_path)
    stopped = timing.analyse(scalars, window=(6, 400))  # stopped by the timeout at step 9
    assert stopped["window"] == [6, 10] and stopped["window_clipped"] and stopped["last_step"] == 9
    assert stopped["ms_per_step"] == pytest.approx(1000 * sum(DURATIONS[6:10]) / 4, abs=1e-3)
    early = timing.analyse(scalars, window=(200, 400))  # never reached the window: its second half
    assert early["window"] == [5, 10] and early["window_clipped"]
    assert early["ms_per_step"] == pytest.approx(1000 * sum(DURATIONS[5:10]) / 5, abs=1e-3)
    with pytest.raises(ValueError, match="START:END"):
        timing.parse_window("200-400")


def test_nvidia_smi_samples_in_the_step_window():
    t = T0 + 100.0
    text = textwrap.dedent(f"""\
        timestamp, utilization.gpu [%], memory.used [MiB]
        {_stamp(t - 0.4)}, 0 %, 500 MiB
        {_stamp(t + 0.1)}, 80 %, 2000 MiB
        {_stamp(t + 0.3)}, 90 %, 2100 MiB
        {_stamp(t + 0.5)}, [N/A], 2200 MiB
        timestamp, utilization.gpu [%], memory.used [MiB]
        {_stamp(t + 0.7)}, 100 %, 2050 MiB
        {_stamp(t + 1.5)}, 5 %, 900 MiB
        {_stamp(t + 1.7)}, 7""")  # the last line cut by the kill
    samples = timing.read_smi_csv(text)
    assert len(samples) == 6
    assert samples[1].time == pytest.approx(t + 0.1, abs=1e-3)
    busy = timing.gpu_busy(samples, t, t + 1.0)
    assert busy == {"samples": 4, "busy_mean_percent": 90.0, "busy_median_percent": 90.0, "memory_max_mib": 2200.0}
    nounits = timing.read_smi_csv(f"timestamp, utilization.gpu, memory.used\n{_stamp(t)}, 55, 321\n")
    assert (nounits[0].utilization, nounits[0].memory_mib) == (55.0, 321.0)


def test_cli_reports_one_line(tmp_path, capsys):
    _nerfstudio_like_events(tmp_path / "run", DURATIONS, buffer_size=20, start=T0)
    smi = tmp_path / "smi.csv"
    smi.write_text("timestamp, utilization.gpu [%], memory.used [MiB]\n"
                   + "".join(f"{_stamp(T0 + 1.2 + 0.2 * i)}, {10 * i} %, 100 MiB\n" for i in range(3)))
    result = timing.main([str(tmp_path / "run"), "--window", "2:8", "--smi", str(smi), "--json-path",
                          str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["gpu"]["busy_mean_percent"] == pytest.approx(10.0)
    assert result["gpu"]["samples"] == 3
    assert "ms/step" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no tensorboard event file"):
        timing.main([str(tmp_path / "smi.csv.d")])


def test_kit_wheel_check_and_tree_hash(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("rich-15.0.0-py3-none-any.whl", "shapely-2.0.7-cp312-cp312-manylinux_2_17_x86_64.whl",
                 "cryptography-44.0.0-cp39-abi3-manylinux_2_28_x86_64.whl",
                 "msgspec-0.23.0-cp311-cp311-manylinux_2_17_x86_64.whl", "pyobjc-11.0-cp312-cp312-macosx_11_0_arm64.whl"):
        (wheels / name).write_bytes(b"")
    assert kit.check_wheels(wheels, "3.12") == ["msgspec-0.23.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                                                "pyobjc-11.0-cp312-cp312-macosx_11_0_arm64.whl"]

    tree = tmp_path / "tree"
    for path in ("pyproject.toml", "gmnerf_ns/a.py", "gmnerf_ns/data/parsers/b.py", "gmnerf_ns/data/protocols/c.yaml",
                 "outside.py"):
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(path)
    first = kit.tree_hash(tree)
    (tree / "gmnerf_ns" / "__pycache__").mkdir()
    (tree / "gmnerf_ns" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"x")
    assert kit.tree_hash(tree) == first
    (tree / "outside.py").write_text("changed")  # not a package source
    assert kit.tree_hash(tree) == first
    (tree / "gmnerf_ns" / "data" / "protocols" / "c.yaml").write_text("changed")
    assert kit.tree_hash(tree) != first


def test_summary_of_failed_and_stopped_runs(tmp_path):
    work = tmp_path / "work"
    (work / "logs").mkdir(parents=True)
    _nerfstudio_like_events(work / "runs" / "small", DURATIONS, buffer_size=20, start=T0)
    (work / "logs" / "full.log").write_text("Traceback ...\nRuntimeError: CUDA out of memory\n")
    (work / "runs.tsv").write_text(
        f"small\tgm-nerf-small\t{work / 'runs' / 'small'}\t{work / 'none.csv'}\t2:400\t1\t124\t150\t150\t\n"
        f"full\tgm-nerf\t{work / 'runs' / 'full'}\t{work / 'none.csv'}\t100:300\t1\t1\t20\t120\t\n")
    summary = kit.write_summary(work, tmp_path / "out", elapsed=12)
    assert summary["runs"]["small"]["stopped"].startswith("timeout")
    assert summary["runs"]["small"]["window"] == [2, 10]
    assert "no tensorboard event file" in summary["runs"]["full"]["error"]
    assert summary["problems"] == [{"run": "full", "rc": "1", "log_tail": ["Traceback ...",
                                                                          "RuntimeError: CUDA out of memory"]}]
    assert summary["targets"]["gm-nerf ms/step in ns-train <= 35"] == {"value": None, "status": "not measured"}
    small = summary["targets"]["gm-nerf-small ms/sample <= 10"]
    assert small["status"] == "FAIL" and small["value"] == pytest.approx(1000 * sum(DURATIONS[2:10]) / 8, abs=0.01)
    assert "targets:" in (tmp_path / "out" / "summary.txt").read_text()


def test_launch_stops_cleanly_on_sigterm(tmp_path):
    """A run stopped by the kit's timeout (SIGTERM) ends through nerfstudio's KeyboardInterrupt path, with the steps
    it logged on disk."""
    script = textwrap.dedent(f"""\
        import os, signal, sys, time
        sys.path.insert(0, {str(KIT)!r})
        import launch
        launch.flush_events_often()
        from nerfstudio.utils import writer
        writer.EVENT_WRITERS.append(writer.TensorboardWriter(log_dir={str(tmp_path)!r}))
        try:
            for step in range(5):
                writer.put_scalar("Train Iter (time)", 0.1, step)
                writer.write_out_storage()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        except KeyboardInterrupt:
            print("interrupted")
        """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "interrupted" in done.stdout, done.stderr[-2000:]
    assert [e.step for e in timing.read_scalars(tmp_path)["Train Iter (time)"]] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_run_sh_dry_mode_on_cpu(tmp_path):
    """run.sh itself (data, ns-train gm-nerf-small with nvidia-smi sampling, summary, archive) on the CPU."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(FAKE_SMI)
    fake.chmod(0o755)
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}", OUT=str(out), GPU_KIT_WORK=str(work),
               GPU_KIT_DEVICE="cpu", GPU_KIT_INSTALL="0", GPU_KIT_PYTHON=sys.executable, GPU_KIT_STAGES="small",
               GPU_KIT_STEPS="4", GPU_KIT_WINDOW="2:4", GPU_KIT_SMALL_RESOLUTION="48", GPU_KIT_SUBJECTS="3",
               GPU_KIT_FRAMES="1", GPU_KIT_DIR=str(tmp_path / "no-kit"),
               GPU_KIT_TRAIN_ARGS="--pipeline.datamanager.patch-size 32 --pipeline.model.num-samples 8 "
                                  "--pipeline.model.volume-resolution 16")
    done = subprocess.run(["bash", str(KIT / "run.sh")], check=False, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "summary.json", "summary.txt"]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == []
    assert summary["environment"]["device"] == "cpu" and summary["environment"]["missing_modules"] == {}
    small = summary["runs"]["small"]
    assert (small["rc"], small["steps_logged"], small["window"], small["steps_in_window"]) == ("0", 4, [2, 4], 2)
    assert small["gpu"]["busy_mean_percent"] == 40.0 and small["gpu"]["memory_max_mib"] == 1234.0
    assert small["gpu"]["samples"] >= 1

    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "logs", filter="data")
    assert {"logs/small.log", "logs/small-smi.csv", "logs/runs/small/config.yml", "runs.tsv"} <= set(names)
    # the summary's numbers are the event file's (read back independently of the run)
    ends = {e.step: e.wall_time for e in timing.read_scalars(tmp_path / "logs" / "logs" / "runs" / "small")
            ["Train Iter (time)"]}
    assert small["ms_per_step"] == pytest.approx(1000 * (ends[3] - ends[1]) / 2)
    assert summary["targets"]["gm-nerf-small ms/sample <= 10"]["value"] == round(small["ms_per_sample"], 2)
