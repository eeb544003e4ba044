"""Benchmark orchestrator: data, one forked child process per measurement, results.json + results.md + plots.

Usage (see ``benchmarks/README.md``)::

    python scripts/benchmark.py --quick                        # CI smoke test (tiny data, 2 s per system)
    python scripts/benchmark.py --budget-seconds 600           # the README table (gmnerf-synth's default data)

Every measurement runs in a child forked from this process after the heavy imports (torch, nerfstudio, gmnerf_ns),
so a child starts in about a second and its ``ru_maxrss`` is its own peak (never another measurement's). The parent
does no tensor work, so forking is safe (no OpenMP pool has been started).
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
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from gmnerf_ns.benchmark.settings import (
    FULL_RES,
    GM_SYSTEMS,
    MODES,
    NERFACTO,
    REFERENCE,
    Mode,
    slug,
)

SPLATFACTO_REASON = (
    "not run: splatfacto rasterises with gsplat, and gsplat 1.4.0 (the version nerfstudio 1.1.5 installs) has no CPU "
    "rasteriser: gsplat.rasterization() JIT-compiles its CUDA extension on first use, which fails on this machine "
    "(torch.utils.cpp_extension: 'No CUDA runtime is found', then IndexError in _get_cuda_arch_flags: no GPU "
    "architecture to compile for, and no nvcc)."
)

PIXELNERF_FINDINGS = (
    "nerfstudio-pixelnerf 0.0.22 (the only PyPI version) was tried in a throw-away venv (never the project's) on a "
    "nerfacto scene of this benchmark: (1) with its defaults, model construction fails offline: its encoder calls "
    "torchvision resnet34(pretrained=True), which downloads resnet34-b627a593.pth -> URLError; (2) with the encoder "
    "unpretrained, no checkpoint reload, full fine-tuning and no mixed precision, setup succeeds but the first "
    "training step fails with TypeError: NeRFRenderer.forward() missing 1 required positional argument: 'rays' "
    "(PixelNeRFModel binds its renderer to the network only if torch.cuda.is_available(), so it cannot run on a "
    "CPU-only machine without patching it); (3) its default zero-shot mode needs the official checkpoint from Google "
    "Drive (gdown, unreachable) and freezes every parameter without it; (4) it is single-scene (one transforms.json), "
    "so it cannot train across our training subjects and be tested on held-out ones: on our data it could only be a "
    "per-subject 4-view fit, which nerfacto covers. registration=none is the pixelNeRF-style cross-subject baseline. "
    "Details: benchmarks/README.md."
)


# ----------------------------------------------------------------------------------------------------------------------
# machine description
# ----------------------------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(threads: int) -> Dict[str, Any]:
    import nerfstudio  # noqa: F401
    import psutil
    import torch

    try:
        from importlib.metadata import version

        ns_version = version("nerfstudio")
    except Exception:  # pragma: no cover
        ns_version = "unknown"
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": threads,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "nerfstudio": ns_version,
        "platform": platform.platform(),
    }


def load_sample(label: str) -> Dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    return {"label": label, "time": time.time(), "load1": one, "load5": five, "load15": fifteen}


# ----------------------------------------------------------------------------------------------------------------------
# children
# ----------------------------------------------------------------------------------------------------------------------


def run_child(kind: str, spec: Dict[str, Any], result_path: Path, timeout: float) -> Dict[str, Any]:
    """Runs ``tasks.run_task(kind, spec)`` in a forked child; returns its result or an ``error`` entry."""
    from gmnerf_ns.benchmark.tasks import run_task

    result_path.parent.mkdir(parents=True, exist_ok=True)
    if result_path.exists():
        result_path.unlink()
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=run_task, args=(kind, spec, result_path), name=f"bench-{kind}")
    start = time.perf_counter()
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.terminate()
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
        return {"error": f"timed out after {timeout:.0f} s", "task_seconds": time.perf_counter() - start}
    if not result_path.exists():
        return {"error": f"the measurement process died (exit code {child.exitcode}; -9 = killed, e.g. out of memory)",
                "task_seconds": time.perf_counter() - start}
    return json.loads(result_path.read_text())


# ----------------------------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/benchmark.py",
        description="gm-nerf-small vs its ablations vs per-subject nerfacto: quality, speed and memory in one run, "
                    "same data split and same wall-clock training budget per system.")
    parser.add_argument("--quick", action="store_true", help="smoke test for CI: tiny data, 2 s per system")
    parser.add_argument("--run-name", default=None, help="folder name under --out (default: <mode>-<date>-<time>)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"), help="parent folder of the run folder")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder (generated with gmnerf-synth when missing; default: data/synthetic, "
                             "quick: data/benchmark-quick)")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="wall-clock training budget per trained system (nerfacto: per held-out subject); "
                             "default 600, quick 2")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads in every measurement (default 1: on a shared machine torch's pool "
                             "spin-waits; use the machine's cores on a quiet one)")
    parser.add_argument("--systems", nargs="*", default=None,
                        help=f"subset of systems to train (default all): {', '.join([*GM_SYSTEMS, 'nerfacto'])}; "
                             "given with no name, nothing is trained (e.g. '--systems --skip-render': only the "
                             "training-memory measurements, which need no trained weights)")
    parser.add_argument("--eval-frames", choices=("first", "all"), default=None,
                        help="held-out frames evaluated (default 'first': the frame nerfacto is fitted to)")
    parser.add_argument("--max-eval-views", type=int, default=None,
                        help="at most this many target views per evaluated held-out subject-frame (default all; "
                             "quick 1)")
    parser.add_argument("--render-resolutions", type=int, nargs="+", default=None)
    parser.add_argument("--memory-patch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--memory-steps", type=int, default=None,
                        help="training steps per memory measurement (default 3, quick 2)")
    parser.add_argument("--memory-device", default="cpu",
                        help="device of the training-memory measurements (default cpu; on 'cuda' they also record "
                             "torch.cuda.max_memory_allocated)")
    parser.add_argument("--skip-speed", action="store_true", help="skip the render-time and memory measurements")
    parser.add_argument("--skip-render", action="store_true", help="skip the render-time measurements")
    parser.add_argument("--skip-memory", action="store_true", help="skip the training-memory measurements")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="weights, renders and nerfacto scenes (default outputs/benchmark-work/<run-name>, "
                             "outside the committed run folder)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    parser.add_argument("--resume", action="store_true",
                        help="complete an interrupted or partly failed run: measurements whose result is in the work "
                             "dir without an error are reused (listed in the report), the rest run again; refused "
                             "when the work dir was made with other settings")
    parser.add_argument("--rebuild-report", type=Path, default=None, metavar="RUN_DIR",
                        help="only rewrite RUN_DIR's results.md, targets and plots from its results.json")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    if args.rebuild_report is not None:
        from gmnerf_ns.benchmark.report import write_report

        doc = json.loads((args.rebuild_report / "results.json").read_text())
        write_report(doc, args.rebuild_report)
        print(f"rewrote {args.rebuild_report}/results.md and its plots")
        return 0
    mode_name = "quick" if args.quick else "full"
    mode: Mode = MODES[mode_name].with_overrides(
        data=args.data, budget_seconds=args.budget_seconds, eval_frames=args.eval_frames,
        max_eval_views=args.max_eval_views,
        render_resolutions=tuple(args.render_resolutions) if args.render_resolutions else None,
        memory_patch_sizes=tuple(args.memory_patch_sizes) if args.memory_patch_sizes else None,
        memory_steps=args.memory_steps,
    )
    if args.render_resolutions and mode.render_resolution not in mode.render_resolutions:
        mode.render_resolutions = tuple(sorted({*mode.render_resolutions, mode.render_resolution}))
    if mode.patch_size not in mode.memory_patch_sizes:
        mode.memory_patch_sizes = tuple(sorted({*mode.memory_patch_sizes, mode.patch_size}))
    mode.data = mode.data.resolve()
    started = _dt.datetime.now()
    run_name = args.run_name or f"{mode_name}-{started:%Y%m%d-%H%M%S}"
    run_dir = (args.out / run_name).resolve()
    if (run_dir / "results.json").exists() and not (args.force or args.resume):
        print(f"benchmark: {run_dir} already holds results (use --force, --resume or another --run-name)",
              file=sys.stderr)
        return 2
    work = (args.work_dir or Path("outputs") / "benchmark-work" / run_name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    settings_path = work / "settings.json"
    settings = json.loads(json.dumps({"mode": asdict(mode), "threads": args.threads}, default=str))
    if args.resume and settings_path.exists() and json.loads(settings_path.read_text()) != settings:
        print(f"benchmark: --resume: {work} was measured with other settings ({settings_path}); use the same options "
              "or another --run-name", file=sys.stderr)
        return 2
    settings_path.write_text(json.dumps(settings, indent=1))
    reused: List[str] = []
    systems = list(GM_SYSTEMS) + ["nerfacto"]
    if args.systems is not None:
        unknown = [s for s in args.systems if s not in systems]
        if unknown:
            print(f"benchmark: unknown systems {unknown}; choose from {systems}", file=sys.stderr)
            return 2
        systems = [s for s in systems if s in args.systems]
    gm_systems = [s for s in systems if s in GM_SYSTEMS]

    log = _Logger(run_dir / "log.txt")
    log(f"benchmark {run_name}: mode {mode_name}, budget {mode.budget_seconds:g} s per system, data {mode.data}")
    loads = [load_sample("start")]

    # ---- data ----
    t0 = time.perf_counter()
    data_info = prepare_data(mode, explicit=args.data is not None, log=log)
    if data_info is None:
        return 1
    data_seconds = time.perf_counter() - t0

    # ---- heavy imports once, then fork a child per measurement ----
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    import nerfstudio.pipelines.base_pipeline  # noqa: F401

    import gmnerf_ns.benchmark.tasks  # noqa: F401
    import gmnerf_ns.method_configs  # noqa: F401
    import gmnerf_ns.pipeline  # noqa: F401
    import gmnerf_ns.tools.evaluation  # noqa: F401

    machine = machine_info(args.threads)
    import_seconds = time.perf_counter() - t0
    base_spec = {"mode": asdict(mode), "threads": args.threads}
    timeout = mode.child_timeout + 3 * mode.budget_seconds

    def child(kind: str, name: str, **spec) -> Dict[str, Any]:
        previous = work / f"{name}.json"
        if args.resume and previous.exists():
            result = json.loads(previous.read_text())
            if "error" not in result:
                reused.append(name)
                log(f"  {name}: reused from {previous}")
                return result
        loads.append(load_sample(f"{name} start"))
        result = run_child(kind, {**base_spec, **spec}, work / f"{name}.json", timeout)
        loads.append(load_sample(f"{name} end"))
        status = f"ERROR {result['error']}" if "error" in result else "ok"
        log(f"  {name}: {status} ({result.get('task_seconds', 0):.1f} s)")
        return result

    log("split and protocol")
    split = child("inspect", "inspect")
    if "error" in split:
        log(split.get("traceback", ""))
        return 1

    results: Dict[str, Any] = {"systems": {}, "nerfacto_fits": [], "render": [], "train_memory": []}
    log(f"training {len(gm_systems)} gm-nerf systems for {mode.budget_seconds:g} s each")
    for system in gm_systems:
        results["systems"][system] = child("train_gm", f"train-{slug(system)}", system=system,
                                           work=str(work / slug(system)), eval_indices=split["eval_indices"],
                                           eval_frames=split["eval_frames"])
    if "nerfacto" in systems:
        log(f"fitting nerfacto to {len(split['eval_frames'])} held-out subject-frame(s), {mode.budget_seconds:g} s each")
        for frame in split["eval_frames"]:
            name = f"nerfacto-{frame['subject']}-f{frame['frame_id']}"
            results["nerfacto_fits"].append(child(
                "train_nerfacto", name, system=NERFACTO, work=str(work / slug(name)), eval_indices=split["eval_indices"],
                subject=frame["subject"], subject_index=frame["subject_index"], frame_id=frame["frame_id"]))
        results["systems"][NERFACTO] = combine_nerfacto(results["nerfacto_fits"])

    if not (args.skip_speed or args.skip_render):
        log("render time per resolution (cold: encoding the sources included; warm: encoding cached)")
        index = split["eval_indices"][0]
        plan = []
        if REFERENCE in gm_systems:
            for res in mode.render_resolutions:
                plan.append((REFERENCE, "trained", res))
                plan.append((REFERENCE, "volume-full-res", res))
        if FULL_RES in gm_systems:
            plan.append((FULL_RES, "trained", mode.render_resolution))
        for system, variant, res in plan:
            weights = work / slug(system) / "model.pt"
            if not weights.exists():
                results["render"].append({"system": system, "variant": variant, "resolution": res,
                                          "error": "no trained weights (training failed)"})
                continue
            entry = child("render", f"render-{slug(system)}-{variant}-{res}", system=system, variant=variant,
                          resolution=res, weights=str(weights), index=index, repeats=mode.render_repeats)
            entry.setdefault("system", system)
            entry.setdefault("variant", variant)
            entry.setdefault("resolution", res)
            results["render"].append(entry)
    if not (args.skip_speed or args.skip_memory):
        log("training memory per patch size, partial vs full gradient")
        fraction = gm_nerf_small_fraction()
        for patch in mode.memory_patch_sizes:
            for frac in (fraction, 1.0):
                entry = child("train_memory", f"memory-p{patch}-g{frac:g}", patch_size=patch, grad_ray_fraction=frac,
                              steps=mode.memory_steps, device=args.memory_device)
                entry.setdefault("patch_size", patch)
                entry.setdefault("grad_ray_fraction", frac)
                results["train_memory"].append(entry)

    loads.append(load_sample("end"))
    finished = _dt.datetime.now()
    doc = {
        "format": 1,
        "run_name": run_name,
        "mode": mode_name,
        "command": "python scripts/benchmark.py " + " ".join(shlex.quote(a) for a in argv_list),
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "wall_seconds": (finished - started).total_seconds(),
        "data_seconds": data_seconds,
        "data": data_info,
        "work_dir": str(work),
        "import_seconds": import_seconds,
        "machine": machine,
        "load": summarize_load(loads, machine),
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(mode).items()},
                     "gm_nerf_small_grad_ray_fraction": gm_nerf_small_fraction()},
        "split": split,
        "reused": reused,
        "not_run": {"splatfacto": SPLATFACTO_REASON, "nerfstudio-pixelnerf": pixelnerf_status()},
        **results,
    }
    from gmnerf_ns.benchmark.report import write_report

    doc["targets"] = []  # filled by write_report
    write_report(doc, run_dir)
    log((run_dir / "results.md").read_text())
    log(f"wrote {run_dir}/results.md, results.json and plots in {doc['wall_seconds']:.0f} s")
    return 0


def prepare_data(mode: Mode, explicit: bool, log) -> Optional[Dict[str, Any]]:
    """Generates the mode's gmnerf-synth dataset unless it is complete; an explicitly given ``--data`` folder that
    already holds a dataset (split.json) with other settings is used as it is. Returns the dataset's manifest."""
    from gmnerf_ns.synth.generator import SynthConfig, dataset_complete

    synth = SynthConfig(out=mode.data, num_subjects=mode.num_subjects, num_test_subjects=mode.num_test_subjects,
                        num_cameras=mode.num_cameras, num_frames=mode.num_frames, resolution=mode.synth_resolution,
                        progress=False)
    manifest_path = mode.data / "manifest.json"
    if dataset_complete(synth):
        log(f"data: {mode.data} is complete with the {mode.name}-mode settings")
    elif explicit and (mode.data / "split.json").exists():
        log(f"data: using {mode.data} as it is (it holds a dataset with other settings than the {mode.name} mode's)")
    else:
        command = [sys.executable, "-m", "gmnerf_ns.synth.cli", "--out", str(mode.data), "--num-subjects",
                   str(mode.num_subjects), "--num-test-subjects", str(mode.num_test_subjects), "--num-cameras",
                   str(mode.num_cameras), "--num-frames", str(mode.num_frames), "--resolution",
                   str(mode.synth_resolution), "--skip-if-complete", "--no-progress"]
        proc = subprocess.run(command, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            log(f"data generation failed ({' '.join(command)}):\n{proc.stdout}\n{proc.stderr}")
            return None
        log(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "data ready")
    info: Dict[str, Any] = {"path": str(mode.data)}
    if manifest_path.exists():
        info["manifest"] = json.loads(manifest_path.read_text())
    return info


def gm_nerf_small_fraction() -> float:
    from gmnerf_ns.method_configs import gm_nerf_small

    return float(gm_nerf_small.config.pipeline.model.grad_ray_fraction)


def pixelnerf_status() -> str:
    """Whether nerfstudio-pixelnerf is installed here, and why it is not part of the comparison."""
    from importlib.metadata import entry_points

    names = [ep.name for ep in entry_points(group="nerfstudio.method_configs")]
    installed = "pixelnerf" in names or "pixel-nerf" in names
    where = ("installed in this environment but not run" if installed
             else "not installed in this environment (kept out of the project's venv on purpose)")
    return f"{where}. {PIXELNERF_FINDINGS}"


def combine_nerfacto(fits: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One row for the per-subject nerfacto fits: per-image metrics pooled, training numbers averaged."""
    ok = [f for f in fits if "error" not in f]
    if not ok:
        return {"system": NERFACTO, "error": "; ".join(f.get("error", "?") for f in fits) or "no held-out subject"}
    import numpy as np

    per_image = [row for f in ok for row in f["quality"]["per_image"]]
    quality: Dict[str, Any] = {"num_images": len(per_image), "lpips_status": ok[0]["quality"]["lpips_status"],
                               "per_image": per_image}
    for key in ("psnr", "ssim", "lpips"):
        values = [r[key] for r in per_image if r.get(key) is not None]
        quality[key] = float(np.mean(values)) if values and len(values) == len(per_image) else None
    out: Dict[str, Any] = {"system": NERFACTO, "num_fits": len(ok), "quality": quality,
                           "geometry": ok[0]["geometry"], "fits": [f.get("subject") for f in ok]}
    for key in ("steps", "train_seconds", "cpu_seconds", "cpu_utilisation", "steps_per_second", "rays_per_second",
                "pixels_per_second", "peak_rss_mb", "peak_increment_mb", "rss_ready_mb", "num_parameters",
                "volume_rays_per_step", "grad_rays_per_step", "pixels_per_step", "eval_seconds"):
        values = [f[key] for f in ok if f.get(key) is not None]
        if values:
            out[key] = float(np.mean(values)) if key not in ("peak_rss_mb", "peak_increment_mb") else float(max(values))
    out["loss_curve"] = ok[0].get("loss_curve", [])
    if len(ok) < len(fits):
        out["partial_errors"] = [f["error"] for f in fits if "error" in f]
    return out


def summarize_load(samples: List[Dict[str, Any]], machine: Dict[str, Any]) -> Dict[str, Any]:
    """Load averages over the run and whether the results were measured under load.

    Our own measurement keeps about ``torch_threads`` cores busy, so 1-minute load averages above the usable cores
    mean other processes were competing for them: the timings are then inflated (the CPU-utilisation column shows by
    how much), and memory and quality are unaffected.
    """
    cores = machine.get("usable_cores") or 1
    load1 = [s["load1"] for s in samples]
    under_load = max(load1) > cores
    return {
        "start": samples[0], "end": samples[-1], "max_load1": max(load1), "mean_load1": sum(load1) / len(load1),
        "samples": samples, "under_load": under_load,
        "rule": f"under load when any sampled 1-minute load average exceeds the {cores} usable cores (this run keeps "
                f"about {machine.get('torch_threads')} busy itself)",
    }


class _Logger:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def __call__(self, message: str) -> None:
        print(message, flush=True)
        with self.path.open("a") as handle:
            handle.write(message + "\n")


if __name__ == "__main__":
    sys.exit(main())
