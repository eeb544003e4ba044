"""results.json -> results.md (tables and PASS/FAIL targets only; what they mean: benchmarks/quality/README.md)
and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from bench.settings import FULL_RES, NERFACTO, REFERENCE, TARGETS, slug

NA = "n/a"
Doc = Dict[str, Any]


def _num(value: Any, fmt: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NA
    return fmt.format(value)


def _x(ratio: Optional[float]) -> str:
    return NA if ratio is None else f"{ratio:.2f}x"


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """a / b, or None when either is missing or b is too small for a meaningful ratio."""
    return None if a is None or b is None or b < 1e-9 else a / b


def _ok(entry: Optional[Dict[str, Any]]) -> bool:
    return entry is not None and "error" not in entry


def _quality(entry: Dict[str, Any], key: str) -> Optional[float]:
    return (entry.get("quality") or {}).get(key)


def _render(doc: Doc, system: str, variant: str, resolution: int) -> Optional[Dict[str, Any]]:
    return next((e for e in doc.get("render", []) if (e.get("system"), e.get("variant"), e.get("resolution"))
                 == (system, variant, resolution)), None)


def _memory(doc: Doc, patch: int, fraction: float) -> Optional[Dict[str, Any]]:
    return next((e for e in doc.get("train_memory", []) if e.get("patch_size") == patch
                 and abs(float(e.get("grad_ray_fraction", -1)) - fraction) < 1e-9), None)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows), ""]


# ----------------------------------------------------------------------------------------------------------------------
# targets: each metric returns (value compared to the threshold or None, the measured numbers as text)
# ----------------------------------------------------------------------------------------------------------------------


def psnr_gain(doc: Doc, other: str) -> Tuple[Optional[float], str]:
    """Mean held-out PSNR of the reference minus ``other``'s, over the images both were evaluated on."""
    systems = doc["systems"]
    if not (_ok(systems.get(REFERENCE)) and _ok(systems.get(other))):
        return None, "not run or failed"
    rows = [{r["index"]: r["psnr"] for r in _quality(systems[name], "per_image") or []} for name in (REFERENCE, other)]
    common = sorted(set(rows[0]) & set(rows[1]))
    if not common:
        return None, "no common held-out image"
    a, b = (float(np.mean([r[i] for i in common])) for r in rows)
    return a - b, f"{a:.2f} vs {b:.2f} dB ({a - b:+.2f} dB, {len(common)} image(s))"


def render_speedup(doc: Doc) -> Tuple[Optional[float], str]:
    """Warm render time of the same weights volume-rendered at full resolution / with the 2D renderer."""
    res = doc["settings"]["render_resolution"]
    fast, slow = _render(doc, REFERENCE, "trained", res), _render(doc, REFERENCE, "volume-full-res", res)
    if not (_ok(fast) and _ok(slow)):
        return None, "render measurement missing or failed"
    ratio = _ratio(slow["warm_seconds"], fast["warm_seconds"])
    return ratio, (f"{res}x{res}: {ratio:.2f}x warm ({slow['warm_seconds']:.2f} vs {fast['warm_seconds']:.2f} s); "
                   f"{_x(_ratio(slow.get('cold_seconds'), fast.get('cold_seconds')))} cold; "
                   f"{_x(_ratio(slow.get('warm_cpu_seconds'), fast.get('warm_cpu_seconds')))} warm CPU time")


def memory_reduction(doc: Doc) -> Tuple[Optional[float], str]:
    """Peak training memory full / partial gradient at the shipped patch size (CUDA peak when measured, else the
    peak RSS over the ready process)."""
    patch = doc["settings"]["patch_size"]
    part, full = _memory(doc, patch, doc["settings"]["gm_nerf_small_grad_ray_fraction"]), _memory(doc, patch, 1.0)
    if not (_ok(part) and _ok(full)):
        return None, "memory measurement missing or failed"
    key = "device_peak_mb" if part.get("device_peak_mb") and full.get("device_peak_mb") else "peak_increment_mb"
    ratio = _ratio(full[key], part[key])
    return ratio, (f"patch {patch}: {_x(ratio)} peak ({key}: {full[key]:.0f} vs {part[key]:.0f} MB); "
                   f"{_x(_ratio(full.get('saved_mb'), part.get('saved_mb')))} activations; "
                   f"{_x(_ratio(full['peak_rss_mb'], part['peak_rss_mb']))} whole process")


