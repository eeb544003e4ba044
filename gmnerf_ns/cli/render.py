"""``gmnerf-render``: ns-render's subcommands for a conditioned model, plus an orbit around the person.

GM-NeRF renders a person from one subject-frame's source views. nerfstudio's ``ns-render`` builds its cameras
without our ``subject_index``/``frame_id`` metadata, so plain ``ns-render camera-path`` / ``interpolate`` render the
model's default subject-frame (the first held-out subject's first frame); ``ns-render spiral`` cannot run at all
(it asserts a ray-batch datamanager, which a patch-rendering model does not have); ``ns-render dataset`` uses the
dataset cameras, which carry their own subject-frame.

``gmnerf-render`` subclasses ns-render's commands and attaches the metadata to every camera:

* ``--subject NAME`` (a unique suffix such as ``387`` works) and ``--frame ID`` choose the subject-frame; an unknown
  one fails with the list of available subjects/frames;
* ``--frames 0 30 60 ...`` or ``--all-frames`` condition the cameras of the path on a frame sequence, spread over
  the path: a free-viewpoint video (the camera moves while the person moves);
* ``camera-path``, ``interpolate``, ``spiral``, ``dataset`` take ns-render's options; ``interpolate`` and ``spiral``
  start from the chosen subject-frame's dataset cameras; ``orbit`` circles the person at the dataset cameras'
  distance and can save its path as a ``camera_path.json`` for the viewer or ``ns-render camera-path``;
* existing outputs are not overwritten without ``--force``.

Examples::

    gmnerf-render orbit --load-config outputs/.../config.yml --subject subject_002 --frame 0 --output-path orbit.mp4
    gmnerf-render orbit --load-config ... --all-frames --num-views 120 --output-path fvv.mp4   # free-viewpoint video
    gmnerf-render camera-path --load-config ... --camera-path-filename path.json --subject 387 --frame 30
    gmnerf-render interpolate --load-config ... --subject 387 --output-format images
    gmnerf-render dataset --load-config ... --split test --output-path renders
"""

from __future__ import annotations

import json
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Literal, Optional, Tuple, Union

import numpy as np
import tyro
from nerfstudio.cameras.camera_paths import get_interpolated_camera_path, get_spiral_path
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.scripts import render as ns_render
from nerfstudio.utils.eval_utils import eval_setup
from nerfstudio.utils.rich_utils import CONSOLE
from typing_extensions import Annotated

from gmnerf_ns.cli.run_config import require_config
from gmnerf_ns.core.checkpoints import full_disk_ends
from gmnerf_ns.geometry.cameras import framing, orbit_cameras
from gmnerf_ns.training.conditioning import (
    ConditioningError,
    SubjectChoice,
    choose_frames,
    choose_subject,
    set_default_condition,
    with_condition,
)


@dataclass
class Conditioning:
    """Options shared by every ``gmnerf-render`` command that builds its own cameras."""

    subject: Optional[str] = None
    """Subject to render: its name, or a unique suffix such as 387 (default: the first held-out subject)."""
    frame: Optional[int] = None
    """Frame (pose) to condition on (default: the subject's first frame)."""
    frames: Optional[Tuple[int, ...]] = None
    """A frame sequence spread over the camera path (free-viewpoint video); overrides --frame."""
    all_frames: bool = False
    """Spread all of the subject's frames over the path (free-viewpoint video of the whole sequence)."""
    force: bool = False
    """Overwrite existing outputs."""

    def resolve(self, pipeline) -> Tuple[SubjectChoice, Tuple[int, ...]]:
        """The chosen subject and frames; exits with the list of available ones when they do not exist."""
        try:
            subject = choose_subject(pipeline.datamanager, self.subject)
            return subject, choose_frames(subject, self.frame, self.frames, self.all_frames)
        except ConditioningError as err:
            raise SystemExit(f"gmnerf-render: {err}") from err

    def condition(self, pipeline, cameras: Cameras) -> Cameras:
        """Attaches the subject-frame(s) to ``cameras`` and makes the first one the model's default."""
        subject, frames = self.resolve(pipeline)
        set_default_condition(pipeline.model, subject.index, frames[0])
        seq = f"frames {frames[0]}..{frames[-1]} ({len(frames)})" if len(frames) > 1 else f"frame {frames[0]}"
        CONSOLE.log(f"conditioning {cameras.size} cameras on {subject.label}, {seq}")
        return with_condition(cameras, subject.index, frames)


