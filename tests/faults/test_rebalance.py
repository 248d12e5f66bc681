"""Test 4: rebalances in a group of two consumers (subprocesses) on a 2-partition topic.

- A runs, B joins, A is SIGKILLed: B takes A's partition after the session timeout; the union of both
  decision logs covers every acknowledged frame, and the only duplicates are A's uncommitted window.
- A runs, B joins (A's partition is revoked gracefully), then B is SIGTERMed (B's is revoked gracefully,
  A takes both back): zero duplicate decisions.

Each member writes its own decision log (two writers appending to one file could interleave lines).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeloop.datasets import DataPack
from tests.faults.conftest import STREAM_FRAMES
from tests.faults.ledger import (
    ConsumerRun,
    Ledger,
    Proc,
    Processes,
    acked_frames,
    assignments,
    edge_cases,
    expected_flags,
    in_order_per_partition,
    producer_argv,
    read_decisions,
    wait_committed,
)
from tests.kafka_helpers import committed_offsets, wait_until

RATE = "200"  # frames/s: the 2000-frame stream lasts ~10 s, so the rebalances happen under load


def _latest(*members: Proc) -> list[list[int]]:
    """Each member's latest logged assignment (``[]`` before the first); fails if one exited."""
    for proc in members:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.output()[-3000:]}")
    return [sorted((assignments(proc) or [[]])[-1]) for proc in members]


def _wait_owns(proc: Proc, partitions: list[int], after: int, what: str, timeout: float = 90.0) -> None:
    """Wait until ``proc`` logged an assignment beyond its ``after``-th one and its latest is ``partitions``."""
    wait_until(lambda: len(assignments(proc)) > after and _latest(proc)[0] == partitions, timeout, 0.2, what)


def _start_a_then_b(
    make_run: Callable[..., ConsumerRun], procs: Processes, pack: DataPack, tmp_path: Path
) -> tuple[ConsumerRun, ConsumerRun, Proc, Proc, Proc, list[int]]:
    """A alone under load, then B joins; returns once both own one partition and B has decided frames."""
    run_a = make_run(partitions=2, batch_size=100).with_(decision_log=tmp_path / "decisions-a.jsonl")
    run_b = run_a.with_(decision_log=tmp_path / "decisions-b.jsonl")
    a = procs.start("consumer-a", run_a.argv("--instance-id", "a"))
    _wait_owns(a, [0, 1], 0, "A assigned both partitions")
    producer = procs.start("producer", producer_argv(pack.stream, run_a.topic, run_a.bootstrap, "--rate", RATE))
    wait_until(lambda: len(read_decisions(run_a.decision_log)) >= 300, 60, what="A decided 300 frames")
    b = procs.start("consumer-b", run_b.argv("--instance-id", "b"))

    def split() -> bool:  # one partition each (eager rebalance: both logged a new assignment)
        a_now, b_now = _latest(a, b)
        return bool(a_now) and bool(b_now) and sorted(a_now + b_now) == [0, 1]

    wait_until(split, 90, 0.2, "A and B owning one partition each")
    a_parts = _latest(a)[0]
    wait_until(lambda: len(read_decisions(run_b.decision_log)) >= 50, 60, what="B decided 50 frames")
    assert producer.alive(), "the producer finished before B joined: the rebalance was not under load"
    return run_a, run_b, a, b, producer, a_parts


def _ledger(run_a: ConsumerRun, run_b: ConsumerRun, config: dict[str, Any]) -> Ledger:
    acked = acked_frames(config, run_a.topic)
    assert len(acked) == STREAM_FRAMES
    decisions = read_decisions(run_a.decision_log) + read_decisions(run_b.decision_log)
    return Ledger(acked, decisions, edge_cases(config, run_a.edge_topic), expected_flags(run_a, acked))


