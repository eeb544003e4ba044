"""``gmnerf-report``: one HTML page and one PNG summarising a run on its held-out subjects.

The summary holds the metrics table (all images, novel view, novel pose, each held-out subject; geometry when the data
has ground-truth meshes), per-subject bars, and a grid of examples: the m input views, the prediction, the ground
truth and the error map. Metrics are computed as ``ns-eval`` computes them (:mod:`gmnerf_ns.eval.evaluation`), or
read from an existing ``ns-eval`` JSON (``--eval-json``); only the example images are rendered then.

Example::

    gmnerf-report --load-config outputs/.../config.yml            # writes <run>/report/{report.html,report.png}
"""

from __future__ import annotations

import base64
import html
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tyro
from nerfstudio.utils.eval_utils import eval_setup
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.cli.run_config import require_config
from gmnerf_ns.core.checkpoints import full_disk_ends
from gmnerf_ns.eval import evaluation
from gmnerf_ns.eval.evaluation import IMAGE_METRICS, SETTINGS, ViewResult

LABELS = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓"}


@dataclass
class Report:
    """Write an HTML + PNG summary of a run: metrics, per-subject bars, input / prediction / GT / error grid."""

    load_config: Path
    """config.yml of a gm-nerf run."""
    output_dir: Optional[Path] = None
    """Where to write report.html, report.png and metrics.json (default: <run>/report)."""
    eval_json: Optional[Path] = None
    """An ns-eval output to take the metrics from (default: evaluate now)."""
    num_examples: int = 4
    """Rows of the example grid (spread over the held-out subjects and frames)."""
    geometry: bool = True
    """Compute Chamfer/P2S when the data has ground-truth meshes (only when evaluating now)."""
    force: bool = False
    """Overwrite an existing report."""

    def main(self) -> Path:
        require_config(self.load_config, "gmnerf-report")
        out_dir = self.output_dir or self.load_config.parent / "report"
        if out_dir.is_dir() and any(out_dir.iterdir()) and not self.force:
            raise SystemExit(f"gmnerf-report: {out_dir} exists; pass --force to overwrite it or choose --output-dir")
        if self.eval_json is not None and not self.eval_json.is_file():
            raise SystemExit(f"gmnerf-report: {self.eval_json} not found")
        config, pipeline, checkpoint, step = eval_setup(self.load_config, test_mode="test")
        examples = example_indices(pipeline.datamanager, self.num_examples)
        if self.eval_json is not None:
            summary = json.loads(self.eval_json.read_text())["results"]
            if "per_subject" not in summary:
                raise SystemExit(f"gmnerf-report: {self.eval_json} has no per-subject breakdown; it was not written "
                                 "by ns-eval on a gm-nerf run")
            shown = evaluation.evaluate_views(pipeline, indices=examples, keep_images=examples)
        else:
            lpips, status = evaluation.lpips_metric()
            results = evaluation.evaluate_views(pipeline, lpips=lpips, keep_images=examples)
            summary = evaluation.summarize(results, status, get_std=True)
            if self.geometry:
                summary["geometry"] = evaluation.evaluate_geometry(
                    pipeline, resolution=getattr(pipeline.config, "geometry_resolution", 96),
                    threshold=getattr(pipeline.config, "geometry_threshold", 10.0))
            shown = [r for r in results if r.index in set(examples)]
        out_dir.mkdir(parents=True, exist_ok=True)
        info = {
            "run": str(self.load_config.parent), "method": config.method_name, "checkpoint": str(checkpoint),
            "step": step, "protocol": pipeline.datamanager.dataparser.protocol.name,
            "source_views": pipeline.datamanager.num_source_views,
        }
        (out_dir / "metrics.json").write_text(json.dumps({"info": info, "results": summary}, indent=2))
        png = write_figure(summary, shown, out_dir / "report.png", title=f"{config.method_name} — {info['run']}")
        write_html(summary, info, png, out_dir / "report.html")
        CONSOLE.log(f"report written to {out_dir / 'report.html'} and {png}")
        return out_dir


