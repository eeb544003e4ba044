"""Helpers of the GPU kit's scripts (``prepare.sh`` here, ``run.sh`` on the accelerator machine).

    python kit.py tree-hash ROOT                      # fingerprint of the package sources a wheel is built from
    python kit.py download WHEELS --python-version 3.12 [--extra NAME ...]   # the dependency wheels (prepare.sh)
    python kit.py check-wheels WHEELS --python-version 3.12                # each wheel installs on that python?
    python kit.py summary WORK OUT                    # summary.json and summary.txt of a run.sh run

Only the standard library is needed, except ``packaging`` for ``check-wheels`` and ``download``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import ns_train_timing  # noqa: E402

PACKAGES = (
    # nerfstudio and what its import path needs beyond the accelerator image (torch, numpy, scipy, matplotlib, opencv,
    # tensorboard, yaml and the like come from the image)
    "nerfstudio", "tyro", "typeguard", "shtab", "viser", "gsplat", "nerfacc", "mediapy", "ipython", "traitlets",
    "splines", "pyquaternion", "pytorch-msssim", "pathos", "ppft", "dill", "multiprocess", "trimesh", "rtree",
    "shapely", "rawpy", "tensorly", "msgspec", "websockets", "appdirs", "defusedxml", "docstring-parser", "svg.path",
    "PySocks",
    # gmnerf-ns's own small dependencies (pyproject.toml), and theirs
    "smplx", "lpips", "jaxtyping", "wadler-lindig", "rich", "markdown-it-py", "mdurl", "pygments", "typing-extensions",
)
"""Wheels downloaded for the accelerator's python, at the versions of the environment running ``download``."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "any")
SOURCES = ("gmnerf_ns",)
"""Folders the package is built from."""


# ---------------------------------------------------------------------------------------------- prepare
def tree_hash(root: Path) -> str:
    """SHA-256 of pyproject.toml and the package sources (paths and contents; caches left out)."""
    root = Path(root)
    digest = hashlib.sha256()
    files = [root / "pyproject.toml"]
    for folder in SOURCES:
        files += [p for p in (root / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and p.suffix != ".pyc"]
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def wheel_names(folder: Path) -> Dict[str, str]:
    """{canonical distribution name: version} of the wheels in ``folder``."""
    from packaging.utils import canonicalize_name, parse_wheel_filename

    out = {}
    for wheel in Path(folder).glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        out[canonicalize_name(name)] = str(version)
    return out


def download(folder: Path, python_version: str, extra: Sequence[str] = ()) -> List[str]:
    """Downloads each package's wheel for ``python_version`` (CPython, x86-64 Linux) into ``folder``, pinned to the
    version installed here when that has such a wheel; skips wheels already there. Returns notes (unpinned
    fallbacks); raises when a package has no such wheel at all."""
    from packaging.utils import canonicalize_name

    folder.mkdir(parents=True, exist_ok=True)
    notes = []
    for name in (*PACKAGES, *extra):
        try:
            version: Optional[str] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = None
        have = wheel_names(folder).get(canonicalize_name(name))
        if have is not None and (version is None or have == version):
            continue
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                   "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
                   "--dest", str(folder)]
        for platform in PLATFORMS:
            command += ["--platform", platform]
        tries = [f"{name}=={version}", name] if version else [name]
        for i, requirement in enumerate(tries):
            result = subprocess.run([*command, requirement], check=False, capture_output=True, text=True)
            if result.returncode == 0:
                if i > 0:
                    notes.append(f"{name}: no cp{python_version.replace('.', '')} wheel of {version}; took the newest")
                elif version is None:
                    notes.append(f"{name}: not installed here; took the newest")
                break
        else:
            raise SystemExit(f"kit download: no wheel of {name} for CPython {python_version} on x86-64 Linux:\n"
                             + result.stderr.strip()[-1500:])
    return notes


