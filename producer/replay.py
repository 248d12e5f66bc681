"""Replay a dataset onto the frames topic: keyed by sequence, paced, every delivery checked."""

from __future__ import annotations

import itertools
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message

from edgeloop.frames import SCHEMA_VERSION
from edgeloop.kafka import TopicSpec, ensure_topics, make_producer
from producer import metrics
from producer.settings import ProducerSettings

log = logging.getLogger(__name__)

# Fields a camera app would send; `gt` only with --include-labels.
FORWARDED_FIELDS = ("source", "sequence", "frame_idx", "scores", "class", "frame_wh")
POLL_EVERY = 1000


@dataclass
class ReplayResult:
    sent: int = 0
    acked: int = 0
    failed: int = 0
    bytes: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.acked == self.sent


def load_frames(settings: ProducerSettings) -> Iterable[dict[str, Any]]:
    if settings.data:
        from edgeloop.datasets import open_dataset

        return open_dataset(settings.data)
    from edgeloop.synthetic import synthetic_frames

    return synthetic_frames(settings.synthetic_frames, seed=settings.seed)


def frame_stream(settings: ProducerSettings) -> Iterator[dict[str, Any]]:
    """Dataset records for every repeat, after --skip, up to --limit."""
    passes = (itertools.islice(load_frames(settings), settings.skip, None) for _ in range(settings.repeat))
    stream = itertools.chain.from_iterable(passes)
    return itertools.islice(stream, settings.limit) if settings.limit > 0 else stream


class Pacer:
    """Sleeps so that the n-th frame leaves no earlier than its due time."""

    def __init__(self, settings: ProducerSettings) -> None:
        self.rate = settings.rate
        self.realtime = settings.realtime
        self.fps = settings.fps
        self.start = time.monotonic()
        self.first_ts: float | None = None

    def wait(self, n: int, record: dict[str, Any]) -> None:
        if self.realtime:
            ts = record.get("ts")
            stamp = float(ts) / 1000.0 if ts is not None else float(record.get("frame_idx", n)) / self.fps
            if self.first_ts is None:
                self.first_ts = stamp
            due = self.start + max(0.0, stamp - self.first_ts)
        elif self.rate > 0:
            due = self.start + n / self.rate
        else:
            return
        delay = due - time.monotonic()
        if delay > 0.0005:
            time.sleep(delay)


def replay(settings: ProducerSettings, stop: threading.Event | None = None) -> ReplayResult:
    """Send the frames; returns the counts once every delivery report is in (or the flush timed out)."""
    stop = stop or threading.Event()
    result = ReplayResult()
    latencies: list[float] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            result.acked += 1
            lat = msg.latency()
            if lat is not None:
                latencies.append(lat)
        else:
            result.failed += 1
            log.error("frame delivery failed: %s", err)

    config = settings.kafka_config()
    ensure_topics(config, [TopicSpec(settings.topic, settings.partitions)])
    producer = make_producer(config, on_delivery=on_delivery)
    pacer = Pacer(settings)
    metrics.REPLAY_RATE.set(settings.rate)
    bar = _progress_bar(settings)
    started = time.monotonic()
    topic = settings.topic
    seq = 0
    sent_bytes = 0
    last_report = started

    reported = {"acked": 0, "failed": 0}

    def drain(timeout: float) -> None:
        """Serve delivery reports and export them as they arrive (not only when the replay ends)."""
        producer.poll(timeout)
        if latencies:
            metrics.DELIVERY_LATENCY.observe_many(latencies)
            latencies.clear()
        metrics.FRAMES_ACKED.inc(result.acked - reported["acked"])
        metrics.FRAMES_FAILED.inc(result.failed - reported["failed"])
        reported.update(acked=result.acked, failed=result.failed)

    for record in frame_stream(settings):
        if stop.is_set():
            result.interrupted = True
            break
        pacer.wait(seq, record)
        message: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "id": record["id"],
            "seq": seq,
            "kps": record["kps"],
            "ts": int(time.time() * 1000),
        }
        for name in FORWARDED_FIELDS:
            if name in record:
                message[name] = record[name]
        if settings.include_labels and "gt" in record:
            message["gt"] = record["gt"]
        value = orjson.dumps(message)
        key = str(record.get("sequence", "unsequenced")).encode()
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                drain(0.05)  # the local queue is full: let deliveries catch up
        seq += 1
        sent_bytes += len(value)
        if seq % POLL_EVERY == 0:
            drain(0)
            metrics.FRAMES_SENT.inc(POLL_EVERY)
            if bar is not None:
                bar.update(POLL_EVERY)
            elif time.monotonic() - last_report > 5:
                last_report = time.monotonic()
                log.info("sent %d frames (%.0f/s), acked %d", seq, seq / (last_report - started), result.acked)
    metrics.FRAMES_SENT.inc(seq % POLL_EVERY)
    result.sent = seq
    result.bytes = sent_bytes
    metrics.BYTES_SENT.inc(sent_bytes)
    remaining = producer.flush(settings.flush_timeout_s)
    if remaining:
        log.error("%d frames still unacknowledged after %.0fs", remaining, settings.flush_timeout_s)
        result.failed += remaining
    drain(0)
    if bar is not None:
        bar.update(seq % POLL_EVERY)
        bar.close()
    result.elapsed_s = time.monotonic() - started
    return result


def _progress_bar(settings: ProducerSettings) -> Any:
    if not (settings.progress and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    total = settings.limit or None
    return tqdm(total=total, unit="frames", unit_scale=True, desc="replay", smoothing=0.1)


def install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, _frame: Any) -> None:
        log.info("received %s: flushing and stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
