"""Is a parsed subject in metres? One check for every parser, run on its first frame before anything trains.

A capture in millimetres or a wrong scale factor becomes one error naming the subject, the file and the factor that
would fix it (each parser may word the fix: :meth:`HumanDataParser.scale_advice`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import SubjectRecord, load_vertices

PERSON_SIZE_M = (0.8, 2.5)
"""Accepted largest extent of a posed proxy's bounding box, in metres. An adult is 1.5-1.9 m tall; the range also
takes children (GeneBody and HuMMan film some), raised arms and jumps, while every unit mistake seen in practice is off
by 2.5x or more (GeneBody's 2.87, cm, mm). The largest extent does not depend on which world axis is up."""
CAMERA_DISTANCE_M = (0.5, 20.0)
"""Accepted median distance from a subject's cameras to the centre of its proxy's bounding box, in metres."""
TYPICAL_PERSON_M = 1.7
"""The size a proxy is assumed to have when working out the factor that would fix a wrong scale."""
TYPICAL_CAMERA_DISTANCE_M = 3.0
"""The camera distance assumed when working out the factor that would fix wrong camera translations."""
UNITS = ((1e-3, "millimetres"), (1e-2, "centimetres"), (1e-1, "decimetres"), (1e3, "kilometres"))
"""Units a wrong scale is recognised as: (metres per unit, name)."""


def unit_advice(factor: float, what: str = "the data") -> str:
    """``"<what> look like millimetres: convert them to metres (multiply by 0.001)"`` when ``factor`` is within 3x of
    a known unit's, else the factor itself."""
    for metres, unit in UNITS:
        if metres / 3 < factor < metres * 3:
            return f"{what} look like {unit}: convert them to metres (multiply by {metres:g})"
    return f"{what} look scaled by about {1 / factor:.3g} units per metre: convert them to metres (multiply by {factor:.3g})"


def check_scale(record: SubjectRecord, advice: Callable[[float, str], str] = unit_advice) -> None:
    """Raises one :class:`HumanDataError` unless the subject's first frame is in metres.

    Checks that the posed proxy's largest bounding-box extent is that of a person (:data:`PERSON_SIZE_M`), then that
    the cameras' median distance to the proxy's centre is plausible (:data:`CAMERA_DISTANCE_M`). The message names the
    subject, the proxy file, the size found and, through ``advice(factor, what)``, the fix (``factor`` = metres per
    parsed unit, estimated from a :data:`TYPICAL_PERSON_M` person or :data:`TYPICAL_CAMERA_DISTANCE_M` cameras).
    """
    frame = record.frames[0]
    vertices = load_vertices(frame).astype(np.float64)
    low, high = vertices.min(0), vertices.max(0)
    size = float((high - low).max())
    if not PERSON_SIZE_M[0] <= size <= PERSON_SIZE_M[1]:
        factor = TYPICAL_PERSON_M / max(size, 1e-12)
        raise HumanDataError(
            f"subject {record.name}: the body proxy ({frame.vertices_path}, frame {frame.frame_id}) is {_amount(size)} "
            f"units tall; a person is {PERSON_SIZE_M[0]:g}-{PERSON_SIZE_M[1]:g} m: {advice(factor, 'the data')}")
    centre = (low + high) / 2
    distances = {v.camera_name: float(np.linalg.norm(v.camera_center - centre)) for v in frame.views}
    median = float(np.median(list(distances.values())))
    if not CAMERA_DISTANCE_M[0] <= median <= CAMERA_DISTANCE_M[1]:
        factor = TYPICAL_CAMERA_DISTANCE_M / max(median, 1e-12)
        raise HumanDataError(
            f"subject {record.name}: its cameras are {_amount(median)} units from the body proxy ({frame.vertices_path}, "
            f"median of {len(distances)}) while the proxy is {size:.2f} m tall; cameras are "
            f"{CAMERA_DISTANCE_M[0]:g}-{CAMERA_DISTANCE_M[1]:g} m away: {advice(factor, 'the camera translations')}")


def _amount(value: float) -> str:
    """A size for a message: 3 significant digits, whole numbers from 100 up (``1594``, not ``1.59e+03``)."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"
