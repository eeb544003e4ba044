"""The recipe of the pretrained models that ship in the package (``gmnerf-pretrained``).

Three steps, each skipped when its output exists:

1. ``world``: generate the training world with ``gmnerf-synth`` (320 people, rigs of 6 to 16 cameras, varied
   distances, heights, zoom and aspect, varied lighting and body shapes, proxies misfit from exact to 0.08 rad of pose
   noise with shape error and offsets, masks off by up to a pixel; 256 px for ``gm-nerf-small``, 512 px for
   ``gm-nerf``). Seed 100: the evaluation suite uses other seeds.
2. ``train``: ``ns-train <method>`` on it with the default misfit-robust training (proxy jitter, 3 to 6 source
   views), ``--steps`` steps with the learning-rate decay stretched over them.
3. ``export``: the final checkpoint's model weights as an fp16 state dict plus a JSON recipe card, into
   ``gmnerf_ns/assets/pretrained/<method>.{pt,json}``.

Usage (gm-nerf-small on 2 CPU cores: a few minutes for the world, then about 0.25 s per step)::

    python scripts/train_pretrained.py                   # the shipped gm-nerf-small: 40,000 steps, 320 people
    python scripts/train_pretrained.py --only export     # re-export a finished run
    python scripts/train_pretrained.py --method gm-nerf --world data/world-512 --device cuda --steps 40000

Run again with the same options, a stopped run resumes from its newest checkpoint, exactly as if never stopped;
``train_seconds`` sums the sessions. Under ``nice -n 19`` it takes only the CPU time other work leaves.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import tyro

ROOT = Path(__file__).resolve().parent.parent
WORLD_OPTIONS = (
    "--num-cameras 6 --max-num-cameras 16 --num-frames 3 "
    "--camera-distance 2.2 4.2 --camera-height 0.3 2.6 --zoom-out 0.75 1.0 --aspect 0.8 1.25 --light-variety 1 "
    "--shape-variety 0.5 --proxy-pose-noise 0.08 --proxy-shape-error 0.25 --proxy-offset 0.03 --misfit-per-subject "
    "--mask-error 1 --seed 100"
)
"""``gmnerf-synth`` options of the training world, besides its numbers of people and its resolution."""
RESOLUTIONS = {"gm-nerf-small": 256, "gm-nerf": 512}
"""Image height of each method's training world: the resolution the method renders at by default."""


@dataclass
class Recipe:
    """Generate the training world, train the method on it, export the shipped weights."""

    method: Literal["gm-nerf-small", "gm-nerf"] = "gm-nerf-small"
    """Method to pretrain (gm-nerf: 512-px world, for a GPU)."""
    world: Path = Path("data/world")
    """Where the training world is (or is generated)."""
    runs: Path = Path("outputs")
    """ns-train output folder."""
    steps: int = 40000
    """Training steps (the learning rate decays over all of them)."""
    subjects: int = 320
    """People in the training world."""
    test_subjects: int = 8
    """Of these, people held out (evaluated during training, never trained on)."""
    seed: int = 0
    """Training sampler seed."""
    workers: int = 2
    """gmnerf-synth worker processes."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Training device (ns-train's --machine.device-type)."""
    steps_per_save: int = 500
    """Steps between checkpoints (a stopped run resumes from the newest)."""
    resume_from: Optional[Path] = None
    """A checkpoint of this run trained elsewhere (the GPU kit returns one) to continue from, when it is newer than
    the run's own newest; for one returned in parts, the first (``step-N.ckpt.part-0``)."""
    only: Optional[Literal["world", "train", "export", "take"]] = None
    """Run one step only; ``take`` only puts --resume-from into the run's checkpoints (to carry it back to the GPU kit
    without training here)."""
    export_to: Path = ROOT / "gmnerf_ns" / "assets" / "pretrained"
    """Folder of the shipped weights and recipe card."""

    @property
    def run_dir(self) -> Path:
        return self.runs / "pretrained" / self.method / f"world-seed{self.seed}-{self.steps}"

    @property
    def world_options(self) -> str:
        return (f"--num-subjects {self.subjects} --num-test-subjects {self.test_subjects} "
                f"--resolution {RESOLUTIONS[self.method]} {WORLD_OPTIONS}")

    def train_command(self, resume: bool = False) -> list:
        """The ns-train command; ``resume`` continues the run from its newest checkpoint (exact resume)."""
        decay = [f"--optimizers.{group}.scheduler.max-steps {self.steps}" for group in ("encoder", "fields", "renderer")]
        return shlex.split(
            f"ns-train {self.method} --data {self.world} --output-dir {self.runs} --experiment-name pretrained "
            f"--timestamp world-seed{self.seed}-{self.steps} --max-num-iterations {self.steps} "
            f"--steps-per-save {self.steps_per_save} "
            f"--steps-per-eval-batch 500 --steps-per-eval-image 2500 --vis tensorboard "
            f"--pipeline.datamanager.seed {self.seed} " + " ".join(decay)
            + (f" --machine.device-type {self.device}" if (self.device, self.method) != ("cpu", "gm-nerf-small") else "")
            + (f" --load-dir {self.run_dir / 'nerfstudio_models'}" if resume else "")
        )

    def checkpoints(self) -> list:
        """The run's checkpoints, oldest first."""
        return sorted((self.run_dir / "nerfstudio_models").glob("step-*.ckpt"), key=checkpoint_step)

    def take_checkpoint(self) -> None:
        """Copies :attr:`resume_from` (joining its parts) into the run's checkpoints when it is newer than the run's
        newest, with the ``train_seconds.txt`` beside it (the training time up to that checkpoint, summed over
        machines)."""
        if self.resume_from is None:
            return
        if not self.resume_from.is_file():
            sys.exit(f"--resume-from {self.resume_from}: file not found")
        name, parts = checkpoint_parts(self.resume_from)
        own = self.checkpoints()
        if own and checkpoint_step(own[-1]) >= checkpoint_step(Path(name)):
            print(f"{self.resume_from}: the run's own {own[-1].name} is as new; kept", flush=True)
            return
        (self.run_dir / "nerfstudio_models").mkdir(parents=True, exist_ok=True)
        target = self.run_dir / "nerfstudio_models" / name
        partial = target.with_suffix(".partial")
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as piece:
                    shutil.copyfileobj(piece, out)
        partial.replace(target)  # never a half-joined checkpoint under a checkpoint's name
        seconds = self.resume_from.parent / "train_seconds.txt"  # the time it took, sent beside it
        if seconds.is_file():
            shutil.copyfile(seconds, self.run_dir / "train_seconds.txt")


