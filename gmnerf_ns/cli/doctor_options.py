"""The options of ``gmnerf-doctor``: the dataset and run to check, how much of the data to sample, and where the
overlay pictures go."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional


@dataclass
class DoctorConfig:
    """Validate a dataset and the environment for gm-nerf."""

    data: Path = Path("synthetic")
    """Dataset to check, as given to ns-train (a folder, or a short name under $GMNERF_DATA)."""
    dataparser: str = "gmnerf-auto"
    """Dataparser, as named on the ns-train command line (gmnerf-auto: detected from --data like ns-train's default;
    or gmnerf-synthetic, zju-mocap, genebody, thuman2, multi-garment)."""
    protocol: Optional[str] = None
    """Protocol preset or YAML path (default: the dataparser's)."""
    method: str = "gm-nerf-small"
    """Method whose needs are checked (weights, device): gm-nerf, gm-nerf-small or gm-nerf-finetune."""
    sample_views: int = 48
    """Views decoded, spread over both splits (0 = all)."""
    sample_frames: int = 64
    """Frames whose proxy vertices are loaded, spread over both splits (0 = all)."""
    body_model_dir: Optional[Path] = None
    """Your SMPL/SMPL-X folder (smpl/SMPL_NEUTRAL.pkl, smplx/SMPLX_MALE.npz, ...), needed by gmnerf-render-scans and
    passed on to dataparsers that pose fitted parameters (easymocap, humman, mvhumannet, dna-rendering)."""
    device_type: Optional[Literal["auto", "cpu", "cuda", "mps"]] = None
    """The device the run will ask for, as ns-train's --machine.device-type (default: the method's; auto = CUDA when
    available, else the CPU)."""
    num_workers: Optional[int] = None
    """Background decoding threads the run will use (default: the method's)."""
    resolution: Optional[int] = None
    """Override the protocol's image height, as the dataparser's --resolution."""
    num_input_views: Optional[int] = None
    """Override the protocol's number of source views m, as the dataparser's --num-input-views."""
    overlay_dir: Optional[Path] = None
    """Folder for the overlay pictures (one PNG per camera: the proxy's silhouette in green over the view, the mask's
    outline in magenta); None = gmnerf_doctor/<dataset folder name> in the current folder."""
    overlay_subjects: int = 4
    """Subjects, spread over both splits, whose first frame gets overlay pictures and the IoU check (0 = none)."""
    iou_threshold: float = 0.5
    """Cameras whose proxy silhouette and mask have an intersection over union below this are flagged by name (the
    proxy is the naked body, so even a good fit is below 1; docs/capture.md gives typical values)."""
    force: bool = False
    """Overwrite the overlay pictures of an earlier run (otherwise they are kept and none are written)."""