FRAME_NAME = re.compile(r"^\d{5,}\.(png|jpg)$")
"""Image files ns-render's trajectory renderer writes into an image folder: ``00000.jpg``, ``00001.jpg``, ..."""


def remove_previous_frames(folder: Path) -> int:
    """Deletes the frames an earlier render wrote into ``folder`` (by ns-render's naming, :data:`FRAME_NAME`), so that
    a ``--force`` render with fewer views leaves none of them behind; other files stay. Returns how many went."""
    frames = [p for p in folder.iterdir() if p.is_file() and FRAME_NAME.match(p.name)] if folder.is_dir() else []
    for frame in frames:
        frame.unlink()
    return len(frames)


def check_outputs(output_path: Path, output_format: str, force: bool, load_config: Path) -> None:
    """Refuses to overwrite a rendered video or a non-empty image folder without ``--force`` (with it, an image
    folder's previous frames are deleted first); checks ffmpeg and the config."""
    require_config(load_config, "gmnerf-render")
    target = output_path if output_format == "video" else output_path.parent / output_path.stem
    exists = target.is_file() or (target.is_dir() and any(target.iterdir()))
    if exists and not force:
        raise SystemExit(f"gmnerf-render: {target} exists; pass --force to overwrite it or choose --output-path")
    if exists and output_format == "images":
        removed = remove_previous_frames(target)
        if removed:
            CONSOLE.log(f"--force: deleted the {removed} frame(s) of the previous render in {target}")
    if output_format == "video" and shutil.which("ffmpeg") is None:
        raise SystemExit("gmnerf-render: writing a video needs ffmpeg, which is not on PATH; install it "
                         "(e.g. apt-get install ffmpeg) or pass --output-format images")


@contextmanager
def _nerfstudio_render_hooks(conditioning: Conditioning) -> Iterator[None]:
    """Inside: ns-render's trajectory renderer conditions its cameras; its ffmpeg check is ours (above)."""
    original_render = ns_render._render_trajectory_video
    original_check = ns_render.install_checks.check_ffmpeg_installed

    def render(pipeline, cameras, *args, **kwargs):
        return original_render(pipeline, conditioning.condition(pipeline, cameras), *args, **kwargs)

    ns_render._render_trajectory_video = render
    ns_render.install_checks.check_ffmpeg_installed = lambda: None
    try:
        yield
    finally:
        ns_render._render_trajectory_video = original_render
        ns_render.install_checks.check_ffmpeg_installed = original_check


def _render_path(command: ns_render.BaseRender, pipeline, cameras: Cameras, seconds: float, output_format: str) -> None:
    """nerfstudio's trajectory renderer with ``command``'s options (the cameras are already conditioned)."""
    if command.camera_idx is not None:
        cameras.metadata = {**(cameras.metadata or {}), "cam_idx": command.camera_idx}
    ns_render._render_trajectory_video(
        pipeline,
        cameras,
        output_filename=command.output_path,
        rendered_output_names=command.rendered_output_names,
        rendered_resolution_scaling_factor=1.0 / command.downscale_factor,
        seconds=seconds,
        output_format=output_format,  # type: ignore[arg-type]
        image_format=command.image_format,
        jpeg_quality=command.jpeg_quality,
        depth_near_plane=command.depth_near_plane,
        depth_far_plane=command.depth_far_plane,
        colormap_options=command.colormap_options,
        render_nearest_camera=command.render_nearest_camera,
        check_occlusions=command.check_occlusions,
    )


