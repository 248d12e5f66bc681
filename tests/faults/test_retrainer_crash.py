"""Test 8, the consumer's side: the retrainer is SIGKILLed mid-retrain and restarted while the consumer runs.

``tests/retrainer/test_service_kafka.py`` already proves the retrainer alone publishes and announces
exactly one version 1 after a SIGKILL at each crash point and a restart. Here the real consumer serves
the stream the whole time, sharing the registry, the edge topic and the model-versions topic:

- after_publish: version 1 is in the registry but not announced when the retrainer dies; the restart
  announces it.
- after_announce: version 1 is announced (the consumer swaps to it while the retrainer is dead) and the
  retrainer dies before committing; the restart must not announce or publish again.

The stream comes in three parts: 1000 frames before (their edge cases cross the retrain threshold),
500 at 100 frames/s from the crash on (the swap lands among them), 500 after the swap. Checked: the
consumer swaps to version 1 exactly once; the registry and the topic hold versions 0 and 1 only; every
decision carries one version, and versions never go backwards within a partition; each decision agrees
with a fresh monitor of its own version (E*_v0, E*_v1); the edge cases counted per version add up to |E|.
"""

from __future__ import annotations

import shutil
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edgeloop.datasets import DataPack
from edgeloop.registry import ModelRegistry
from tests.faults.conftest import STREAM_FRAMES
from tests.faults.ledger import (
    ConsumerRun,
    Processes,
    acked_frames,
    decided_keys,
    duplicates,
    edge_cases,
    expected_flags,
    free_port,
    producer_argv,
    read_decisions,
    read_topic,
    scrape,
    wait_committed,
)
from tests.kafka_helpers import unique_name, wait_until

RETRAIN_AFTER = 20  # the first 1000 frames flag ~50 (fewer once the retrainer drops near duplicates)
FIRST, SECOND = 1000, 500


def _retrainer_argv(run: ConsumerRun, pack: DataPack, group: str) -> list[str]:
    return [
        "-m", "retrainer", "--bootstrap-servers", run.bootstrap, "--edge-topic", run.edge_topic,
        "--model-versions-topic", run.versions_topic, "--group-id", group, "--registry", str(run.registry),
        "--training-data", str(pack.training), "--golden-data", str(pack.golden),
        "--master-annotations", str(pack.master), "--retrain-after", str(RETRAIN_AFTER), "--max-retrains", "1",
        "--policy", "always", "--metrics-port", "0", "--batch-size", "200", "--poll-timeout-s", "0.2",
        "--session-timeout-ms", "6000",
    ]  # fmt: skip


@pytest.mark.timeout(180)
@pytest.mark.parametrize("point", ["after_publish", "after_announce"])
def test_consumer_swaps_once_across_a_retrainer_crash(
    make_run: Callable[..., ConsumerRun], procs: Processes, fault_pack: DataPack, kafka_config: dict[str, Any],
    trained_registry: Path, tmp_path: Path, point: str,
) -> None:  # fmt: skip
    run = make_run(partitions=2, batch_size=100, metrics_port=free_port())
    v0_registry = tmp_path / "registry-v0"  # E*_v0: the registry as it was before any retrain
    shutil.copytree(trained_registry, v0_registry)
    stream = fault_pack.stream

    consumer = procs.start("consumer", run.argv())
    wait_until(lambda: "assigned" in consumer.output() or not consumer.alive(), 90, what="consumer assigned")
    first = procs.start("producer-1", producer_argv(stream, run.topic, run.bootstrap, "--limit", str(FIRST)))
    group = unique_name("retrainer")
    crashed = procs.start("retrainer-crashed", _retrainer_argv(run, fault_pack, group),
                          env={"EDGELOOP_RETRAINER_CRASH_AT": point})  # fmt: skip
    assert first.wait(60) == 0, first.output()[-2000:]
    assert crashed.wait(120) == -signal.SIGKILL, crashed.output()[-3000:]
    assert f"SIGKILL at {point}" in crashed.output()

    def serving_v1() -> bool:
        assert consumer.alive(), consumer.output()[-3000:]
        return scrape(run.metrics_port)["edgeloop_consumer_model_version"] == 1

    if point == "after_announce":  # announced before the kill: the swap happens while the retrainer is dead
        wait_until(serving_v1, 60, interval=0.25, what="the consumer serving version 1 (retrainer dead)")
    second = procs.start("producer-2", producer_argv(stream, run.topic, run.bootstrap, "--skip", str(FIRST),
                                                     "--limit", str(SECOND), "--rate", "100"))  # fmt: skip
    restarted = procs.start("retrainer-restarted", _retrainer_argv(run, fault_pack, group))
    wait_until(serving_v1, 120, interval=0.25, what="the consumer serving version 1")
    assert second.wait(60) == 0, second.output()[-2000:]
    rest = STREAM_FRAMES - FIRST - SECOND
    third = procs.start("producer-3", producer_argv(stream, run.topic, run.bootstrap, "--skip",
                                                    str(FIRST + SECOND), "--limit", str(rest)))  # fmt: skip
    assert third.wait(60) == 0, third.output()[-2000:]
    wait_committed(kafka_config, run.group, run.topic, timeout=90, procs=[consumer, restarted])
    metrics = scrape(run.metrics_port)
    for proc in (consumer, restarted):
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.output()[-3000:]

    # Exactly one version per threshold crossing: 0 and 1, published once, announced once, swapped once.
    assert [v.version for v in ModelRegistry(run.registry).versions()] == [0, 1]
    announced = [orjson.loads(m.value() or b"")["version"] for m in read_topic(kafka_config, run.versions_topic)]
    assert announced == [0, 1], f"model-versions topic: {announced}"
    assert metrics["edgeloop_consumer_model_swaps_total"] == 1
    assert consumer.output().count("model version 0 -> 1") == 1

    acked = acked_frames(kafka_config, run.topic)
    assert len(acked) == STREAM_FRAMES
    decisions = read_decisions(run.decision_log)
    assert decided_keys(decisions) == set(acked) and duplicates(decisions) == 0
    # One version per decision, never going back within a partition (log order is decision order).
    assert all(isinstance(d["version"], int) for d in decisions)
    last: dict[int, int] = {}
    for d in decisions:
        assert d["version"] >= last.get(d["partition"], 0), f"version went back: {d}"
        last[d["partition"]] = d["version"]
    by_version = Counter(d["version"] for d in decisions)
    assert set(by_version) == {0, 1}, by_version
    # Each decision is what a fresh monitor of its version decides (v1: model 1 + its training additions).
    expected = {0: expected_flags(run.with_(registry=v0_registry), acked), 1: expected_flags(run, acked)}
    wrong = [d for d in decisions if d["flagged"] != expected[d["version"]][(d["partition"], d["offset"])]]
    assert not wrong, f"{len(wrong)} decisions disagree with their version's monitor, e.g. {wrong[:2]}"

    # Edge cases counted across versions = |E|: each flagged decision is on the edge topic once, stamped
    # with the version that flagged it.
    edges = edge_cases(kafka_config, run.edge_topic)
    flagged = [d for d in decisions if d["flagged"]]
    assert sorted(e["id"] for e in edges) == sorted(d["id"] for d in flagged)
    edges_by_version = Counter(e["model_version"] for e in edges)
    assert edges_by_version == Counter(d["version"] for d in flagged)
    assert sum(edges_by_version.values()) == len(edges)
    print(f"test8 {point}: decisions by version {dict(by_version)}, edge cases by version "
          f"{dict(edges_by_version)} = |E| {len(edges)}, announced {announced}, swaps 1")  # fmt: skip
