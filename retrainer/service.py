"""The retrainer's Kafka loop: consume edge cases (and labels) → collect durably → retrain → announce → commit.

Order of every step, and why it is safe to die anywhere in it:

1. ``consume`` a batch from the edge-cases topic (and the labels topic when set).
2. :meth:`EdgeCaseCollector.collect` / :meth:`~EdgeCaseCollector.label`: dedupe, annotate, append to the
   buffer and fsync. A crash before this point loses nothing: the offsets are not committed, the
   messages come again.
3. If a threshold crossing is due, :meth:`Retrainer.retrain_if_due` trains, evaluates and publishes to the
   registry (atomically), recording the attempt and its outcome in the buffer.
4. Announce every published version not announced yet on the compacted ``model-versions`` topic
   (produce, flush, check the delivery report).
5. Commit the batch's offsets. A crash before this only means the batch is read again: its frames are
   already in the buffer, so they count as duplicates by id and change nothing.

On start: version 0 is bootstrapped if the registry is empty, an interrupted retrain is settled
(:meth:`Retrainer.recover`), and the latest version is announced if the topic does not carry it yet.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from edgeloop.datasets import read_labelled
from edgeloop.frames import decode_batch
from edgeloop.kafka import (
    DeliveryTracker,
    KafkaClientError,
    TopicSpec,
    ensure_topics,
    flush_or_raise,
    make_consumer,
    make_producer,
    message_error,
)
from edgeloop.registry import ModelRegistry, ModelVersion
from retrainer import metrics
from retrainer.annotation import LabelBook, MasterFileAnnotator, decode_label_messages
from retrainer.buffer import EdgeCaseBuffer
from retrainer.collector import CollectResult, EdgeCaseCollector
from retrainer.near_duplicates import NearDuplicateFilter
from retrainer.retraining import CrashHook, Retrainer, RetrainReport, crash_hook_from_env
from retrainer.settings import RetrainerSettings

__all__ = ["RetrainerService", "latest_announced_version"]

log = logging.getLogger(__name__)


def _position(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message (never None for one that came from a broker)."""
    return str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)


