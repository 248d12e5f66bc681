"""The durable edge-case buffer: JSON Lines in the registry directory, the retrainer's source of truth.

Everything the retrainer decided is appended here, flushed and ``fsync``'d *before* the consumer
offsets that produced it are committed, so a crash loses nothing and a restart (which reloads the
file) neither counts a frame twice nor retrains twice for the same threshold crossing.

One JSON object per line, each with ``"schema": 1`` and a ``"type"``:

``edge_case``
    ``{"id", "gt" (0, 1 or null = pending), "received_at", "frame": the edge-case message}``: a
    collected frame (duplicates by id and near duplicates never reach the buffer).
``label``
    ``{"id", "gt", "source"}``: a label that arrived after its edge case, or a labels-topic label for
    a frame not collected (yet): it is kept so that the frame is labelled the moment it arrives.
``attempt``
    ``{"attempt", "version", "edge_case_ids", "new_edge_case_ids", "started_at"}``: a retrain started
    for one threshold crossing; ``new_edge_case_ids`` are the crossing's ``retrain_after`` edge cases,
    ``edge_case_ids`` every edge case the candidate trains on (all annotated ones so far).
``outcome``
    ``{"attempt", "version", "outcome": "published" | "rejected" | "failed", "report"}``.

An attempt with an outcome ``published`` or ``rejected`` *consumed* its crossing; a ``failed`` one did
not (it is retried). An attempt without an outcome was interrupted: on restart the retrainer either
finds its version in the registry (it was published just before the crash) or trains it again on the
very same edge cases.

A crash can tear the last line; :meth:`EdgeCaseBuffer.open` cuts such a tail off (it was never
fsync'd, so its offsets were never committed and its messages will be delivered again).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from edgeloop.frames import N_COORDS
from retrainer.errors import EdgeCaseBufferError

__all__ = ["BUFFER_SCHEMA", "EdgeCase", "EdgeCaseBuffer", "Outcome", "RetrainAttempt"]

log = logging.getLogger(__name__)

BUFFER_SCHEMA = 1
Outcome = Literal["published", "rejected", "failed"]
OUTCOMES: tuple[str, ...] = ("published", "rejected", "failed")
CONSUMING_OUTCOMES = frozenset({"published", "rejected"})


@dataclass
class EdgeCase:
    """One collected edge case; ``gt`` is None while its label is pending."""

    id: int
    frame: dict[str, Any]
    gt: int | None
    received_at: float

    @property
    def sequence(self) -> str | None:
        sequence = self.frame.get("sequence")
        return None if sequence is None else str(sequence)


@dataclass
class RetrainAttempt:
    """A retrain for one threshold crossing, as recorded in the buffer."""

    attempt: int
    version: int
    edge_case_ids: tuple[int, ...]
    new_edge_case_ids: tuple[int, ...]
    started_at: float
    outcome: Outcome | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def consumed(self) -> bool:
        """Whether this attempt used up its threshold crossing (published or rejected)."""
        return self.outcome in CONSUMING_OUTCOMES


def _dumps(record: Mapping[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n"


class EdgeCaseBuffer:
    """The edge cases collected so far, their labels and the retrain attempts, backed by a JSONL file.

    Use :meth:`open`; every ``append_*``/``record_*`` method writes, flushes and fsyncs before it
    returns, and updates the in-memory view only after the write succeeded.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.edge_cases: dict[int, EdgeCase] = {}
        self.labels: dict[int, int] = {}
        self.attempts: list[RetrainAttempt] = []
        # Ids in the order they became annotated (edge case with a label, or label after the edge case):
        # deterministic across restarts, it decides which edge cases make a threshold crossing.
        self.annotation_order: list[int] = []
        self._file: Any = None

    # --- opening and replaying -----------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> EdgeCaseBuffer:
        """Load the buffer at ``path`` (created when absent) and keep it open for appending."""
        buffer = cls(Path(path))
        buffer.path.parent.mkdir(parents=True, exist_ok=True)
        created = not buffer.path.exists()
        if not created:
            buffer._replay()
        buffer._file = open(buffer.path, "ab")  # noqa: SIM115 - kept open for the service's lifetime
        if created:
            _fsync_dir(buffer.path.parent)
        log.info(
            "edge-case buffer %s: %d edge cases (%d pending labels), %d retrain attempts",
            buffer.path,
            len(buffer.edge_cases),
            len(buffer.pending_ids()),
            len(buffer.attempts),
        )
        return buffer

    def _replay(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning(
                "edge-case buffer %s ends with a torn line (%d bytes, a crash mid-write): cutting it off; "
                "its messages were never committed and will be read again",
                self.path,
                len(data) - end,
            )
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        for number, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                self._apply(record)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise EdgeCaseBufferError(
                    f"{self.path}: line {number} is not a valid buffer record ({type(exc).__name__}: {exc}); "
                    "the file was edited or damaged: restore it from a backup, or move it away to start an "
                    "empty buffer (the edge cases in it would be collected again from uncommitted offsets only)"
                ) from None

    def _apply(self, record: Mapping[str, Any]) -> None:
        kind = record["type"]
        if record.get("schema", BUFFER_SCHEMA) != BUFFER_SCHEMA:
            raise ValueError(f"unsupported buffer schema {record.get('schema')!r}")
        if kind == "edge_case":
            frame_id = int(record["id"])
            gt = record.get("gt")
            if gt is None and frame_id in self.labels:
                gt = self.labels[frame_id]
            self.edge_cases[frame_id] = EdgeCase(frame_id, dict(record["frame"]), gt, float(record["received_at"]))
            if gt is not None:
                self.annotation_order.append(frame_id)
        elif kind == "label":
            frame_id, gt = int(record["id"]), int(record["gt"])
            self.labels.setdefault(frame_id, gt)
            case = self.edge_cases.get(frame_id)
            if case is not None and case.gt is None:
                case.gt = gt
                self.annotation_order.append(frame_id)
        elif kind == "attempt":
            self.attempts.append(
                RetrainAttempt(
                    attempt=int(record["attempt"]),
                    version=int(record["version"]),
                    edge_case_ids=tuple(int(i) for i in record["edge_case_ids"]),
                    new_edge_case_ids=tuple(int(i) for i in record["new_edge_case_ids"]),
                    started_at=float(record["started_at"]),
                )
            )
        elif kind == "outcome":
            attempt = self._attempt(int(record["attempt"]))
            outcome = record["outcome"]
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r}")
            attempt.outcome = outcome
            attempt.report = dict(record.get("report") or {})
        else:
            raise ValueError(f"unknown record type {kind!r}")

    def _attempt(self, number: int) -> RetrainAttempt:
        for attempt in self.attempts:
            if attempt.attempt == number:
                return attempt
        raise KeyError(f"no attempt {number}")

    # --- writing --------------------------------------------------------------------------------------
    def _write(self, records: Sequence[Mapping[str, Any]]) -> None:
        if self._file is None:
            raise EdgeCaseBufferError(f"edge-case buffer {self.path} is closed")
        if not records:
            return
        payload = b"".join(_dumps({"schema": BUFFER_SCHEMA, **r}) for r in records)
        try:
            self._file.write(payload)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise EdgeCaseBufferError(
                f"cannot write the edge-case buffer {self.path}: {exc}; free disk space or fix permissions "
                "(nothing of this batch was committed, it will be read again)"
            ) from exc

    def append_edge_cases(
        self, frames: Sequence[Mapping[str, Any]], gts: Sequence[int | None], received_at: float | None = None
    ) -> None:
        """Collect frames (edge-case messages) with their labels (None = pending), durably."""
        if len(frames) != len(gts):
            raise EdgeCaseBufferError(f"{len(frames)} frames but {len(gts)} labels")
        now = time.time() if received_at is None else received_at
        records = []
        for frame, gt in zip(frames, gts, strict=True):
            frame_id = int(frame["id"])
            if frame_id in self.edge_cases:
                raise EdgeCaseBufferError(f"edge case {frame_id} is already in the buffer (dedupe before appending)")
            records.append(
                {"type": "edge_case", "id": frame_id, "gt": None if gt is None else int(gt), "received_at": now,
                 "frame": frame}
            )  # fmt: skip
        self._write(records)
        for record in records:
            self._apply(record)

    def record_labels(self, ids: Iterable[int], gts: Iterable[int], source: str) -> list[int]:
        """Store labels; returns the ids of the collected edge cases they annotated (pending → labelled).

        Labels for frames not collected are kept too when ``source`` is a topic (the frame may come
        later); labels for frames already labelled are ignored.
        """
        records = []
        newly: list[int] = []
        seen: set[int] = set()
        for frame_id, gt in zip(ids, gts, strict=True):
            frame_id, gt = int(frame_id), int(gt)
            if frame_id in self.labels or frame_id in seen:
                continue
            case = self.edge_cases.get(frame_id)
            if case is not None and case.gt is not None:
                continue
            seen.add(frame_id)
            records.append({"type": "label", "id": frame_id, "gt": gt, "source": source})
            if case is not None:
                newly.append(frame_id)
        self._write(records)
        for record in records:
            self._apply(record)
        return newly

    def start_attempt(
        self, version: int, edge_case_ids: Sequence[int], new_edge_case_ids: Sequence[int]
    ) -> RetrainAttempt:
        """Record that a retrain for ``version`` starts on these edge cases (durably, before training)."""
        missing = [i for i in edge_case_ids if i not in self.edge_cases or self.edge_cases[i].gt is None]
        if missing:
            raise EdgeCaseBufferError(f"cannot train on edge cases that are absent or unlabelled: {missing[:5]}")
        number = (self.attempts[-1].attempt + 1) if self.attempts else 1
        record = {
            "type": "attempt",
            "attempt": number,
            "version": int(version),
            "edge_case_ids": [int(i) for i in edge_case_ids],
            "new_edge_case_ids": [int(i) for i in new_edge_case_ids],
            "started_at": time.time(),
        }
        self._write([record])
        self._apply(record)
        return self.attempts[-1]

    def finish_attempt(self, attempt: RetrainAttempt, outcome: Outcome, report: Mapping[str, Any]) -> None:
        """Record the outcome of an attempt (durably)."""
        if outcome not in OUTCOMES:
            raise EdgeCaseBufferError(f"unknown outcome {outcome!r}; use one of {OUTCOMES}")
        record = {
            "type": "outcome",
            "attempt": attempt.attempt,
            "version": attempt.version,
            "outcome": outcome,
            "report": dict(report),
        }
        self._write([record])
        self._apply(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> EdgeCaseBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- queries --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.edge_cases)

    def __contains__(self, frame_id: object) -> bool:
        return frame_id in self.edge_cases

    def pending_ids(self) -> list[int]:
        """Collected edge cases still waiting for a label, in collection order."""
        return [i for i, case in self.edge_cases.items() if case.gt is None]

    def used_ids(self) -> set[int]:
        """Edge cases whose threshold crossing was consumed (by a published or rejected attempt)."""
        used: set[int] = set()
        for attempt in self.attempts:
            if attempt.consumed:
                used.update(attempt.new_edge_case_ids)
        return used

    def unused_annotated_ids(self) -> list[int]:
        """Annotated edge cases not yet part of any consumed crossing, in annotation order."""
        used = self.used_ids()
        return [i for i in self.annotation_order if i not in used]

    def open_attempt(self) -> RetrainAttempt | None:
        """The last attempt if it has no outcome (the retrainer stopped during it), else None."""
        if self.attempts and self.attempts[-1].outcome is None:
            return self.attempts[-1]
        return None

    def consumed_attempts(self) -> list[RetrainAttempt]:
        return [a for a in self.attempts if a.consumed]

    def arrays(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints ``(n, 34)`` float64 and labels ``(n,)`` int64 of labelled edge cases."""
        kps = np.empty((len(ids), N_COORDS), dtype=np.float64)
        gts = np.empty(len(ids), dtype=np.int64)
        for row, frame_id in enumerate(ids):
            case = self.edge_cases[frame_id]
            if case.gt is None:
                raise EdgeCaseBufferError(f"edge case {frame_id} has no label yet")
            kps[row] = case.frame["kps"]
            gts[row] = case.gt
        return kps, gts

    def all_kps(self) -> tuple[np.ndarray, list[str | None]]:
        """Keypoints of every collected edge case (collection order) and their sequences."""
        cases = list(self.edge_cases.values())
        kps = np.asarray([c.frame["kps"] for c in cases], dtype=np.float64).reshape(-1, N_COORDS)
        return kps, [c.sequence for c in cases]


def _fsync_dir(path: Path) -> None:
    # A new file's directory entry is durable only once the directory itself is fsync'd.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
