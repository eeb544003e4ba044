"""Milliseconds per step of an ``ns-train`` run as it ran, and how busy the GPU was meanwhile.

    python benchmarks/throughput/ns_train_timing.py RUN_DIR [--window 200:400] [--smi nvidia-smi.csv]
        [--subjects-per-step P] [--buffer-size 20] [--json-path out.json]

RUN_DIR is the run folder nerfstudio logged to with ``--vis tensorboard`` (it holds ``events.out.tfevents.*``; a
file works too). nerfstudio writes every step's scalars when the step ends, after its evals and checkpoint, so the
wall-clock stamps of consecutive steps' events are the steps' full times in ns-train. Reported over the steps of the
window ``a:b`` (steps a .. b-1):

* ``ms_per_step``: (end of step b-1 - end of step a-1) / (b - a), everything ns-train did in those steps;
  ``ms_per_step_median``: the median step (periodic evals and checkpoints left out); ``ms_per_sample``: ms_per_step / P;
* ``iteration_ms_per_step``: the mean of nerfstudio's own ``Train Iter (time)`` over the window, the training iteration
  alone (nerfstudio logs a running mean over the last ``--logging.max-buffer-size`` steps; it is undone here);
* with ``--smi`` (``nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 200``): the mean
  GPU utilization of the samples taken between those two step ends, and the most memory used.

A run that stopped before the window's end is measured up to its last logged step (``window_clipped``); one that
did not reach the window's start, over the second half of its steps. Reading the events needs no tensorboard: the
record format and the few protobuf fields used are decoded here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

ITER_TAG = "Train Iter (time)"
"""nerfstudio's per-step scalar: the running mean of the training iteration's seconds."""
EVAL_PREFIX = "Eval "
"""Tags of nerfstudio's in-training evaluations ("Eval Loss", "Eval Images Metrics/...")."""


@dataclass(frozen=True)
class Scalar:
    """One scalar event of a tensorboard file."""

    wall_time: float
    step: int
    value: float


# ---------------------------------------------------------------------------------------------- tensorboard files
def _varint(buf: bytes, i: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> Iterator[Tuple[int, int, Union[int, bytes]]]:
    """(field number, wire type, raw value) of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _tensor_value(buf: bytes) -> Optional[float]:
    """The first float/double of a TensorProto (float_val = 5, double_val = 6; packed or not)."""
    for field, wire, value in _fields(buf):
        if field == 5:
            return struct.unpack("<f", value[:4])[0]
        if field == 6:
            return struct.unpack("<d", value[:8])[0]
    return None


def _records(data: bytes) -> Iterator[bytes]:
    """The records of a TFRecord file; a truncated last record (a run killed mid-write) is skipped."""
    i = 0
    while i + 12 <= len(data):
        (size,) = struct.unpack("<Q", data[i:i + 8])
        start, end = i + 12, i + 12 + size
        if end + 4 > len(data):
            return
        yield data[start:end]
        i = end + 4


def event_files(path: Path) -> List[Path]:
    """``path`` itself when it is a file, else the tensorboard event files below it, oldest first."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(path.rglob("events.out.tfevents.*"), key=lambda p: (p.stat().st_mtime, p.name))


def read_scalars(path: Path) -> Dict[str, List[Scalar]]:
    """Every scalar of the event file(s) at ``path``, by tag, in file order."""
    files = event_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: no tensorboard event file (events.out.tfevents.*); was the run started "
                                "with --vis tensorboard?")
    scalars: Dict[str, List[Scalar]] = {}
    for file in files:
        for record in _records(file.read_bytes()):
            wall_time, step, summary = 0.0, 0, None
            for field, _, value in _fields(record):
                if field == 1:
                    wall_time = struct.unpack("<d", value)[0]
                elif field == 2:
                    step = value - (1 << 64) if value >= 1 << 63 else value
                elif field == 5:
                    summary = value
            if summary is None:
                continue
            for field, _, entry in _fields(summary):
                if field != 1:
                    continue
                tag, number = None, None
                for key, _, value in _fields(entry):
                    if key == 1:
                        tag = value.decode("utf-8", "replace")
                    elif key == 2:
                        number = struct.unpack("<f", value)[0]
                    elif key == 8 and number is None:
                        number = _tensor_value(value)
                if tag is not None and number is not None:
                    scalars.setdefault(tag, []).append(Scalar(wall_time, step, number))
    return scalars