def latest_announced_version(
    config: dict[str, Any], topic: str, model_name: str, timeout_s: float = 10.0
) -> int | None:
    """The highest version announced for ``model_name`` on the ``model-versions`` topic (None if none).

    Reads the (compacted, small) topic from the beginning to its end once, without a consumer group.
    """
    reader = make_consumer(config, f"edgeloop-retrainer-announcements-{time.monotonic_ns()}", **{
        "enable.partition.eof": True,
    })  # fmt: skip
    try:
        metadata = reader.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return None
        ends: dict[int, int] = {}
        for partition in metadata.partitions:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            if high > low:
                ends[partition] = high
        if not ends:
            return None
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        key = model_name.encode()
        latest: int | None = None
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise KafkaClientError(f"could not read {topic} to its end within {timeout_s}s")
            for msg in reader.consume(500, 0.5):
                err = msg.error()
                _, partition, offset = _position(msg)
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(partition)
                        continue
                    raise KafkaClientError(f"reading {topic}: {err}")
                if offset + 1 >= ends[partition]:
                    done.add(partition)
                value = msg.value()
                if msg.key() != key or not value:
                    continue
                try:
                    version = int(orjson.loads(value)["version"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    log.warning("unreadable message at %s[%d]@%d", topic, partition, offset)
                    continue
                latest = version if latest is None else max(latest, version)
        return latest
    finally:
        reader.close()


class RetrainerService:
    """The retrainer process: one consumer in the retrainer group, one producer for announcements.

    Parameters
    ----------
    settings
        :class:`RetrainerSettings` (checked here: missing data paths fail with the flag to set).
    stop
        Set it to stop after the current step (the signal handlers of ``__main__`` do).
    crash
        Fault-test hook (default: from ``EDGELOOP_RETRAINER_CRASH_AT``).
    """

    def __init__(
        self, settings: RetrainerSettings, stop: threading.Event | None = None, crash: CrashHook | None = None
    ) -> None:
        settings.check()
        assert settings.training_data is not None and settings.golden_data is not None  # check() guarantees
        self.settings = settings
        self.stop = stop or threading.Event()
        self.crash: CrashHook = crash or crash_hook_from_env() or (lambda point: None)
        self.registry = ModelRegistry(Path(settings.registry), model_name=settings.model_name)
        train_kps, train_gt, _ = read_labelled(settings.training_data)
        golden_kps, golden_gt, _ = read_labelled(settings.golden_data)
        log.info("training data %s: %d rows; golden set %s: %d frames", settings.training_data, len(train_gt),
                 settings.golden_data, len(golden_gt))  # fmt: skip
        self.buffer = EdgeCaseBuffer.open(settings.buffer_path())
        master = MasterFileAnnotator(settings.master_annotations) if settings.master_annotations else None
        self.collector = EdgeCaseCollector(
            self.buffer,
            NearDuplicateFilter(
                radius=settings.near_duplicate_radius,
                scope=settings.near_duplicate_scope,
                per_sequence_cap=settings.per_sequence_cap,
            ),
            master=master,
            topic_labels=LabelBook() if settings.labels_topic else None,
            features=settings.near_duplicate_features,
        )
        self.retrainer = Retrainer(
            self.registry,
            self.buffer,
            (train_kps, train_gt),
            (golden_kps, golden_gt),
            settings.retrain_config(),
            crash=self.crash,
        )
        self.config = settings.kafka_config()
        topics = [
            TopicSpec(settings.edge_topic, 2),
            TopicSpec(settings.model_versions_topic, 1, {"cleanup.policy": "compact"}),
        ]
        if settings.labels_topic:
            topics.append(TopicSpec(settings.labels_topic, 1))
        ensure_topics(self.config, topics)
        self.tracker = DeliveryTracker()
        self.producer = make_producer(self.config, on_delivery=self.tracker.on_delivery)
        self.consumer = make_consumer(
            self.config,
            settings.group_id,
            **{
                "session.timeout.ms": settings.session_timeout_ms,
                "max.poll.interval.ms": settings.max_poll_interval_ms,
                "isolation.level": "read_committed",
            },
        )
        self.announced: int | None = None
        self._pending: dict[tuple[str, int], int] = {}  # processed (in the buffer), not committed: next offset
        self._last_label_refresh = time.monotonic()
        self.reports: list[RetrainReport] = []
        self._totals = CollectResult()
        self._last_progress_log = 0.0

    # --- start-up -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Bootstrap v0, settle an interrupted retrain, announce what the topic lacks, subscribe."""
        s = self.settings
        self.retrainer.golden_accuracy(self.retrainer.bootstrap())  # sets the metric of the serving version
        recovered = self.retrainer.recover()
        if recovered is not None:
            self.reports.append(recovered)
        try:
            self.announced = latest_announced_version(self.config, s.model_versions_topic, s.model_name)
        except (KafkaClientError, KafkaException) as exc:
            # Announcing again is harmless (consumers ignore a version they already serve); not announcing is not.
            log.warning("could not read %s (%s): announcing the latest version again", s.model_versions_topic, exc)
            self.announced = None
        self.announce_pending()
        self._update_gauges()
        topics = [s.edge_topic] + ([s.labels_topic] if s.labels_topic else [])
        self.consumer.subscribe(topics, on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info(
            "retrainer consuming %s in group %s: %d edge cases buffered (%d towards the next retrain of %d), "
            "announced version v%s",
            ", ".join(topics),
            s.group_id,
            len(self.buffer),
            self.retrainer.collected_since_last(),
            s.retrain_after,
            self.announced,
        )

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        # What was processed is in the buffer: commit it before another member takes the partitions.
        self._commit()
        log.info("revoked %s", sorted((p.topic, p.partition) for p in partitions))

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self._pending.pop((p.topic, p.partition), None)
        log.warning("partitions lost %s (not committed)", sorted((p.topic, p.partition) for p in partitions))

    # --- the loop -------------------------------------------------------------------------------------
    def run(self) -> None:
        """Start, then step until :attr:`stop` is set; always closes (flush, commit, leave the group)."""
        try:
            self.start()
            while not self.stop.is_set():
                self.step()
        finally:
            self.close()

    def step(self) -> None:
        """One batch: collect, maybe retrain, announce, commit."""
        s = self.settings
        msgs = self.consumer.consume(s.batch_size, s.poll_timeout_s)
        if msgs:
            self.process(msgs)
        if time.monotonic() - self._last_label_refresh >= s.label_refresh_s:
            self._last_label_refresh = time.monotonic()
            self.collector.refresh_labels()
        while (report := self.retrainer.retrain_if_due()) is not None:
            self.reports.append(report)
            if report.outcome == "failed":
                break
        announced = self.announce_pending()
        self._update_gauges()
        if announced:
            self._commit()

    def process(self, msgs: Sequence[Message]) -> None:
        s = self.settings
        edges: list[bytes | None] = []
        labels: list[bytes | None] = []
        for msg in msgs:
            err = message_error(msg)
            if err is not None:
                if err.fatal():
                    raise KafkaClientError(f"fatal consumer error: {err}")
                log.warning("consumer error: %s", err)
                continue
            if msg.error() is not None:  # partition EOF
                continue
            if s.labels_topic and msg.topic() == s.labels_topic:
                labels.append(msg.value())
            else:
                edges.append(msg.value())
            topic, partition, offset = _position(msg)
            self._pending[(topic, partition)] = max(self._pending.get((topic, partition), -1), offset + 1)
        if labels:
            ids, gts, errors = decode_label_messages(labels)
            metrics.LABELS_RECEIVED.inc(len(ids))
            if errors:
                metrics.LABELS_INVALID.inc(len(errors))
                log.warning("%d unusable label messages, e.g. %s", len(errors), errors[0])
            if len(ids):
                self.collector.label(ids, gts)
        if edges:
            batch, bad = decode_batch(edges)
            metrics.EDGE_CASES_RECEIVED.inc(len(edges))
            if bad:
                metrics.EDGE_CASES_INVALID.inc(len(bad))
                log.warning("%d edge-case messages are not valid frames, e.g. %s", len(bad), bad[0][1])
            result = self.collector.collect(batch.records)
            metrics.EDGE_CASES_DUPLICATE.labels(kind="id").inc(result.duplicate_id)
            metrics.EDGE_CASES_DUPLICATE.labels(kind="near").inc(result.duplicate_near)
            metrics.EDGE_CASES_DUPLICATE.labels(kind="cap").inc(result.capped)
            self._totals.received += result.received
            self._totals.duplicate_id += result.duplicate_id
            self._totals.duplicate_near += result.duplicate_near
            self._totals.capped += result.capped
            self._totals.collected += result.collected
            self._log_progress()

    def _log_progress(self, every_s: float = 10.0, force: bool = False) -> None:
        # One summary line every few seconds, not one per batch: edge cases can arrive thousands per second.
        now = time.monotonic()
        if now - self._last_progress_log < every_s and not force:
            return
        self._last_progress_log = now
        t = self._totals
        log.info(
            "edge cases since start: %d received, %d collected, duplicates %d by id / %d near / %d over the "
            "sequence cap; %d pending labels; %d/%d annotated towards the next retrain",
            t.received, t.collected, t.duplicate_id, t.duplicate_near, t.capped, len(self.buffer.pending_ids()),
            self.retrainer.collected_since_last(), self.settings.retrain_after,
        )  # fmt: skip

    def announce_pending(self) -> bool:
        """Announce the latest published version if the topic does not carry it yet; True when settled."""
        latest = self.registry.latest()
        if latest is None or (self.announced is not None and self.announced >= latest.version):
            return True
        try:
            self.announce(latest)
        except KafkaClientError as exc:
            log.error("could not announce v%d (retrying next step; offsets stay uncommitted): %s", latest.version, exc)
            return False
        return True

    def announce(self, version: ModelVersion) -> None:
        """Produce ``version`` on the model-versions topic and wait for the broker's acknowledgement."""
        s = self.settings
        self.tracker.failed = 0
        self.producer.produce(
            s.model_versions_topic, key=s.model_name.encode(), value=orjson.dumps(version.to_message())
        )
        flush_or_raise(self.producer, self.tracker, s.announce_timeout_s)
        self.announced = version.version
        log.info("announced %s v%d on %s (golden accuracy %s)", s.model_name, version.version,
                 s.model_versions_topic, version.golden_accuracy)  # fmt: skip
        if version.version > 0:  # the fault point is a retrain's, not the bootstrap's
            self.crash("after_announce")

    def _commit(self) -> None:
        if not self._pending:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._pending.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Safe to retry later: the batch is in the buffer; a restart would only see duplicates by id.
            log.warning("offset commit failed (will retry): %s", exc)
            return
        self._pending.clear()
        metrics.COMMITS.inc()

    def _update_gauges(self) -> None:
        metrics.EDGE_CASES_COLLECTED.set(self.retrainer.collected_since_last())
        metrics.EDGE_CASES_TOTAL.set(len(self.buffer))
        metrics.LABELS_PENDING.set(len(self.buffer.pending_ids()))
        latest = self.registry.latest()
        if latest is not None:
            metrics.MODEL_VERSION.set(latest.version)

    def close(self) -> None:
        """Flush announcements, commit what is in the buffer, leave the group, close the buffer."""
        try:
            self.announce_pending()
            self._commit()
            self._log_progress(force=True)
        except Exception as exc:  # closing must still leave the group and close the buffer
            log.error("while stopping: %s", exc)
        finally:
            self.consumer.close()
            self.producer.flush(5.0)
            self.buffer.close()
        log.info(
            "retrainer stopped: %d edge cases buffered, %d retrains done, latest version %s",
            len(self.buffer),
            self.retrainer.retrains_done,
            self.announced,
        )
