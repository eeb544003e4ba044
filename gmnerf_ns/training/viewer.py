"""nerfstudio viewer controls for GM-NeRF: which subject-frame to condition on, its source cameras, the body proxy.

The viewer sends bare cameras, so the model renders its default subject-frame (``model.default_source_key``, the
first held-out subject's first frame unless changed). :class:`GMNeRFViewerControls` is an ``nn.Module`` without
parameters that the pipeline holds as an attribute; the viewer finds its ``ViewerElement``s and ``ViewerControl`` by
walking the pipeline (``nerfstudio.viewer.utils.parse_object``) and shows them under "Custom Elements":

* **Subject** / **Frame** dropdowns: set ``model.default_source_key``, drop the cached encoding, re-render;
* **Show source cameras**: the m source views of the chosen subject-frame as orange frustums with their images;
* **Show body proxy**: the posed proxy as a translucent mesh (or points when the template has no faces).

When a browser connects, its camera is placed in front of the person (towards source camera 0), far enough to see all
of it, with the dataset's up direction, so the first render shows the person rather than the inside of its box.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Dict, List, Optional

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import ViewerCheckbox, ViewerControl, ViewerDropdown
from torch import nn

from gmnerf_ns.geometry.camera_math import opencv_w2c_to_nerfstudio_c2w
from gmnerf_ns.geometry.cameras import Framing, framing, viewer_pose
from gmnerf_ns.training.conditioning import SubjectChoice, available_subjects, set_default_condition

VISER_SCALE = 10.0
"""nerfstudio's ``VISER_NERFSTUDIO_SCALE_RATIO``: viser scene units per world metre."""
SOURCE_COLOUR = (255, 140, 0)
PROXY_COLOUR = (90, 200, 255)


@dataclasses.dataclass
class _Refs:
    """Plain holder, so the model and datamanager do not become submodules of the controls (no duplicate state)."""

    model: Any
    datamanager: Any


class _SceneControl(ViewerControl):
    """Gets the viser server from the viewer (``ViewerControl._setup``) and draws the overlays."""

    def __init__(self, owner: "GMNeRFViewerControls"):
        self.owner = owner

    def _setup(self, viewer) -> None:
        super()._setup(viewer)
        self.owner._on_viewer_ready(self.viser_server)


