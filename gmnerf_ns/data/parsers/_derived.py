"""Files derived from a dataset at parse time (posed proxies, images stored inside containers), and one output size
for views of different shapes.

The records point at files (``FrameRecord.vertices_path`` is a ``.npy``/``.obj``, ``ViewRecord.image_path`` an image):
a format that stores parameters (SMPL fits) or packs images into HDF5 (DNA-Rendering) gets those files written once
under ``$XDG_CACHE_HOME/gmnerf_ns/<kind>/`` (``~/.cache`` by default; each parser's ``--cache-dir`` moves it), keyed by
the source files' size and modification time and by the options that shaped them, so a re-parse writes nothing. The
cache lives outside the dataset because dataset folders are often shared or read-only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from gmnerf_ns.core.errors import HumanDataError

CACHE_VERSION = 1


def default_cache_root() -> Path:
    """``$XDG_CACHE_HOME/gmnerf_ns`` (``~/.cache/gmnerf_ns``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gmnerf_ns"


class DerivedFiles:
    """A folder of files derived from one subject's sources, rewritten only when a source or an option changes."""

    def __init__(self, base: Optional[Path], kind: str, source: Path, options: str = ""):
        """``kind``: the cache sub-folder (``proxies``); ``source``: the subject's folder or file; ``options``: what
        else the derived files depend on (person id, body model, ...)."""
        root = Path(base) if base is not None else default_cache_root() / kind
        key = hashlib.sha1(f"{CACHE_VERSION}|{Path(source).resolve()}|{options}".encode()).hexdigest()[:12]
        self.folder = root / f"{Path(source).name}-{key}"
        self.option_hint = "--cache-dir"

    def path(self, name: str, suffix: str, sources: Sequence[Path], write: Callable[[Path], None]) -> Path:
        """The derived file ``<name>-<stamp><suffix>``, written by ``write(tmp_path)`` unless it is already there.

        ``stamp`` hashes the sources' paths, sizes and modification times; older versions of the same name are
        removed when a new one is written.
        """
        stamp = _stamp(sources)
        path = self.folder / f"{name}-{stamp}{suffix}"
        if path.is_file():
            return path
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{name}-{stamp}.tmp{os.getpid()}{suffix}"
            write(tmp)
            tmp.replace(path)
            for old in self.folder.glob(f"{name}-*{suffix}"):
                if old != path:
                    old.unlink(missing_ok=True)
        except OSError as err:
            raise HumanDataError(f"{self.folder}: cannot write derived files ({err}); pass {self.option_hint} with a "
                                 "writable folder") from err
        return path

    def vertices(self, name: str, sources: Sequence[Path], make: Callable[[], np.ndarray]) -> Path:
        """A ``.npy`` of posed vertices computed by ``make()`` (only when not cached)."""

        def write(tmp: Path) -> None:
            vertices = np.asarray(make(), dtype=np.float32)  # first: a failing make() leaves no file behind
            with open(tmp, "wb") as handle:
                np.save(handle, vertices)

        return self.path(name, ".npy", sources, write)

    def raw(self, name: str, suffix: str, sources: Sequence[Path], make: Callable[[], bytes]) -> Path:
        """A file holding the bytes ``make()`` returns (an encoded image taken out of a container)."""
        def write(tmp: Path) -> None:
            data = make()
            tmp.write_bytes(data)

        return self.path(name, suffix, sources, write)


def _stamp(sources: Sequence[Path]) -> str:
    parts = []
    for source in sources:
        try:
            stat = Path(source).stat()
            parts.append(f"{source}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            parts.append(f"{source}:missing")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]


def common_frame(sizes: Sequence[Tuple[int, int]], resolution: int
                 ) -> Tuple[Tuple[int, int], Sequence[Tuple[int, int, int, int]]]:
    """One output size for views of (possibly) different shapes, and each view's crop.

    Every view is centred in a box of the widest aspect ratio among ``sizes`` (narrower images are padded with black
    on the left and right, which their masks mark as background), then resized to ``resolution`` pixels high, or to
    the smallest stored height when the images are smaller (never upsampled). So the views of a subject stack.

    Returns:
        ((width, height) of every output view, [(x0, y0, x1, y1) crop per view]).
    """
    aspect = max(w / h for w, h in sizes)
    out_h = int(min(resolution, *(h for _, h in sizes)))
    crops = []
    for w, h in sizes:
        box_w = max(w, int(round(h * aspect)))
        x0 = (w - box_w) // 2
        crops.append((x0, 0, x0 + box_w, h))
    return (int(round(out_h * aspect)), out_h), crops
