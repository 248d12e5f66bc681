"""Edge-case collection: dedupe by frame id and by pose, annotate, and store durably.

:class:`EdgeCaseCollector` is pure logic over an :class:`~retrainer.buffer.EdgeCaseBuffer` (no Kafka):
the service hands it each polled batch of edge-case messages and commits the batch's offsets after
:meth:`EdgeCaseCollector.collect` returned (by then the buffer is fsync'd).

- **By id, durably**: the buffer is the source of truth; the set of collected ids is rebuilt from it on
  start, so a redelivered message (at-least-once upstream, or a restart before a commit) is counted once.
- **Near duplicates**: :class:`~retrainer.near_duplicates.NearDuplicateFilter` on pose features, rebuilt
  from the buffer too.
- **Annotation**: from the master file and/or labels that arrived on the labels topic. A frame without a
  label is collected anyway and stays *pending* until its label arrives.

Examples
--------
>>> import tempfile, pathlib
>>> import numpy as np
>>> from retrainer.annotation import LabelBook
>>> from retrainer.buffer import EdgeCaseBuffer
>>> from retrainer.near_duplicates import NearDuplicateFilter
>>> buffer = EdgeCaseBuffer.open(pathlib.Path(tempfile.mkdtemp()) / "edge-cases.jsonl")
>>> collector = EdgeCaseCollector(buffer, NearDuplicateFilter(radius=0.05), topic_labels=LabelBook())
>>> frame = {"id": 1, "kps": np.linspace(10, 300, 34).tolist()}
>>> result = collector.collect([frame, dict(frame), {**frame, "id": 2}])
>>> result.collected, result.duplicate_id, result.duplicate_near, result.pending
(1, 1, 1, 1)
>>> collector.label([1], [0]), collector.pending_count
([1], 0)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeloop.features import FeatureMode, featurise
from edgeloop.frames import N_COORDS
from retrainer.annotation import UNLABELLED, Annotator, LabelBook
from retrainer.buffer import EdgeCaseBuffer
from retrainer.near_duplicates import NearDuplicateFilter

__all__ = ["CollectResult", "EdgeCaseCollector"]

log = logging.getLogger(__name__)


@dataclass
class CollectResult:
    """What one batch did: counts, and the ids collected (labelled or pending)."""

    received: int = 0
    duplicate_id: int = 0
    duplicate_near: int = 0
    capped: int = 0
    collected: int = 0
    labelled: int = 0
    pending: int = 0
    collected_ids: list[int] = field(default_factory=list)


class EdgeCaseCollector:
    """Collects edge cases into a durable buffer, once per frame id and once per pose region.

    Parameters
    ----------
    buffer
        The opened buffer; the collector restores its id set and near-duplicate state from it.
    near_duplicates
        The near-duplicate filter (empty; it is filled from the buffer here).
    master
        Labels from the master file (optional).
    topic_labels
        Labels from the labels topic (optional); seeded with the labels the buffer holds.
    features
        Feature mode for the near-duplicate comparison (``"pose"``: translation/scale invariant).
    """

    def __init__(
        self,
        buffer: EdgeCaseBuffer,
        near_duplicates: NearDuplicateFilter,
        master: Annotator | None = None,
        topic_labels: LabelBook | None = None,
        features: FeatureMode = "pose",
    ) -> None:
        self.buffer = buffer
        self.near_duplicates = near_duplicates
        self.master = master
        self.topic_labels = topic_labels
        self.features: FeatureMode = features
        if topic_labels is not None and buffer.labels:
            topic_labels.add(
                np.fromiter(buffer.labels.keys(), dtype=np.int64), np.fromiter(buffer.labels.values(), dtype=np.int64)
            )
        kps, sequences = buffer.all_kps()
        if len(sequences):
            near_duplicates.add(featurise(kps, self.features), sequences)

    @property
    def pending_count(self) -> int:
        return len(self.buffer.pending_ids())

    def _lookup(self, ids: np.ndarray) -> np.ndarray:
        gts = np.full(ids.shape, UNLABELLED, dtype=np.int64)
        for source in (self.master, self.topic_labels):
            if source is not None:
                found = source.lookup(ids)
                gts = np.where(gts == UNLABELLED, found, gts)
        return gts

    def collect(self, frames: Sequence[Mapping[str, Any]], received_at: float | None = None) -> CollectResult:
        """Dedupe, annotate and durably store a batch of decoded edge-case messages.

        Each frame needs an integer ``id`` and 34 ``kps`` (validate with :func:`edgeloop.frames.decode_batch`
        first). Returns after the buffer was fsync'd.
        """
        result = CollectResult(received=len(frames))
        if not frames:
            return result
        ids = np.fromiter((int(f["id"]) for f in frames), dtype=np.int64, count=len(frames))
        # First occurrence in the batch of an id not yet collected.
        _, first = np.unique(ids, return_index=True)
        fresh = np.zeros(len(frames), dtype=bool)
        fresh[first] = True
        known = np.fromiter((i in self.buffer.edge_cases for i in ids.tolist()), dtype=bool, count=len(frames))
        fresh &= ~known
        result.duplicate_id = int((~fresh).sum())
        rows = np.flatnonzero(fresh)
        if rows.size == 0:
            return result

        candidates = [frames[i] for i in rows.tolist()]
        kps = np.asarray([f["kps"] for f in candidates], dtype=np.float64).reshape(-1, N_COORDS)
        sequences = [None if f.get("sequence") is None else str(f["sequence"]) for f in candidates]
        features = featurise(kps, self.features)
        decision = self.near_duplicates.select(features, sequences)
        result.duplicate_near = int((decision.reasons == "near").sum())
        result.capped = int((decision.reasons == "cap").sum())
        keep = np.flatnonzero(decision.accepted)
        if keep.size == 0:
            return result

        kept_frames = [dict(candidates[i]) for i in keep]
        kept_ids = ids[rows[keep]]
        gts = self._lookup(kept_ids)
        labels: list[int | None] = [None if g == UNLABELLED else int(g) for g in gts.tolist()]
        self.buffer.append_edge_cases(kept_frames, labels, time.time() if received_at is None else received_at)
        self.near_duplicates.add(features[keep], [sequences[i] for i in keep])
        result.collected = int(keep.size)
        result.labelled = int((gts != UNLABELLED).sum())
        result.pending = result.collected - result.labelled
        result.collected_ids = kept_ids.tolist()
        if result.pending:
            log.info(
                "%d of %d new edge cases have no label yet (pending: %d): they wait for their label",
                result.pending,
                result.collected,
                self.pending_count,
            )
        return result

    def label(
        self, ids: Sequence[int] | np.ndarray, gts: Sequence[int] | np.ndarray, source: str = "topic"
    ) -> list[int]:
        """Labels that arrived (labels topic): stored durably; returns the pending edge cases they labelled."""
        ids_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        gts_arr = np.asarray(gts, dtype=np.int64).reshape(-1)
        if self.topic_labels is not None:
            self.topic_labels.add(ids_arr, gts_arr)
        newly = self.buffer.record_labels(ids_arr.tolist(), gts_arr.tolist(), source)
        if newly:
            log.info("labels arrived for %d pending edge cases (%d still pending)", len(newly), self.pending_count)
        return newly

    def refresh_labels(self) -> list[int]:
        """Re-read the master file if it changed and label the pending edge cases it now covers."""
        if self.master is None or not self.master.refresh():
            return []
        pending = np.asarray(self.buffer.pending_ids(), dtype=np.int64)
        if pending.size == 0:
            return []
        gts = self.master.lookup(pending)
        found = gts != UNLABELLED
        if not found.any():
            return []
        newly = self.buffer.record_labels(pending[found].tolist(), gts[found].tolist(), "master")
        log.info("master file labelled %d pending edge cases (%d still pending)", len(newly), self.pending_count)
        return newly
