"""Generalization suite: new people on new rigs and in new conditions, measured with ``ns-eval``.

24 held-out people (8 per rig) that no model trains or tunes on, on 3 rigs, each at 3 proxy misfit levels (per-joint
pose noise 0, 0.05 and 0.1 rad; the images are the same at every level, only the proxy changes); and 8 more people in
each of 4 conditions (512-px images, lighting and body-shape variety, a realistic fit error, far cameras with
landscape images). Every target view is a camera that is not a source view. Every model is
evaluated with ``ns-eval`` on every (rig, misfit) dataset; the report gives PSNR/SSIM (LPIPS when its weights exist)
per person, then the mean and a 95% confidence interval over people per rig and per misfit level, and for every model
after the first its paired difference to the first.

    python benchmarks/generalization/generalization_suite.py generate    # the 13 datasets
    python benchmarks/generalization/generalization_suite.py evaluate --models pretrained outputs/.../config.yml
    python benchmarks/generalization/generalization_suite.py report --models pretrained outputs/.../config.yml

``pretrained`` is the shipped model (through ``gmnerf-pretrained``); any other entry is a run's ``config.yml``.
Results go to this file's folder, ``benchmarks/generalization/`` (``results.json``, ``table.md``); ns-eval outputs
are kept under ``--work`` so an interrupted evaluation resumes.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

import numpy as np
import tyro
import yaml

from gmnerf_ns.training.nerfstudio_patches import install_yaml_guard

HERE = Path(__file__).resolve().parent

RIGS: Dict[str, Tuple[int, str, Tuple[int, ...]]] = {
    # name: (seed, gmnerf-synth rig options, target views: camera indices that are never among the 4 evenly spaced
    # sources, rig6 (0, 2, 3, 4), rig10 (0, 2, 5, 8), rig16 (0, 4, 8, 12))
    "rig6": (2001, "--num-cameras 6", (1, 5)),
    "rig10": (2002, "--num-cameras 10 --camera-distance 3.0 4.5 --camera-height 0.8 2.0", (1, 4, 7)),
    "rig16": (2003, "--num-cameras 16 --camera-distance 2.4 3.4 --camera-height 0.4 2.6 --zoom-out 0.8 1.0",
              (2, 6, 10, 14)),
}
"""The suite's rigs. Seeds 2001-2003 are used nowhere else (the demo uses 0, the pretrained model's world 100)."""
MISFITS: Tuple[float, ...] = (0.0, 0.05, 0.1)
"""Proxy pose noise levels (radians per joint)."""
PEOPLE_PER_RIG = 8

CONDITIONS: Dict[str, Tuple[int, str, int]] = {
    # name: (seed, gmnerf-synth options, image height = rendering resolution); an 8-camera ring, 4 evenly spaced
    # sources, every other camera a target
    "res512": (2101, "--resolution 512", 512),
    "light-shape": (2102, "--light-variety 1.0 --shape-variety 1.0", 256),
    "fit-error": (2103, "--proxy-pose-noise 0.05 --proxy-shape-error 0.3 --proxy-offset 0.02 --mask-error 2", 256),
    "far-landscape": (2104, "--camera-distance 4.0 5.0 --aspect 1.33 1.78", 256),
}
"""Conditions users meet beyond the rigs: 512-px images, lighting and body-shape variety, a realistic fit error (pose,
shape, offset and mask errors together), far cameras with landscape images. Seeds 2101-2104 are used nowhere else."""
CONDITION_CAMERAS = 8


def dataset_dir(work: Path, rig: str, misfit: float) -> Path:
    return work / "data" / rig / f"misfit{misfit:g}"


def condition_dir(work: Path, condition: str) -> Path:
    return work / "data" / "conditions" / condition


def protocol_yaml(work: Path, rig: str) -> Path:
    """The rig's protocol: 4 evenly spaced source views, a few fixed target views, the one frame, 256 px."""
    return write_protocol(work / "data" / rig / "protocol.yaml", f"suite-{rig}", list(RIGS[rig][2]), 256)


