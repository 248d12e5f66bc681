"""Test 9: replay from the earliest offset in a fresh group: identical decisions, edge cases and model bytes."""

from __future__ import annotations

import hashlib
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeloop.datasets import DataPack
from edgeloop.registry import ModelRegistry
from tests.faults.conftest import STREAM_FRAMES
from tests.faults.ledger import ConsumerRun, Processes, edge_cases, producer_argv, read_decisions, wait_committed
from tests.kafka_helpers import high_watermarks, unique_name


@pytest.mark.timeout(240)
def test_replay_in_a_fresh_group_is_identical(
    make_run: Callable[..., ConsumerRun], new_topic: Callable[..., str], procs: Processes, fault_pack: DataPack,
    kafka_config: dict[str, Any],
) -> None:  # fmt: skip
    # Both runs bootstrap their own registry (version 0 trained from scratch): the bytes must match too.
    first = make_run(partitions=2, batch_size=250, fresh_registry=True)
    producer = procs.start("producer", producer_argv(fault_pack.stream, first.topic, first.bootstrap))
    assert producer.wait(90) == 0
    second = first.with_(
        group=unique_name("replay"),
        edge_topic=new_topic(2, prefix="edges-replay"),
        registry=first.registry.with_name("registry-replay"),
        decision_log=first.decision_log.with_name("decisions-replay"),
        batch_size=170,  # other batch boundaries: decisions must not depend on them
    )
    runs = [procs.start("consumer-first", first.argv()), procs.start("consumer-replay", second.argv())]
    high = high_watermarks(kafka_config, first.topic)
    for run in (first, second):
        wait_committed(kafka_config, run.group, run.topic, high, timeout=150, procs=runs)
    for proc in runs:
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.output()[-3000:]

    def by_offset(run: ConsumerRun) -> dict[tuple[int, int], tuple[Any, ...]]:
        decisions = read_decisions(run.decision_log)
        assert len(decisions) == STREAM_FRAMES
        return {
            (d["partition"], d["offset"]): (d["id"], d["flagged"], d["prediction"], d["score"], d["version"])
            for d in decisions
        }

    assert by_offset(first) == by_offset(second)
    edges = [sorted(e["id"] for e in edge_cases(kafka_config, run.edge_topic)) for run in (first, second)]
    assert edges[0] == edges[1] and edges[0], "identical, non-empty edge-case sets"
    shas = [
        hashlib.sha256(Path(ModelRegistry(run.registry).get(0).artifact).read_bytes()).hexdigest()
        for run in (first, second)
    ]
    assert shas[0] == shas[1]
    print(f"test9: {STREAM_FRAMES} identical decisions, {len(edges[0])} identical edge cases, sha256 {shas[0][:12]}")
