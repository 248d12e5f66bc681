"""Helpers for tests that talk to the real broker: topics, produce/consume, offsets, waiting.

They use confluent-kafka directly (not ``edgeloop.kafka``) so that a bug in the code under test cannot
hide behind the tools that check it. Every call has a bounded timeout and raises ``AssertionError`` with
what was expected when it runs out, so a failing test says what it waited for.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

T = TypeVar("T")
Record = bytes | str | tuple[bytes | str | None, bytes | str | None]


def _quiet(config: Mapping[str, Any]) -> dict[str, Any]:
    # Callables (error_cb, ...) from the caller's config are kept; librdkafka stays quiet unless asked.
    return {"log_level": 3, **config}


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> T:
    """Call ``predicate`` until it returns something truthy; return that. AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate!r}")
        time.sleep(interval)


def unique_name(prefix: str = "test") -> str:
    """A topic or group name no other test uses: ``<prefix>-<uuid hex>``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def create_topic(
    config: Mapping[str, Any],
    name: str,
    partitions: int = 1,
    topic_config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create ``name`` with ``partitions`` partitions and wait until the broker's metadata shows all."""
    admin = AdminClient(_quiet(config))
    new = NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(topic_config or {}))
    admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)[name].result(timeout)

    def ready() -> bool:
        topic = admin.list_topics(name, timeout=timeout).topics.get(name)
        return (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        )

    wait_until(ready, timeout, what=f"topic {name} with {partitions} partitions and leaders")
    return name


def delete_topics(config: Mapping[str, Any], names: Sequence[str], timeout: float = 10.0) -> None:
    """Delete topics, best effort (a test's cleanup must not fail the test)."""
    if not names:
        return
    admin = AdminClient(_quiet(config))
    for future in admin.delete_topics(list(names), operation_timeout=timeout).values():
        with contextlib.suppress(Exception):  # cleanup only
            future.result(timeout)


def partitions_of(config: Mapping[str, Any], topic: str, timeout: float = 10.0) -> list[int]:
    """Partition ids of ``topic`` (sorted)."""
    metadata = AdminClient(_quiet(config)).list_topics(topic, timeout=timeout).topics[topic]
    if metadata.error is not None:
        raise AssertionError(f"topic {topic}: {metadata.error}")
    return sorted(metadata.partitions)


def produce(
    config: Mapping[str, Any],
    topic: str,
    records: Iterable[Record],
    partition: int | None = None,
    timeout: float = 30.0,
) -> list[tuple[int, int]]:
    """Produce ``records`` (values, or ``(key, value)`` pairs), flush, and assert every delivery.

    Returns the ``(partition, offset)`` of each record, in order.
    """
    producer = Producer(_quiet({"acks": "all", "linger.ms": 1, **config}))
    reports: list[tuple[int, int] | KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        # A delivered message always has a partition and an offset.
        reports.append(err if err is not None else (msg.partition() or 0, msg.offset() or 0))

    count = 0
    for record in records:
        key, value = record if isinstance(record, tuple) else (None, record)
        if partition is None:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        else:
            producer.produce(topic, value=value, key=key, partition=partition, on_delivery=on_delivery)
        count += 1
        producer.poll(0)
    left = producer.flush(timeout)
    assert left == 0, f"{left} of {count} records to {topic} still undelivered after {timeout:.0f} s"
    failed = [r for r in reports if isinstance(r, KafkaError)]
    assert not failed, f"{len(failed)} deliveries to {topic} failed: {failed[:3]}"
    assert len(reports) == count, f"{count} records produced but {len(reports)} delivery reports"
    return [r for r in reports if isinstance(r, tuple)]


def consume(
    config: Mapping[str, Any],
    topic: str,
    count: int,
    timeout: float = 30.0,
    group: str | None = None,
    commit: bool = False,
) -> list[Message]:
    """Read ``count`` messages of ``topic`` from the earliest offset (a fresh group unless ``group``).

    Asserts that exactly ``count`` arrive within ``timeout`` and, after them, nothing more for a moment
    (so duplicates or extra records are caught). ``commit=True`` commits synchronously at the end.
    """
    consumer = Consumer(
        _quiet(
            {
                "group.id": group or unique_name("helper"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                **config,
            }
        )
    )
    messages: list[Message] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(messages) < count and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=count - len(messages), timeout=0.5):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                messages.append(msg)
        assert len(messages) == count, f"got {len(messages)} of {count} messages from {topic} in {timeout} s"
        extra = [m for m in consumer.consume(num_messages=10, timeout=0.5) if m.error() is None]
        assert not extra, f"{len(extra)} messages beyond the expected {count} in {topic}"
        if commit and messages:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return messages


def high_watermarks(config: Mapping[str, Any], topic: str, timeout: float = 10.0) -> dict[int, int]:
    """``{partition: high watermark}`` (the offset the next record would get) for every partition."""
    consumer = Consumer(_quiet({"group.id": unique_name("watermarks"), **config}))
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)[1]
            for p in partitions_of(config, topic, timeout)
        }
    finally:
        consumer.close()


def committed_offsets(
    config: Mapping[str, Any], group: str, topic: str, timeout: float = 10.0
) -> dict[int, int | None]:
    """``{partition: committed offset}`` of ``group`` on ``topic`` (``None`` where nothing is committed).

    Reads the group coordinator without joining the group, so it does not disturb a running consumer.
    """
    consumer = Consumer(_quiet({"group.id": group, "enable.auto.commit": False, **config}))
    try:
        wanted = [TopicPartition(topic, p) for p in partitions_of(config, topic, timeout)]
        result = consumer.committed(wanted, timeout=timeout)
    finally:
        consumer.close()
    return {tp.partition: (None if tp.offset == OFFSET_INVALID else tp.offset) for tp in result}


def group_lag(config: Mapping[str, Any], group: str, topic: str, timeout: float = 10.0) -> dict[int, int]:
    """``{partition: high watermark - committed}`` (all of the partition when nothing is committed)."""
    high = high_watermarks(config, topic, timeout)
    committed = committed_offsets(config, group, topic, timeout)
    return {p: high[p] - (committed.get(p) or 0) for p in high}


def wait_for_committed(
    config: Mapping[str, Any], group: str, topic: str, expected: Mapping[int, int], timeout: float = 30.0
) -> dict[int, int | None]:
    """Wait until ``group``'s committed offsets on ``topic`` equal ``expected`` (``{partition: offset}``)."""
    seen: dict[int, int | None] = {}

    def matches() -> bool:
        seen.clear()
        seen.update(committed_offsets(config, group, topic))
        return all(seen.get(p) == offset for p, offset in expected.items())

    try:
        wait_until(matches, timeout, interval=0.25, what=f"{group} committed {dict(expected)} on {topic}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last committed: {seen}") from None
    return dict(seen)