class GMNeRFViewerControls(nn.Module):
    """See the module docstring. Build it with the pipeline's model and datamanager."""

    def __init__(self, model, datamanager):
        super().__init__()
        self._refs = _Refs(model, datamanager)
        self._lock = threading.RLock()  # GUI callbacks run on viser's thread pool; scene updates must not interleave
        self._server = None
        self._handles: List[Any] = []
        self._framing: Optional[Framing] = None
        choices = available_subjects(datamanager)
        self._choices: Dict[str, SubjectChoice] = {c.label: c for c in choices}
        key = model.default_source_key or (choices[0].index, choices[0].frame_ids[0])
        current = next((c for c in choices if c.index == key[0]), choices[0])
        frame = key[1] if key[1] in current.frame_ids else current.frame_ids[0]
        # nerfstudio lists the elements in alphabetical order of their attribute names: person, pose, proxy, sources.
        self.person = ViewerDropdown("Subject", current.label, list(self._choices), cb_hook=self._on_subject,
                                     hint="Person to render: the model is conditioned on this subject's source views")
        self.pose = ViewerDropdown("Frame", str(frame), [str(f) for f in current.frame_ids], cb_hook=self._on_frame,
                                   hint="Frame (pose) of the subject to condition on")
        self.proxy = ViewerCheckbox("Show body proxy", False, cb_hook=self._on_overlay,
                                    hint="The posed body model (geometry proxy) of the chosen frame")
        self.sources = ViewerCheckbox("Show source cameras", True, cb_hook=self._on_overlay,
                                      hint="The m source views the render is conditioned on")
        self.scene = _SceneControl(self)

    # ------------------------------------------------------------------ state
    @property
    def choice(self) -> SubjectChoice:
        return self._choices[self.person.value]

    @property
    def frame_id(self) -> int:
        return int(self.pose.value)

    def _apply(self) -> None:
        with self._lock:
            set_default_condition(self._refs.model, self.choice.index, self.frame_id)
            self._draw()

    # ------------------------------------------------------------------ GUI callbacks (run under the train lock)
    def _on_subject(self, _element) -> None:
        choice = self.choice
        options = [str(f) for f in choice.frame_ids]
        # viser keeps the current frame when the new subject has it, else selects the first (without callbacks).
        self.pose.set_options(options)
        if self.pose.gui_handle is None and self.pose.value not in options:  # not installed in a viewer
            self.pose.value = options[0]
        self._apply()

    def _on_frame(self, _element) -> None:
        if str(self.pose.value) in {str(f) for f in self.choice.frame_ids}:
            self._apply()

    def _on_overlay(self, _element) -> None:
        self._draw()

    # ------------------------------------------------------------------ scene
    def _on_viewer_ready(self, server) -> None:
        self._server = server
        self._apply()

        @server.on_client_connect
        def _(client) -> None:
            if self._framing is None:
                return
            eye, target = viewer_pose(self._framing, float(client.camera.fov))
            with client.atomic():
                client.camera.up_direction = tuple(self._framing.up)
                client.camera.position = tuple(eye * VISER_SCALE)
                client.camera.look_at = tuple(target * VISER_SCALE)

    def _draw(self) -> None:
        """(Re)draws the source cameras and the proxy of the current subject-frame."""
        if self._server is None:
            return
        with self._lock:
            for handle in self._handles:
                handle.remove()
            self._handles = []
            try:
                sources = self._refs.datamanager.source_views(self.choice.index, self.frame_id)
            except Exception as err:  # a broken frame must not take the viewer down; say why nothing is drawn
                CONSOLE.log(f"[yellow]viewer: cannot load the source views of {self.choice.name} frame "
                            f"{self.frame_id}: {err}")
                return
            self._framing = framing(sources)
            scene = self._server.scene
            if self.sources.value:
                self._handles += draw_source_cameras(scene, sources, scale=0.1 * self._framing.radius * VISER_SCALE)
            if self.proxy.value:
                self._handles.append(draw_proxy(scene, sources))


def draw_source_cameras(scene, sources, scale: float = 3.0, thumbnail_height: int = 100) -> List[Any]:
    """Orange frustums (with the masked source images) at the source cameras; returns the handles.

    ``scale`` is the frustum size in viser units (nerfstudio draws 10 per metre).
    """
    import torch.nn.functional as F
    import viser.transforms as vtf

    handles = []
    height, width = sources.image_size
    images = (sources.images * sources.masks).cpu()
    if height > thumbnail_height:
        images = F.interpolate(images, size=(thumbnail_height, max(1, round(width * thumbnail_height / height))),
                               mode="area")
    for k in range(sources.num_views):
        c2w = opencv_w2c_to_nerfstudio_c2w(sources.rotations[k].cpu().numpy(), sources.translations[k].cpu().numpy())
        rotation = vtf.SO3.from_matrix(c2w[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)  # OpenGL -> viser's OpenCV
        fy = float(sources.intrinsics[k, 1, 1])
        image = (images[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        handles.append(scene.add_camera_frustum(
            name=f"/gmnerf/source_cameras/{k}",
            fov=float(2 * np.arctan(0.5 * height / fy)),
            aspect=width / height,
            scale=scale,
            color=SOURCE_COLOUR,
            image=image,
            wxyz=rotation.wxyz,
            position=c2w[:3, 3] * VISER_SCALE,
        ))
    return handles


def draw_proxy(scene, sources) -> Any:
    """The posed proxy: a translucent mesh when faces are known, else its vertices as points."""
    vertices = sources.vertices.cpu().numpy() * VISER_SCALE
    if sources.faces is not None:
        return scene.add_mesh_simple("/gmnerf/proxy", vertices=vertices, faces=sources.faces.cpu().numpy(),
                                     color=PROXY_COLOUR, opacity=0.4, side="double")
    return scene.add_point_cloud("/gmnerf/proxy", points=vertices, colors=PROXY_COLOUR, point_size=0.05)