def condition_protocol(work: Path, condition: str) -> Path:
    """A condition's protocol: 4 evenly spaced source views, every other camera a target, at the images' height."""
    return write_protocol(work / "data" / "conditions" / f"{condition}.yaml", f"suite-{condition}", None,
                          CONDITIONS[condition][2])


def write_protocol(path: Path, name: str, targets: Optional[List[int]], resolution: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "name": name, "description": f"generalization suite, {name}", "dataset": "gmnerf-synthetic",
        "train_subjects": None, "test_subjects": None, "num_input_views": 4, "input_views": None,
        "target_views": targets, "resolution": resolution, "bbox_padding": 0.05,
    }, sort_keys=False))
    return path


def run(command: List[str], log: Path | None = None) -> str:
    print("$", shlex.join(command), flush=True)
    out = subprocess.run(command, check=False, capture_output=True, text=True)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {shlex.join(command)}\n{out.stderr[-3000:]}")
    return out.stdout


def generate(work: Path, workers: int, parts: List[str]) -> None:
    def synth(out: Path, seed: int, *options: str) -> None:
        run(["gmnerf-synth", "--out", str(out), "--num-subjects", str(PEOPLE_PER_RIG + 1), "--num-test-subjects",
             str(PEOPLE_PER_RIG), "--num-frames", "1", "--resolution", "256", "--seed", str(seed), "--workers",
             str(workers), "--skip-if-complete", "--no-progress", *options])

    if "rigs" in parts:
        for rig, (seed, options, _) in RIGS.items():
            for misfit in MISFITS:
                synth(dataset_dir(work, rig, misfit), seed, "--proxy-pose-noise", str(misfit), *shlex.split(options))
    if "conditions" in parts:
        for condition, (seed, options, _) in CONDITIONS.items():
            synth(condition_dir(work, condition), seed, "--num-cameras", str(CONDITION_CAMERAS), *shlex.split(options))


def model_name(model: str) -> str:
    if model == "pretrained":
        return "pretrained"
    parts = Path(model).parts  # outputs/<experiment>/<method>/<timestamp>/config.yml
    return "-".join(parts[-4:-1]) if len(parts) >= 4 else Path(model).parent.name


def retarget(config_path: Path, data: Path, protocol: Path, out: Path) -> Path:
    """A run folder under ``out`` that evaluates ``config_path``'s checkpoints on ``data`` with ``protocol``."""

    install_yaml_guard()
    config = yaml.load(Path(config_path).read_text(), Loader=yaml.Loader)
    source_checkpoints = config.get_checkpoint_dir().resolve()
    if not source_checkpoints.is_dir():
        source_checkpoints = (Path(config_path).parent / "nerfstudio_models").resolve()
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.dataparser.data = data
    config.pipeline.datamanager.dataparser.protocol = str(protocol)
    config.pipeline.geometry_resolution = 0  # image metrics only
    if getattr(config.machine, "device_type", None) == "cuda":  # trained on a GPU machine: evaluate on what is here
        config.machine.device_type = "auto"
    config.output_dir, config.experiment_name, config.timestamp = out.parent.parent, out.parent.name, out.name
    base = config.get_base_dir()
    base.mkdir(parents=True, exist_ok=True)
    link = config.get_checkpoint_dir()
    if not link.exists():
        link.symlink_to(source_checkpoints, target_is_directory=True)
    (base / "config.yml").write_text(yaml.dump(config))  # not save_config: it refuses a folder with checkpoints
    return base / "config.yml"


def evaluations(work: Path, parts: List[str]) -> List[Tuple[str, Path, Path]]:
    """(result name, dataset, protocol) of every evaluation of the chosen parts."""
    out = []
    if "rigs" in parts:
        out += [(f"{rig}-misfit{misfit:g}", dataset_dir(work, rig, misfit), protocol_yaml(work, rig))
                for rig in RIGS for misfit in MISFITS]
    if "conditions" in parts:
        out += [(f"cond-{c}", condition_dir(work, c), condition_protocol(work, c)) for c in CONDITIONS]
    return out


