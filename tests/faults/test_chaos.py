"""Test 10: a bounded chaos soak: kills and broker pauses on a fixed schedule under a steady producer.

Two consumers in one group on a 2-partition topic of the test's own broker; the producer replays the
2000-frame stream at ``RATE`` frames/s (~50 s). On the schedule below a consumer is SIGKILLed and started
again at once (a new process, its own decision log), and the broker is frozen (SIGSTOP) for a few
seconds. At the end: lost = 0 (every acked frame decided, every expected edge case on the edge topic), no
reordering within a partition (on the topic: sequence numbers rise with offsets; in every process's
decision log: offsets rise per partition), duplicates within the bound of test 1 (one batch per kill),
and the group's lag back to 0.
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeloop.broker.local import LocalBroker
from edgeloop.datasets import DataPack
from tests.faults.conftest import STREAM_FRAMES
from tests.faults.ledger import (
    ConsumerRun,
    Ledger,
    Proc,
    Processes,
    acked_frames,
    assignments,
    broker_run,
    edge_cases,
    expected_flags,
    in_order_per_partition,
    producer_argv,
    read_decisions,
    wait_committed,
)
from tests.kafka_helpers import committed_offsets, group_lag, wait_until

RATE = "40"  # frames/s: 2000 frames in ~50 s
PAUSE_S = 3.0  # shorter than session.timeout.ms (6 s): a pause is a hiccup, not a member's death
# (seconds after the producer started, action, consumer slot)
SCHEDULE: list[tuple[float, str, str]] = [
    (8.0, "kill", "c1"),
    (18.0, "pause", ""),
    (28.0, "kill", "c2"),
    (38.0, "pause", ""),
    (44.0, "kill", "c1"),
]


@pytest.mark.timeout(200)
def test_chaos_soak(
    local_broker_factory: Callable[..., LocalBroker], procs: Processes, fault_pack: DataPack,
    trained_registry: Path, tmp_path: Path,
) -> None:  # fmt: skip
    broker = local_broker_factory()
    config = broker.client_config()
    run = broker_run(config, trained_registry, fault_pack.training, tmp_path, partitions=2, batch_size=100)
    runs: list[ConsumerRun] = []  # one per consumer process (each its own decision log)
    current: dict[str, tuple[Proc, ConsumerRun]] = {}

    def start(slot: str) -> None:
        this = run.with_(decision_log=tmp_path / f"decisions-{len(runs)}-{slot}.jsonl")
        runs.append(this)
        current[slot] = procs.start(f"consumer-{slot}", this.argv("--instance-id", f"{slot}-{len(runs)}")), this

    def alive() -> list[Proc]:
        for proc, _ in current.values():
            assert proc.alive(), f"{proc.name} exited {proc.popen.returncode}:\n{proc.output()[-3000:]}"
        return [proc for proc, _ in current.values()]

    for slot in ("c1", "c2"):
        start(slot)
    wait_until(lambda: all(any(assignments(p)) for p in alive()), 90, what="both consumers assigned a partition")
    producer = procs.start("producer", producer_argv(fault_pack.stream, run.topic, run.bootstrap, "--rate", RATE))
    began = time.monotonic()
    windows: list[int] = []
    pauses: list[float] = []
    for at, action, slot in SCHEDULE:
        while time.monotonic() - began < at:
            alive()
            time.sleep(0.2)
        if action == "kill":
            victim, victim_run = current[slot]
            victim.signal(signal.SIGKILL)
            assert victim.wait(10) == -signal.SIGKILL
            at_kill = committed_offsets(config, run.group, run.topic)
            windows.append(
                sum(1 for d in read_decisions(victim_run.decision_log) if d["offset"] >= (at_kill[d["partition"]] or 0))
            )
            start(slot)
        else:
            paused_at = time.monotonic()
            broker.pause()
            try:
                time.sleep(PAUSE_S)
            finally:
                broker.resume()
            pauses.append(round(time.monotonic() - paused_at, 1))
    assert producer.alive(), "the producer finished before the schedule did: the chaos was not under load"

    assert producer.wait(120) == 0, producer.output()[-3000:]
    assert f"acked {STREAM_FRAMES}, failed 0" in producer.output()
    produced_s = time.monotonic() - began
    wait_committed(config, run.group, run.topic, timeout=120, procs=alive())
    caught_up_s = time.monotonic() - began - produced_s
    assert set(group_lag(config, run.group, run.topic).values()) == {0}
    for proc in alive():
        proc.signal(signal.SIGTERM)
    for proc, _ in current.values():
        assert proc.wait(30) == 0, proc.output()[-3000:]

    acked = acked_frames(config, run.topic)
    assert len(acked) == STREAM_FRAMES
    # On the topic: the producer's sequence numbers rise with the offsets (idempotent producer, no reorder).
    seqs: dict[int, list[int]] = defaultdict(list)
    for (partition, _offset), frame in sorted(acked.items()):
        seqs[partition].append(frame["seq"])
    assert all(s == sorted(s) for s in seqs.values())
    logs = [read_decisions(r.decision_log) for r in runs]
    assert all(in_order_per_partition(decisions) for decisions in logs), "a process decided out of order"
    ledger = Ledger(acked, [d for decisions in logs for d in decisions], edge_cases(config, run.edge_topic),
                    expected_flags(run, acked))  # fmt: skip
    ledger.assert_nothing_lost()  # lost = 0
    kills = sum(1 for _, action, _ in SCHEDULE if action == "kill")
    assert ledger.duplicates <= kills * run.uncommitted_window, f"{ledger.duplicates} duplicates for {kills} kills"
    print(f"test10: {kills} kills (uncommitted windows {windows}), pauses {pauses} s; {len(runs)} consumer "
          f"processes; produced in {produced_s:.1f} s, lag 0 {caught_up_s:.1f} s later; duplicates "
          f"{ledger.duplicates} (bound {kills * run.uncommitted_window}), edge duplicates {ledger.edge_duplicates}, "
          f"|E*| {len(ledger.e_star)}")  # fmt: skip
