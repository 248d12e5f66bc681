"""Where the labels of edge cases come from: a master file (UpTrain's MASTER_FILE way) or a labels topic.

An annotator answers, for a batch of frame ids, the label of each one or "not yet" (-1). A frame
without a label is never dropped: it stays pending in the buffer and is labelled when its label
arrives (a labels-topic message, or a master file that grew since it was last read).

Examples
--------
>>> import numpy as np
>>> labels = LabelBook()
>>> labels.add(np.array([7, 9]), np.array([1, 0]))
2
>>> labels.lookup(np.array([9, 8, 7])).tolist()
[0, -1, 1]
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from edgeloop.datasets import DatasetError, read_master_annotations
from retrainer.errors import AnnotationError

__all__ = ["UNLABELLED", "Annotator", "LabelBook", "MasterFileAnnotator", "decode_label_messages"]

log = logging.getLogger(__name__)

UNLABELLED = -1


class Annotator(Protocol):
    """A source of labels for edge cases."""

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Label per id (0 vertical, 1 horizontal, :data:`UNLABELLED` = not known yet), int64."""
        ...

    def refresh(self) -> bool:
        """Re-read the source if it may hold new labels; True when it changed."""
        ...


class LabelBook:
    """Labels in memory, looked up vectorised (sorted ids + ``searchsorted``).

    Later labels for an id already known are ignored (a logged conflict when they differ): an edge
    case used to train a published version keeps the label it was trained with.
    """

    def __init__(self) -> None:
        self._labels: dict[int, int] = {}
        self._ids = np.empty(0, dtype=np.int64)
        self._gts = np.empty(0, dtype=np.int64)
        self._stale = False

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, frame_id: object) -> bool:
        return frame_id in self._labels

    def add(self, ids: np.ndarray, gts: np.ndarray) -> int:
        """Add labels; returns how many ids were new. Labels must be 0 or 1."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        gts = np.asarray(gts, dtype=np.int64).reshape(-1)
        if ids.shape != gts.shape:
            raise AnnotationError(f"{ids.size} ids but {gts.size} labels")
        if gts.size and not np.isin(gts, (0, 1)).all():
            raise AnnotationError("labels must be 0 (vertical) or 1 (horizontal)")
        before = len(self._labels)
        for frame_id, gt in zip(ids.tolist(), gts.tolist(), strict=True):
            previous = self._labels.setdefault(frame_id, gt)
            if previous != gt:
                log.warning("frame %d labelled %d earlier and %d now: keeping %d", frame_id, previous, gt, previous)
        added = len(self._labels) - before
        if added:
            self._stale = True
        return added

    def _index(self) -> None:
        if self._stale:
            self._ids = np.fromiter(self._labels.keys(), dtype=np.int64, count=len(self._labels))
            self._gts = np.fromiter(self._labels.values(), dtype=np.int64, count=len(self._labels))
            order = np.argsort(self._ids, kind="stable")
            self._ids, self._gts = self._ids[order], self._gts[order]
            self._stale = False

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        self._index()
        out = np.full(ids.shape, UNLABELLED, dtype=np.int64)
        if self._ids.size == 0 or ids.size == 0:
            return out
        pos = np.clip(np.searchsorted(self._ids, ids), 0, self._ids.size - 1)
        hit = self._ids[pos] == ids
        out[hit] = self._gts[pos[hit]]
        return out

    def refresh(self) -> bool:
        return False

    def items(self) -> list[tuple[int, int]]:
        return list(self._labels.items())


class MasterFileAnnotator:
    """Labels from UpTrain's master annotation file ``[{"id", "gt"}]`` (JSON list or JSON Lines).

    The file is re-read when its modification time or size changes (:meth:`refresh`), so frames that
    were pending because the annotators had not reached them yet get their label once it is written.

    Parameters
    ----------
    path
        The master file. It must exist when the retrainer starts (a typo should fail loudly).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._book = LabelBook()
        self._stamp: tuple[int, int] | None = None
        if not self.path.is_file():
            raise AnnotationError(
                f"master annotation file {self.path} does not exist; pass --master-annotations "
                "(EDGELOOP_MASTER_ANNOTATIONS) with the path of a [{{'id', 'gt'}}] file"
            )
        self.refresh()

    def __len__(self) -> int:
        return len(self._book)

    def refresh(self) -> bool:
        try:
            stat = self.path.stat()
        except OSError as exc:
            log.warning("master annotation file %s unreadable (%s): keeping the %d labels read before",
                        self.path, exc, len(self._book))  # fmt: skip
            return False
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        try:
            labels = read_master_annotations(self.path)
        except DatasetError as exc:
            if self._stamp is None:
                raise AnnotationError(f"cannot read the master annotation file: {exc}") from None
            log.warning("master annotation file changed but cannot be read (%s): keeping the previous labels", exc)
            return False
        book = LabelBook()
        if labels:
            book.add(np.fromiter(labels.keys(), dtype=np.int64), np.fromiter(labels.values(), dtype=np.int64))
        self._book = book
        self._stamp = stamp
        log.info("read %d labels from the master annotation file %s", len(book), self.path)
        return True

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        return self._book.lookup(ids)


def decode_label_messages(values: list[bytes | None]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode labels-topic messages ``{"id": int, "gt": 0|1}`` (or a list of them per message).

    Returns ``(ids, gts, errors)``: the valid labels and one line per message that could not be used
    (bad input is data: it is logged and counted, never fatal).
    """
    ids: list[int] = []
    gts: list[int] = []
    errors: list[str] = []
    for value in values:
        try:
            decoded: Any = orjson.loads(value or b"")
        except orjson.JSONDecodeError as exc:
            errors.append(f"not JSON: {exc}")
            continue
        for item in decoded if isinstance(decoded, list) else [decoded]:
            frame_id = item.get("id") if isinstance(item, dict) else None
            gt = item.get("gt") if isinstance(item, dict) else None
            if type(frame_id) is not int or type(gt) is not int or gt not in (0, 1):
                errors.append(f"a label needs an integer 'id' and 'gt' 0 or 1, got {str(item)[:120]}")
                continue
            ids.append(frame_id)
            gts.append(gt)
    return np.asarray(ids, dtype=np.int64), np.asarray(gts, dtype=np.int64), errors