@pytest.mark.timeout(180)
def test_member_killed_its_partition_moves_and_nothing_is_lost(
    make_run: Callable[..., ConsumerRun], procs: Processes, fault_pack: DataPack, kafka_config: dict[str, Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    run_a, run_b, a, b, producer, a_parts = _start_a_then_b(make_run, procs, fault_pack, tmp_path)

    b_before = len(assignments(b))
    a.signal(signal.SIGKILL)
    assert a.wait(10) == -signal.SIGKILL
    killed_at = time.monotonic()
    # A is dead: nothing moves the committed offsets of its partition until B owns it.
    at_kill = committed_offsets(kafka_config, run_a.group, run_a.topic)
    decided_by_a = read_decisions(run_a.decision_log)
    window = sum(1 for d in decided_by_a if d["offset"] >= (at_kill.get(d["partition"]) or 0))
    _wait_owns(b, [0, 1], b_before, "B assigned A's partition too")
    takeover = time.monotonic() - killed_at

    assert producer.wait(90) == 0, producer.output()[-2000:]
    assert f"acked {STREAM_FRAMES}, failed 0" in producer.output()
    wait_committed(kafka_config, run_a.group, run_a.topic, timeout=90, procs=[b])
    b.signal(signal.SIGTERM)
    assert b.wait(30) == 0, b.output()[-3000:]

    ledger = _ledger(run_a, run_b, kafka_config)
    ledger.assert_nothing_lost()  # the union of A's and B's decisions covers A
    decided_by_b = read_decisions(run_b.decision_log)
    for p in a_parts:  # B went on with A's partition from A's last commit
        assert any(d["partition"] == p and d["offset"] >= (at_kill.get(p) or 0) for d in decided_by_b)
    assert in_order_per_partition(decided_by_a) and in_order_per_partition(decided_by_b)
    assert window <= run_a.batch_size
    assert ledger.duplicates == window, f"{ledger.duplicates} duplicate decisions, A's uncommitted window {window}"
    assert ledger.edge_duplicates <= window
    print(f"test4-kill: A had {a_parts}, {len(decided_by_a)} decided by A, {len(decided_by_b)} by B; "
          f"B took over after {takeover:.1f} s; uncommitted window {window} = duplicates {ledger.duplicates}, "
          f"edge duplicates {ledger.edge_duplicates}")  # fmt: skip


@pytest.mark.timeout(180)
def test_graceful_revokes_make_no_duplicates(
    make_run: Callable[..., ConsumerRun], procs: Processes, fault_pack: DataPack, kafka_config: dict[str, Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    # B joining revokes one of A's partitions gracefully (A commits in on_revoke)...
    run_a, run_b, a, b, producer, _ = _start_a_then_b(make_run, procs, fault_pack, tmp_path)
    after_join = read_decisions(run_a.decision_log) + read_decisions(run_b.decision_log)
    # ... and B leaving on SIGTERM revokes B's (B commits before it leaves) while A keeps running.
    a_before = len(assignments(a))
    b.signal(signal.SIGTERM)
    assert b.wait(30) == 0, b.output()[-3000:]
    assert producer.alive(), "the producer finished before B left: the revoke was not under load"
    _wait_owns(a, [0, 1], a_before, "A assigned both partitions again")

    assert producer.wait(90) == 0, producer.output()[-2000:]
    wait_committed(kafka_config, run_a.group, run_a.topic, timeout=90, procs=[a])
    a.signal(signal.SIGTERM)
    assert a.wait(30) == 0, a.output()[-3000:]

    ledger = _ledger(run_a, run_b, kafka_config)
    ledger.assert_nothing_lost()
    decided_by_b = read_decisions(run_b.decision_log)
    assert in_order_per_partition(read_decisions(run_a.decision_log)) and in_order_per_partition(decided_by_b)
    assert ledger.duplicates == 0, f"{ledger.duplicates} duplicate decisions after graceful revokes"
    assert ledger.edge_duplicates == 0
    print(f"test4-graceful: {len(after_join)} decided when B had joined, {len(decided_by_b)} decided by B, "
          f"{len(ledger.decisions)} decisions for {len(ledger.acked)} frames, duplicates 0")  # fmt: skip