def example_indices(datamanager, count: int) -> List[int]:
    """``count`` evaluation images shared out over the held-out subjects, evenly spaced within each subject."""
    by_subject: Dict[int, List[int]] = {}
    for i, s in enumerate(datamanager.eval_dataset.cameras.metadata["subject_index"].view(-1).tolist()):
        by_subject.setdefault(int(s), []).append(i)
    groups = list(by_subject.values())
    picked: List[int] = []
    for k, group in enumerate(groups):
        quota = min(len(group), count // len(groups) + (1 if k < count % len(groups) else 0))
        picked += [group[int(j * len(group) / quota)] for j in range(quota)] if quota else []
    return sorted(picked)


def _rows(summary: Dict[str, Any]) -> List[tuple]:
    """(label, metrics dict) rows of the metrics table."""
    rows = [("all held-out images", summary)]
    rows += [(setting.replace("_", " "), summary["settings"][setting]) for setting in SETTINGS]
    rows += [(name, entry["all"]) for name, entry in summary["per_subject"].items()]
    return rows


def _fmt(entry: Dict[str, Any], key: str) -> str:
    value = entry.get(key)
    if value is None:
        return "n/a" if entry.get("num_images", 1) else "—"
    return f"{value:.2f}" if key == "psnr" else f"{value:.4f}"


def write_figure(summary: Dict[str, Any], shown: Sequence[ViewResult], path: Path, title: str = "") -> Path:
    """The summary PNG: metrics table, per-subject bars and the example grid."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    examples = [r for r in shown if r.images]
    num_sources = max((len(r.images["sources"]) for r in examples), default=0)
    columns = num_sources + 3
    rows = _rows(summary)
    fig = Figure(figsize=(max(10.0, 1.6 * columns), 3.2 + 0.25 * len(rows) + 1.7 * len(examples)), dpi=100)
    heights = [0.4 + 0.25 * len(rows), 2.6] + [1.6] * len(examples)
    grid = fig.add_gridspec(len(heights), columns, height_ratios=heights, hspace=0.45, wspace=0.05, top=0.95)
    fig.suptitle(title, fontsize=10, y=0.995)  # above the notes line of the table, not on it

    table_ax = fig.add_subplot(grid[0, :])
    table_ax.axis("off")
    keys = [k for k in IMAGE_METRICS]
    cells = [[label, str(entry.get("num_images", ""))] + [_fmt(entry, k) for k in keys] for label, entry in rows]
    table = table_ax.table(cellText=cells, colLabels=["", "images"] + [LABELS[k] for k in keys], loc="center",
                           cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    notes = []
    if not summary.get("lpips_status", {}).get("available", False):
        notes.append("LPIPS n/a: " + str(summary.get("lpips_status", {}).get("reason", "not computed")))
    geo = summary.get("geometry")
    if geo:
        notes.append(f"geometry: Chamfer {geo['chamfer_cm']:.2f} cm, P2S {geo['p2s_cm']:.2f} cm" if geo["available"]
                     else f"geometry n/a: {geo['reason']}")
    wrapped = [textwrap.shorten(n, 300, placeholder=" ...") for n in notes]
    table_ax.set_title("\n".join(textwrap.fill(n, 170) for n in wrapped), fontsize=7, loc="left")

    subjects = list(summary["per_subject"])
    for k, key in enumerate(("psnr", "ssim")):
        ax = fig.add_subplot(grid[1, k * columns // 2 : (k + 1) * columns // 2])
        width = 0.8 / (len(SETTINGS) + 1)
        for j, setting in enumerate(("all",) + SETTINGS):
            values = [summary["per_subject"][s][setting].get(key, np.nan) for s in subjects]
            ax.bar(np.arange(len(subjects)) + (j - 1) * width, values, width, label=setting.replace("_", " "))
        ax.set_xticks(np.arange(len(subjects)), subjects, fontsize=7)
        ax.set_xlim(-0.6, len(subjects) - 0.4)
        ax.set_title(f"{LABELS[key]} per held-out subject", fontsize=9)
        ax.tick_params(labelsize=7)
        if k == 0:
            ax.legend(fontsize=7)

    cmap = colormaps["inferno"]
    for row, result in enumerate(examples):
        images = result.images
        panels = [(img, f"input {v}") for v, img in enumerate(images["sources"])]
        panels += [(images["pred"], f"prediction\nPSNR {result.psnr:.2f}"), (images["gt"], "ground truth"),
                   (cmap(np.clip(images["error"] * 4.0, 0, 1))[..., :3], "|error| x4")]
        for col, (image, label) in enumerate(panels):
            ax = fig.add_subplot(grid[2 + row, col])
            ax.imshow(np.clip(image, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize=7)
            if col == 0:
                ax.set_ylabel(f"{result.subject}\nframe {result.frame_id}\n{result.camera_name}", fontsize=7)
    fig.subplots_adjust(top=0.95, bottom=0.02, left=0.08, right=0.97)
    fig.savefig(path)
    return path


def write_html(summary: Dict[str, Any], info: Dict[str, Any], png: Path, path: Path) -> Path:
    """A self-contained HTML page (the PNG embedded) with the metrics and per-image tables."""
    esc = html.escape
    keys = list(IMAGE_METRICS)

    def table(header: List[str], body: List[List[str]]) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in body)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    metrics = table(["", "images"] + [LABELS[k] for k in keys],
                    [[label, str(e.get("num_images", ""))] + [_fmt(e, k) for k in keys] for label, e in _rows(summary)])
    per_image = table(["#", "subject", "frame", "camera", "setting"] + [LABELS[k] for k in keys],
                      [[str(r["index"]), r["subject"], str(r["frame_id"]), r["camera_name"], r["setting"]]
                       + [_fmt(r, k) for k in keys] for r in summary.get("per_image", [])])
    notes = []
    lpips = summary.get("lpips_status", {})
    if not lpips.get("available", False):
        notes.append(f"LPIPS is not reported: {lpips.get('reason', 'not computed')}")
    notes.append(f"Settings: {summary.get('settings_rule', evaluation.NOVEL_POSE_RULE)}")
    geo = summary.get("geometry")
    if geo:
        notes.append(f"Geometry (marching cubes at density {geo['threshold']:g}/m, {geo['resolution']} cells): "
                     + (f"Chamfer {geo['chamfer_cm']:.2f} cm, P2S {geo['p2s_cm']:.2f} cm" if geo["available"]
                        else f"not reported: {geo['reason']}"))
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    run = "".join(f"<li><b>{esc(k)}</b>: {esc(str(v))}</li>" for k, v in info.items())
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>gm-nerf report: {esc(info['run'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} td:first-child{{text-align:left}}
img{{max-width:100%}}</style></head>
<body><h1>GM-NeRF run report</h1><ul>{run}</ul>
<h2>Held-out subjects</h2>{metrics}
<ul>{''.join(f'<li>{esc(n)}</li>' for n in notes)}</ul>
<h2>Summary figure</h2><p><a href="{esc(png.name)}"><img alt="summary" src="data:image/png;base64,{image}"></a></p>
<details><summary>Every evaluation image</summary>{per_image}</details>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


def entrypoint() -> None:
    """Console script ``gmnerf-report``."""
    tyro.extras.set_accent_color("bright_yellow")
    report = tyro.cli(Report)
    with full_disk_ends("gmnerf-report"):
        report.main()


if __name__ == "__main__":
    entrypoint()