def check_wheels(folder: Path, python_version: str) -> List[str]:
    """Wheels in ``folder`` that CPython ``python_version`` on x86-64 Linux would refuse."""
    from packaging import tags
    from packaging.utils import parse_wheel_filename

    version = tuple(int(part) for part in python_version.split("."))
    platforms = [p for p in PLATFORMS if p != "any"]
    supported = set(tags.cpython_tags(version, platforms=platforms))
    supported |= set(tags.compatible_tags(version, f"cp{version[0]}{version[1]}", platforms=platforms))
    return sorted(w.name for w in Path(folder).glob("*.whl") if not (parse_wheel_filename(w.name)[3] & supported))


# ---------------------------------------------------------------------------------------------- summary
TARGETS = (
    # (label, run, key, limit, "max" or "min")
    ("gm-nerf ms/step in ns-train <= 35", "full", "ms_per_step", 35.0, "max"),
    ("gm-nerf GPU busy >= 85%", "full", "gpu_busy", 85.0, "min"),
    ("gm-nerf-small ms/sample <= 10", "small", "ms_per_sample", 10.0, "max"),
    ("gm-nerf-small ms/sample <= 10 (4 subjects per step)", "small-p4", "ms_per_sample", 10.0, "max"),
)


def read_runs(work: Path) -> List[Dict[str, str]]:
    """run.sh's ``runs.tsv``: one line per ns-train run (name, method, run_dir, smi, window, subjects_per_step, rc,
    seconds, limit)."""
    path = work / "runs.tsv"
    if not path.exists():
        return []
    keys = ("name", "method", "run_dir", "smi", "window", "subjects_per_step", "rc", "seconds", "limit", "options")
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(dict(zip(keys, line.split("\t"))))
    return rows


def _tail(path: Path, lines: int = 15) -> List[str]:
    if not path.exists():
        return []
    return [line[-300:] for line in path.read_text(errors="replace").splitlines()[-lines:]]


def summarize(work: Path, elapsed: Optional[int] = None) -> Dict[str, object]:
    """Everything run.sh measured, from its work folder (``elapsed``: run.sh's seconds so far)."""
    work = Path(work)
    summary: Dict[str, object] = {"environment": {}, "runs": {}, "profile_step": {}, "targets": {}, "problems": []}
    problems: List[object] = summary["problems"]  # type: ignore[assignment]
    env = work / "env.json"
    if env.exists():
        summary["environment"] = json.loads(env.read_text())
    summary["environment"]["elapsed_s"] = elapsed  # type: ignore[index]
    notes = work / "notes.txt"
    if notes.exists():
        problems += notes.read_text().splitlines()
    for row in read_runs(work):
        name = row["name"]
        entry: Dict[str, object] = {key: row.get(key) for key in ("method", "rc", "seconds", "limit", "options")}
        rc = row.get("rc", "")
        if rc == "124":
            entry["stopped"] = "timeout (analysed up to its last logged step)"
        elif rc not in ("0", ""):
            problems.append({"run": name, "rc": rc, "log_tail": _tail(work / "logs" / f"{name}.log")})
        smi = Path(row["smi"]) if row.get("smi") and Path(row["smi"]).exists() else None
        try:
            entry |= ns_train_timing.analyse_run(Path(row["run_dir"]), ns_train_timing.parse_window(row["window"]),
                                                 int(row["subjects_per_step"]), smi=smi)
        except (OSError, KeyError, ValueError) as err:
            entry["error"] = str(err.args[0] if isinstance(err, KeyError) else err)
            if rc in ("0", "124"):
                problems.append({"run": name, "error": entry["error"], "log_tail": _tail(work / "logs" / f"{name}.log")})
        entry["line"] = ns_train_timing.format_result(name, entry) if "ms_per_step" in entry else entry.get("error")
        summary["runs"][name] = entry  # type: ignore[index]
    for path in sorted((work / "logs").glob("profile-*.json")):
        result = json.loads(path.read_text())
        keep = ("method", "device", "threads", "steps", "ms_per_step", "ms_per_sample", "aten_ops_per_step",
                "sync_ops_per_step", "gpu", "end_to_end_ms_per_step", "gpu_kernel_ms_per_step", "gpu_busy_fraction",
                "peak_allocated_gib")
        summary["profile_step"][path.stem.removeprefix("profile-")] = {k: result[k] for k in keep if k in result}
    for name in sorted({p.stem.removeprefix("profile-") for p in (work / "logs").glob("profile-*.log")}):
        if name not in summary["profile_step"]:  # type: ignore[operator]
            problems.append({"profile_step": name, "log_tail": _tail(work / "logs" / f"profile-{name}.log")})
    runs: Dict[str, Dict[str, object]] = summary["runs"]  # type: ignore[assignment]
    for label, run, key, limit, kind in TARGETS:
        value = None
        if run in runs:
            gpu = runs[run].get("gpu")
            value = (gpu or {}).get("busy_mean_percent") if key == "gpu_busy" else runs[run].get(key)
        if value is None:
            summary["targets"][label] = {"value": None, "status": "not measured"}  # type: ignore[index]
        else:
            met = value <= limit if kind == "max" else value >= limit
            summary["targets"][label] = {"value": round(float(value), 2), "status": "PASS" if met else "FAIL"}  # type: ignore[index]
    return summary


