"""The durable edge-case buffer: what is appended survives a restart exactly; torn tails are cut off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from retrainer.buffer import EdgeCaseBuffer
from retrainer.errors import EdgeCaseBufferError


def frame(i: int, sequence: str = "video") -> dict[str, object]:
    return {"id": i, "kps": [float(i + k) for k in range(34)], "sequence": sequence, "score": 2.0}


def test_everything_written_is_there_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "edge-cases.jsonl"
    with EdgeCaseBuffer.open(path) as buffer:
        buffer.append_edge_cases([frame(1), frame(2), frame(3)], [1, None, 0])
        assert buffer.record_labels([2, 99], [0, 1], source="topic") == [2]  # 99 is kept for later
        attempt = buffer.start_attempt(1, [1, 2, 3], [1, 2, 3])
        buffer.finish_attempt(attempt, "published", {"golden_accuracy": 0.9})
        buffer.append_edge_cases([frame(99)], [None])
    reopened = EdgeCaseBuffer.open(path)
    assert list(reopened.edge_cases) == [1, 2, 3, 99]
    assert {i: c.gt for i, c in reopened.edge_cases.items()} == {1: 1, 2: 0, 3: 0, 99: 1}  # 99 from the early label
    assert reopened.annotation_order == [1, 3, 2, 99]
    assert reopened.pending_ids() == []
    assert reopened.used_ids() == {1, 2, 3}
    assert reopened.unused_annotated_ids() == [99]
    assert reopened.attempts[0].outcome == "published"
    assert reopened.attempts[0].report == {"golden_accuracy": 0.9}
    kps, gt = reopened.arrays([3, 1])
    assert kps[0].tolist() == [float(3 + k) for k in range(34)]
    assert gt.tolist() == [0, 1]
    # Every line is a versioned JSON object.
    lines = path.read_bytes().splitlines()
    assert all(orjson.loads(line)["schema"] == 1 for line in lines)


def test_a_torn_last_line_is_cut_off_and_appending_continues(tmp_path: Path) -> None:
    path = tmp_path / "edge-cases.jsonl"
    with EdgeCaseBuffer.open(path) as buffer:
        buffer.append_edge_cases([frame(1)], [1])
    good = path.read_bytes()
    path.write_bytes(good + b'{"schema": 1, "type": "edge_case", "id": 2, "gt"')  # crash mid-write
    with EdgeCaseBuffer.open(path) as buffer:
        assert list(buffer.edge_cases) == [1]
        assert path.read_bytes() == good
        buffer.append_edge_cases([frame(2)], [0])
    assert list(EdgeCaseBuffer.open(path).edge_cases) == [1, 2]


def test_a_damaged_line_in_the_middle_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "edge-cases.jsonl"
    with EdgeCaseBuffer.open(path) as buffer:
        buffer.append_edge_cases([frame(1)], [1])
    path.write_bytes(b"garbage\n" + path.read_bytes())
    with pytest.raises(EdgeCaseBufferError, match=r"line 1 .*restore it from a backup"):
        EdgeCaseBuffer.open(path)


def test_open_attempt_and_failed_attempts_do_not_consume_the_crossing(tmp_path: Path) -> None:
    with EdgeCaseBuffer.open(tmp_path / "b.jsonl") as buffer:
        buffer.append_edge_cases([frame(i) for i in range(4)], [0, 1, 0, 1])
        first = buffer.start_attempt(1, [0, 1], [0, 1])
        assert buffer.open_attempt() is first
        buffer.finish_attempt(first, "failed", {})
        assert buffer.open_attempt() is None
        assert buffer.unused_annotated_ids() == [0, 1, 2, 3]
        second = buffer.start_attempt(1, [0, 1], [0, 1])
        assert second.attempt == 2
        buffer.finish_attempt(second, "rejected", {})
        assert buffer.unused_annotated_ids() == [2, 3]


def test_refuses_what_would_break_its_invariants(tmp_path: Path) -> None:
    with EdgeCaseBuffer.open(tmp_path / "b.jsonl") as buffer:
        buffer.append_edge_cases([frame(1), frame(2)], [1, None])
        with pytest.raises(EdgeCaseBufferError, match="already in the buffer"):
            buffer.append_edge_cases([frame(1)], [1])
        with pytest.raises(EdgeCaseBufferError, match="unlabelled"):
            buffer.start_attempt(1, [1, 2], [1, 2])
        with pytest.raises(EdgeCaseBufferError, match="no label yet"):
            buffer.arrays([2])
    assert np.isfinite(EdgeCaseBuffer.open(tmp_path / "b.jsonl").all_kps()[0]).all()
