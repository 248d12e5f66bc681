"""Test 7: one batch takes longer than ``max.poll.interval.ms``.

The consumer runs under :mod:`tests.faults.crashpoint` ``--point stall``: its third batch of frames is held
for ``STALL_S`` seconds before it is decided (the unmodified service otherwise). librdkafka makes the
member leave the group once ``max.poll.interval.ms`` passes without a poll; the next poll reports it.
The test checks it is detected (log line and counter), that the per-partition "last progress" gauge
shows the stall while it lasts, that the member rejoins and carries on, and that every frame is decided
(the held batch at most twice).
"""

from __future__ import annotations

import signal
import time
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
    assignments,
    crashpoint_argv,
    edge_cases,
    expected_flags,
    free_port,
    in_order_per_partition,
    producer_argv,
    read_decisions,
    scrape,
    wait_committed,
)
from tests.kafka_helpers import wait_until

MAX_POLL_INTERVAL_MS = 7000  # librdkafka wants it >= session.timeout.ms (6000 in ConsumerRun)
STALL_S = 11.0
PROGRESS = "edgeloop_consumer_last_progress_timestamp_seconds"
EXCEEDED = "edgeloop_consumer_max_poll_interval_exceeded_total"


def _progress(sample: dict[str, float]) -> dict[int, float]:
    prefix = f'{PROGRESS}{{partition="'
    return {int(k[len(prefix) : -2]): v for k, v in sample.items() if k.startswith(prefix)}


@pytest.mark.timeout(150)
def test_batch_slower_than_max_poll_interval_is_detected_and_the_member_rejoins(
    make_run: Callable[..., ConsumerRun], procs: Processes, fault_pack: DataPack, kafka_config: dict[str, Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    run = make_run(partitions=2, batch_size=200, metrics_port=free_port())
    producer = procs.start("producer", producer_argv(fault_pack.stream, run.topic, run.bootstrap))
    assert producer.wait(90) == 0, producer.output()[-2000:]
    acked = acked_frames(kafka_config, run.topic)
    assert len(acked) == STREAM_FRAMES

    marker = tmp_path / "stall.json"
    argv = crashpoint_argv(run, "stall", 3, marker, "--max-poll-interval-ms", str(MAX_POLL_INTERVAL_MS),
                           stall_s=STALL_S)  # fmt: skip
    consumer = procs.start("consumer-stalled", argv)
    wait_until(lambda: marker.exists() or not consumer.alive(), 90, what="the stalled batch")
    assert consumer.alive(), consumer.output()[-3000:]
    stall = orjson.loads(marker.read_bytes())

    # Past max.poll.interval.ms and still inside the stall: no partition has made progress since it began.
    time.sleep(max(0.0, stall["started"] + MAX_POLL_INTERVAL_MS / 1000 + 1.5 - time.time()))
    assert time.time() < stall["until"], "the check must fall inside the stall"
    during = scrape(run.metrics_port)
    progress_during = _progress(during)
    assert progress_during, "batches before the stall set the last-progress gauge"
    assert all(t <= stall["started"] for t in progress_during.values()), (progress_during, stall)
    silent_for = time.time() - max(progress_during.values())
    assert silent_for > MAX_POLL_INTERVAL_MS / 1000
    assert during[EXCEEDED] == 0  # only the next poll tells the application

    wait_committed(kafka_config, run.group, run.topic, timeout=90, procs=[consumer])
    after = scrape(run.metrics_port)
    log_text = consumer.output()
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(30) == 0, consumer.output()[-3000:]

    assert "outlasted max.poll.interval.ms" in log_text
    assert after[EXCEEDED] == 1
    progress_after = _progress(after)
    assert set(progress_after) == {0, 1}
    assert all(t > stall["until"] for t in progress_after.values()), (progress_after, stall)
    # Rejoined: the partitions were lost (not committed: another member may own them) and assigned again,
    # all of them (it is the only member). librdkafka runs those callbacks before it hands over the error.
    assert "partitions lost [0, 1]" in log_text, log_text[-3000:]
    assert "assigned [" in log_text[log_text.index("partitions lost [0, 1]") :], log_text[-3000:]
    assert sorted(assignments(consumer)[-1]) == [0, 1]

    decisions = read_decisions(run.decision_log)
    ledger = Ledger(acked, decisions, edge_cases(kafka_config, run.edge_topic), expected_flags(run, acked))
    ledger.assert_nothing_lost()
    assert in_order_per_partition(decisions)
    # Redone at most: the held batch and the batches still in flight when the member left the group.
    bound = run.uncommitted_window
    assert ledger.duplicates <= bound, f"{ledger.duplicates} duplicates, held batch {stall['size']}, bound {bound}"
    print(f"test7: batch {stall['batch']} ({stall['size']} frames from {stall['first_offsets']}) held "
          f"{STALL_S:.0f} s > max.poll.interval {MAX_POLL_INTERVAL_MS} ms; silent {silent_for:.1f} s at the check; "
          f"exceeded_total {after[EXCEEDED]:.0f}; duplicates {ledger.duplicates}; "
          f"edge duplicates {ledger.edge_duplicates}")  # fmt: skip