# ---------------------------------------------------------------------------------------------- step times
def step_end_times(scalars: Dict[str, List[Scalar]], tag: str = ITER_TAG) -> Dict[int, float]:
    """Wall-clock time at which each step ended (the stamp of its ``tag`` event; the last one if a step repeats)."""
    if tag not in scalars:
        raise KeyError(f"no {tag!r} scalar in the events (tags: {', '.join(sorted(scalars)) or 'none'})")
    return {event.step: event.wall_time for event in scalars[tag]}


def iteration_times(running_means: Dict[int, float], buffer_size: int = 20) -> Dict[int, float]:
    """Each step's own iteration time from nerfstudio's running mean over the last ``buffer_size`` steps.

    The buffer starts empty at the process's first step, so the mean of step k (k-th logged, from 0) is over
    min(k + 1, buffer_size) steps. Only the run of consecutive steps from the first is undone (a gap loses the
    buffer's contents)."""
    steps = sorted(running_means)
    out: Dict[int, float] = {}
    own: List[float] = []
    for k, step in enumerate(steps):
        if k > 0 and step != steps[k - 1] + 1:
            break
        if k < buffer_size:
            total = running_means[step] * (k + 1)
            value = total - (running_means[steps[k - 1]] * k if k else 0.0)
        else:
            value = buffer_size * (running_means[step] - running_means[steps[k - 1]]) + own[k - buffer_size]
        own.append(value)
        out[step] = value
    return out


def parse_window(text: str) -> Tuple[int, int]:
    """``"a:b"`` -> (a, b): steps a .. b-1."""
    try:
        start, end = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"window {text!r}: expected START:END, e.g. 200:400") from None
    if start < 1 or end <= start:
        raise ValueError(f"window {text!r}: needs 1 <= START < END (step START-1 must have ended)")
    return start, end