def subject_frame_cameras(cameras: Cameras, subject_index: int, frame_id: int) -> Cameras:
    """The dataset cameras of one subject-frame; if the split has none, those of its first subject-frame (the rig)."""
    meta = cameras.metadata or {}
    if "subject_index" not in meta:
        return cameras
    subjects, frames = meta["subject_index"].view(-1), meta["frame_id"].view(-1)
    keep = (subjects == subject_index) & (frames == frame_id)
    if not keep.any():
        keep = (subjects == subjects[0]) & (frames == frames[0])
    picked = cameras[keep.nonzero(as_tuple=True)[0]]
    picked.metadata = None
    return picked


@dataclass
class GMNeRFRenderCameraPath(Conditioning, ns_render.RenderCameraPath):
    """Render a camera path from the viewer or Blender (camera_path.json) for a chosen subject-frame."""

    def main(self) -> None:
        video = self.output_format == "video" and str(self.output_path.suffix) == ""
        check_outputs(self.output_path.with_suffix(".mp4") if video else self.output_path, self.output_format,
                      self.force, self.load_config)
        if not self.camera_path_filename.is_file():
            raise SystemExit(f"gmnerf-render: camera path {self.camera_path_filename} not found")
        with _nerfstudio_render_hooks(self):
            super().main()


@dataclass
class GMNeRFRenderInterpolated(Conditioning, ns_render.RenderInterpolated):
    """Render a path interpolating between the chosen subject-frame's dataset cameras."""

    def main(self) -> None:
        check_outputs(self.output_path, self.output_format, self.force, self.load_config)
        _, pipeline, _, _ = eval_setup(self.load_config, eval_num_rays_per_chunk=self.eval_num_rays_per_chunk,
                                       test_mode="test")
        subject, frames = self.resolve(pipeline)
        dm = pipeline.datamanager
        dataset = dm.eval_dataset if self.pose_source == "eval" else dm.train_dataset
        keys = subject_frame_cameras(dataset.cameras, subject.index, frames[0])
        path = get_interpolated_camera_path(cameras=keys, steps=self.interpolation_steps, order_poses=self.order_poses)
        seconds = self.interpolation_steps * len(keys) / self.frame_rate
        _render_path(self, pipeline, self.condition(pipeline, path), seconds, self.output_format)


@dataclass
class GMNeRFSpiralRender(Conditioning, ns_render.SpiralRender):
    """Render a spiral around one of the chosen subject-frame's dataset cameras."""

    start_camera: int = 0
    """Which of the subject-frame's evaluation cameras the spiral starts from."""

    def main(self) -> None:
        check_outputs(self.output_path, self.output_format, self.force, self.load_config)
        _, pipeline, _, _ = eval_setup(self.load_config, eval_num_rays_per_chunk=self.eval_num_rays_per_chunk,
                                       test_mode="test")
        subject, frames = self.resolve(pipeline)
        cameras = subject_frame_cameras(pipeline.datamanager.eval_dataset.cameras, subject.index, frames[0])
        if not 0 <= self.start_camera < len(cameras):
            raise SystemExit(f"gmnerf-render: --start-camera {self.start_camera} out of range; "
                             f"{subject.name} has {len(cameras)} evaluation cameras")
        start = cameras[self.start_camera : self.start_camera + 1]
        path = get_spiral_path(start, steps=int(self.frame_rate * self.seconds), radius=self.radius)
        _render_path(self, pipeline, self.condition(pipeline, path), self.seconds, self.output_format)