def evaluate(work: Path, models: List[str], parts: List[str]) -> None:
    jobs = evaluations(work, parts)
    for model in models:
        name = model_name(model)
        config = Path(model)
        if model == "pretrained":
            output = run(["gmnerf-pretrained", "--data", str(jobs[0][1]), "--output-dir", str(work / "runs"),
                          "--experiment-name", "pretrained", "--timestamp", "source", "--force"])
            config = Path(output.strip().splitlines()[-1])
        for job, data, protocol in jobs:
            result = work / "results" / name / f"{job}.json"
            if result.exists():
                continue
            target = retarget(config, data, protocol, work / "runs" / name / job)
            partial = result.with_suffix(".partial.json")
            partial.unlink(missing_ok=True)  # left by an interrupted evaluation (ns-eval refuses to overwrite)
            run(["ns-eval", "--load-config", str(target), "--output-path", str(partial)],
                log=result.with_suffix(".log"))
            partial.replace(result)


def per_person(result: Path) -> Dict[str, Dict[str, float]]:
    """Mean metrics per held-out person of one ns-eval output."""
    images = json.loads(result.read_text())["results"]["per_image"]
    people: Dict[str, Dict[str, List[float]]] = {}
    for image in images:
        for key in ("psnr", "ssim", "lpips"):
            if image.get(key) is not None:
                people.setdefault(image["subject"], {}).setdefault(key, []).append(float(image[key]))
    return {person: {k: float(np.mean(v)) for k, v in metrics.items()} for person, metrics in people.items()}


def seed_group(name: str) -> str:
    """The model a run is a seed of: ``...-full-seed1`` -> ``...-full`` (names without a seed are their own group)."""
    return re.sub(r"-seed\d+$", "", name)


def paired_difference(model: Dict[Tuple, float], reference: Dict[Tuple, float], misfit: float
                      ) -> Tuple[float, float, int]:
    """Mean and 95% half-width of ``model - reference`` over the (rig, misfit, person) keys both have at ``misfit``,
    and how many there are."""
    diffs = [value - reference[k] for k, value in model.items() if k[1] == misfit and k in reference]
    mean, half = interval(diffs) if diffs else (math.nan, math.nan)
    return mean, half, len(diffs)


def interval(values: List[float]) -> Tuple[float, float]:
    """Mean and half-width of the 95% t-interval."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), math.nan
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)


@dataclass
class Suite:
    """Generate the suite's datasets, evaluate models on them, write the report."""

    action: tyro.conf.Positional[Literal["generate", "evaluate", "report", "all"]]
    """What to do: generate the datasets, evaluate the models, write the report, or all three."""
    models: List[str] = field(default_factory=lambda: ["pretrained"])
    """``pretrained`` (the shipped model) and/or runs' config.yml files; differences are taken to the first."""
    work: Path = Path("outputs/generalization")
    """Datasets, retargeted runs and raw ns-eval outputs."""
    out: Path = HERE
    """Where results.json and table.md go (default: this file's folder)."""
    workers: int = 2
    """gmnerf-synth worker processes."""
    parts: List[Literal["rigs", "conditions"]] = field(default_factory=lambda: ["rigs", "conditions"])
    """Which datasets: the rigs at three misfit levels, and/or the conditions (512 px, lighting and shape, fit error,
    far landscape cameras)."""


