"""Test 2: SIGTERM under load: exit 0 in time, outputs flushed, committed = last processed + 1, no duplicates."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from edgeloop.datasets import DataPack
from tests.faults.conftest import STREAM_FRAMES
from tests.faults.ledger import (
    ConsumerRun,
    Ledger,
    Processes,
    acked_frames,
    edge_cases,
    expected_flags,
    producer_argv,
    read_decisions,
    wait_committed,
)
from tests.kafka_helpers import committed_offsets, wait_until

SHUTDOWN_DEADLINE_S = 15.0


@pytest.mark.timeout(240)
def test_sigterm_under_load_then_restart_without_duplicates(
    make_run: Callable[..., ConsumerRun], procs: Processes, fault_pack: DataPack, kafka_config: dict[str, Any]
) -> None:
    run = make_run(partitions=2, batch_size=100)
    consumer = procs.start("consumer", run.argv())
    wait_until(lambda: "assigned" in consumer.output() or not consumer.alive(), 90, what="consumer assigned")
    assert consumer.alive(), consumer.output()[-3000:]
    # ~8 s of frames: the SIGTERM lands while frames keep arriving.
    producer = procs.start("producer", producer_argv(fault_pack.stream, run.topic, run.bootstrap, "--rate", "250"))
    wait_until(lambda: len(read_decisions(run.decision_log)) >= 400, 60, what="400 decisions before SIGTERM")
    sent_at = time.monotonic()
    consumer.signal(signal.SIGTERM)
    rc = consumer.wait(SHUTDOWN_DEADLINE_S + 15)
    took = time.monotonic() - sent_at
    assert rc == 0, consumer.output()[-3000:]
    assert took < SHUTDOWN_DEADLINE_S, f"SIGTERM -> exit took {took:.1f} s"
    assert producer.alive(), "the producer finished before the SIGTERM: the test did not stop under load"

    first = read_decisions(run.decision_log)
    last: dict[int, int] = {}
    for d in first:
        last[d["partition"]] = max(last.get(d["partition"], -1), d["offset"])
    committed = committed_offsets(kafka_config, run.group, run.topic)
    assert {p: o for p, o in committed.items() if o is not None} == {p: o + 1 for p, o in last.items()}
    # Flushed before exit: every edge case flagged so far is on the edge topic already.
    flagged_ids = {d["id"] for d in first if d["flagged"]}
    assert flagged_ids <= {e["id"] for e in edge_cases(kafka_config, run.edge_topic)}

    assert producer.wait(90) == 0, producer.output()[-2000:]
    restarted = procs.start("consumer-restarted", run.argv())
    wait_committed(kafka_config, run.group, run.topic, timeout=120, procs=[restarted])
    restarted.signal(signal.SIGTERM)
    assert restarted.wait(30) == 0

    acked = acked_frames(kafka_config, run.topic)
    assert len(acked) == STREAM_FRAMES
    ledger = Ledger(acked, read_decisions(run.decision_log), edge_cases(kafka_config, run.edge_topic),
                    expected_flags(run, acked))  # fmt: skip
    ledger.assert_nothing_lost()
    assert ledger.duplicates == 0
    assert ledger.edge_duplicates == 0
    print(f"test2: {len(first)} decided before SIGTERM, exit 0 after {took:.2f} s, duplicates 0")