def choose_window(ends: Dict[int, float], window: Tuple[int, int]) -> Tuple[int, int, bool]:
    """The measured window: ``window`` clipped to the logged steps; the second half of the run if it did not reach
    the window's start. Returns (start, end, clipped)."""
    first, last = min(ends), max(ends)
    start, end = window
    clipped = end > last + 1
    end = min(end, last + 1)
    if start - 1 < first or end - start < 1:
        start = max(first + 1, first + (last + 1 - first) // 2)
        end, clipped = last + 1, True
    return start, end, clipped


# ---------------------------------------------------------------------------------------------- nvidia-smi samples
@dataclass(frozen=True)
class GpuSample:
    time: float
    """Seconds since the epoch (nvidia-smi's local timestamp)."""
    utilization: Optional[float]
    """Percent."""
    memory_mib: Optional[float]


def _number(text: str) -> Optional[float]:
    text = text.strip().split(" ")[0]
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def read_smi_csv(text: str) -> List[GpuSample]:
    """Samples of ``nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv[,nounits] -lms N``.

    Columns are found by the header's names (any order); lines that do not parse (a header repeated, a line cut by
    the kill) are skipped."""
    samples: List[GpuSample] = []
    columns: Optional[Dict[str, int]] = None
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if not line.strip():
            continue
        if cells[0].startswith("timestamp"):
            columns = {cell.split(" ")[0]: i for i, cell in enumerate(cells)}
            continue
        if columns is None or len(cells) < len(columns):
            continue
        try:
            stamp = datetime.strptime(cells[columns["timestamp"]], "%Y/%m/%d %H:%M:%S.%f").timestamp()
        except (KeyError, ValueError):
            continue
        util = _number(cells[columns["utilization.gpu"]]) if "utilization.gpu" in columns else None
        memory = _number(cells[columns["memory.used"]]) if "memory.used" in columns else None
        samples.append(GpuSample(stamp, util, memory))
    return samples


def gpu_busy(samples: Sequence[GpuSample], start: float, end: float) -> Dict[str, Optional[float]]:
    """Mean utilization and peak memory of the samples taken in [start, end] (wall-clock seconds)."""
    inside = [s for s in samples if start <= s.time <= end]
    util = [s.utilization for s in inside if s.utilization is not None]
    memory = [s.memory_mib for s in inside if s.memory_mib is not None]
    return {
        "samples": len(inside),
        "busy_mean_percent": statistics.fmean(util) if util else None,
        "busy_median_percent": statistics.median(util) if util else None,
        "memory_max_mib": max(memory) if memory else None,
    }


# ---------------------------------------------------------------------------------------------- one run
def analyse(scalars: Dict[str, List[Scalar]], window: Tuple[int, int] = (200, 400), subjects_per_step: int = 1,
            buffer_size: int = 20, smi: Optional[Sequence[GpuSample]] = None) -> Dict[str, object]:
    """The numbers of one run over its window (see the module docstring)."""
    ends = step_end_times(scalars)
    start, end, clipped = choose_window(ends, window)
    steps = [s for s in range(start, end) if s in ends and s - 1 in ends]
    durations = [ends[s] - ends[s - 1] for s in steps]
    result: Dict[str, object] = {
        "window_requested": list(window),
        "window": [start, end],
        "window_clipped": clipped,
        "first_step": min(ends),
        "last_step": max(ends),
        "steps_logged": len(ends),
        "steps_in_window": len(steps),
        "subjects_per_step": subjects_per_step,
    }
    if not steps:
        return result | {"ms_per_step": None}
    complete = start - 1 in ends and end - 1 in ends
    wall_ms = 1000 * ((ends[end - 1] - ends[start - 1]) / (end - start) if complete else statistics.fmean(durations))
    own = iteration_times({e.step: e.value for e in scalars[ITER_TAG]}, buffer_size)
    own_in = [own[s] for s in range(start, end) if s in own]
    evals = sorted({e.step for tag, events in scalars.items() if tag.startswith(EVAL_PREFIX) for e in events
                    if start <= e.step < end})
    result |= {
        "ms_per_step": wall_ms,
        "ms_per_step_median": 1000 * statistics.median(durations),
        "ms_per_step_max": 1000 * max(durations),
        "ms_per_sample": wall_ms / subjects_per_step,
        "iteration_ms_per_step": 1000 * statistics.fmean(own_in) if len(own_in) == end - start else None,
        "eval_steps_in_window": evals,
        "wall_window": [ends[start - 1] if start - 1 in ends else ends[steps[0] - 1], ends[steps[-1]]],
    }
    if smi is not None:
        result["gpu"] = gpu_busy(smi, *result["wall_window"])
    return result


def analyse_run(run: Path, window: Tuple[int, int] = (200, 400), subjects_per_step: int = 1, buffer_size: int = 20,
                smi: Optional[Path] = None) -> Dict[str, object]:
    """:func:`analyse` of a run folder (or event file) and an optional nvidia-smi CSV file."""
    samples = read_smi_csv(Path(smi).read_text(errors="replace")) if smi is not None else None
    return analyse(read_scalars(run), window, subjects_per_step, buffer_size, samples)


def format_result(name: str, result: Dict[str, object]) -> str:
    """One line for a console or a summary."""
    if result.get("ms_per_step") is None:
        return f"{name}: no complete step in the window (steps logged: {result.get('steps_logged')})"
    start, end = result["window"]
    line = (f"{name}: {result['ms_per_step']:.1f} ms/step (median {result['ms_per_step_median']:.1f}, "
            f"{result['ms_per_sample']:.1f} ms/sample at {result['subjects_per_step']} per step) over steps "
            f"{start}-{end - 1}")
    if result.get("window_clipped"):
        line += f" (window clipped: last step {result['last_step']})"
    if result.get("iteration_ms_per_step") is not None:
        line += f"; train iteration {result['iteration_ms_per_step']:.1f} ms"
    gpu = result.get("gpu")
    if isinstance(gpu, dict) and gpu.get("busy_mean_percent") is not None:
        line += f"; GPU busy {gpu['busy_mean_percent']:.0f}% ({gpu['samples']} samples), {gpu['memory_max_mib']:.0f} MiB"
    return line


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="ns-train run folder (or its events.out.tfevents.* file)")
    parser.add_argument("--window", default="200:400", help="steps START:END measured (END excluded)")
    parser.add_argument("--smi", type=Path, help="nvidia-smi CSV sampled during the run (with a timestamp column)")
    parser.add_argument("--subjects-per-step", type=int, default=1, help="the run's --pipeline.datamanager.subjects-per-step")
    parser.add_argument("--buffer-size", type=int, default=20, help="the run's --logging.max-buffer-size")
    parser.add_argument("--json-path", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    try:
        window = parse_window(args.window)
        result = analyse_run(args.run, window, args.subjects_per_step, args.buffer_size, args.smi)
    except (OSError, KeyError, ValueError) as err:
        raise SystemExit(f"ns_train_timing: {err.args[0] if isinstance(err, KeyError) else err}") from None
    print(format_result(str(args.run), result))
    if args.json_path is not None:
        args.json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
