"""results.json -> results.md (tables, PASS/FAIL targets), plots (PNG) and a qualitative figure."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from gmnerf_ns.benchmark.settings import (
    FULL_RES,
    NERFACTO,
    NO_ATTENTION,
    NO_PROXY,
    REFERENCE,
    SYSTEM_NOTES,
    slug,
)

NA = "n/a"


def _num(value: Any, fmt: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NA
    return fmt.format(value)


def _x(ratio: Optional[float]) -> str:
    return NA if ratio is None else _num(ratio) + "x"


def _quality(entry: Dict[str, Any], key: str) -> Optional[float]:
    return (entry.get("quality") or {}).get(key)


def _matched_psnr(a: Dict[str, Any], b: Dict[str, Any]) -> Tuple[Optional[float], Optional[float], int]:
    """Mean PSNR of ``a`` and ``b`` over the held-out images both were evaluated on (matched by index)."""
    rows_a = {r["index"]: r["psnr"] for r in (a.get("quality") or {}).get("per_image", [])}
    rows_b = {r["index"]: r["psnr"] for r in (b.get("quality") or {}).get("per_image", [])}
    common = sorted(set(rows_a) & set(rows_b))
    if not common:
        return None, None, 0
    return float(np.mean([rows_a[i] for i in common])), float(np.mean([rows_b[i] for i in common])), len(common)


def _render(doc: Dict[str, Any], system: str, variant: str, resolution: int) -> Optional[Dict[str, Any]]:
    for entry in doc.get("render", []):
        if (entry.get("system"), entry.get("variant"), entry.get("resolution")) == (system, variant, resolution):
            return entry
    return None


def _memory(doc: Dict[str, Any], patch: int, fraction: float) -> Optional[Dict[str, Any]]:
    for entry in doc.get("train_memory", []):
        if entry.get("patch_size") == patch and abs(float(entry.get("grad_ray_fraction", -1)) - fraction) < 1e-9:
            return entry
    return None


def _ok(entry: Optional[Dict[str, Any]]) -> bool:
    return entry is not None and "error" not in entry


def _warm(entry: Dict[str, Any]) -> float:
    """Seconds of a render with the source encoding cached (results written before cold/warm: ``render_seconds``)."""
    return entry.get("warm_seconds", entry["render_seconds"])


def _missing(systems: Dict[str, Any], *names: str) -> str:
    absent = [n for n in names if n not in systems]
    if absent:
        return f"not run in this benchmark (--systems): {', '.join(absent)}"
    return "one of the two systems has no held-out PSNR (see its error)"


def _saved_ratio(part: Dict[str, Any], full: Dict[str, Any]) -> Optional[float]:
    """full / partial bytes saved for backward (None when not measured)."""
    if part.get("saved_mb") is None or full.get("saved_mb") is None:
        return None
    return full["saved_mb"] / max(part["saved_mb"], 1e-9)


def _bound(by_part: Dict[str, float], by_full: Dict[str, float]) -> float:
    """The activation ratio full / partial if the gradient rays' part shrank to nothing: full / (partial - rays)."""
    rest = sum(v for k, v in by_part.items() if k != "rays")
    return sum(by_full.values()) / max(rest, 1e-9)


# ----------------------------------------------------------------------------------------------------------------------
# targets
# ----------------------------------------------------------------------------------------------------------------------


