"""Thin factories around confluent-kafka clients, with the defaults every edgeloop service wants.

- Consumers never auto-commit and never auto-store offsets: a service commits a frame's offset only
  after its outputs were acknowledged (at-least-once).
- Producers are idempotent with ``acks=all``; every delivery report is checked.
- Every client installs an ``error_cb`` that logs librdkafka's errors (a broker outage shows up there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from edgeloop.errors import EdgeloopError
from edgeloop.settings import redact

log = logging.getLogger(__name__)

FRAMES_TOPIC = "frames"
EDGE_CASES_TOPIC = "edge-cases"
DLQ_TOPIC = "frames.dlq"
MODEL_VERSIONS_TOPIC = "model-versions"
MONITOR_GROUP = "edgeloop-monitor"
RETRAINER_GROUP = "edgeloop-retrainer"


class KafkaClientError(EdgeloopError):
    """A Kafka operation failed (delivery, commit, topic creation, broker unreachable)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1
    config: Mapping[str, str] = field(default_factory=dict)


def default_topics(
    frames: str = FRAMES_TOPIC,
    edge_cases: str = EDGE_CASES_TOPIC,
    dlq: str = DLQ_TOPIC,
    model_versions: str = MODEL_VERSIONS_TOPIC,
    partitions: int = 2,
) -> list[TopicSpec]:
    """The topics of the loop; ``model-versions`` is compacted (key = model name)."""
    return [
        TopicSpec(frames, partitions),
        TopicSpec(edge_cases, partitions),
        TopicSpec(dlq, 1),
        TopicSpec(model_versions, 1, {"cleanup.policy": "compact"}),
    ]


def _log_error(err: KafkaError) -> None:
    # Transport errors are expected while a broker restarts; librdkafka retries on its own.
    level = logging.ERROR if err.fatal() else logging.WARNING
    log.log(level, "kafka client error: %s", err)


def make_producer(config: Mapping[str, Any], **overrides: Any) -> Producer:
    """An idempotent ``acks=all`` producer."""
    conf: dict[str, Any] = {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "compression.type": "lz4",
        "error_cb": _log_error,
    }
    conf.update(config)
    conf.update(overrides)
    log.debug("producer config: %s", redact(conf))
    return Producer(conf)


def make_consumer(config: Mapping[str, Any], group_id: str, **overrides: Any) -> Consumer:
    """A consumer that commits only what the service tells it to."""
    conf: dict[str, Any] = {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "error_cb": _log_error,
    }
    conf.update(config)
    conf.update(overrides)
    log.debug("consumer config: %s", redact(conf))
    return Consumer(conf)


def admin_client(config: Mapping[str, Any]) -> AdminClient:
    conf = {k: v for k, v in config.items() if not callable(v)}
    return AdminClient(conf)


def ensure_topics(config: Mapping[str, Any], topics: Iterable[TopicSpec], timeout_s: float = 30.0) -> None:
    """Create the topics that do not exist yet and wait until the broker reports them all."""
    admin = admin_client(config)
    wanted = {t.name: t for t in topics}
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [
        NewTopic(t.name, num_partitions=t.partitions, replication_factor=1, config=dict(t.config))
        for name, t in wanted.items()
        if name not in existing
    ]
    if missing:
        for name, future in admin.create_topics(missing, operation_timeout=timeout_s).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise KafkaClientError(f"could not create topic {name!r}: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    while True:
        metadata = admin.list_topics(timeout=timeout_s).topics
        ready = [n for n in wanted if n in metadata and not metadata[n].error and metadata[n].partitions]
        if len(ready) == len(wanted):
            return
        if time.monotonic() > deadline:
            raise KafkaClientError(f"topics not ready after {timeout_s}s: {sorted(set(wanted) - set(ready))}")
        time.sleep(0.1)


def message_error(msg: Message) -> KafkaError | None:
    """The error of a consumed message, or None; end-of-partition events are not errors."""
    err = msg.error()
    if err is None or err.code() == KafkaError._PARTITION_EOF:
        return None
    return err


class DeliveryTracker:
    """Counts delivery reports; use ``tracker.on_delivery`` as the produce callback."""

    def __init__(self) -> None:
        self.acked = 0
        self.failed = 0
        self.last_error: KafkaError | None = None

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.acked += 1
        else:
            self.failed += 1
            self.last_error = err
            log.error("delivery to %s failed: %s", msg.topic(), err)

    @property
    def pending_ok(self) -> bool:
        return self.failed == 0


def flush_or_raise(producer: Producer, tracker: DeliveryTracker, timeout_s: float) -> None:
    """Flush the producer and raise if any message is still queued or was not delivered."""
    remaining = producer.flush(timeout_s)
    if remaining:
        raise KafkaClientError(f"{remaining} messages still undelivered after {timeout_s}s")
    if tracker.failed:
        raise KafkaClientError(f"{tracker.failed} messages failed delivery; last error: {tracker.last_error}")
