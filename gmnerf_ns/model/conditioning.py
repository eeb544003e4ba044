"""Which subject-frame a rendered camera is conditioned on, and the encoding of its source views kept between
full-image renders (ns-eval, ns-render and the viewer render many cameras of one subject-frame)."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

from nerfstudio.cameras.cameras import Cameras

from gmnerf_ns.model.field import EncodedSources
from gmnerf_ns.model.sources import SourceViews

SourceProvider = Callable[[int, int], SourceViews]
"""(subject_index, frame_id) -> the protocol's source views of that subject-frame."""


class SourceConditioning:
    """Mixin of :class:`~gmnerf_ns.model.gmnerf_model.GMNeRFModel`: picks a camera's source views and caches their
    encoding (``self.encode``) for the next full-image render of the same subject-frame."""

    training: bool

    def init_conditioning(self) -> None:
        self.source_provider: Optional[SourceProvider] = None
        """Set by the pipeline: finds source views for cameras that only carry subject/frame metadata."""
        self.default_source_key: Optional[Tuple[int, int]] = None
        """(subject_index, frame_id) used for cameras without metadata (the viewer); set with :meth:`set_condition`."""
        self._encoding_cache: Optional[Tuple[Tuple[int, int], EncodedSources]] = None

    def encode(self, sources: SourceViews) -> EncodedSources:
        raise NotImplementedError

    def source_key(self, camera: Cameras) -> Tuple[int, int]:
        """(subject_index, frame_id) a camera asks to be conditioned on (the default subject for bare cameras)."""
        meta = camera.metadata or {}
        if "subject_index" in meta and "frame_id" in meta:
            key = (int(meta["subject_index"].reshape(-1)[0]), int(meta["frame_id"].reshape(-1)[0]))
        elif self.default_source_key is not None:
            key = self.default_source_key
        else:
            raise RuntimeError(
                "gm-nerf renders a person from source views: the camera carries no subject/frame metadata and no "
                "default subject is set (the datamanager sets one; pass --pipeline.datamanager... or pick one in the "
                "viewer)"
            )
        return key

    def encoded_for(self, camera: Cameras) -> EncodedSources:
        """The encoded source views of the camera's subject-frame: the cached ones in eval mode, else encoded now
        (and cached)."""
        key = self.source_key(camera)
        if self._encoding_cache is not None and self._encoding_cache[0] == key and not self.training:
            return self._encoding_cache[1]
        if self.source_provider is None:
            raise RuntimeError("gm-nerf has no source-view provider: build it through GMNeRFPipeline")
        encoded = self.encode(self.source_provider(*key))
        self._encoding_cache = (key, encoded)
        return encoded

    def set_condition(self, subject_index: int, frame_id: int) -> None:
        """Conditions cameras without subject/frame metadata (the viewer, camera paths) on this subject-frame.

        Drops the cached encoding: it is keyed by subject-frame, but a stale one should not outlive a choice.
        """
        self.default_source_key = (int(subject_index), int(frame_id))
        self.clear_encoding_cache()

    def clear_encoding_cache(self) -> None:
        """Forgets the encoded source views kept between full-image renders (the next render encodes again)."""
        self._encoding_cache = None

    @property
    def cached_condition(self) -> Optional[Tuple[int, int]]:
        """(subject_index, frame_id) whose encoding the next full-image render may reuse; None if none is cached."""
        return None if self._encoding_cache is None else self._encoding_cache[0]
