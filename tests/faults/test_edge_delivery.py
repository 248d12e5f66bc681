"""Test 6: the edge topic refuses the edge cases: the input offset is not committed; after recovery they land."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from edgeloop.datasets import DataPack, open_dataset
from tests.faults.ledger import (
    ConsumerRun,
    Ledger,
    Processes,
    acked_frames,
    decided_keys,
    edge_cases,
    expected_flags,
    read_decisions,
    wait_committed,
)
from tests.kafka_helpers import _quiet as quiet
from tests.kafka_helpers import committed_offsets, produce, wait_until

FRAMES = 1000


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
    frames = [
        orjson.dumps({"schema": 1, "id": r["id"], "seq": i, "kps": r["kps"], "ts": 0})
        for i, r in zip(range(FRAMES), open_dataset(fault_pack.stream), strict=False)
    ]
    produce(kafka_config, run.topic, frames, partition=0)
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
