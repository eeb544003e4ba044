"""Benchmark orchestrator: plan the measurements, run each in a forked child process, assemble results.json and the
report. Usage and what is measured: benchmarks/quality/README.md.

Children are forked after the heavy imports (torch, nerfstudio, gmnerf_ns), so each starts in about a second and its
``ru_maxrss`` is its own peak. The parent does no tensor work, so forking is safe.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from bench.settings import FULL_RES, GM_SYSTEMS, MODES, NERFACTO, REFERENCE, Mode, slug


def rel(path: Path) -> Path:
    """``path`` relative to the working directory: no machine's absolute paths in the results."""
    return Path(os.path.relpath(Path(path).resolve()))


def machine_info(threads: int) -> Dict[str, Any]:
    from importlib.metadata import version

    import psutil
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.lower().startswith("model name")), platform.processor() or "unknown")
    return {"cpu_model": cpu, "logical_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "torch_threads": threads, "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "torch": torch.__version__, "nerfstudio": version("nerfstudio"),
            "platform": platform.platform()}


def load_sample(label: str) -> Dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    return {"label": label, "time": time.time(), "load1": one, "load5": five, "load15": fifteen}


def summarize_load(samples: List[Dict[str, Any]], machine: Dict[str, Any]) -> Dict[str, Any]:
    """Under load: any sampled 1-minute load average above the usable cores (other processes competed for them)."""
    load1 = [s["load1"] for s in samples]
    return {"start": samples[0], "end": samples[-1], "max_load1": max(load1), "mean_load1": sum(load1) / len(load1),
            "samples": samples, "under_load": max(load1) > (machine.get("usable_cores") or 1)}


def run_child(kind: str, spec: Dict[str, Any], result_path: Path, timeout: float) -> Dict[str, Any]:
    """Runs ``tasks.run_task(kind, spec)`` in a forked child; returns its result or an ``error`` entry."""
    from bench.tasks import run_task

    result_path.unlink(missing_ok=True)
    child = multiprocessing.get_context("fork").Process(target=run_task, args=(kind, spec, result_path))
    start = time.perf_counter()
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join()
        return {"error": f"timed out after {timeout:.0f} s", "task_seconds": time.perf_counter() - start}
    if not result_path.exists():
        return {"error": f"the measurement process died (exit code {child.exitcode}; -9: killed, e.g. out of memory)",
                "task_seconds": time.perf_counter() - start}
    return json.loads(result_path.read_text())


