"""Reference for the rasteriser (:mod:`gmnerf_ns.geometry.rasterize`): a z-buffer loop, slow and simple on purpose."""

from __future__ import annotations

import numpy as np
import torch

from gmnerf_ns.geometry.rasterize import Rasterized


def reference_rasterize(verts_cam, faces, K, height: int, width: int) -> Rasterized:
    """A slow z-buffer rasteriser with :func:`~gmnerf_ns.geometry.rasterize.rasterize`'s API, for tiny meshes.

    Same pixel convention: pixel (i, j) is sampled at (i + 0.5, j + 0.5). Barycentrics are screen-space.
    """
    verts = np.asarray(verts_cam, dtype=np.float64)
    faces = np.asarray(faces)
    K = np.asarray(K, dtype=np.float64)
    uvz = verts @ K.T
    uv = uvz[:, :2] / uvz[:, 2:]
    face_id = np.full((height, width), -1, np.int64)
    bary = np.zeros((height, width, 3))
    depth = np.full((height, width), np.inf)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    for fi, (a, b, c) in enumerate(faces):
        p = uv[[a, b, c]]
        if (verts[[a, b, c], 2] <= 0).any():
            continue
        x0, y0 = np.floor(p.min(0)).astype(int) - 1
        x1, y1 = np.ceil(p.max(0)).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
        if x1 < x0 or y1 < y0:
            continue
        px, py = xs[y0:y1 + 1, x0:x1 + 1], ys[y0:y1 + 1, x0:x1 + 1]
        m = np.array([[p[0, 0] - p[2, 0], p[1, 0] - p[2, 0]], [p[0, 1] - p[2, 1], p[1, 1] - p[2, 1]]])
        if abs(np.linalg.det(m)) < 1e-12:
            continue
        inv = np.linalg.inv(m)
        l0 = inv[0, 0] * (px - p[2, 0]) + inv[0, 1] * (py - p[2, 1])
        l1 = inv[1, 0] * (px - p[2, 0]) + inv[1, 1] * (py - p[2, 1])
        l2 = 1 - l0 - l1
        inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        z = l0 * verts[a, 2] + l1 * verts[b, 2] + l2 * verts[c, 2]
        sub_depth = depth[y0:y1 + 1, x0:x1 + 1]
        win = inside & (z < sub_depth)
        sub_depth[win] = z[win]
        face_id[y0:y1 + 1, x0:x1 + 1][win] = fi
        bary[y0:y1 + 1, x0:x1 + 1][win] = np.stack([l0, l1, l2], -1)[win]
    return Rasterized(torch.from_numpy(face_id), torch.from_numpy(bary).float(), torch.from_numpy(depth).float())
