"""Pictures of the fit for ``gmnerf-doctor``: the posed proxy's silhouette drawn over each camera's view.

A view is shown as the model gets it (cropped, resized, background removed by the mask). The proxy is drawn in
green where it covers the view: its mesh rasterised with :func:`gmnerf_ns.geometry.rasterize.rasterize` when the
subject has faces, else its vertices splatted as small discs. The person's mask outline is drawn in magenta. The
intersection over union of the silhouette and the mask is printed on the picture and returned: a wrong calibration, a
swapped camera or a misfit body shows up as a low IoU. The proxy is the *naked* body while the mask is the clothed
person, so the IoU of a good fit is below 1, lower still for loose clothes, long hair and real fits (docs/capture.md
gives typical values).
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np
import torch

from gmnerf_ns.data.human_record import ViewRecord
from gmnerf_ns.geometry.rasterize import rasterize

PROXY_COLOUR = np.array([40, 230, 60], dtype=np.float32)
"""RGB tint of the proxy's silhouette."""
MASK_COLOUR = (255, 0, 255)
"""RGB of the mask's outline."""


def proxy_silhouette(view: ViewRecord, vertices: np.ndarray, faces: Optional[np.ndarray]) -> np.ndarray:
    """Bool (H, W) silhouette of the posed proxy in ``view`` (at ``view.out_size``).

    Args:
        view: the camera (its model-ready intrinsics and OpenCV world-to-camera pose).
        vertices: (V, 3) posed proxy vertices in world metres.
        faces: (F, 3) proxy faces, or None to splat the vertices as discs about as wide as their spacing.
    """
    width, height = view.out_size
    verts_cam = vertices.astype(np.float64) @ np.asarray(view.R).T + np.asarray(view.T).reshape(1, 3)
    K = view.output_intrinsics
    if faces is not None and len(faces):
        rast = rasterize(torch.from_numpy(verts_cam).float(), torch.from_numpy(np.asarray(faces)).long(),
                         torch.from_numpy(K).float(), height, width)
        return (rast.face_id >= 0).numpy()
    front = verts_cam[verts_cam[:, 2] > 1e-3]
    silhouette = np.zeros((height, width), dtype=np.uint8)
    if not len(front):
        return silhouette.astype(bool)
    uv = front @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    span = np.clip(uv.max(0) - uv.min(0), 1.0, None)
    # Front and back vertices overlap in projection, so sqrt(box area / count) is about the gap between splats.
    radius = int(np.clip(np.ceil(np.sqrt(span[0] * span[1] / len(uv))), 1, max(1, height // 16)))
    x, y = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    silhouette[y[keep], x[keep]] = 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(silhouette, kernel) > 0


def mask_iou(silhouette: np.ndarray, mask: np.ndarray) -> float:
    """Intersection over union of two bool images (0 when both are empty)."""
    union = np.logical_or(silhouette, mask).sum()
    return float(np.logical_and(silhouette, mask).sum() / union) if union else 0.0


def overlay_image(image: np.ndarray, mask: np.ndarray, silhouette: np.ndarray, label: str = "") -> np.ndarray:
    """uint8 RGB (H, W, 3): ``image`` with the silhouette tinted green, the mask outlined in magenta and ``label``
    written in the top-left corner (on images at least 96 px high)."""
    out = image.astype(np.float32)
    out[silhouette] = 0.45 * out[silhouette] + 0.55 * PROXY_COLOUR
    out = out.round().clip(0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    thickness = max(1, image.shape[0] // 256)
    cv2.drawContours(out, contours, -1, MASK_COLOUR, thickness)
    if label and image.shape[0] >= 96:
        scale = image.shape[0] / 640
        for colour, weight in (((0, 0, 0), 3 * thickness), ((255, 255, 255), thickness)):  # outlined text
            cv2.putText(out, label, (4, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, weight,
                        cv2.LINE_AA)
    return out


def view_overlay(view: ViewRecord, image: np.ndarray, mask: np.ndarray, vertices: np.ndarray,
                 faces: Optional[np.ndarray]) -> Tuple[np.ndarray, float]:
    """(overlay picture, IoU of the proxy's silhouette with ``mask``) of one loaded view."""
    silhouette = proxy_silhouette(view, vertices, faces)
    iou = mask_iou(silhouette, mask)
    return overlay_image(image, mask, silhouette, f"{view.camera_name}  IoU {iou:.2f}"), iou
