"""The retrainer's errors; all subclass :class:`edgeloop.errors.EdgeloopError`."""

from __future__ import annotations

from edgeloop.errors import EdgeloopError


class RetrainerError(EdgeloopError):
    """Base class of the retrainer's errors."""


class EdgeCaseBufferError(RetrainerError):
    """The durable edge-case buffer cannot be read or written."""


class AnnotationError(RetrainerError):
    """A label source (master file, labels topic message) that cannot be used."""