def summary_text(summary: Dict[str, object]) -> str:
    """The summary as a few readable lines."""
    env = summary.get("environment") or {}
    lines = [f"GPU kit: {env.get('device_name', '?')}, torch {env.get('torch', '?')}, python {env.get('python', '?')}, "
             f"{env.get('cpus', '?')} CPUs, device {env.get('device', '?')}, tree {str(env.get('tree_hash', '?'))[:12]}"
             f" (wheel built from {str(env.get('wheel_tree_hash', '?'))[:12]}), {env.get('elapsed_s', '?')} s"]
    lines.append("ns-train runs:")
    for name, run in (summary.get("runs") or {}).items():  # type: ignore[union-attr]
        lines.append(f"  {run.get('line')}  [rc {run.get('rc')}, {run.get('seconds')} s of {run.get('limit')}]")
    lines.append("profile_step.py:")
    for name, result in (summary.get("profile_step") or {}).items():  # type: ignore[union-attr]
        ms = result.get("ms_per_step", {})
        text = f"  {name}: {ms.get('total', float('nan')):.1f} ms/step synchronized"
        if result.get("end_to_end_ms_per_step") is not None:
            text += (f", {result['end_to_end_ms_per_step']:.1f} back to back, kernels "
                     f"{result['gpu_kernel_ms_per_step']:.1f} ms ({100 * result['gpu_busy_fraction']:.0f}% busy)")
        text += f", {result.get('sync_ops_per_step', float('nan')):.1f} syncs/step"
        lines.append(text)
    lines.append("targets:")
    for label, target in (summary.get("targets") or {}).items():  # type: ignore[union-attr]
        lines.append(f"  {label}: {target['status']} ({target['value']})")
    problems = summary.get("problems") or []
    if problems:
        lines.append(f"problems ({len(problems)}): see summary.json")
    return "\n".join(lines) + "\n"


def write_summary(work: Path, out: Path, elapsed: Optional[int] = None) -> Dict[str, object]:
    summary = summarize(work, elapsed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "summary.txt").write_text(summary_text(summary))
    return summary


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tree-hash").add_argument("root", type=Path)
    for name in ("download", "check-wheels"):
        each = sub.add_parser(name)
        each.add_argument("wheels", type=Path)
        each.add_argument("--python-version", default="3.12")
        if name == "download":
            each.add_argument("--extra", nargs="*", default=[], help="more packages to download")
    each = sub.add_parser("summary")
    each.add_argument("work", type=Path)
    each.add_argument("out", type=Path)
    each.add_argument("--elapsed", type=int, help="run.sh's seconds so far")
    args = parser.parse_args(argv)
    if args.command == "tree-hash":
        print(tree_hash(args.root))
    elif args.command == "download":
        for note in download(args.wheels, args.python_version, args.extra):
            print(f"kit download: {note}")
    elif args.command == "check-wheels":
        refused = check_wheels(args.wheels, args.python_version)
        if refused:
            raise SystemExit(f"kit check-wheels: CPython {args.python_version} would refuse: {', '.join(refused)}")
        print(f"kit check-wheels: every wheel in {args.wheels} installs on CPython {args.python_version}")
    else:
        print(summary_text(write_summary(args.work, args.out, args.elapsed)), end="")


if __name__ == "__main__":
    main()