@dataclass
class GMNeRFOrbitRender(Conditioning, ns_render.BaseRender):
    """Render an orbit around the person (the dataset cameras' distance and zoom, starting at source camera 0)."""

    output_path: Path = Path("renders/orbit.mp4")
    """Video file (or, with --output-format images, a folder named after its stem)."""
    num_views: int = 60
    """Cameras on the orbit (video frames)."""
    elevation: float = 10.0
    """Degrees above the person's mid height."""
    distance: Optional[float] = None
    """Distance from the person in metres (default: the source cameras' mean distance)."""
    resolution: Optional[int] = None
    """Image size in pixels (default: the dataset's image height)."""
    seconds: float = 5.0
    """Length of the video."""
    output_format: Literal["images", "video"] = "video"
    """How to save the renders."""
    save_camera_path: Optional[Path] = None
    """Also write the orbit as a nerfstudio camera_path.json (for the viewer or ns-render camera-path)."""

    def main(self) -> None:
        check_outputs(self.output_path, self.output_format, self.force, self.load_config)
        if self.save_camera_path is not None and self.save_camera_path.exists() and not self.force:
            raise SystemExit(f"gmnerf-render: {self.save_camera_path} exists; pass --force to overwrite it")
        _, pipeline, _, _ = eval_setup(self.load_config, eval_num_rays_per_chunk=self.eval_num_rays_per_chunk,
                                       test_mode="test")
        subject, frames = self.resolve(pipeline)
        person = framing(pipeline.datamanager.source_views(subject.index, frames[0]))
        cameras = orbit_cameras(person, self.num_views, self.elevation, self.resolution, self.distance)
        if self.save_camera_path is not None:
            write_camera_path(cameras, self.save_camera_path, self.seconds)
        _render_path(self, pipeline, self.condition(pipeline, cameras), self.seconds, self.output_format)


@dataclass
class GMNeRFDatasetRender(ns_render.DatasetRender):
    """Render every image of a split; each dataset camera is conditioned on its own subject-frame."""

    rendered_output_names: Optional[List[str]] = field(
        default_factory=lambda: ["gt-rgb", "rgb", "mask", "accumulation", "depth"])
    """Outputs to render: rgb, mask, accumulation, depth, rgb_lowres, raw-depth, gt-rgb, ..."""
    force: bool = False
    """Overwrite existing outputs."""

    def main(self) -> None:
        require_config(self.load_config, "gmnerf-render")
        for split in self.split.split("+"):
            target = self.output_path / split
            if target.is_dir() and any(target.iterdir()) and not self.force:
                raise SystemExit(f"gmnerf-render: {target} exists; pass --force to overwrite it or choose "
                                 "--output-path")
        super().main()


def write_camera_path(cameras: Cameras, path: Path, seconds: float) -> Path:
    """Writes ``cameras`` (one size, perspective) as the viewer's camera_path.json (``get_path_from_json`` format)."""
    height, width = int(cameras.height.view(-1)[0]), int(cameras.width.view(-1)[0])
    frames = []
    for i in range(cameras.size):
        c2w = np.eye(4)
        c2w[:3] = cameras.camera_to_worlds[i].cpu().numpy()
        fov = float(np.degrees(2.0 * np.arctan(0.5 * height / float(cameras.fy.view(-1)[i]))))
        frames.append({"camera_to_world": c2w.flatten().tolist(), "fov": fov, "aspect": width / height})
    data = {"camera_type": "perspective", "render_height": height, "render_width": width, "seconds": seconds,
            "fps": cameras.size / seconds, "camera_path": frames}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


Commands = Union[
    Annotated[GMNeRFRenderCameraPath, tyro.conf.subcommand(name="camera-path")],
    Annotated[GMNeRFRenderInterpolated, tyro.conf.subcommand(name="interpolate")],
    Annotated[GMNeRFSpiralRender, tyro.conf.subcommand(name="spiral")],
    Annotated[GMNeRFOrbitRender, tyro.conf.subcommand(name="orbit")],
    Annotated[GMNeRFDatasetRender, tyro.conf.subcommand(name="dataset")],
]


def entrypoint() -> None:
    """Console script ``gmnerf-render``."""
    tyro.extras.set_accent_color("bright_yellow")
    command = tyro.cli(Commands)
    with full_disk_ends("gmnerf-render"):
        command.main()


if __name__ == "__main__":
    entrypoint()

