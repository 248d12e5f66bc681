"""Collecting edge cases: once per frame id (durably), once per pose region, pending until labelled."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.datasets import DataPack
from retrainer.annotation import LabelBook, MasterFileAnnotator
from retrainer.buffer import EdgeCaseBuffer
from retrainer.collector import EdgeCaseCollector
from retrainer.near_duplicates import NearDuplicateFilter
from tests.retrainer.conftest import edge_case_message


def make_collector(path: Path, master: Path | None = None, radius: float = 0.05, cap: int = 0) -> EdgeCaseCollector:
    return EdgeCaseCollector(
        EdgeCaseBuffer.open(path),
        NearDuplicateFilter(radius=radius, per_sequence_cap=cap),
        master=MasterFileAnnotator(master) if master else None,
        topic_labels=LabelBook(),
    )


def test_a_frame_is_counted_once_across_redelivery_and_restart(
    tmp_path: Path, small_pack: DataPack, stream_frames: list[dict[str, Any]]
) -> None:
    messages = [edge_case_message(f) for f in stream_frames[:300]]
    path = tmp_path / "edge-cases.jsonl"
    collector = make_collector(path, small_pack.master, radius=0.0)
    first = collector.collect(messages[:200])
    assert first.duplicate_id == 0
    collector.buffer.close()

    # Restart: a new collector from the same buffer; the uncommitted tail is delivered again, twice.
    restarted = make_collector(path, small_pack.master, radius=0.0)
    again = restarted.collect(messages[150:300] + messages[250:300])
    assert again.duplicate_id == 50 + 50  # 150..199 from before the restart, 250..299 twice in the batch
    assert len(restarted.buffer) == first.collected + again.collected
    ids = list(restarted.buffer.edge_cases)
    assert len(ids) == len(set(ids))
    reopened = EdgeCaseBuffer.open(path)
    assert list(reopened.edge_cases) == ids


def test_near_duplicates_spread_the_budget_over_distinct_regions(
    tmp_path: Path, small_pack: DataPack, stream_frames: list[dict[str, Any]]
) -> None:
    messages = [edge_case_message(f) for f in stream_frames]  # as if every frame had been flagged
    exact = make_collector(tmp_path / "exact.jsonl", small_pack.master, radius=0.0)
    spread = make_collector(tmp_path / "spread.jsonl", small_pack.master, radius=0.05, cap=10)
    for start in range(0, len(messages), 250):
        exact.collect(messages[start : start + 250])
        spread.collect(messages[start : start + 250])
    first_200_exact = list(exact.buffer.edge_cases)[:200]
    first_200_spread = list(spread.buffer.edge_cases)[:200]
    seq_of = {f["id"]: f["sequence"] for f in stream_frames}
    exact_sequences = Counter(seq_of[i] for i in first_200_exact)
    spread_sequences = Counter(seq_of[i] for i in first_200_spread)
    # Without the filter the first 200 are a couple of consecutive videos; with it, many videos, none dominant.
    assert len(spread_sequences) >= 3 * len(exact_sequences)
    assert max(spread_sequences.values()) <= 10
    # The near-duplicate state is rebuilt from the buffer: a restart rejects the same frames again.
    spread.buffer.close()
    restarted = make_collector(tmp_path / "spread.jsonl", small_pack.master, radius=0.05, cap=10)
    again = restarted.collect(messages)
    assert again.collected == 0
    assert again.duplicate_id + again.duplicate_near + again.capped == len(messages)


def test_frames_without_a_label_stay_pending_until_the_label_arrives(
    tmp_path: Path, stream_frames: list[dict[str, Any]]
) -> None:
    frames = stream_frames[:40:4]  # 10 frames from one video, far enough apart
    truth = {f["id"]: f["gt"] for f in frames}
    master = tmp_path / "master.json"
    master.write_text(json.dumps([{"id": i, "gt": g} for i, g in list(truth.items())[:4]]))
    path = tmp_path / "edge-cases.jsonl"
    collector = make_collector(path, master, radius=0.0)
    result = collector.collect([edge_case_message(f) for f in frames])
    assert (result.collected, result.labelled, result.pending) == (10, 4, 6)
    assert collector.buffer.unused_annotated_ids() == list(truth)[:4]

    # Two labels arrive on the labels topic, then the restart: pending ones are still there, not dropped.
    late = list(truth)[4:6]
    assert collector.label(late, [truth[i] for i in late]) == late
    collector.buffer.close()
    collector = make_collector(path, master, radius=0.0)
    assert len(collector.buffer) == 10
    assert collector.pending_count == 4

    # The annotators reach the rest: the master file grows and is re-read.
    master.write_text(json.dumps([{"id": i, "gt": g} for i, g in truth.items()]))
    os.utime(master, ns=(master.stat().st_atime_ns, master.stat().st_mtime_ns + 1_000_000))
    assert sorted(collector.refresh_labels()) == sorted(list(truth)[6:])
    assert collector.pending_count == 0
    got = {i: c.gt for i, c in EdgeCaseBuffer.open(path).edge_cases.items()}
    assert got == truth


def test_a_label_that_arrives_before_its_edge_case_labels_it_on_arrival(
    tmp_path: Path, stream_frames: list[dict[str, Any]]
) -> None:
    path = tmp_path / "edge-cases.jsonl"
    collector = make_collector(path, radius=0.0)
    frame = stream_frames[0]
    assert collector.label([frame["id"]], [frame["gt"]]) == []  # not collected yet: kept
    collector.buffer.close()
    collector = make_collector(path, radius=0.0)  # the early label survives a restart too
    result = collector.collect([edge_case_message(frame)])
    assert (result.collected, result.labelled) == (1, 1)
    assert collector.buffer.edge_cases[frame["id"]].gt == frame["gt"]


def test_collect_handles_hundreds_of_candidates_in_one_vectorised_batch(
    tmp_path: Path, stream_frames: list[dict[str, Any]]
) -> None:
    collector = make_collector(tmp_path / "b.jsonl", radius=0.05)
    messages = [edge_case_message(f) for f in stream_frames[:1000]]
    result = collector.collect(messages)
    assert result.received == 1000
    assert result.collected + result.duplicate_near == 1000
    kps = np.asarray([collector.buffer.edge_cases[i].frame["kps"] for i in result.collected_ids])
    assert kps.shape == (result.collected, 34)
