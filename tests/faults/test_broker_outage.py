"""Test 3: the broker stops and starts mid-stream under a running producer and consumer."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeloop.broker.local import LocalBroker
from edgeloop.datasets import DataPack
from tests.faults.conftest import STREAM_FRAMES
from tests.faults.ledger import (
    ConsumerRun,
    Ledger,
    Processes,
    acked_frames,
    edge_cases,
    expected_flags,
    free_port,
    in_order_per_partition,
    producer_argv,
    read_decisions,
    scrape,
    wait_committed,
)
from tests.kafka_helpers import create_topic, unique_name, wait_until

OUTAGE_S = 6.0


@pytest.mark.timeout(240)
def test_broker_stop_start_mid_stream(
    local_broker_factory: Callable[..., LocalBroker], procs: Processes, fault_pack: DataPack,
    trained_registry: Path, tmp_path: Path,
) -> None:  # fmt: skip
    import shutil

    broker = local_broker_factory()
    config = broker.client_config()
    registry = tmp_path / "registry"
    shutil.copytree(trained_registry, registry)
    run = ConsumerRun(
        bootstrap=broker.bootstrap, topic=create_topic(config, unique_name("frames"), 2),
        edge_topic=create_topic(config, unique_name("edges"), 2), dlq_topic=create_topic(config, unique_name("dlq")),
        versions_topic=create_topic(config, unique_name("versions"), 1, {"cleanup.policy": "compact"}),
        group=unique_name("monitor"), registry=registry, training=fault_pack.training,
        decision_log=tmp_path / "decisions.jsonl", batch_size=100, metrics_port=free_port(),
    )  # fmt: skip
    consumer = procs.start("consumer", run.argv())
    wait_until(lambda: "assigned" in consumer.output() or not consumer.alive(), 90, what="consumer assigned")
    producer = procs.start("producer", producer_argv(fault_pack.stream, run.topic, run.bootstrap, "--rate", "200"))
    wait_until(lambda: len(read_decisions(run.decision_log)) >= 300, 60, what="300 decisions before the outage")

    stopped_at = time.monotonic()
    broker.stop()
    # Sampled over the outage (a single scrape could fall between two statistics callbacks).
    samples: list[float] = []
    down_until = time.monotonic() + OUTAGE_S
    while time.monotonic() < down_until:
        samples.append(scrape(run.metrics_port)["edgeloop_consumer_broker_up"])
        time.sleep(0.5)
    decided_during = len(read_decisions(run.decision_log))
    broker.start()
    outage = time.monotonic() - stopped_at

    assert producer.wait(120) == 0, producer.output()[-3000:]
    assert f"acked {STREAM_FRAMES}, failed 0" in producer.output()
    wait_committed(config, run.group, run.topic, timeout=120, procs=[consumer])
    assert consumer.alive(), "the consumer must recover without a restart"
    after = scrape(run.metrics_port)
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(30) == 0, consumer.output()[-3000:]

    acked = acked_frames(config, run.topic)
    assert len(acked) == STREAM_FRAMES
    decisions = read_decisions(run.decision_log)
    ledger = Ledger(acked, decisions, edge_cases(config, run.edge_topic), expected_flags(run, acked))
    ledger.assert_nothing_lost()
    assert in_order_per_partition(decisions)
    assert ledger.duplicates <= run.uncommitted_window * 2, "at most the uncommitted window per partition is redone"
    # The outage shows: in the log, and as broker_up 0 while it lasted; errors counted.
    assert "all brokers are down" in consumer.output()
    assert 0 in samples, f"broker_up never 0 during the outage: {samples}"
    assert after["edgeloop_consumer_broker_up"] == 1
    assert sum(v for k, v in after.items() if k.startswith("edgeloop_consumer_kafka_errors_total")) > 0
    print(f"test3: outage {outage:.1f} s ({decided_during} decided before/while down), "
          f"{ledger.duplicates} duplicate decisions, broker_up {samples}")  # fmt: skip
