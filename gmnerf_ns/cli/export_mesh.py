"""``gmnerf-export-mesh``: the surface of one subject-frame as a .ply/.obj mesh (marching cubes on the density).

The density is sampled on a grid over the subject-frame's padded proxy box, only inside the proxy occupancy that the
renderer also uses (0 elsewhere), and the surface is extracted at ``--threshold`` (1/m) with
``skimage.measure.marching_cubes``. Vertex colours (on by default) are the field's colour seen along the normal.

Example::

    gmnerf-export-mesh --load-config outputs/.../config.yml --subject subject_002 --frame 0 --output-path mesh.ply
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro
from nerfstudio.utils.eval_utils import eval_setup
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.cli.run_config import require_config
from gmnerf_ns.core.checkpoints import full_disk_ends
from gmnerf_ns.eval import geometry
from gmnerf_ns.training.conditioning import ConditioningError, choose_frames, choose_subject


@dataclass
class ExportMesh:
    """Export the surface of a subject-frame as a mesh."""

    load_config: Path
    """config.yml of a gm-nerf run."""
    output_path: Path = Path("mesh.ply")
    """Output mesh: .ply or .obj."""
    subject: Optional[str] = None
    """Subject: its name or a unique suffix such as 387 (default: the first held-out subject)."""
    frame: Optional[int] = None
    """Frame (pose) (default: the subject's first frame)."""
    resolution: int = 128
    """Grid cells along the longest side of the proxy box."""
    threshold: float = geometry.DEFAULT_DENSITY_THRESHOLD
    """Density iso-level of the surface (1/m)."""
    colours: bool = True
    """Store per-vertex colours from the field."""
    force: bool = False
    """Overwrite an existing output file."""

    def main(self) -> Path:
        require_config(self.load_config, "gmnerf-export-mesh")
        if self.output_path.suffix.lower() not in (".ply", ".obj"):
            raise SystemExit(f"gmnerf-export-mesh: {self.output_path} must end in .ply or .obj")
        if self.output_path.exists() and not self.force:
            raise SystemExit(f"gmnerf-export-mesh: {self.output_path} exists; pass --force to overwrite it")
        _, pipeline, _, _ = eval_setup(self.load_config, test_mode="test")
        dm = pipeline.datamanager
        try:
            subject = choose_subject(dm, self.subject)
            (frame_id,) = choose_frames(subject, self.frame)
        except ConditioningError as err:
            raise SystemExit(f"gmnerf-export-mesh: {err}") from err
        sources = dm.source_views(subject.index, frame_id)
        try:
            mesh = geometry.model_mesh(pipeline.model, sources, self.resolution, self.threshold, self.colours)
        except geometry.GeometryError as err:
            raise SystemExit(f"gmnerf-export-mesh: {subject.name} frame {frame_id}: {err}") from err
        geometry.write_mesh(mesh, self.output_path)
        CONSOLE.log(f"{subject.label} frame {frame_id}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces "
                    f"-> {self.output_path}")
        return self.output_path


def entrypoint() -> None:
    """Console script ``gmnerf-export-mesh``."""
    tyro.extras.set_accent_color("bright_yellow")
    command = tyro.cli(ExportMesh)
    with full_disk_ends("gmnerf-export-mesh"):
        command.main()


if __name__ == "__main__":
    entrypoint()