def checkpoint_step(path: Path) -> int:
    """The step in a checkpoint's name (``step-000001500.ckpt``)."""
    match = re.fullmatch(r"step-(\d+)\.ckpt", path.name)
    if match is None:
        sys.exit(f"{path}: not a checkpoint name (step-<number>.ckpt)")
    return int(match.group(1))


def checkpoint_parts(path: Path) -> tuple:
    """(checkpoint name, files holding it in order) of a checkpoint file or of the first of its parts
    (``step-N.ckpt.part-0``, as the GPU kit returns a checkpoint over 16 MiB)."""
    match = re.fullmatch(r"(step-\d+\.ckpt)\.part-0", path.name)
    if match is None:
        return path.name, [path]
    parts = sorted(path.parent.glob(f"{match.group(1)}.part-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    if [int(p.name.rsplit("-", 1)[1]) for p in parts] != list(range(len(parts))):
        sys.exit(f"--resume-from {path}: parts missing (found {', '.join(p.name for p in parts)})")
    return match.group(1), parts


class TrainingClock:
    """Adds this session's training time to ``train_seconds.txt`` every :data:`CLOCK_SECONDS` and at the end, so the
    total survives a session that is killed; a resumed run goes on counting from the file."""

    def __init__(self, path: Path):
        self.path, self.stop = path, threading.Event()

    def write(self) -> None:
        if self.path.parent.is_dir():  # ns-train creates the run folder
            self.path.write_text(f"{self.before + time.time() - self.start:.0f}\n")

    def tick(self) -> None:
        while not self.stop.wait(CLOCK_SECONDS):
            self.write()

    def __enter__(self) -> "TrainingClock":
        self.before = float(self.path.read_text()) if self.path.exists() else 0.0
        self.start = time.time()
        threading.Thread(target=self.tick, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.write()


CLOCK_SECONDS = 60.0
"""How often :class:`TrainingClock` writes the time so far."""


TOOLS = {"ns-train": "nerfstudio.scripts.train", "gmnerf-synth": "gmnerf_ns.cli.synth"}
"""Tools run as modules of this interpreter, whatever the console scripts' shebangs say."""


def run(command: list) -> None:
    """Runs a tool; SIGTERM is passed on to it, so a time limit on this script stops the training too."""
    print("$", shlex.join(command), flush=True)
    process = subprocess.Popen([sys.executable, "-m", TOOLS[command[0]], *command[1:]])
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
    try:
        code = process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code != 0:
        raise subprocess.CalledProcessError(code, command)


def main(recipe: Recipe) -> None:
    if recipe.only == "take":
        recipe.take_checkpoint()
        return
    if recipe.only in (None, "world"):
        run(["gmnerf-synth", "--out", str(recipe.world), *shlex.split(recipe.world_options), "--workers",
             str(recipe.workers), "--skip-if-complete"])
    if recipe.only in (None, "train"):
        recipe.take_checkpoint()
        with TrainingClock(recipe.run_dir / "train_seconds.txt"):
            run(recipe.train_command(resume=bool(recipe.checkpoints())))
    if recipe.only in (None, "export"):
        from gmnerf_ns.cli.pretrained import export_weights

        seconds = recipe.run_dir / "train_seconds.txt"
        checkpoints = recipe.checkpoints()
        if not seconds.exists() and checkpoints:  # an unfinished run: config.yml is written when training starts
            elapsed = checkpoints[-1].stat().st_mtime - (recipe.run_dir / "config.yml").stat().st_mtime
            seconds.write_text(f"{elapsed:.0f}\n")
        card = {
            "recipe": "scripts/train_pretrained.py",
            "command": f"python scripts/train_pretrained.py --method {recipe.method} --steps {recipe.steps} "
                       f"--subjects {recipe.subjects} --seed {recipe.seed}",
            "world": f"gmnerf-synth {recipe.world_options}",
            "train": shlex.join(Recipe(method=recipe.method, steps=recipe.steps, subjects=recipe.subjects,
                                       seed=recipe.seed, device=recipe.device).train_command()),
            "train_seconds": int(float(seconds.read_text())) if seconds.exists() else None,
            "machine": "2 CPU cores (shared), torch CPU" if recipe.device == "cpu" else f"torch {recipe.device}",
        }
        path = export_weights(recipe.run_dir / "config.yml", recipe.export_to, card, method=recipe.method)
        print(json.dumps(card, indent=2))
        print(f"exported {path}")


if __name__ == "__main__":
    try:
        main(tyro.cli(Recipe, description=__doc__.split("\n\n")[0]))
    except subprocess.CalledProcessError as err:
        sys.exit(f"train_pretrained: {err.cmd[0]} stopped with exit status {err.returncode}")
    sys.exit(0)