def prepare_data(mode: Mode, explicit: bool, log: Callable[[str], None]) -> Optional[Dict[str, Any]]:
    """Generates the mode's gmnerf-synth dataset unless complete; an explicit ``--data`` folder holding a dataset
    (split.json) is used as it is. Returns the data's description (its manifest)."""
    if not (explicit and (mode.data / "split.json").exists()):
        command = [sys.executable, "-m", "gmnerf_ns.cli.synth", "--out", str(mode.data), "--num-subjects",
                   str(mode.num_subjects), "--num-test-subjects", str(mode.num_test_subjects), "--num-cameras",
                   str(mode.num_cameras), "--num-frames", str(mode.num_frames), "--resolution",
                   str(mode.synth_resolution), "--skip-if-complete", "--no-progress"]
        proc = subprocess.run(command, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            log(f"data generation failed ({shlex.join(command)}):\n{proc.stdout}\n{proc.stderr}")
            return None
    manifest = mode.data / "manifest.json"
    return {"path": str(mode.data), **({"manifest": json.loads(manifest.read_text())} if manifest.exists() else {})}


def combine_nerfacto(fits: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One row for the per-subject nerfacto fits: per-image metrics pooled, training numbers averaged (peaks: max)."""
    import numpy as np

    from bench.tasks import quality_summary

    ok = [f for f in fits if "error" not in f]
    if not ok:
        return {"error": "; ".join(f["error"] for f in fits) or "no held-out subject"}
    out: Dict[str, Any] = {"num_fits": len(ok), "geometry": ok[0]["geometry"], "loss_curve": ok[0]["loss_curve"],
                           "quality": quality_summary([r for f in ok for r in f["quality"]["per_image"]],
                                                      ok[0]["quality"]["lpips_status"])}
    for key in ("steps", "train_seconds", "cpu_utilisation", "steps_per_second", "rays_per_second",
                "pixels_per_second", "rss_ready_mb", "num_parameters", "peak_rss_mb", "peak_increment_mb"):
        values = [f[key] for f in ok]
        out[key] = float(max(values) if key.startswith("peak") else np.mean(values))
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/quality/benchmark.py",
        description="gm-nerf-small vs its ablations vs per-subject nerfacto: quality, speed and memory, same data "
        "split and wall-clock training budget per system (benchmarks/quality/README.md).")
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke test for CI: tiny data, 2 s per system")
    add("--run-name", default=None, help="folder name under --out (default: <mode>-<date>-<time>)")
    add("--out", type=Path, default=Path("benchmarks/quality/results"), help="parent folder of the run folder")
    add("--data", type=Path, default=None, help="dataset folder (default: the mode's, generated when missing)")
    add("--budget-seconds", type=float, default=None, help="training budget per system (default 600, quick 2)")
    add("--threads", type=int, default=1, help="torch CPU threads in every measurement (default 1)")
    add("--systems", nargs="*", default=None, help=f"systems to train (default all): {', '.join(GM_SYSTEMS)}, "
        "nerfacto; with no name, nothing is trained")
    add("--eval-frames", choices=("first", "all"), default=None, help="held-out frames evaluated (default first)")
    add("--max-eval-views", type=int, default=None, help="target views per held-out subject-frame (default all)")
    add("--render-resolutions", type=int, nargs="+", default=None)
    add("--memory-patch-sizes", type=int, nargs="+", default=None)
    add("--memory-steps", type=int, default=None, help="training steps per memory measurement")
    add("--memory-device", default="cpu", help="device of the memory measurements (cuda adds the CUDA peak)")
    add("--skip-speed", action="store_true", help="skip the render-time and memory measurements")
    add("--skip-render", action="store_true")
    add("--skip-memory", action="store_true")
    add("--work-dir", type=Path, default=None, help="weights, renders, measurements (outputs/benchmark-work/<run>)")
    add("--force", action="store_true", help="overwrite an existing run folder")
    add("--resume", action="store_true", help="reuse the work dir's finished measurements (same settings only)")
    add("--rebuild-report", type=Path, default=None, metavar="RUN_DIR",
        help="only rewrite RUN_DIR's results.md, targets and plots from its results.json")
    return parser.parse_args(argv)


@dataclass
class Measurement:
    kind: str
    """A key of :data:`bench.tasks.TASKS`."""
    name: str
    """The result file's name in the work dir."""
    section: str
    """Where the result goes in results.json."""
    spec: Dict[str, Any] = field(default_factory=dict)
    """Task arguments; they are also recorded in the result."""


def plan(mode: Mode, args: argparse.Namespace, split: Dict[str, Any], work: Path) -> List[Measurement]:
    """Every measurement after ``inspect``, in order: training, nerfacto fits, renders, training memory."""
    gm_systems = [s for s in GM_SYSTEMS if args.systems is None or s in args.systems]
    out = [Measurement("train_gm", f"train-{slug(s)}", "systems",
                       {"system": s, "work": str(work / slug(s)), "eval_indices": split["eval_indices"],
                        "eval_frames": split["eval_frames"]}) for s in gm_systems]
    if args.systems is None or "nerfacto" in args.systems:
        for frame in split["eval_frames"]:
            name = f"nerfacto-{frame['subject']}-f{frame['frame_id']}"
            out.append(Measurement("train_nerfacto", name, "nerfacto_fits", {
                "system": NERFACTO, "work": str(work / slug(name)), "eval_indices": split["eval_indices"],
                "subject": frame["subject"], "subject_index": frame["subject_index"], "frame_id": frame["frame_id"]}))
    if not (args.skip_speed or args.skip_render):
        renders = [(REFERENCE, variant, res) for res in mode.render_resolutions
                   for variant in ("trained", "volume-full-res") if REFERENCE in gm_systems]
        renders += [(FULL_RES, "trained", mode.render_resolution)] if FULL_RES in gm_systems else []
        out += [Measurement("render", f"render-{slug(s)}-{v}-{r}", "render", {
            "system": s, "variant": v, "resolution": r, "weights": str(work / slug(s) / "model.pt"),
            "index": split["eval_indices"][0], "repeats": mode.render_repeats}) for s, v, r in renders]
    if not (args.skip_speed or args.skip_memory):
        out += [Measurement("train_memory", f"memory-p{patch}-g{frac:g}", "train_memory", {
            "patch_size": patch, "grad_ray_fraction": frac, "steps": mode.memory_steps, "device": args.memory_device})
            for patch in mode.memory_patch_sizes for frac in (gm_nerf_small_fraction(), 1.0)]
    return out


class Runner:
    """Runs measurements in forked children (or reuses their results with ``--resume``), sampling the load."""

    def __init__(self, mode: Mode, threads: int, work: Path, resume: bool, log: Callable[[str], None]):
        self.base_spec = {"mode": asdict(mode), "threads": threads}
        self.timeout = mode.child_timeout + 3 * mode.budget_seconds
        self.work, self.resume, self.log = work, resume, log
        self.loads, self.reused = [load_sample("start")], []

    def __call__(self, m: Measurement) -> Dict[str, Any]:
        path = self.work / f"{m.name}.json"
        if self.resume and path.exists() and "error" not in json.loads(path.read_text()):
            self.reused.append(m.name)
            self.log(f"  {m.name}: reused from {path}")
            return {**m.spec, **json.loads(path.read_text())}
        self.loads.append(load_sample(f"{m.name} start"))
        result = {**m.spec, **run_child(m.kind, {**self.base_spec, **m.spec}, path, self.timeout)}
        self.loads.append(load_sample(f"{m.name} end"))
        status = f"ERROR {result['error']}" if "error" in result else "ok"
        self.log(f"  {m.name}: {status} ({result.get('task_seconds', 0):.1f} s)")
        if "traceback" in result:  # kept in the measurement's file, not in results.json
            self.log(result.pop("traceback"))
        return result


def run(measurements: List[Measurement], runner: Runner) -> Dict[str, Any]:
    results: Dict[str, Any] = {"systems": {}, "nerfacto_fits": [], "render": [], "train_memory": []}
    for m in measurements:
        result = runner(m)
        if m.section == "systems":
            results["systems"][m.spec["system"]] = result
        else:
            results[m.section].append(result)
    if results["nerfacto_fits"]:
        results["systems"][NERFACTO] = combine_nerfacto(results["nerfacto_fits"])
    return results


def assemble(argv: List[str], mode: Mode, run_name: str, started: _dt.datetime, runner: Runner,
             machine: Dict[str, Any], data: Dict[str, Any], split: Dict[str, Any], results: Dict[str, Any]) -> Dict:
    runner.loads.append(load_sample("end"))
    finished = _dt.datetime.now()
    return {
        "format": 2, "run_name": run_name, "mode": mode.name,
        "command": "python benchmarks/quality/benchmark.py " + shlex.join(argv),
        "started": started.isoformat(timespec="seconds"), "finished": finished.isoformat(timespec="seconds"),
        "wall_seconds": (finished - started).total_seconds(), "data": data, "work_dir": str(runner.work),
        "machine": machine, "load": summarize_load(runner.loads, machine),
        "settings": {**json.loads(json.dumps(asdict(mode), default=str)),
                     "gm_nerf_small_grad_ray_fraction": gm_nerf_small_fraction()},
        "split": split, "reused": runner.reused, **results,
    }


def gm_nerf_small_fraction() -> float:
    from gmnerf_ns.training.method_configs import gm_nerf_small

    return float(gm_nerf_small.config.pipeline.model.grad_ray_fraction)


def make_mode(args: argparse.Namespace) -> Mode:
    mode = MODES["quick" if args.quick else "full"].with_overrides(
        data=args.data and rel(args.data), budget_seconds=args.budget_seconds, eval_frames=args.eval_frames,
        max_eval_views=args.max_eval_views, render_resolutions=args.render_resolutions and tuple(args.render_resolutions),
        memory_patch_sizes=args.memory_patch_sizes and tuple(args.memory_patch_sizes), memory_steps=args.memory_steps)
    mode.render_resolutions = tuple(sorted({*mode.render_resolutions, mode.render_resolution}))
    mode.memory_patch_sizes = tuple(sorted({*mode.memory_patch_sizes, mode.patch_size}))
    return mode


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    from bench.report import write_report

    if args.rebuild_report is not None:
        write_report(json.loads((args.rebuild_report / "results.json").read_text()), args.rebuild_report)
        return 0
    mode, started = make_mode(args), _dt.datetime.now()
    unknown = set(args.systems or []) - {*GM_SYSTEMS, "nerfacto"}
    run_name = args.run_name or f"{mode.name}-{started:%Y%m%d-%H%M%S}"
    run_dir, work = args.out / run_name, rel(args.work_dir or Path("outputs") / "benchmark-work" / run_name)
    settings = json.loads(json.dumps({"mode": asdict(mode), "threads": args.threads}, default=str))
    refusal = (f"unknown systems {sorted(unknown)}" if unknown else
               f"{run_dir} already holds results (use --force, --resume or another --run-name)"
               if (run_dir / "results.json").exists() and not (args.force or args.resume) else
               f"--resume: {work} was measured with other settings"
               if args.resume and (work / "settings.json").exists()
               and json.loads((work / "settings.json").read_text()) != settings else None)
    if refusal:
        print(f"benchmark: {refusal}", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (work / "settings.json").write_text(json.dumps(settings, indent=1))
    log_file = (run_dir / "log.txt").open("w")

    def log(message: str) -> None:
        print(message, flush=True)
        log_file.write(message + "\n")

    log(f"benchmark {run_name}: mode {mode.name}, budget {mode.budget_seconds:g} s per system, data {mode.data}")
    data = prepare_data(mode, explicit=args.data is not None, log=log)
    if data is None:
        return 1
    import torch  # the heavy imports once, before forking a child per measurement

    torch.set_num_threads(args.threads)
    import nerfstudio.pipelines.base_pipeline  # noqa: F401

    import bench.tasks  # noqa: F401
    import gmnerf_ns.eval.evaluation  # noqa: F401
    import gmnerf_ns.training.pipeline  # noqa: F401

    runner = Runner(mode, args.threads, work, args.resume, log)
    split = runner(Measurement("inspect", "inspect", "split"))
    if "error" in split:
        return 1
    measurements = plan(mode, args, split, work)
    log(f"{len(measurements)} measurements")
    doc = assemble(argv, mode, run_name, started, runner, machine_info(args.threads), data, split,
                   run(measurements, runner))
    write_report(doc, run_dir)
    log((run_dir / "results.md").read_text())
    log(f"wrote {rel(run_dir)}/results.md, results.json and plots in {doc['wall_seconds']:.0f} s")
    log_file.close()
    return 0
