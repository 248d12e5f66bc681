"""Test 1: the consumer SIGKILLed between publishing edge cases and committing, restarted in its group."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edgeloop.datasets import DataPack
from tests.faults.conftest import STREAM_FRAMES
from tests.faults.ledger import (
    ConsumerRun,
    Ledger,
    Processes,
    acked_frames,
    crashpoint_argv,
    edge_cases,
    expected_flags,
    producer_argv,
    read_decisions,
    wait_committed,
)
from tests.kafka_helpers import committed_offsets, high_watermarks


def _produce_all(procs: Processes, pack: DataPack, run: ConsumerRun, config: dict[str, Any]) -> dict[Any, Any]:
    producer = procs.start("producer", producer_argv(pack.stream, run.topic, run.bootstrap))
    assert producer.wait(90) == 0, producer.output()[-2000:]
    assert f"acked {STREAM_FRAMES}, failed 0" in producer.output()
    acked = acked_frames(config, run.topic)
    assert len(acked) == STREAM_FRAMES
    return acked


def _kill_then_restart(
    procs: Processes, run: ConsumerRun, config: dict[str, Any], tmp_path: Path, point: str, *more: str
) -> tuple[dict[int, int | None], list[dict[str, Any]]]:
    marker = tmp_path / "killed.json"
    killed = procs.start("consumer-killed", crashpoint_argv(run, point, 2, marker, *more))
    rc = killed.wait(120)
    assert rc == -signal.SIGKILL, f"the kill point did not SIGKILL the consumer (rc {rc}):\n{killed.output()[-3000:]}"
    assert orjson.loads(marker.read_bytes())["point"] == point
    at_kill = committed_offsets(config, run.group, run.topic)
    decided_before = read_decisions(run.decision_log)
    restarted = procs.start("consumer-restarted", run.argv(*more))
    wait_committed(config, run.group, run.topic, timeout=120, procs=[restarted])
    restarted.signal(signal.SIGTERM)
    assert restarted.wait(30) == 0, restarted.output()[-3000:]
    return at_kill, decided_before


@pytest.mark.timeout(240)
def test_sigkill_between_edge_publish_and_commit(
    make_run: Callable[..., ConsumerRun], procs: Processes, fault_pack: DataPack, kafka_config: dict[str, Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    run = make_run(partitions=2, batch_size=200)
    acked = _produce_all(procs, fault_pack, run, kafka_config)
    expected = expected_flags(run, acked)
    assert sum(expected.values()) > 0, "the stream must contain edge cases for this test to mean anything"

    at_kill, decided_before = _kill_then_restart(procs, run, kafka_config, tmp_path, "commit")

    ledger = Ledger(acked, read_decisions(run.decision_log), edge_cases(kafka_config, run.edge_topic), expected)
    ledger.assert_nothing_lost()  # A ⊆ decisions, E* ⊆ E, every flag as the deterministic run
    # The uncommitted window: decided (log written, outputs acked) but not committed when killed.
    window = sum(1 for d in decided_before if d["offset"] >= (at_kill.get(d["partition"]) or 0))
    assert 0 < window <= run.uncommitted_window
    assert ledger.duplicates == window, f"{ledger.duplicates} duplicate decisions, uncommitted window {window}"
    assert ledger.edge_duplicates <= window
    assert committed_offsets(kafka_config, run.group, run.topic) == high_watermarks(kafka_config, run.topic)
    print(f"test1: window {window}, duplicate decisions {ledger.duplicates}, duplicate edge cases "
          f"{ledger.edge_duplicates}, |E*| {len(ledger.e_star)}, |E| {sum(ledger.e_ids.values())}")  # fmt: skip


@pytest.mark.timeout(240)
def test_sigkill_inside_transaction_exactly_once(
    make_run: Callable[..., ConsumerRun], procs: Processes, fault_pack: DataPack, kafka_config: dict[str, Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    run = make_run(partitions=2, batch_size=200)
    acked = _produce_all(procs, fault_pack, run, kafka_config)
    expected = expected_flags(run, acked)
    # A fixed instance id gives the restart the same transactional.id: it fences the dead transaction.
    _kill_then_restart(procs, run, kafka_config, tmp_path, "settle", "--exactly-once", "--instance-id", "eos-test")

    ledger = Ledger(acked, read_decisions(run.decision_log), edge_cases(kafka_config, run.edge_topic), expected)
    ledger.assert_nothing_lost()
    assert ledger.e_ids == {i: 1 for i in ledger.e_star}, "with --exactly-once E must equal E* exactly"
    assert ledger.duplicates == 0
    assert committed_offsets(kafka_config, run.group, run.topic) == high_watermarks(kafka_config, run.topic)
    print(f"test1-eos: |E*| {len(ledger.e_star)} = |E| {sum(ledger.e_ids.values())}, duplicates 0")