def report(work: Path, models: List[str], out: Path) -> None:
    table: Dict[str, Dict] = {}
    for model in models:
        name = model_name(model)
        people = {}
        for rig in RIGS:
            for misfit in MISFITS:
                path = work / "results" / name / f"{rig}-misfit{misfit:g}.json"
                if path.exists():
                    for person, metrics in per_person(path).items():
                        people[(rig, misfit, person)] = metrics
        table[name] = people
    names = [model_name(m) for m in models]
    summary: Dict[str, Dict] = {}
    lines = ["| model | misfit (rad) | " + " | ".join(RIGS) + " | all rigs: PSNR | SSIM | drop vs exact |",
             "|---|---|" + "---|" * (len(RIGS) + 3)]
    for name in names:
        people = table[name]
        summary[name] = {}
        exact = None
        for misfit in MISFITS:
            cells = []
            for rig in RIGS:
                values = [m["psnr"] for (r, f, _), m in people.items() if r == rig and f == misfit]
                mean, half = interval(values) if values else (math.nan, math.nan)
                summary[name][f"{rig}/misfit{misfit:g}/psnr"] = [mean, half, len(values)]
                cells.append(f"{mean:.2f} ± {half:.2f}")
            keys = sorted((r, p) for (r, f, p) in people if f == misfit)
            psnr = [people[(r, misfit, p)]["psnr"] for r, p in keys]
            ssim = [people[(r, misfit, p)]["ssim"] for r, p in keys]
            mean, half = interval(psnr) if psnr else (math.nan, math.nan)
            smean, shalf = interval(ssim) if ssim else (math.nan, math.nan)
            drop = ""
            if misfit == MISFITS[0]:
                exact = {k: people[(k[0], misfit, k[1])]["psnr"] for k in keys}
            elif exact:
                diffs = [exact[k] - people[(k[0], misfit, k[1])]["psnr"] for k in keys if k in exact]
                dmean, dhalf = interval(diffs)
                drop = f"{dmean:.2f} ± {dhalf:.2f}"
                summary[name][f"all/misfit{misfit:g}/drop_vs_exact"] = [dmean, dhalf, len(diffs)]
            summary[name][f"all/misfit{misfit:g}/psnr"] = [mean, half, len(psnr)]
            summary[name][f"all/misfit{misfit:g}/ssim"] = [smean, shalf, len(ssim)]
            lines.append(f"| {name} | {misfit:g} | " + " | ".join(cells) + f" | **{mean:.2f} ± {half:.2f}** | "
                         f"{smean:.3f} ± {shalf:.3f} | {drop} |")
    if len(names) > 1:
        lines += ["", f"Paired PSNR difference to {names[0]} (same people), mean ± 95% CI:", "",
                  "| model | " + " | ".join(f"misfit {m:g}" for m in MISFITS) + " |", "|---|" + "---|" * len(MISFITS)]
        psnr = {name: {k: m["psnr"] for k, m in people.items()} for name, people in table.items()}
        for name in names[1:]:
            cells = []
            for misfit in MISFITS:
                mean, half, count = paired_difference(psnr[name], psnr[names[0]], misfit)
                summary[name][f"all/misfit{misfit:g}/diff_to_{names[0]}"] = [mean, half, count]
                cells.append(f"{mean:+.2f} ± {half:.2f}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    groups: Dict[str, List[str]] = {}
    for name in names:
        groups.setdefault(seed_group(name), []).append(name)
    if any(len(members) > 1 for members in groups.values()) and len(groups) > 1:
        lines += pooled_over_seeds(table, groups, summary)
    conditions = {name: {c: per_person(path) for c in CONDITIONS
                         if (path := work / "results" / name / f"cond-{c}.json").exists()} for name in names}
    if any(conditions.values()):
        lines += condition_table(conditions, summary)
    out.mkdir(parents=True, exist_ok=True)
    per_person_json = {name: [{"rig": r, "misfit": f, "person": p, **m} for (r, f, p), m in sorted(people.items())]
                       + [{"condition": c, "person": p, **m} for c, people_c in conditions[name].items()
                          for p, m in sorted(people_c.items())]
                       for name, people in table.items()}
    (out / "results.json").write_text(json.dumps({"summary": summary, "per_person": per_person_json}, indent=1))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def condition_table(conditions: Dict[str, Dict[str, Dict[str, Dict[str, float]]]], summary: Dict[str, Dict]
                    ) -> List[str]:
    """PSNR and SSIM per condition and model, mean ± 95% CI over people (``conditions[model][condition][person]``)."""
    lines = ["", f"Conditions ({PEOPLE_PER_RIG} new people each, a {CONDITION_CAMERAS}-camera ring, 4 evenly spaced "
             "sources, every other camera a target): PSNR / SSIM, mean ± 95% CI over people", "",
             "| model | " + " | ".join(CONDITIONS) + " |", "|---|" + "---|" * len(CONDITIONS)]
    for name, by_condition in conditions.items():
        cells = []
        for condition in CONDITIONS:
            people = by_condition.get(condition)
            if not people:
                cells.append("")
                continue
            for metric in ("psnr", "ssim"):
                values = [m[metric] for m in people.values()]
                summary.setdefault(name, {})[f"cond/{condition}/{metric}"] = [*interval(values), len(values)]
            (psnr, half, _), (ssim, shalf, _) = (summary[name][f"cond/{condition}/{m}"] for m in ("psnr", "ssim"))
            cells.append(f"{psnr:.2f} ± {half:.2f} / {ssim:.3f} ± {shalf:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def seed_of(name: str) -> Optional[str]:
    """The training seed in a run name: ``...-full-seed1`` -> ``1`` (None without one)."""
    match = re.search(r"-seed(\d+)$", name)
    return match.group(1) if match else None


def pooled_over_seeds(table: Dict[str, Dict], groups: Dict[str, List[str]], summary: Dict[str, Dict]) -> List[str]:
    """Each model's PSNR per person averaged over its training seeds, and the paired difference of every model to the
    first (same people, and the training seeds both have, so that the same seed's sample order is on both sides): the
    seed-to-seed spread is inside each person's mean, the 95% CI is over people."""
    def seed_mean(members: List[str]) -> Dict[Tuple, float]:
        shared = set.intersection(*(set(table[m]) for m in members))
        return {k: float(np.mean([table[m][k]["psnr"] for m in members])) for k in shared}

    reference = next(iter(groups))
    lines = ["", f"Pooled over training seeds (per person: the mean over seeds), mean ± 95% CI over people; "
             f"difference to {reference} over the seeds both have:", "",
             "| model | seeds | " + " | ".join(f"misfit {m:g}: PSNR" for m in MISFITS) + " | seeds paired | "
             + " | ".join(f"misfit {m:g}: difference" for m in MISFITS) + " |",
             "|---|---|" + "---|" * (2 * len(MISFITS) + 1)]
    for group, members in groups.items():
        means = seed_mean(members)
        common = sorted({seed_of(m) for m in members} & {seed_of(m) for m in groups[reference]} - {None}, key=int)
        pick = lambda names: [m for m in names if seed_of(m) in common] if common else names  # noqa: E731
        mine, theirs = seed_mean(pick(members)), seed_mean(pick(groups[reference]))
        cells, diffs_cells = [], []
        for misfit in MISFITS:
            keys = sorted(k for k in means if k[1] == misfit)
            mean, half = interval([means[k] for k in keys]) if keys else (math.nan, math.nan)
            cells.append(f"{mean:.2f} ± {half:.2f}")
            summary.setdefault(f"pooled:{group}", {})[f"all/misfit{misfit:g}/psnr"] = [mean, half, len(keys)]
            if group == reference:
                diffs_cells.append("")
                continue
            dmean, dhalf, count = paired_difference(mine, theirs, misfit)
            summary[f"pooled:{group}"][f"all/misfit{misfit:g}/diff_to_{reference}"] = [dmean, dhalf, count]
            diffs_cells.append(f"{dmean:+.2f} ± {dhalf:.2f}")
        paired = "" if group == reference else (",".join(common) if common else "all")
        lines.append(f"| {group} | {len(members)} | " + " | ".join(cells) + f" | {paired} | "
                     + " | ".join(diffs_cells) + " |")
    return lines


def main(suite: Suite) -> None:
    if suite.action in ("generate", "all"):
        generate(suite.work, suite.workers, suite.parts)
    if suite.action in ("evaluate", "all"):
        evaluate(suite.work, suite.models, suite.parts)
    if suite.action in ("report", "all"):
        report(suite.work, suite.models, suite.out)


if __name__ == "__main__":
    main(tyro.cli(Suite, description=__doc__.split("\n\n")[0]))