METRICS: Dict[str, Callable[..., Tuple[Optional[float], str]]] = {
    "psnr_gain": psnr_gain, "render_speedup": render_speedup, "memory_reduction": memory_reduction}


def evaluate_targets(doc: Doc) -> List[Dict[str, Any]]:
    """PASS / FAIL / n/a per :data:`bench.settings.TARGETS`, with the measured numbers."""
    caveats = [c for c, on in (("quick mode", doc["mode"] == "quick"), ("under load", doc["load"]["under_load"])) if on]
    out = []
    for target in TARGETS:
        name, _, argument = target.metric.partition(":")
        value, measured = METRICS[name](doc, *([argument] if argument else []))
        passed = value is not None and (value >= target.threshold if target.op == ">=" else value > target.threshold)
        out.append({"target": target.name, "threshold": f"{target.op} {target.threshold:g}", "measured": measured,
                    "verdict": NA if value is None else "PASS" if passed else "FAIL", "caveats": caveats})
    return out


# ----------------------------------------------------------------------------------------------------------------------
# markdown
# ----------------------------------------------------------------------------------------------------------------------


def _header(doc: Doc) -> List[str]:
    load = doc["load"]
    lines = [f"# Benchmark `{doc['run_name']}` ({doc['mode']} mode)", "",
             "What each number means and how it is measured: `benchmarks/quality/README.md`.", ""]
    if doc["mode"] == "quick":
        lines += ["> **QUICK MODE**: a smoke test of the plumbing; the numbers say nothing about the methods.", ""]
    if load["under_load"]:
        lines += [f"> **MEASURED UNDER LOAD**: max 1-minute load {load['max_load1']:.1f} on "
                  f"{doc['machine']['usable_cores']} usable cores.", ""]
    lines += [f"Command: `{doc['command']}`  ",
              f"Started {doc['started']}, finished {doc['finished']} ({doc['wall_seconds']:.0f} s)."]
    if doc.get("reused"):
        lines += ["", f"Resumed run: reused measurements: {', '.join(doc['reused'])}."]
    return lines + [""]


def _machine(doc: Doc) -> List[str]:
    m, load = doc["machine"], doc["load"]
    s, e = load["start"], load["end"]
    return ["## Machine", "", *_table(
        ["CPU", "cores (usable)", "torch threads", "RAM", "Python", "torch", "nerfstudio", "load 1/5/15 min at start",
         "at end", "max sampled", "under load"],
        [[m["cpu_model"], f"{m['logical_cores']} ({m['usable_cores']})", m["torch_threads"], f"{m['memory_gb']} GB",
          m["python"], m["torch"], m["nerfstudio"], f"{s['load1']:.2f} / {s['load5']:.2f} / {s['load15']:.2f}",
          f"{e['load1']:.2f} / {e['load5']:.2f} / {e['load15']:.2f}", f"{load['max_load1']:.2f}",
          "yes" if load["under_load"] else "no"]])]


def _protocol(doc: Doc) -> List[str]:
    settings, split = doc["settings"], doc["split"]
    gen = ((doc.get("data") or {}).get("manifest") or {}).get("settings") or {}
    lpips = next((_quality(e, "lpips_status") for e in doc["systems"].values() if _quality(e, "lpips_status")), {})
    rows = [
        ["data", f"`{settings['data']}`: " + ", ".join(f"{k} {gen.get(k, '?')}" for k in
                                                      ("num_subjects", "num_cameras", "num_frames", "resolution", "seed"))],
        ["training subjects", ", ".join(split["train_subjects"])],
        ["held-out subjects", ", ".join(split["test_subjects"])],
        ["protocol", f"`{split['protocol']['name']}`, m = {split['protocol']['num_input_views']} input views, "
                     f"{split['protocol']['resolution']} px"],
        ["evaluated", "; ".join(f"{f['subject']} frame {f['frame_id']} (inputs {', '.join(f['input_cameras'])})"
                                for f in split["eval_frames"])
         + f": {len(split['eval_indices'])} of {split['num_eval_views_total']} held-out views"],
        ["training budget per system", f"{settings['budget_seconds']:g} s"],
        ["geometry", f"{settings['geometry_resolution']} cells, iso-level {settings['geometry_threshold']:g}"],
        ["LPIPS", "available" if lpips.get("available") else f"n/a: {lpips.get('reason')}"],
    ]
    return ["## Protocol", "", *_table(["item", "value"], rows)]


