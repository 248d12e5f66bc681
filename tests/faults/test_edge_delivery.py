"""Test 6: the edge topic refuses the edge cases: the input offset is not committed; after recovery they land.

- message too large: the edge topic's ``max.message.bytes`` is below an edge case's size, then raised;
- topic missing: the edge topic is deleted under the running consumer (on a broker of the test's own with
  ``auto_create_topics=False``, so nothing re-creates it behind the test's back), then re-created.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from edgeloop.broker.local import LocalBroker
from edgeloop.datasets import DataPack, open_dataset
from tests.faults.ledger import (
    ConsumerRun,
    Ledger,
    Processes,
    acked_frames,
    broker_run,
    decided_keys,
    edge_cases,
    expected_flags,
    read_decisions,
    wait_committed,
)
from tests.kafka_helpers import _quiet as quiet
from tests.kafka_helpers import committed_offsets, create_topic, delete_topics, produce, wait_until

FRAMES = 1000


def _frames(pack: DataPack) -> list[bytes]:
    """The first ``FRAMES`` frames of the stream as the producer writes them."""
    return [
        orjson.dumps({"schema": 1, "id": r["id"], "seq": i, "kps": r["kps"], "ts": 0})
        for i, r in zip(range(FRAMES), open_dataset(pack.stream), strict=False)
    ]


def _set_max_message_bytes(config: dict[str, Any], topic: str, value: str) -> None:
    from confluent_kafka.admin import AdminClient

    resource = ConfigResource(
        ResourceType.TOPIC, topic,
        incremental_configs=[ConfigEntry("max.message.bytes", value, incremental_operation=AlterConfigOpType.SET)],
    )  # fmt: skip
    admin = AdminClient(quiet(config))  # kept alive until the futures resolve
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


@pytest.mark.timeout(180)
def test_message_too_large_for_the_edge_topic_blocks_the_commit_until_fixed(
    make_run: Callable[..., ConsumerRun], procs: Processes, fault_pack: DataPack, kafka_config: dict[str, Any]
) -> None:
    # An edge case (frame + explanation) is well over 300 bytes: the broker refuses every one.
    run = make_run(partitions=1, batch_size=100, edge_config={"max.message.bytes": "300"})
    run = run.with_(extra=("--delivery-timeout-s", "5"))
    produce(kafka_config, run.topic, _frames(fault_pack), partition=0)
    acked = acked_frames(kafka_config, run.topic)
    expected = expected_flags(run, acked)
    first_flagged = min(o for (_, o), f in expected.items() if f)

    consumer = procs.start("consumer", run.argv())
    wait_until(lambda: consumer.output().count("batch not acknowledged") >= 2 or not consumer.alive(), 90,
               what="two refused batches")  # fmt: skip
    assert consumer.alive(), consumer.output()[-3000:]
    time.sleep(1.0)
    committed = committed_offsets(kafka_config, run.group, run.topic)[0]
    # The batch holding the first edge case is not committed, and nothing of it or after it is decided.
    assert committed is None or committed <= first_flagged
    assert all(o < (committed or 0) for _, o in decided_keys(read_decisions(run.decision_log)))
    assert edge_cases(kafka_config, run.edge_topic) == []

    _set_max_message_bytes(kafka_config, run.edge_topic, "1048588")
    wait_committed(kafka_config, run.group, run.topic, timeout=90, procs=[consumer])
    assert consumer.alive(), "the consumer recovered without a restart"
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(30) == 0, consumer.output()[-3000:]
    ledger = Ledger(acked, read_decisions(run.decision_log), edge_cases(kafka_config, run.edge_topic), expected)
    ledger.assert_nothing_lost()
    assert ledger.duplicates == 0, "a refused batch is decided again but logged only once it is acknowledged"
    retries = consumer.output().count("batch not acknowledged")
    print(f"test6: committed {committed} <= first edge case {first_flagged} while refused; {retries} retries; "
          f"{len(ledger.e_star)} edge cases after recovery, {ledger.edge_duplicates} duplicated")  # fmt: skip


@pytest.mark.timeout(180)
def test_missing_edge_topic_blocks_the_commit_until_it_is_recreated(
    local_broker_factory: Callable[..., LocalBroker], procs: Processes, fault_pack: DataPack,
    trained_registry: Path, tmp_path: Path,
) -> None:  # fmt: skip
    broker = local_broker_factory(auto_create_topics=False)
    config = broker.client_config()
    run = broker_run(config, trained_registry, fault_pack.training, tmp_path, partitions=1, batch_size=100,
                     extra=("--delivery-timeout-s", "5"))  # fmt: skip
    consumer = procs.start("consumer", run.argv())  # its ensure_topics finds every topic present
    wait_until(lambda: "assigned" in consumer.output() or not consumer.alive(), 90, what="consumer assigned")
    assert consumer.alive(), consumer.output()[-3000:]
    delete_topics(config, [run.edge_topic])

    def edge_topic_gone() -> bool:
        from confluent_kafka.admin import AdminClient

        return run.edge_topic not in AdminClient(quiet(config)).list_topics(timeout=10).topics

    wait_until(edge_topic_gone, 30, what=f"{run.edge_topic} deleted")
    produce(config, run.topic, _frames(fault_pack), partition=0)
    acked = acked_frames(config, run.topic)
    expected = expected_flags(run, acked)
    first_flagged = min(o for (_, o), f in expected.items() if f)

    wait_until(lambda: consumer.output().count("batch not acknowledged") >= 2 or not consumer.alive(), 90,
               what="two unacknowledged batches")  # fmt: skip
    assert consumer.alive(), consumer.output()[-3000:]
    time.sleep(1.0)
    committed = committed_offsets(config, run.group, run.topic)[0]
    blocked = [o for _, o in decided_keys(read_decisions(run.decision_log))]
    assert committed is None or committed <= first_flagged
    assert all(o < (committed or 0) for o in blocked), "nothing of the blocked batch or after it is decided"
    assert edge_topic_gone(), "nothing may re-create the edge topic but the operator"

    create_topic(config, run.edge_topic, 2)
    recreated_at = time.monotonic()
    wait_committed(config, run.group, run.topic, timeout=120, procs=[consumer])
    recovery = time.monotonic() - recreated_at
    assert consumer.alive(), "the consumer recovered without a restart"
    consumer.signal(signal.SIGTERM)
    assert consumer.wait(30) == 0, consumer.output()[-3000:]
    ledger = Ledger(acked, read_decisions(run.decision_log), edge_cases(config, run.edge_topic), expected)
    ledger.assert_nothing_lost()  # E* is on the re-created topic
    assert ledger.duplicates == 0, "an unacknowledged batch is decided again but logged only once it is acknowledged"
    retries = consumer.output().count("batch not acknowledged")
    print(f"test6b: committed {committed} <= first edge case {first_flagged} while the topic was missing; "
          f"{retries} retries; all committed {recovery:.1f} s after re-creating it; {len(ledger.e_star)} edge "
          f"cases, {ledger.edge_duplicates} duplicated")  # fmt: skip
