"""The consumer's Kafka loop: batch consume → decide → publish edge cases / dead letters → commit.

At-least-once: a batch's offsets are committed only after every edge case and dead letter it produced
was acknowledged by the broker. If a delivery fails, nothing of the batch is committed: the consumer
seeks back to the batch's first offsets and processes it again once the broker takes messages again.
With ``--exactly-once`` the outputs and the offsets go into one Kafka transaction instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer import metrics
from consumer.clustering import ReferenceClusters
from consumer.drift import DriftMonitor
from consumer.monitor import BatchDecisions, Monitor
from consumer.settings import ConsumerSettings
from edgeloop.datasets import read_labelled
from edgeloop.errors import EdgeloopError
from edgeloop.frames import FrameBatch, FrameError, FrameLimits, decode_batch
from edgeloop.kafka import default_topics, ensure_topics, make_consumer, make_producer
from edgeloop.registry import ModelRegistry, RegistryError, ensure_initial_version
from edgeloop.runtime import tune_gc_for_streaming

log = logging.getLogger(__name__)


class DeliveryFailed(EdgeloopError):
    """Some output of a batch was not acknowledged; the batch must be processed again."""


@dataclass
class InFlightBatch:
    """A decided batch whose outputs may still be on their way to the broker.

    Its offsets are committed once every edge case and dead letter it produced was acknowledged, and
    only after every batch before it: the loop goes on consuming meanwhile instead of waiting for
    the broker's round trip after each batch.
    """

    first: dict[tuple[str, int], int]  # first offset of the batch per partition (to rewind to)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per partition
    before_commit: Callable[[], None] | None = None
    outstanding: int = 0
    failed: int = 0
    error: KafkaError | None = None

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self.outstanding -= 1
        if err is not None:
            self.failed += 1
            self.error = err
            log.error("delivery to %s failed: %s", msg.topic(), err)


@dataclass
class LoopStats:
    consumed: int = 0
    scored: int = 0
    flagged: int = 0
    dead_letters: int = 0
    batches: int = 0
    retried_batches: int = 0


def build_monitor(settings: ConsumerSettings, registry: ModelRegistry) -> Monitor:
    """The reference clustering (training data + every published version's additions) and the model."""
    if not settings.training_data:
        raise EdgeloopError(
            "the consumer needs the reference training data: set --training-data or EDGELOOP_TRAINING_DATA"
        )
    train_kps, train_gt, _ids = read_labelled(settings.training_data)
    if registry.latest() is None:
        from edgeloop.model import TrainingConfig  # torch, only to bootstrap version 0

        ensure_initial_version(
            registry, train_kps, train_gt, TrainingConfig(seed=settings.seed, features=settings.model_features)
        )
    latest = registry.latest()
    assert latest is not None  # ensure_initial_version guarantees version 0
    reference = build_reference(settings, train_kps, train_gt)
    for version in registry.versions():
        if 0 < version.version <= latest.version:
            additions = registry.load_training_additions(version.version)
            if len(additions):
                reference.learn(additions.kps, labels=additions.gt)
    model = registry.load_serving(latest.version)
    drift = DriftMonitor(reference, window_size=settings.window_size)
    log.info(
        "reference: %d training frames -> %d micro-clusters, threshold %.3f; serving model version %d",
        len(train_kps),
        reference.n_clusters,
        reference.threshold,
        latest.version,
    )
    return Monitor(reference, model, latest.version, drift, uncertainty_band=settings.uncertainty_band)


def build_reference(settings: ConsumerSettings, train_kps: np.ndarray, train_gt: np.ndarray) -> ReferenceClusters:
    """The reference micro-clustering of the training data, as configured (unset = the tuned defaults)."""
    chosen = {
        "mode": settings.features,
        "flag_on": settings.flag_on,
        "max_clusters": settings.max_clusters,
        "threshold_quantile": settings.threshold_quantile,
    }
    params: dict[str, Any] = {k: v for k, v in chosen.items() if v is not None}
    return ReferenceClusters(threshold=settings.threshold, seed=settings.seed, **params).learn(
        train_kps, labels=train_gt
    )


class ConsumerService:
    """One monitor instance; several in one group split the partitions."""

    def __init__(self, settings: ConsumerSettings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.instance = settings.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.registry = ModelRegistry(Path(settings.registry), model_name=settings.model_name)
        self.monitor = build_monitor(settings, self.registry)
        self.limits = FrameLimits(settings.max_message_bytes, settings.max_extra_fields)
        self.stats = LoopStats()
        self._pending: dict[tuple[str, int], int] = {}  # settled, not yet committed: next offset
        self._inflight: deque[InFlightBatch] = deque()
        self._current: InFlightBatch | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._broker_down = False
        self._decision_log: IO[bytes] | None = None
        config = settings.kafka_config()
        ensure_topics(
            config,
            default_topics(settings.topic, settings.edge_topic, settings.dlq_topic, settings.model_versions_topic),
        )
        common = {"error_cb": self._on_kafka_error}
        producer_overrides: dict[str, Any] = dict(common)
        if settings.exactly_once:
            producer_overrides["transactional.id"] = settings.transactional_id or f"{settings.group_id}-{self.instance}"
        self.producer = make_producer(config, **producer_overrides)
        if settings.exactly_once:
            self.producer.init_transactions(30)
        # Learn the output topics' leaders now, not on the first edge case (a stall of a round trip or two).
        for topic in (settings.edge_topic, settings.dlq_topic):
            self.producer.list_topics(topic, timeout=10)
        self.consumer = make_consumer(
            config,
            settings.group_id,
            **common,
            **{
                "max.poll.interval.ms": settings.max_poll_interval_ms,
                "session.timeout.ms": settings.session_timeout_ms,
                "statistics.interval.ms": 1000,
                "on_commit": self._on_commit,
                "stats_cb": self._on_stats,
                "isolation.level": "read_committed",
                "client.id": f"edgeloop-consumer-{self.instance}",
            },
        )
        self.versions = make_consumer(
            config, f"{settings.group_id}-versions-{uuid.uuid4().hex[:8]}", **common, **{"enable.partition.eof": False}
        )
        self.versions.assign([TopicPartition(settings.model_versions_topic, 0, OFFSET_BEGINNING)])
        if settings.decision_log:
            Path(settings.decision_log).parent.mkdir(parents=True, exist_ok=True)
            self._decision_log = open(settings.decision_log, "ab")  # noqa: SIM115 - closed in close()
        metrics.MICRO_CLUSTERS.set(self.monitor.reference.n_clusters)
        metrics.REFERENCE_POINTS.set(self.monitor.reference.n_seen)
        metrics.MODEL_VERSION.set(self.monitor.model_version)

    # --- callbacks (run inside consume/poll/flush on this thread) -------------------------------------
    def _on_kafka_error(self, err: KafkaError) -> None:
        metrics.KAFKA_ERRORS.labels(code=err.name()).inc()
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if not self._broker_down:
                log.error("all brokers are down: waiting for the broker to come back (%s)", err)
            self._broker_down = True
            metrics.BROKER_UP.set(0)
        else:
            log.warning("kafka client error: %s", err)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is None:
            self._broker_reachable()  # a commit went through: the broker answers
        elif err.code() != KafkaError._NO_OFFSET:
            # The offsets stay where they were: a restart decides those frames again (at-least-once).
            log.warning("offset commit failed: %s", err)

    def _broker_reachable(self) -> None:
        if self._broker_down:
            log.info("broker reachable again")
            self._broker_down = False
        metrics.BROKER_UP.set(1)

    def _on_stats(self, raw: str) -> None:
        stats = orjson.loads(raw)
        if any(b.get("state") == "UP" for b in stats.get("brokers", {}).values()):
            self._broker_reachable()
        else:
            metrics.BROKER_UP.set(0)
        for topic, partitions in (
            (name, t.get("partitions", {}))
            for name, t in stats.get("topics", {}).items()
            if name == self.settings.topic
        ):
            for pid, p in partitions.items():
                if (topic, int(pid)) in self._assigned and p.get("consumer_lag", -1) >= 0:
                    metrics.LAG.labels(partition=pid).set(p["consumer_lag"])

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        metrics.ASSIGNED_PARTITIONS.set(len(self._assigned))
        log.info("assigned %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Everything processed so far is settled and committed before the partitions go to another member.
        self._drain_inflight()
        self._commit_pending()
        self._forget(partitions)
        log.info("revoked %s", sorted(p.partition for p in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member may own them already: committing now could overwrite its progress.
        for p in partitions:
            self._pending.pop((p.topic, p.partition), None)
        self._forget(partitions)
        log.warning("partitions lost %s (not committed)", sorted(p.partition for p in partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self._assigned.discard((p.topic, p.partition))
            with contextlib.suppress(KeyError):  # no lag was reported for it yet
                metrics.LAG.remove(str(p.partition))
        metrics.ASSIGNED_PARTITIONS.set(len(self._assigned))

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> LoopStats:
        s = self.settings
        self.consumer.subscribe([s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("consuming %s as %s in group %s", s.topic, self.instance, s.group_id)
        tune_gc_for_streaming()
        try:
            while not self.stop.is_set():
                self.check_model_versions()
                msgs = self.consumer.consume(s.batch_size, s.poll_timeout_s)
                if msgs:
                    self.process(msgs)
                elif self._inflight:  # idle: settle what the broker has acknowledged meanwhile
                    self.producer.poll(0)
                    try:
                        self._settle_ready()
                    except DeliveryFailed as exc:
                        self._retry_from(exc)
        finally:
            self.close()
        return self.stats

    def process(self, msgs: Sequence[Message]) -> None:
        """Decide a batch, publish its outputs, and commit it once they are acknowledged."""
        started = time.perf_counter()
        frames = [m for m in msgs if m.error() is None]
        for m in msgs if len(frames) < len(msgs) else ():
            err = m.error()
            if err is None:
                continue
            if err.code() == KafkaError._MAX_POLL_EXCEEDED:
                metrics.POLL_INTERVAL_EXCEEDED.inc()
                log.error("processing outlasted max.poll.interval.ms: this member left the group and rejoins")
            elif err.code() != KafkaError._PARTITION_EOF:
                metrics.KAFKA_ERRORS.labels(code=err.name()).inc()
                log.warning("consume error: %s", err)
        if not frames:
            return
        if self.settings.exactly_once:
            self.producer.begin_transaction()
        first, offsets = self._batch_offsets(frames)
        self._current = InFlightBatch(first=first)
        batch, errors = decode_batch([m.value() for m in frames], self.limits)
        for position, error in errors:
            self._dead_letter(frames[position], error)
        decisions = self.monitor.decide(batch.kps)
        msg_of = frames if len(batch) == len(frames) else [frames[p] for p in batch.positions]
        if decisions.flagged.any():
            self._publish_edge_cases(batch, decisions, msg_of)
        try:
            # The decision log is written once the outputs are acknowledged and before the commit: a crash
            # in between repeats decisions on restart, it never loses one.
            self._settle(offsets, lambda: self._write_decisions(batch, decisions, msg_of))
        except DeliveryFailed as exc:
            self._retry_from(exc)
            return
        self._account(frames, [p for _, p in first], batch, errors, decisions, started)

    def _dead_letter(self, msg: Message, error: FrameError) -> None:
        headers = [
            ("error.reason", error.reason.encode()),
            ("error.message", str(error).encode()[:1000]),
            ("source.topic", (msg.topic() or "").encode()),
            ("source.partition", str(msg.partition()).encode()),
            ("source.offset", str(msg.offset()).encode()),
        ]
        self._produce(self.settings.dlq_topic, msg.value() or b"", msg.key(), headers)
        metrics.DEAD_LETTERS.labels(reason=error.reason).inc()
        self.stats.dead_letters += 1
        log.warning("dead letter %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), error)

    def _publish_edge_cases(self, batch: FrameBatch, d: BatchDecisions, msg_of: list[Message]) -> None:
        flagged_at = datetime.now(UTC).isoformat(timespec="milliseconds")
        explanations = self.monitor.explain(batch.kps, d)
        rows = [why.row for why in explanations]
        # Plain Python values, converted once per batch (indexing numpy arrays per frame costs more).
        ood, unsure, probability, prediction, ids = (
            a[rows].tolist() for a in (d.is_ood, d.uncertain, d.probability, d.prediction, batch.ids)
        )
        version, topic = d.model_version, self.settings.edge_topic
        for i, why in enumerate(explanations):
            row = why.row
            edge = {
                **batch.record(row),
                "score": why.score,
                "threshold": why.threshold,
                "reason": self.monitor.describe(why, ood[i], unsure[i], probability[i], version),
                "out_of_distribution": ood[i],
                "uncertain": unsure[i],
                "probability": round(probability[i], 4),
                "deviating_keypoints": list(why.keypoint_names),
                "nearest_cluster": why.nearest_cluster,
                "model_version": version,
                "prediction": prediction[i],
                "flagged_at": flagged_at,
                "source_partition": msg_of[row].partition(),
                "source_offset": msg_of[row].offset(),
            }
            self._produce(topic, orjson.dumps(edge), str(ids[i]).encode())

    def _produce(self, topic: str, value: bytes, key: bytes | None, headers: list[Any] | None = None) -> None:
        batch = self._current
        assert batch is not None, "outputs are produced while a batch is processed"
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=batch.on_delivery)
                batch.outstanding += 1
                return
            except KafkaException as exc:
                # Refused before it left (e.g. the topic is unknown): a failed output, the batch is redone.
                batch.failed += 1
                batch.error = exc.args[0]
                log.error("could not produce to %s: %s", topic, exc)
                return
            except BufferError:
                self.producer.poll(0.05)

    @staticmethod
    def _batch_offsets(msgs: Sequence[Message]) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        """First offset and next offset per partition of a batch (a partition's messages come in order).

        A batch holds runs of messages of one partition; only the two ends of each run are asked for
        their offsets (this runs per frame, so the per-message work is kept to two accessors).
        """
        first: dict[tuple[str, int], int] = {}
        following: dict[tuple[str, int], int] = {}
        at = 0
        for (topic, partition), run in groupby([(m.topic(), m.partition()) for m in msgs]):
            size = len(list(run))
            head, tail = msgs[at], msgs[at + size - 1]
            at += size
            key = (topic or "", partition or 0)
            first.setdefault(key, head.offset() or 0)
            following[key] = (tail.offset() or 0) + 1
        return first, following

    def _settle(self, offsets: dict[tuple[str, int], int], before_commit: Callable[[], None]) -> None:
        """Wait for the batch's outputs to be acknowledged, call ``before_commit``, then commit its offsets."""
        if self.settings.exactly_once:
            tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            try:
                self.producer.send_offsets_to_transaction(tps, self.consumer.consumer_group_metadata(), 30)
                self.producer.flush(self.settings.delivery_timeout_s)
                before_commit()
                self.producer.commit_transaction(self.settings.delivery_timeout_s)
            except KafkaException as exc:
                self.producer.abort_transaction(30)
                raise DeliveryFailed(f"transaction aborted: {exc}") from exc
            self._current = None
            metrics.COMMITS.inc()
            return
        batch = self._current
        assert batch is not None
        batch.offsets = offsets
        batch.before_commit = before_commit
        self._inflight.append(batch)
        self._current = None
        self.producer.poll(0)  # serve the delivery reports that are in
        strict = self.settings.max_inflight_batches == 0
        if len(self._inflight) > self.settings.max_inflight_batches:
            self._await_oldest(self.settings.delivery_timeout_s)
        # Strict mode commits each batch synchronously before the next: the smallest duplicate window.
        self._settle_ready(asynchronous=not strict)

    def _drain_inflight(self) -> None:
        """Wait for the in-flight batches' outputs and settle them; what cannot be settled stays uncommitted."""
        if not self._inflight:
            return
        self._await_deliveries(self.settings.delivery_timeout_s)
        try:
            self._settle_ready(asynchronous=False)
        except DeliveryFailed as exc:
            log.error("%s: those frames stay uncommitted and are decided again", exc)
        if self._inflight:
            log.error("%d batches not acknowledged: their frames stay uncommitted", len(self._inflight))
            self._inflight.clear()

    def _await_oldest(self, timeout_s: float) -> None:
        """Serve delivery reports until the oldest in-flight batch is acknowledged (at most ``timeout_s``).

        Only the oldest: a flush would also wait for the outputs of the batch just decided, a linger
        and a round trip the pipeline is there to hide.
        """
        deadline = time.monotonic() + timeout_s
        while self._inflight[0].outstanding > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("outputs of a batch still unacknowledged after %.0fs", timeout_s)
                return
            self.producer.poll(min(left, 0.05))

    def _await_deliveries(self, timeout_s: float) -> None:
        """Block until every output produced so far is acknowledged (or failed), at most ``timeout_s``."""
        remaining = self.producer.flush(timeout_s)
        if remaining:
            log.warning("%d outputs still unacknowledged after %.0fs", remaining, timeout_s)

    def _settle_ready(self, asynchronous: bool = True) -> None:
        """Commit the batches at the head of the queue whose outputs are all acknowledged.

        Raises :class:`DeliveryFailed` for the first batch with a failed output: it and every later
        in-flight batch are processed again, nothing of them is committed.
        """
        while self._inflight and self._inflight[0].outstanding <= 0:
            batch = self._inflight[0]
            if batch.failed:
                raise DeliveryFailed(f"{batch.failed} outputs of a batch failed: {batch.error}")
            self._inflight.popleft()
            if batch.before_commit is not None:
                batch.before_commit()
            self._pending.update(batch.offsets)
        self._commit_pending(asynchronous)

    def _commit_pending(self, asynchronous: bool = False) -> None:
        if not self._pending:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in self._pending.items()]
        try:
            if asynchronous:
                self.consumer.commit(offsets=tps, asynchronous=True)
            else:
                self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            # Kept pending: the next batch (or the revoke) commits them; a restart re-decides them.
            log.warning("offset commit failed (will retry): %s", exc)
            return
        self._pending.clear()
        metrics.COMMITS.inc()

    def _retry_from(self, exc: DeliveryFailed) -> None:
        """Rewind to the first frame of every unsettled batch (the failed one and all after it)."""
        metrics.DELIVERY_FAILURES.inc()
        self.stats.retried_batches += 1
        first: dict[tuple[str, int], int] = {}
        batches = [*self._inflight, *([self._current] if self._current is not None else [])]
        for batch in batches:
            for key, offset in batch.first.items():
                first[key] = min(first.get(key, offset), offset)
        self._inflight.clear()
        self._current = None
        self._commit_pending()  # what settled before the failure stays settled
        log.error("batch not acknowledged (%s): rewinding %s", exc, {p: o for (_, p), o in first.items()})
        for (topic, partition), offset in first.items():
            if (topic, partition) not in self._assigned:
                continue
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as seek_exc:
                log.warning("seek failed on %s[%d]: %s", topic, partition, seek_exc)
        self.stop.wait(1.0)

    def _write_decisions(self, batch: FrameBatch, d: Any, msg_of: list[Message]) -> None:
        if self._decision_log is None or not len(batch):
            return
        version = d.model_version
        lines = [
            orjson.dumps(
                {
                    "id": i,
                    "seq": q,
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "version": version,
                    "flagged": bool(f),
                    "ood": bool(o),
                    "prediction": int(p),
                    "score": round(float(s), 4),
                }
            )
            for i, q, m, f, o, p, s in zip(
                batch.ids.tolist(),
                batch.seqs,
                msg_of,
                d.flagged.tolist(),
                d.is_ood.tolist(),
                d.prediction.tolist(),
                d.score.tolist(),
                strict=True,
            )
        ]
        self._decision_log.write(b"\n".join(lines) + b"\n")
        self._decision_log.flush()

    def _account(
        self, frames: Sequence[Message], partitions: list[int], batch: Any, errors: list[Any], d: Any, started: float
    ) -> None:
        n, flagged = len(batch), int(d.flagged.sum())
        s = self.stats
        s.batches += 1
        s.consumed += len(frames)
        s.scored += n
        s.flagged += flagged
        metrics.FRAMES_CONSUMED.inc(len(frames))
        metrics.FRAMES_SCORED.inc(n)
        metrics.FRAMES_FLAGGED.inc(flagged)
        if n:
            ones = int(d.prediction.sum())
            metrics.PREDICTIONS.labels(prediction="1").inc(ones)
            metrics.PREDICTIONS.labels(prediction="0").inc(n - ones)
            now_ms = time.time() * 1000.0
            has_ts = batch.ts_ms >= 0
            metrics.DECISION_LATENCY.observe_many((now_ms - batch.ts_ms[has_ts]) / 1000.0)
        metrics.SCORING_SECONDS.observe(d.scoring_s)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        now = time.time()
        for partition in partitions:
            metrics.LAST_PROGRESS.labels(partition=str(partition)).set(now)
        for w in d.windows:
            metrics.OOD_RATE.set(w.ood_rate)
            metrics.DRIFT_PSI.set(w.psi)
            metrics.DRIFT_EMD.set(w.emd)
            metrics.DRIFT_ALARM.set(1 if w.alarm else 0)
            if w.alarm_started:
                metrics.DRIFT_ALARMS.inc()

    # --- model swaps ------------------------------------------------------------------------------
    def check_model_versions(self) -> None:
        for msg in self.versions.consume(100, 0):
            if msg.error() is not None:
                continue
            value = msg.value()
            if msg.key() != self.settings.model_name.encode() or not value:
                continue
            try:
                announced = orjson.loads(value)
                version = int(announced["version"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.error("unreadable model-versions message at offset %d: %s", msg.offset(), exc)
                metrics.MODEL_REJECTED.inc()
                continue
            if version <= self.monitor.model_version:
                continue
            self.swap_to(version)

    def swap_to(self, version: int) -> bool:
        try:
            model = self.registry.load_serving(version)
            additions = self.registry.load_training_additions(version)
        except (RegistryError, OSError) as exc:
            metrics.MODEL_REJECTED.inc()
            log.error("model version %d refused, still serving %d: %s", version, self.monitor.model_version, exc)
            return False
        self.monitor.swap_model(model, version, additions)
        metrics.MODEL_SWAPS.inc()
        metrics.MODEL_VERSION.set(version)
        metrics.MICRO_CLUSTERS.set(self.monitor.reference.n_clusters)
        metrics.REFERENCE_POINTS.set(self.monitor.reference.n_seen)
        return True

    def close(self) -> None:
        """Flush, commit what is settled, leave the group."""
        try:
            if not self.settings.exactly_once:
                self._drain_inflight()
            self._commit_pending()
        finally:
            self.consumer.close()
            self.versions.close()
            if self._decision_log is not None:
                self._decision_log.close()
        log.info(
            "stopped: %d consumed, %d scored, %d flagged, %d dead letters",
            self.stats.consumed,
            self.stats.scored,
            self.stats.flagged,
            self.stats.dead_letters,
        )