def _quality_section(doc: Doc) -> List[str]:
    rows = []
    for name, e in doc["systems"].items():
        if "error" in e:
            rows.append([name, f"error: {e['error'].splitlines()[0][:160]}", *[""] * 11])
            continue
        geo = e.get("geometry") or {}
        rows.append([name, _num(e.get("steps"), "{:.0f}"), _num(e.get("steps_per_second")),
                     _num(e.get("rays_per_second"), "{:.0f}"), _num(e.get("pixels_per_second"), "{:.0f}"),
                     _num(e.get("cpu_utilisation")), _num(_quality(e, "psnr")), _num(_quality(e, "ssim"), "{:.4f}"),
                     _num(_quality(e, "lpips"), "{:.4f}"), _num(geo.get("chamfer_cm")), _num(geo.get("p2s_cm")),
                     f"{_num(e.get('peak_rss_mb'), '{:.0f}')} (+{_num(e.get('peak_increment_mb'), '{:.0f}')})",
                     _num(e.get("num_parameters"), "{:,.0f}")])
    return ["## Quality and training cost", "", *_table(
        ["system", "steps", "steps/s", "vol. rays/s", "pixels/s", "CPU util.", "PSNR", "SSIM", "LPIPS", "Chamfer cm",
         "P2S cm", "peak train RSS MB (+ over ready)", "params"], rows)]


def _speed_section(doc: Doc) -> List[str]:
    rows = []
    for e in doc.get("render", []):
        head = [e["system"], e["variant"], e["resolution"]]
        if "error" in e:
            rows.append([*head, f"error: {e['error'].splitlines()[0][:120]}", *[""] * 9])
            continue
        br = e.get("warm_breakdown") or {}
        rows.append([*head, f"{e['warm_seconds']:.3f}", _num(e.get("warm_cpu_seconds"), "{:.3f}"),
                     _num(e.get("cold_seconds"), "{:.3f}"), f"{e['encode_seconds']:.3f}",
                     *(_num(br.get(k), "{:.3f}") for k in ("rays_seconds", "renderer_seconds", "other_seconds")),
                     f"{e['volume_rays']:,}", f"{e['peak_rss_mb']:.0f} (+{e['peak_increment_mb']:.0f})",
                     _num(e.get("cpu_utilisation"))])
    lines = ["## Speed: render time per view", "", *_table(
        ["system", "variant", "resolution", "warm s", "warm CPU s", "cold s", "encode s", "warm: rays s", "warm: 2D s",
         "warm: other s", "volume rays", "peak RSS MB (+ over ready)", "CPU util."], rows)]
    ratios = []
    for res in doc["settings"]["render_resolutions"]:
        fast, slow = _render(doc, REFERENCE, "trained", res), _render(doc, REFERENCE, "volume-full-res", res)
        if _ok(fast) and _ok(slow):
            ratios.append([res, *(_x(_ratio(slow.get(k), fast.get(k))) for k in
                                  ("warm_seconds", "warm_cpu_seconds", "cold_seconds", "peak_increment_mb"))])
    if ratios:
        lines += _table(["resolution", "full-res volume / 2D renderer: warm", "warm CPU", "cold",
                         "peak RSS increment"], ratios)
    return lines