def evaluate_targets(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """PASS / FAIL / n/a with the measured numbers and an explanation, per issue-#7 target."""
    systems = doc["systems"]
    settings = doc["settings"]
    quick = doc["mode"] == "quick"
    loaded = doc["load"]["under_load"]
    load_note = (f"measured under load (max 1-min load {doc['load']['max_load1']:.1f} on "
                 f"{doc['machine']['usable_cores']} cores)")
    caveats = {
        "quality": [load_note + ": fewer steps fit in the budget than on a quiet machine"] if loaded else [],
        "time": [load_note + ": absolute times are inflated; the ratio compares runs of the same process"]
        if loaded else [],
        "memory": [],
    }
    if quick:
        for kind in caveats:
            caveats[kind].insert(0, "QUICK MODE: a smoke test of the plumbing, not a measurement of the methods")
    targets = []

    def add(name: str, threshold: str, measured: str, verdict: str, explanation: str, kind: str) -> None:
        targets.append({"target": name, "threshold": threshold, "measured": measured, "verdict": verdict,
                        "explanation": "; ".join([explanation, *caveats[kind]])})

    ref = systems.get(REFERENCE, {})

    def steps_note(name: str) -> str:
        entry = systems.get(name, {})
        return f"{name}: {entry.get('steps', '?')} steps in {_num(entry.get('train_seconds'), '{:.0f}')} s"

    def quality_target(other_name: str, name: str, threshold: str, margin: float, explanation: str) -> None:
        """Held-out PSNR of the reference vs ``other_name`` on the same images: PASS when ahead by more than
        ``margin`` dB (or exactly ``margin`` when it is non-zero)."""
        other = systems.get(other_name, {})
        a, b, n = _matched_psnr(ref, other) if _ok(ref) and _ok(other) else (None, None, 0)
        if a is None:
            add(name, threshold, NA, "n/a", _missing(systems, REFERENCE, other_name), "quality")
            return
        delta = a - b
        verdict = "PASS" if (delta >= margin if margin > 0 else delta > margin) else "FAIL"
        add(name, threshold, f"{a:.2f} vs {b:.2f} dB ({delta:+.2f} dB, {n} image(s))", verdict,
            explanation.format(other_steps=_num(other.get("steps"), "{:.0f}")), "quality")

    same_budget = f"same images and the same {settings['budget_seconds']:g} s budget; {steps_note(REFERENCE)}, "
    # 1. quality vs the no-proxy baseline
    quality_target(NO_PROXY, f"held-out PSNR: {REFERENCE} >= {NO_PROXY} + 2 dB", ">= +2.00 dB", 2.0,
                   same_budget + steps_note(NO_PROXY))
    # 2. quality vs per-subject nerfacto
    quality_target(NERFACTO, f"held-out PSNR: {REFERENCE} > per-subject nerfacto", "> nerfacto", 0.0,
                   f"nerfacto fitted from scratch to the 4 input views of each held-out subject-frame, "
                   f"{settings['budget_seconds']:g} s per subject ({{other_steps}} steps on average); "
                   f"{steps_note(REFERENCE)} across all training subjects")
    # 3. render speed: half-res features + 2D renderer vs full-res volume rendering of the same model
    res = settings["render_resolution"]
    name = (f"render {res}x{res}: >= 3x faster than the same model volume-rendered at full resolution "
            "(judged warm: source encoding cached)")
    fast, slow = _render(doc, REFERENCE, "trained", res), _render(doc, REFERENCE, "volume-full-res", res)
    if not (_ok(fast) and _ok(slow)):
        add(name, ">= 3.0x", NA, "n/a", "render measurement missing or failed (see the speed section)", "time")
    else:
        ratio = _warm(slow) / max(_warm(fast), 1e-9)
        verdict = "PASS" if ratio >= 3.0 else "FAIL"
        ray_ratio = slow["volume_rays"] / max(fast["volume_rays"], 1)
        measured = f"{ratio:.2f}x warm ({_warm(slow):.2f} s vs {_warm(fast):.2f} s)"
        cold_fast, cold_slow = fast.get("cold_seconds"), slow.get("cold_seconds")
        if cold_fast is not None and cold_slow is not None:
            measured += f"; {cold_slow / max(cold_fast, 1e-9):.2f}x cold ({cold_slow:.2f} s vs {cold_fast:.2f} s)"
        if fast.get("warm_cpu_seconds") and slow.get("warm_cpu_seconds"):
            measured += (f"; {slow['warm_cpu_seconds'] / max(fast['warm_cpu_seconds'], 1e-9):.2f}x warm CPU time "
                         f"({slow['warm_cpu_seconds']:.2f} s vs {fast['warm_cpu_seconds']:.2f} s)")
        explanation = (f"same weights, the 2D renderer detached for the full-resolution render ({ray_ratio:.0f}x the "
                       "volume-rendered rays); judged on the warm render because the encoding of the source views "
                       f"(encoder + registration + proxy volume, {fast['encode_seconds']:.2f} s, identical for both) "
                       "is computed once per subject-frame and shared by every view rendered from it (orbits, the "
                       "viewer, ns-eval's target views); the cold ratio (first view of a subject-frame, encoding "
                       "included) is shown next to it")
        breakdown = fast.get("warm_breakdown")
        if breakdown:
            explanation += (f"; the half-res warm render spends {breakdown['rays_seconds']:.2f} s in the rays/3D "
                            f"field and {breakdown['renderer_seconds']:.2f} s in the 2D renderer, so with 4x fewer "
                            "volume-rendered rays the ratio cannot exceed about 4 / (1 + 2D share of the rays' time)")
        if doc["machine"].get("torch_threads") == 1 and fast.get("warm_cpu_seconds"):
            explanation += ("; CPU time (one torch thread: the work done, unaffected by waiting for a core) is the "
                            "load-robust cross-check of the wall-clock ratio")
        add(name, ">= 3.0x", measured, verdict, explanation, "time")

    # 4. training memory: partial vs full gradient at the same patch size
    patch = settings["patch_size"]
    fraction = settings["gm_nerf_small_grad_ray_fraction"]
    part, full = _memory(doc, patch, fraction), _memory(doc, patch, 1.0)
    device_peak = _ok(part) and _ok(full) and part.get("device_peak_mb") and full.get("device_peak_mb")
    peak_label = "CUDA max_memory_allocated over the steps" if device_peak else "peak RSS over the ready process"
    name = (f"training peak memory at patch {patch}: partial gradient >= 2x lower than full gradient "
            f"(judged on {peak_label}; activation memory shown)")
    if not (_ok(part) and _ok(full)):
        add(name, ">= 2.0x", NA, "n/a", "memory measurement missing or failed (see the memory section)", "memory")
    else:
        if device_peak:
            peak_ratio = full["device_peak_mb"] / max(part["device_peak_mb"], 1e-9)
            peak_text = f"{full['device_peak_mb']:.0f} vs {part['device_peak_mb']:.0f} MB"
        else:
            peak_ratio = full["peak_increment_mb"] / max(part["peak_increment_mb"], 1e-9)
            peak_text = f"{full['peak_increment_mb']:.0f} vs {part['peak_increment_mb']:.0f} MB"
        total_ratio = full["peak_rss_mb"] / max(part["peak_rss_mb"], 1e-9)
        verdict = "PASS" if peak_ratio >= 2.0 else "FAIL"
        measured = f"{peak_ratio:.2f}x peak ({peak_text})"
        saved_ratio = _saved_ratio(part, full)
        if saved_ratio is not None:
            measured += (f"; {saved_ratio:.2f}x activations ({full['saved_mb']:.0f} vs {part['saved_mb']:.0f} MB "
                         "saved for backward)")
        measured += f"; {total_ratio:.2f}x whole-process RSS"
        explanation = (f"{peak_label} is the issue's 'peak training memory' (the step's working memory); whole-"
                       f"process peak {full['peak_rss_mb']:.0f} vs {part['peak_rss_mb']:.0f} MB includes the "
                       f"{part['rss_ready_mb']:.0f} MB (libraries, model, data) both processes hold before the first "
                       "step")
        if saved_ratio is not None:
            by_part, by_full = part.get("saved_mb_by_phase") or {}, full.get("saved_mb_by_phase") or {}
            shared = {k: by_part.get(k, 0.0) for k in ("encode", "renderer", "losses", "other")}
            explanation += (f"; partial gradient only shrinks the rays/3D-field part of the activations "
                            f"({by_full.get('rays', 0.0):.0f} -> {by_part.get('rays', 0.0):.0f} MB, gradient on "
                            f"{fraction:g} of the feature rays), while the encoding of the source views "
                            f"({shared['encode']:.0f} MB), the 2D renderer ({shared['renderer']:.0f} MB) and the "
                            f"losses ({shared['losses']:.0f} MB) are on the whole patch in both: at most "
                            f"{_bound(by_part, by_full):.2f}x is reachable at this patch size however few rays carry "
                            "gradient")
        else:
            explanation += (f"; only the 3D field's autograd graph differs ({fraction:g} vs all of the feature rays): "
                            "the no-grad rendering of the other rays, the 2D renderer and the losses on the whole "
                            "patch are in both")
        if not device_peak and part["peak_increment_mb"] < 20:
            explanation += "; the increments are a few MB, too small for a meaningful ratio at this patch size"
        add(name, ">= 2.0x", measured, verdict, explanation, "memory")
    # 5. quality vs naive projection / averaging (issue #5: the paper's geometry-guided attention claim)
    quality_target(NO_ATTENTION, f"held-out PSNR: {REFERENCE} > {NO_ATTENTION} (no geometry-guided attention)",
                   "> ablation", 0.0, same_budget + steps_note(NO_ATTENTION))
    return targets


# ----------------------------------------------------------------------------------------------------------------------
# markdown
# ----------------------------------------------------------------------------------------------------------------------


def markdown(doc: Dict[str, Any]) -> str:
    m, load, settings, split = doc["machine"], doc["load"], doc["settings"], doc["split"]
    lines: List[str] = []
    add = lines.append
    add(f"# Benchmark `{doc['run_name']}` ({doc['mode']} mode)")
    add("")
    if doc["mode"] == "quick":
        for note in settings.get("notes", []):
            add(f"> **{note}**" if note.startswith("QUICK") else f"> {note}")
            add(">")
        lines.pop()
        add("")
    if load["under_load"]:
        add(f"> **MEASURED UNDER LOAD**: the 1-minute load average reached {load['max_load1']:.1f} on "
            f"{m['usable_cores']} usable cores (start {load['start']['load1']:.1f}, end {load['end']['load1']:.1f}). "
            "Wall-clock times, steps done within the budget and rays/s are pessimistic; the CPU-utilisation column "
            "shows how much of its wall time each training actually ran. Ratios measured in the same run are more "
            "robust than absolute times, but still noisy.")
        add("")
    add(f"Command: `{doc['command']}`  ")
    add(f"Started {doc['started']}, finished {doc['finished']} ({doc['wall_seconds']:.0f} s).")
    if doc.get("reused"):
        add("")
        add(f"Resumed run (`--resume`): {len(doc['reused'])} measurement(s) reused as an earlier invocation with the "
            f"same settings wrote them ({', '.join(doc['reused'])}); the times above are this invocation's, the "
            "load table covers only what ran in it.")
    add("")
    add("## Machine")
    add("")
    add("| CPU | cores (usable) | torch threads | RAM | Python | torch | nerfstudio | load avg 1/5/15 min at start | at end | max sampled |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    s, e = load["start"], load["end"]
    add(f"| {m['cpu_model']} | {m['logical_cores']} ({m['usable_cores']}) | {m['torch_threads']} | {m['memory_gb']} GB "
        f"| {m['python']} | {m['torch']} | {m['nerfstudio']} | {s['load1']:.2f} / {s['load5']:.2f} / {s['load15']:.2f} "
        f"| {e['load1']:.2f} / {e['load5']:.2f} / {e['load15']:.2f} | {load['max_load1']:.2f} |")
    add("")
    add(f"Under-load rule: {load['rule']}. Verdict: **{'under load' if load['under_load'] else 'quiet'}**.")
    add("")
    add("## Protocol")
    add("")
    proto = split["protocol"]
    gen = ((doc.get("data") or {}).get("manifest") or {}).get("settings") or {}
    described = (f"{gen.get('num_subjects', '?')} subjects, {gen.get('num_cameras', '?')} cameras, "
                 f"{gen.get('num_frames', '?')} frame(s), generated at {gen.get('resolution', '?')} px, "
                 f"seed {gen.get('seed', '?')}") if gen else "no gmnerf-synth manifest"
    add(f"* Data: built-in `gmnerf-synth` humans at `{settings['data']}` ({described}); training subjects "
        f"{', '.join(split['train_subjects'])}; **held-out** subjects {', '.join(split['test_subjects'])}.")
    add(f"* Protocol `{proto['name']}`: m = {proto['num_input_views']} input views, {proto['resolution']} px, the "
        "other cameras are targets. Evaluated: "
        + "; ".join(f"{f['subject']} frame {f['frame_id']} (inputs {', '.join(f['input_cameras'])})"
                    for f in split["eval_frames"])
        + f" — {len(split['eval_indices'])} target view(s) (of {split['num_eval_views_total']} held-out views).")
    add(f"* Every trained system gets the same wall-clock budget: **{settings['budget_seconds']:g} s** of training "
        "steps (setup and evaluation excluded), nerfacto once per held-out subject-frame. Learning-rate schedules are "
        "the shipped configs' (defined in steps).")
    add("* PSNR over the projected 3D-box mask, SSIM on its bounding crop (Neural Body / NHP protocol, "
        "`gmnerf_ns.metrics.image_metrics`), LPIPS only with locally found pretrained weights.")
    lp = _first_lpips_status(doc)
    if lp and not lp.get("available"):
        add(f"* **LPIPS: n/a** — {lp.get('reason')}")
    add(f"* Geometry: marching cubes on the density (`gmnerf_ns/tools/geometry.py`, {settings['geometry_resolution']} "
        f"cells along the box, iso-level {settings['geometry_threshold']:g}/m) vs the ground-truth meshes of the "
        "held-out subject-frames; Chamfer and P2S in cm.")
    add("")

    add("## Quality and training cost (same budget per system)")
    add("")
    add("| system | steps | steps/s | vol. rays/s | pixels/s | CPU util. | PSNR | SSIM | LPIPS | Chamfer cm | P2S cm "
        "| peak train RSS MB (+ over ready) | params |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, entry in doc["systems"].items():
        if "error" in entry:
            add(f"| {name} | error: {entry['error'].splitlines()[0][:160]} |" + " |" * 11)
            continue
        geo = entry.get("geometry") or {}
        chamfer = _num(geo.get("chamfer_cm")) if geo.get("available") else NA
        p2s = _num(geo.get("p2s_cm")) if geo.get("available") else NA
        add(f"| {name} | {_num(entry.get('steps'), '{:.0f}')} | {_num(entry.get('steps_per_second'), '{:.2f}')} "
            f"| {_num(entry.get('rays_per_second'), '{:.0f}')} | {_num(entry.get('pixels_per_second'), '{:.0f}')} "
            f"| {_num(entry.get('cpu_utilisation'), '{:.2f}')} "
            f"| {_num(_quality(entry, 'psnr'))} | {_num(_quality(entry, 'ssim'), '{:.4f}')} "
            f"| {_num(_quality(entry, 'lpips'), '{:.4f}')} | {chamfer} | {p2s} "
            f"| {_num(entry.get('peak_rss_mb'), '{:.0f}')} (+{_num(entry.get('peak_increment_mb'), '{:.0f}')}) "
            f"| {_num(entry.get('num_parameters'), '{:,.0f}')} |")
    add("")
    add("vol. rays/s = rays volume-rendered through the 3D field per second of training (gm-nerf: the half-resolution "
        "feature rays of the patch, all of them, with or without gradient; neural_renderer=False: full-resolution "
        "rays; nerfacto: its ray batch). pixels/s = supervised output pixels per second. CPU util. = process CPU time "
        "/ wall time during training (about the torch thread count on a quiet machine; lower = waiting for a core).")
    add("")
    for name, entry in doc["systems"].items():
        geo = entry.get("geometry") or {}
        if "error" not in entry and not geo.get("available") and geo.get("reason"):
            add(f"* Geometry of {name}: n/a — {geo['reason']}")
    add("")
    add("Systems:")
    add("")
    for name in doc["systems"]:
        add(f"* **{name}**: {SYSTEM_NOTES.get(name, '')}")
    add("")

    add("## Speed: render time per view")
    add("")
    add("**warm** = a view rendered with the subject-frame's source encoding cached (every view after the first: "
        "orbits, the viewer, further target views); **cold** = the first view of a subject-frame, including building "
        "and encoding its source views (encoder + registration + proxy volume). Both through "
        "`get_outputs_for_camera`, the minimum over the repeats. The warm render is split into the model's phases: "
        "rays = `render_rays` (ray/box sampling, the 3D field, volume rendering), 2D = the neural renderer.")
    add("")
    add("| system | rendered as | resolution | warm s | warm CPU s | cold s | encode s | warm: rays s | warm: 2D s "
        "| warm: other s | volume rays | peak RSS MB (+ over ready) | CPU util. |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for entry in doc.get("render", []):
        variant = {"trained": "as trained", "volume-full-res": "same weights, full-res volume rendering"}.get(
            entry.get("variant"), entry.get("variant"))
        if "error" in entry:
            add(f"| {entry['system']} | {variant} | {entry['resolution']} | error: {entry['error'].splitlines()[0][:120]} "
                "|" + " |" * 9)
            continue
        br = entry.get("warm_breakdown") or {}
        add(f"| {entry['system']} | {variant} | {entry['resolution']}x{entry['resolution']} "
            f"| {_warm(entry):.3f} | {_num(entry.get('warm_cpu_seconds'), '{:.3f}')} "
            f"| {_num(entry.get('cold_seconds'), '{:.3f}')} | {entry['encode_seconds']:.3f} "
            f"| {_num(br.get('rays_seconds'), '{:.3f}')} | {_num(br.get('renderer_seconds'), '{:.3f}')} "
            f"| {_num(br.get('other_seconds'), '{:.3f}')} | {entry['volume_rays']:,} "
            f"| {entry['peak_rss_mb']:.0f} (+{entry['peak_increment_mb']:.0f}) | {_num(entry.get('cpu_utilisation'))} |")
    add("")
    ratios = render_ratios(doc)
    if ratios:
        add("| resolution | full-res volume / half-res features + 2D renderer: warm time | warm CPU time | cold time "
            "| peak RSS increment |")
        add("|---|---|---|---|---|")
        for res, warm_ratio, cpu_ratio, cold_ratio, m_ratio in ratios:
            add(f"| {res} | {_x(warm_ratio)} | {_x(cpu_ratio)} | {_x(cold_ratio)} | {_x(m_ratio)} |")
        add("")
    growth = render_growth(doc)
    if growth:
        add("Warm render time growth with resolution (relative to the smallest): " + "; ".join(growth) + ".")
        add("")
    cross = _render(doc, FULL_RES, "trained", settings["render_resolution"])
    ref = _render(doc, REFERENCE, "trained", settings["render_resolution"])
    if _ok(cross) and _ok(ref):
        cold = ""
        if cross.get("cold_seconds") is not None and ref.get("cold_seconds") is not None:
            cold = f"; cold {cross['cold_seconds'] / max(ref['cold_seconds'], 1e-9):.2f}x"
        add(f"Cross-check: the separately trained `{FULL_RES}` ablation renders "
            f"{settings['render_resolution']}x{settings['render_resolution']} warm in {_warm(cross):.3f} s, "
            f"{_warm(cross) / max(_warm(ref), 1e-9):.2f}x the time of {REFERENCE}{cold}.")
        add("")

    add("## Training memory per patch size, partial vs full gradient")
    add("")
    add("**saved** = activation memory: bytes of the tensors autograd saves for backward during a training step "
        "(unique storages, parameters excluded; mean over the steps), i.e. what the graph holds when `backward` "
        "starts — deterministic, and split by where it is saved: encode (encoder + registration + proxy volume), rays "
        "(`render_rays` of the gradient rays: sampling, 3D field, volume rendering), 2D (neural renderer), losses "
        "(incl. the perceptual network), other. **peak RSS** is what the OS sees, including the allocator's caching "
        "and transient buffers (e.g. of the no-grad rays).")
    add("")
    add("| patch | gradient on | grad rays | saved MB | encode | rays | 2D | losses | other | peak RSS MB "
        "| + over ready MB | CUDA peak MB | s/step | CPU util. |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for entry in doc.get("train_memory", []):
        frac = entry.get("grad_ray_fraction")
        label = "all rays (full)" if frac == 1.0 else f"{frac:g} of the rays (partial)"
        if "error" in entry:
            add(f"| {entry['patch_size']} | {label} | error: {entry['error'].splitlines()[0][:120]} |" + " |" * 11)
            continue
        ph = entry.get("saved_mb_by_phase") or {}
        add(f"| {entry['patch_size']} | {label} | {_num(entry.get('grad_rays_per_step'), '{:,.0f}')} "
            f"| {_num(entry.get('saved_mb'), '{:.1f}')} "
            + " ".join(f"| {_num(ph.get(k), '{:.1f}')}" for k in ("encode", "rays", "renderer", "losses", "other"))
            + f" | {entry['peak_rss_mb']:.0f} | {entry['peak_increment_mb']:.0f} "
            f"| {_num(entry.get('device_peak_mb'), '{:.0f}')} "
            f"| {entry['seconds_per_step']:.3f} | {_num(entry.get('cpu_utilisation'))} |")
    add("")
    mem = memory_ratios(doc)
    if mem:
        add("| patch | full / partial: saved (activations) | rays part of saved | bound (rays part -> 0) "
            "| peak RSS increment | whole-process peak | CUDA peak | s/step |")
        add("|---|---|---|---|---|---|---|---|")
        for row in mem:
            add(f"| {row['patch']} | {_x(row['saved'])} | {_x(row['rays'])} | {_x(row['bound'])} "
                f"| {_x(row['increment'])} | {_x(row['total'])} | {_x(row['device'])} | {_x(row['step'])} |")
        add("")
    add(f"Each memory number comes from its own child process ({settings['memory_steps']} training steps on the same "
        "patches for both fractions, views decoded before the measurement, no background decoding); 'ready' = the "
        "process after setup, before the first step. 'bound' = the activation ratio if the gradient rays cost "
        "nothing: the encoding, the 2D renderer and the losses stay on the whole patch.")
    kinds = sorted({e["perceptual_loss"] for e in doc.get("train_memory", []) if e.get("perceptual_loss")})
    if kinds:
        add("")
        add(f"Perceptual loss computed in these steps: {', '.join(kinds)}"
            + (" (no local VGG weights: the weights-free SSIM fallback, whose activations are small; with VGG19 its "
               "activations on the whole patch would add to 'losses' for both fractions alike)"
               if "ssim-fallback" in kinds else "") + ".")
    add("")

    add("## Targets")
    add("")
    add("| target | threshold | measured | verdict | explanation |")
    add("|---|---|---|---|---|")
    for t in doc["targets"]:
        add(f"| {t['target']} | {t['threshold']} | {t['measured']} | **{t['verdict']}** | {t['explanation']} |")
    add("")

    add("## Not run")
    add("")
    for name, reason in doc["not_run"].items():
        add(f"* **{name}**: {reason}")
    add("")
    add("## Files")
    add("")
    add("`results.json` (everything above plus per-image metrics, loss curves, load samples), `quality.png`, "
        "`render_time.png`, `train_memory.png`, `loss_curves.png`, `qualitative.png`, `log.txt`. Each system's "
        "weights, held-out renders (ground truth, prediction, error side by side) and the nerfacto scenes "
        f"(`transforms.json`) are in `{doc.get('work_dir', 'work/')}` (not part of the results).")
    add("")
    return "\n".join(lines)


def _first_lpips_status(doc: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    for entry in doc["systems"].values():
        status = (entry.get("quality") or {}).get("lpips_status")
        if status:
            return status
    return None


def render_ratios(doc: Dict[str, Any]) -> List[Tuple[int, float, Optional[float], Optional[float], Optional[float]]]:
    """(resolution, warm time, warm CPU time, cold time, peak RSS increment): full-res volume / half-res + 2D."""
    out = []
    for res in doc["settings"]["render_resolutions"]:
        fast, slow = _render(doc, REFERENCE, "trained", res), _render(doc, REFERENCE, "volume-full-res", res)
        if _ok(fast) and _ok(slow):
            cold = cpu = None
            if fast.get("cold_seconds") is not None and slow.get("cold_seconds") is not None:
                cold = slow["cold_seconds"] / max(fast["cold_seconds"], 1e-9)
            if fast.get("warm_cpu_seconds") and slow.get("warm_cpu_seconds"):
                cpu = slow["warm_cpu_seconds"] / max(fast["warm_cpu_seconds"], 1e-9)
            out.append((res, _warm(slow) / max(_warm(fast), 1e-9), cpu, cold,
                        slow["peak_increment_mb"] / fast["peak_increment_mb"] if fast["peak_increment_mb"] > 1 else None))
    return out


def render_growth(doc: Dict[str, Any]) -> List[str]:
    out = []
    for variant, label in (("trained", "half-res features + 2D renderer"), ("volume-full-res", "full-res volume")):
        rows = [e for e in doc.get("render", []) if e.get("system") == REFERENCE and e.get("variant") == variant
                and _ok(e)]
        rows.sort(key=lambda e: e["resolution"])
        if len(rows) >= 2:
            base = rows[0]
            parts = [f"{e['resolution']}: {_warm(e) / max(_warm(base), 1e-9):.1f}x" for e in rows]
            out.append(f"{label} " + ", ".join(parts) + f" (pixels grow {(rows[-1]['resolution'] / base['resolution']) ** 2:.0f}x)")
    return out


def memory_ratios(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per patch size, full / partial gradient: activations (saved for backward), their rays part, the bound if the
    rays part vanished, peak RSS increment, whole-process peak RSS, CUDA peak, seconds per step."""
    fraction = doc["settings"]["gm_nerf_small_grad_ray_fraction"]
    out = []
    for patch in doc["settings"]["memory_patch_sizes"]:
        part, full = _memory(doc, patch, fraction), _memory(doc, patch, 1.0)
        if not (_ok(part) and _ok(full)):
            continue
        by_part, by_full = part.get("saved_mb_by_phase"), full.get("saved_mb_by_phase")
        rays = (by_full["rays"] / by_part["rays"] if by_part and by_full and by_part.get("rays", 0) > 0 else None)
        device = (full["device_peak_mb"] / part["device_peak_mb"] if part.get("device_peak_mb") and
                  full.get("device_peak_mb") else None)
        out.append({
            "patch": patch, "saved": _saved_ratio(part, full), "rays": rays,
            "bound": _bound(by_part, by_full) if by_part and by_full else None,
            "increment": full["peak_increment_mb"] / part["peak_increment_mb"] if part["peak_increment_mb"] > 1 else None,
            "total": full["peak_rss_mb"] / part["peak_rss_mb"], "device": device,
            "step": full["seconds_per_step"] / max(part["seconds_per_step"], 1e-9)})
    return out


# ----------------------------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------------------------


def plots(doc: Dict[str, Any], run_dir: Path) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    tag = f" ({doc['mode']} mode{', under load' if doc['load']['under_load'] else ''})"

    # quality
    names = [n for n, e in doc["systems"].items() if _quality(e, "psnr") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, key, label in ((axes[0], "psnr", "PSNR (dB, masked bbox)"), (axes[1], "ssim", "SSIM (bbox crop)")):
        values = [_quality(doc["systems"][n], key) or 0.0 for n in names]
        colours = ["tab:green" if n == REFERENCE else "tab:orange" if n == NERFACTO else "tab:blue" for n in names]
        ax.barh(names, values, color=colours)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}" if key == "psnr" else f" {v:.3f}", va="center", fontsize=8)
        ax.set_xlabel(label)
        ax.invert_yaxis()
    axes[0].set_title(f"held-out quality, {doc['settings']['budget_seconds']:g} s budget each{tag}", fontsize=9)
    fig.tight_layout()
    fig.savefig(run_dir / "quality.png", dpi=100)
    plt.close(fig)
    written.append("quality.png")

    # render time vs resolution
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, label, style in (("trained", "half-res features + 2D renderer", "o-"),
                                  ("volume-full-res", "same weights, full-res volume rendering", "s--")):
        rows = sorted([e for e in doc.get("render", []) if e.get("system") == REFERENCE and e.get("variant") == variant
                       and _ok(e)], key=lambda e: e["resolution"])
        if rows:
            line = ax.plot([e["resolution"] for e in rows], [_warm(e) for e in rows], style, label=f"{label}, warm")
            cold = [e for e in rows if e.get("cold_seconds") is not None]
            if cold:
                ax.plot([e["resolution"] for e in cold], [e["cold_seconds"] for e in cold], style[0] + ":",
                        color=line[0].get_color(), alpha=0.6, label=f"{label}, cold (incl. encoding)")
    cross = [e for e in doc.get("render", []) if e.get("system") == FULL_RES and _ok(e)]
    if cross:
        ax.plot([e["resolution"] for e in cross], [_warm(e) for e in cross], "x", ms=10,
                label=f"{FULL_RES} ablation (trained), warm")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("output resolution (px, square)")
    ax.set_ylabel("seconds per view")
    ax.set_title(f"render time{tag}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_dir / "render_time.png", dpi=100)
    plt.close(fig)
    written.append("render_time.png")

    # training memory vs patch size
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    fraction = doc["settings"]["gm_nerf_small_grad_ray_fraction"]
    for frac, label, style in ((fraction, f"partial gradient ({fraction:g} of the rays)", "o-"),
                               (1.0, "full gradient", "s--")):
        rows = sorted([e for e in doc.get("train_memory", []) if _ok(e)
                       and abs(e["grad_ray_fraction"] - frac) < 1e-9], key=lambda e: e["patch_size"])
        if rows:
            patches = [e["patch_size"] for e in rows]
            if all(e.get("saved_mb") is not None for e in rows):
                line = axes[0].plot(patches, [e["saved_mb"] for e in rows], style, label=f"{label}: all")
                axes[0].plot(patches, [e["saved_mb_by_phase"]["rays"] for e in rows], style[0] + ":",
                             color=line[0].get_color(), label=f"{label}: rays/3D field part")
            axes[1].plot(patches, [e["peak_increment_mb"] for e in rows], style, label=label)
            axes[2].plot(patches, [e["seconds_per_step"] for e in rows], style, label=label)
    axes[0].set_ylabel("saved for backward per step (MB)")
    axes[1].set_ylabel("peak RSS over the ready process (MB)")
    axes[2].set_ylabel("seconds per training step")
    for ax in axes:
        ax.set_xlabel("training patch size (px)")
        ax.legend(fontsize=7)
    axes[0].set_title(f"activation memory{tag}", fontsize=9)
    axes[1].set_title(f"peak RSS increment{tag}", fontsize=9)
    fig.tight_layout()
    fig.savefig(run_dir / "train_memory.png", dpi=100)
    plt.close(fig)
    written.append("train_memory.png")

    # loss curves
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, entry in doc["systems"].items():
        curve = entry.get("loss_curve") or []
        if curve:
            ax.plot([c[0] for c in curve], [c[1] for c in curve], label=f"{name} ({entry.get('steps', 0):.0f} steps)")
    ax.set_xlabel("training wall-clock seconds")
    ax.set_ylabel("total training loss (each system's own losses)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(f"training loss within the budget{tag}", fontsize=9)
    fig.tight_layout()
    fig.savefig(run_dir / "loss_curves.png", dpi=100)
    plt.close(fig)
    written.append("loss_curves.png")

    figure = qualitative(doc, run_dir)
    if figure:
        written.append(figure)
    return written


def qualitative(doc: Dict[str, Any], run_dir: Path) -> Optional[str]:
    """GT and every system's render of the first evaluated held-out view, side by side."""
    import imageio.v2 as imageio
    import matplotlib.pyplot as plt

    index = doc["split"]["eval_indices"][0]
    panels = []
    for name, entry in doc["systems"].items():
        if name == NERFACTO:
            folders = sorted(Path(doc.get("work_dir", run_dir / "work")).glob("nerfacto-*"))
        else:
            folders = [Path(doc.get("work_dir", run_dir / "work")) / slug(name)]
        for folder in folders:
            path = folder / "renders" / f"eval_img_{index:04d}.png"
            if path.exists():
                strip = imageio.imread(path)
                width = strip.shape[1] // 3
                if not panels:
                    panels.append(("ground truth", strip[:, :width]))
                psnr = next((r["psnr"] for r in (entry.get("quality") or {}).get("per_image", []) if r["index"] == index),
                            None)
                panels.append((f"{name}\n{_num(psnr)} dB", strip[:, width:2 * width]))
                break
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.8))
    for ax, (title, image) in zip(np.atleast_1d(axes), panels):
        ax.imshow(image)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(run_dir / "qualitative.png", dpi=100)
    plt.close(fig)
    return "qualitative.png"


def write_report(doc: Dict[str, Any], run_dir: Path) -> None:
    """Fills ``doc['targets']`` and writes results.json, results.md and the plots into ``run_dir``."""
    doc["targets"] = evaluate_targets(doc)
    try:
        doc["plots"] = plots(doc, run_dir)
    except Exception as err:  # a plotting problem must not lose the measurements
        doc["plots"] = []
        doc["plot_error"] = f"{type(err).__name__}: {err}"
    (run_dir / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    (run_dir / "results.md").write_text(markdown(doc))