def _memory_section(doc: Doc) -> List[str]:
    rows = []
    for e in doc.get("train_memory", []):
        head = [e["patch_size"], f"{e['grad_ray_fraction']:g}"]
        if "error" in e:
            rows.append([*head, f"error: {e['error'].splitlines()[0][:120]}", *[""] * 11])
            continue
        phases = e.get("saved_mb_by_phase") or {}
        rows.append([*head, _num(e.get("grad_rays_per_step"), "{:,.0f}"), _num(e.get("saved_mb"), "{:.1f}"),
                     *(_num(phases.get(k), "{:.1f}") for k in ("encode", "rays", "renderer", "losses", "other")),
                     f"{e['peak_rss_mb']:.0f}", f"{e['peak_increment_mb']:.0f}", _num(e.get("device_peak_mb"), "{:.0f}"),
                     f"{e['seconds_per_step']:.3f}", e.get("perceptual_loss") or NA])
    lines = ["## Training memory per patch size, partial vs full gradient", "", *_table(
        ["patch", "gradient fraction", "grad rays", "saved MB", "encode", "rays", "2D", "losses", "other",
         "peak RSS MB", "+ over ready MB", "CUDA peak MB", "s/step", "perceptual loss"], rows)]
    fraction = doc["settings"]["gm_nerf_small_grad_ray_fraction"]
    ratios = []
    for patch in doc["settings"]["memory_patch_sizes"]:
        part, full = _memory(doc, patch, fraction), _memory(doc, patch, 1.0)
        if _ok(part) and _ok(full):
            by_part, by_full = part.get("saved_mb_by_phase") or {}, full.get("saved_mb_by_phase") or {}
            rest = sum(v for k, v in by_part.items() if k != "rays")  # what partial gradient cannot shrink
            ratios.append([patch, _x(_ratio(full.get("saved_mb"), part.get("saved_mb"))),
                           _x(_ratio(by_full.get("rays"), by_part.get("rays"))),
                           _x(_ratio(sum(by_full.values()), rest) if by_full else None),
                           *(_x(_ratio(full.get(k), part.get(k))) for k in
                             ("peak_increment_mb", "peak_rss_mb", "device_peak_mb", "seconds_per_step"))])
    if ratios:
        lines += _table(["patch", "full / partial: activations", "rays part", "bound (rays part -> 0)",
                         "peak RSS increment", "whole process", "CUDA peak", "s/step"], ratios)
    return lines


def markdown(doc: Doc) -> str:
    targets = _table(["target", "threshold", "measured", "verdict", "caveats"],
                     [[t["target"], t["threshold"], t["measured"], f"**{t['verdict']}**", ", ".join(t["caveats"])]
                      for t in doc["targets"]])
    sections = [_header(doc), _machine(doc), _protocol(doc), _quality_section(doc), _speed_section(doc),
                _memory_section(doc), ["## Targets", "", *targets]]
    return "\n".join(line for section in sections for line in section)


# ----------------------------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------------------------


def _plot_quality(doc: Doc, plt, tag: str):
    names = [n for n, e in doc["systems"].items() if _quality(e, "psnr") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key, label in ((axes[0], "psnr", "PSNR (dB, masked bbox)"), (axes[1], "ssim", "SSIM (bbox crop)")):
        values = [_quality(doc["systems"][n], key) or 0.0 for n in names]
        ax.barh(names, values, color=["tab:green" if n == REFERENCE else "tab:orange" if n == NERFACTO else "tab:blue"
                                      for n in names])
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
        ax.set_xlabel(label)
        ax.invert_yaxis()
    axes[0].set_title(f"held-out quality, {doc['settings']['budget_seconds']:g} s budget each{tag}", fontsize=9)
    return fig


def _plot_render_time(doc: Doc, plt, tag: str):
    fig, ax = plt.subplots(figsize=(6, 4))
    for system, variant, style in ((REFERENCE, "trained", "o-"), (REFERENCE, "volume-full-res", "s--"),
                                   (FULL_RES, "trained", "x")):
        rows = sorted((e for e in doc.get("render", []) if (e.get("system"), e.get("variant")) == (system, variant)
                       and _ok(e)), key=lambda e: e["resolution"])
        if rows:
            ax.plot([e["resolution"] for e in rows], [e["warm_seconds"] for e in rows], style,
                    label=f"{system}, {variant}, warm")
    ax.set(xscale="log", yscale="log", xlabel="output resolution (px, square)", ylabel="seconds per view")
    ax.set_title(f"render time{tag}", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def _plot_memory(doc: Doc, plt, tag: str):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    fraction = doc["settings"]["gm_nerf_small_grad_ray_fraction"]
    keys = ("saved_mb", "peak_increment_mb", "seconds_per_step")
    for frac, style in ((fraction, "o-"), (1.0, "s--")):
        rows = sorted((e for e in doc.get("train_memory", []) if _ok(e) and abs(e["grad_ray_fraction"] - frac) < 1e-9),
                      key=lambda e: e["patch_size"])
        for ax, key in zip(axes, keys):
            if rows and all(e.get(key) is not None for e in rows):
                ax.plot([e["patch_size"] for e in rows], [e[key] for e in rows], style, label=f"gradient on {frac:g}")
    for ax, label in zip(axes, ("saved for backward per step (MB)", "peak RSS over the ready process (MB)",
                                "seconds per training step")):
        ax.set(xlabel="training patch size (px)", ylabel=label)
        ax.legend(fontsize=7)
    axes[0].set_title(f"training memory{tag}", fontsize=9)
    return fig


def _plot_loss_curves(doc: Doc, plt, tag: str):
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, entry in doc["systems"].items():
        curve = entry.get("loss_curve") or []
        if curve:
            ax.plot(*zip(*curve), label=f"{name} ({entry.get('steps', 0):.0f} steps)")
    ax.set(xlabel="training wall-clock seconds", ylabel="total training loss", yscale="log")
    ax.set_title(f"training loss within the budget{tag}", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _plot_qualitative(doc: Doc, plt, tag: str):
    """Ground truth and every system's render of the first evaluated held-out view (the strips the tasks saved)."""
    import imageio.v2 as imageio

    index, work = doc["split"]["eval_indices"][0], Path(doc["work_dir"])
    panels = []
    for name, entry in doc["systems"].items():
        folders = sorted(work.glob("nerfacto-*")) if name == NERFACTO else [work / slug(name)]
        path = next((p for p in (f / "renders" / f"eval_img_{index:04d}.png" for f in folders) if p.exists()), None)
        if path is not None:
            strip = imageio.imread(path)
            width = strip.shape[1] // 3
            panels = panels or [("ground truth", strip[:, :width])]
            psnr = next((r["psnr"] for r in _quality(entry, "per_image") or [] if r["index"] == index), None)
            panels.append((f"{name}\n{_num(psnr)} dB", strip[:, width:2 * width]))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.8))
    for ax, (title, image) in zip(np.atleast_1d(axes), panels):
        ax.imshow(image)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    return fig


PLOTS = {"quality.png": _plot_quality, "render_time.png": _plot_render_time, "train_memory.png": _plot_memory,
         "loss_curves.png": _plot_loss_curves, "qualitative.png": _plot_qualitative}


def plots(doc: Doc, run_dir: Path) -> List[str]:
    """Writes :data:`PLOTS` into ``run_dir``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tag = f" ({doc['mode']} mode{', under load' if doc['load']['under_load'] else ''})"
    written = []
    for name, plot in PLOTS.items():
        fig = plot(doc, plt, tag)
        if fig is not None:
            fig.tight_layout()
            fig.savefig(run_dir / name, dpi=100)
            plt.close(fig)
            written.append(name)
    return written


def write_report(doc: Doc, run_dir: Path) -> None:
    """Fills ``doc['targets']`` and writes results.json, results.md and the plots into ``run_dir``."""
    doc["targets"] = evaluate_targets(doc)
    try:
        doc["plots"] = plots(doc, run_dir)
    except Exception as err:  # a plotting problem must not lose the measurements
        doc["plots"], doc["plot_error"] = [], f"{type(err).__name__}: {err}"
    (run_dir / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    (run_dir / "results.md").write_text(markdown(doc))
