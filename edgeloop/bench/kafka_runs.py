"""The measurements that go through the broker: limit, consumer, latency, two consumers, producer.

Every run uses a fresh consumer group, so each reads the same pre-loaded frames from the beginning.
Throughput is counted from the end of the first batch to the end of the last (the first batch's wait
for the group join and the first fetch is start-up, not steady state).

- :func:`measure_limit`: a bare ``consume()`` batch loop + ``orjson.loads`` of every value, nothing else.
- :func:`measure_consumer`: the real :class:`consumer.service.ConsumerService` in this process, stopped
  by its stop event once it consumed the frames (or its time box ran out). Its ``process`` is wrapped
  only to take a timestamp after each batch (and, for latency runs, the frames' produce timestamps).
- :func:`measure_latency`: that consumer running while ``python -m producer`` replays at a fixed rate;
  frame-to-decision latency = time the batch's decisions were committed − the frame's produce time.
- :func:`measure_consumer_processes`: ``python -m consumer`` processes in one group on a 2-partition
  topic; time to drain a burst of frames produced once the group is stable.
- :func:`measure_producer`: :func:`producer.replay.replay` at rate 0 (as fast as it goes).

A child's peak RSS is its ``VmHWM`` (``/proc/<pid>/status``), sampled while it runs and read last just
before it is stopped. (``ru_maxrss`` from ``wait4`` would not do: Linux carries the pre-``exec``
high-water mark over, so every child would report the benchmark process's own ~1 GiB.)
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, ConsumerGroupState, Message, TopicPartition

from edgeloop.bench.data import BenchError
from edgeloop.kafka import TopicSpec, admin_client, ensure_topics, make_consumer, make_producer
from edgeloop.runtime import tune_gc_for_streaming

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.2
# A latency run above what the consumer sustains builds a backlog it must then drain: bound the frames.
MAX_LATENCY_FRAMES = 150_000


def unique(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


# Frames produced in the first second of a latency run (at most a tenth of it) are its warm-up.
LATENCY_WARMUP_S = 1.0


@dataclass(frozen=True)
class Throughput:
    """Frames counted from the end of the first batch to the end of the last, and that interval."""

    frames: int
    elapsed_s: float
    total_frames: int
    batches: int

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    @classmethod
    def from_marks(cls, marks: Sequence[tuple[float, int]]) -> Throughput:
        """``marks``: (time after a batch, frames so far) per batch."""
        if len(marks) < 2:
            raise BenchError(
                f"only {len(marks)} batch(es) arrived: too few frames to time (raise --frames, or check the broker)"
            )
        (t0, n0), (t1, n1) = marks[0], marks[-1]
        return cls(frames=n1 - n0, elapsed_s=t1 - t0, total_frames=n1, batches=len(marks))


# ------------------------------------------------------------------------------------------ topics


def preload(
    config: dict[str, Any], topic: str, values: Sequence[bytes], keys: Sequence[bytes], partitions: int = 2
) -> float:
    """Write the encoded frames to ``topic`` (created with ``partitions``); returns the seconds it took."""
    ensure_topics(config, [TopicSpec(topic, partitions)])
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    producer = make_producer(config, on_delivery=on_delivery)
    started = time.perf_counter()
    for i, (value, key) in enumerate(zip(values, keys, strict=True)):
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining or failures:
        raise BenchError(
            f"pre-loading {topic}: {remaining} frames unacknowledged, {len(failures)} failed {failures[:3]}"
        )
    return time.perf_counter() - started


def partition_sizes(config: dict[str, Any], topic: str) -> list[int]:
    """Messages per partition (high - low watermark)."""
    probe = Consumer({**_plain(config), "group.id": unique("probe")})
    try:
        metadata = probe.list_topics(topic, timeout=10).topics[topic]
        sizes = []
        for p in sorted(metadata.partitions):
            low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            sizes.append(high - low)
        return sizes
    finally:
        probe.close()


class CommitProbe:
    """Reads a group's committed offsets without joining it (one client, reused for every read)."""

    def __init__(self, config: dict[str, Any], group: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer({**_plain(config), "group.id": group, "enable.auto.commit": False})
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]

    def total(self) -> int:
        """Sum of the committed offsets (0 for a partition without a commit)."""
        return sum(max(tp.offset, 0) for tp in self._consumer.committed(self._partitions, timeout=10))

    def close(self) -> None:
        self._consumer.close()


def wait_group_stable(
    config: dict[str, Any], group: str, members: int, partitions: int, timeout_s: float, alive: Callable[[], None]
) -> None:
    """Wait until ``group`` is stable with ``members`` members holding ``partitions`` partitions in all."""
    admin = admin_client(_plain(config))
    deadline = time.monotonic() + timeout_s
    state = "unknown"
    while time.monotonic() < deadline:
        alive()
        with contextlib.suppress(Exception):  # the group does not exist until its first member joins
            description = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
            assigned = sum(len(m.assignment.topic_partitions) for m in description.members if m.assignment)
            state = f"{description.state}, {len(description.members)} members, {assigned} partitions"
            if (
                description.state == ConsumerGroupState.STABLE
                and len(description.members) == members
                and assigned == partitions
            ):
                return
        time.sleep(0.2)
    raise BenchError(f"consumer group {group} not stable with {members} members after {timeout_s:.0f} s ({state})")


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not callable(v)}


# ------------------------------------------------------------------------------------------- limit


def measure_limit(config: dict[str, Any], topic: str, n_frames: int, batch_size: int, timeout_s: float) -> Throughput:
    """The ceiling: ``consume(batch_size)`` + ``orjson.loads`` of every value, from a fresh group.

    It runs under the same garbage-collector settings as the consumer's loop, so the ratio compares
    the work done, not the settings.
    """
    tune_gc_for_streaming()
    consumer = make_consumer(config, unique("limit"), **{"isolation.level": "read_committed"})
    consumer.subscribe([topic])
    marks: list[tuple[float, int]] = []
    total = 0
    loads = orjson.loads
    deadline = time.monotonic() + timeout_s
    try:
        while total < n_frames:
            if time.monotonic() > deadline:
                raise BenchError(f"limit run: {total} of {n_frames} frames after {timeout_s:.0f} s")
            msgs = consumer.consume(batch_size, POLL_TIMEOUT_S)
            if not msgs:
                continue
            decoded = [loads(m.value() or b"null") for m in msgs if m.error() is None]
            total += len(decoded)
            marks.append((time.perf_counter(), total))
    finally:
        consumer.close()
    return Throughput.from_marks(marks)


# ---------------------------------------------------------------------------------------- consumer


@dataclass
class ConsumerRun:
    throughput: Throughput
    scored: int
    flagged: int
    dead_letters: int
    n_clusters: int
    threshold: float
    build_s: float  # constructing the service: registry, reference clustering, clients
    latencies_ms: np.ndarray = field(default_factory=lambda: np.empty(0))
    produced_ms: np.ndarray = field(default_factory=lambda: np.empty(0))  # each latency's produce timestamp
    timed_out: bool = False


def measure_consumer(
    settings: Any,
    n_frames: int,
    timeout_s: float,
    *,
    time_box_s: float | None = None,
    record_latency: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> ConsumerRun:
    """Run the real consumer service in this process until it consumed ``n_frames`` (or a time box ran out).

    Parameters
    ----------
    settings
        :class:`consumer.settings.ConsumerSettings` (topic, fresh group, registry, training data ...).
    time_box_s
        Stop this long after the first batch even if fewer frames were consumed (slow configurations).
    record_latency
        Keep ``now - produce timestamp`` of every frame, taken when its batch was committed.
    on_ready
        Called from a helper thread once the service is built and its loop is about to start; the
        service runs on the calling thread.
    """
    try:
        return _run_consumer(settings, n_frames, timeout_s, time_box_s, record_latency, on_ready)
    finally:
        # The service sits in reference cycles (its clients' callbacks, the timing wrapper): collect it
        # now, so that its Kafka clients go here and not at some later collection, after the broker stopped.
        gc.collect()


def _run_consumer(
    settings: Any,
    n_frames: int,
    timeout_s: float,
    time_box_s: float | None,
    record_latency: bool,
    on_ready: Callable[[], None] | None,
) -> ConsumerRun:
    from consumer.service import ConsumerService

    stop = threading.Event()
    started = time.perf_counter()
    service = ConsumerService(settings, stop)
    build_s = time.perf_counter() - started
    marks: list[tuple[float, int]] = []
    latencies: list[np.ndarray] = []
    produced_at: list[np.ndarray] = []
    original = service.process
    first_batch_at: list[float] = []

    def timed(msgs: Sequence[Message]) -> None:
        original(msgs)
        now = time.perf_counter()
        consumed = service.stats.consumed
        marks.append((now, consumed))
        if record_latency and msgs:
            now_ms = time.time() * 1000.0
            produced = np.fromiter((m.timestamp()[1] for m in msgs), dtype=np.float64, count=len(msgs))
            latencies.append(now_ms - produced)
            produced_at.append(produced)
        if not first_batch_at:
            first_batch_at.append(now)
        if consumed >= n_frames or (time_box_s is not None and now - first_batch_at[0] >= time_box_s):
            stop.set()

    setattr(service, "process", timed)  # noqa: B010 - shadow the bound method on this instance only
    timer = threading.Timer(timeout_s, stop.set)  # a bound on the run, whatever happens
    timer.daemon = True
    timer.start()
    if on_ready is not None:
        threading.Thread(target=on_ready, daemon=True).start()
    try:
        stats = service.run()
    finally:
        timer.cancel()
    timed_out = stats.consumed < n_frames and not (
        time_box_s is not None and first_batch_at and marks[-1][0] - first_batch_at[0] >= time_box_s
    )
    reference = service.monitor.reference
    return ConsumerRun(
        throughput=Throughput.from_marks(marks),
        scored=stats.scored,
        flagged=stats.flagged,
        dead_letters=stats.dead_letters,
        n_clusters=reference.n_clusters,
        threshold=float(reference.threshold),
        build_s=build_s,
        latencies_ms=np.concatenate(latencies) if latencies else np.empty(0),
        produced_ms=np.concatenate(produced_at) if produced_at else np.empty(0),
        timed_out=timed_out,
    )


# -------------------------------------------------------------------------------- child processes


@dataclass
class ChildResult:
    returncode: int
    max_rss_mib: float | None  # VmHWM; None if it could not be read
    log_path: Path


def vm_hwm_mib(pid: int) -> float | None:
    """The peak resident set size (``VmHWM``) of a live process, in MiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


class Child:
    """A ``python -m ...`` child with its output in a log file and its peak RSS watched."""

    def __init__(self, args: Sequence[str], log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.args = [sys.executable, *args]
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.peak_mib: float | None = None
        self._watching = True
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while self._watching and self.proc.poll() is None:
            self.sample()
            time.sleep(0.1)

    def sample(self) -> None:
        value = vm_hwm_mib(self.proc.pid)
        if value is not None and (self.peak_mib is None or value > self.peak_mib):
            self.peak_mib = value

    def ensure_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{' '.join(self.args[1:])} exited with {self.proc.returncode}:\n{tail(self.log_path)}")

    def stop(self) -> None:
        """SIGTERM, after a last RSS sample (the shutdown itself allocates next to nothing)."""
        if self.proc.poll() is None:
            self.sample()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> ChildResult:
        """Wait for the exit (SIGKILL after ``timeout_s``)."""
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s: killing it", " ".join(self.args[1:]), timeout_s)
            self.proc.kill()
            self.proc.wait()
        self._watching = False
        self._watcher.join(1.0)
        return ChildResult(self.proc.returncode, self.peak_mib, self.log_path)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_children(children: Sequence[Child], timeout_s: float) -> list[ChildResult]:
    """SIGTERM every child, then wait for each."""
    for child in children:
        child.stop()
    return [child.wait(timeout_s) for child in children]


def consumer_args(settings: dict[str, Any]) -> list[str]:
    """``-m consumer`` with every setting as a flag (``max_clusters`` -> ``--max-clusters``)."""
    args = ["-m", "consumer"]
    for name, value in settings.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


# ------------------------------------------------------------------------------------------ latency


@dataclass
class LatencyRun:
    rate: float
    frames: int
    achieved_rate: float  # frames / span of their produce timestamps
    p50_ms: float
    p99_ms: float
    max_ms: float
    p99_all_ms: float  # warm-up included
    warmup_s: float  # frames produced this long after the first one are the steady state
    producer: ChildResult
    consumer: ConsumerRun


def measure_latency(
    settings_for: Callable[[str, str], Any],
    config: dict[str, Any],
    stream_file: Path,
    stream_frames: int,
    rate: float,
    duration_s: float,
    scratch: Path,
    timeout_s: float,
) -> LatencyRun:
    """The consumer runs in this process; ``python -m producer`` replays at ``rate`` for ``duration_s``.

    ``settings_for(topic, group)`` builds the consumer's settings. The producer starts only once the
    consumer's group is stable, so no backlog precedes the measurement.
    """
    topic = unique(f"latency-{int(rate)}")
    group = unique("latency")
    ensure_topics(config, [TopicSpec(topic, 2)])
    n = min(max(int(rate * duration_s), 1000), MAX_LATENCY_FRAMES)
    repeat = -(-n // stream_frames)
    log_path = scratch / f"producer-{int(rate)}.log"
    producer_args = [
        "-m", "producer", "--bootstrap-servers", config["bootstrap.servers"], "--topic", topic,
        "--data", str(stream_file), "--rate", str(rate), "--limit", str(n), "--repeat", str(repeat),
        "--partitions", "2", "--metrics-port", "0", "--log-level", "WARNING",
    ]  # fmt: skip
    children: list[ChildResult] = []
    failure: list[BaseException] = []

    def start_producer() -> None:
        try:
            wait_group_stable(config, group, 1, 2, 60, lambda: None)
            children.append(Child(producer_args, log_path).wait(timeout_s))
        except BaseException as exc:  # reported on the main thread
            failure.append(exc)

    run = measure_consumer(settings_for(topic, group), n, timeout_s, record_latency=True, on_ready=start_producer)
    deadline = time.monotonic() + 30
    while not children and not failure and time.monotonic() < deadline:
        time.sleep(0.1)
    if failure:
        raise BenchError(f"latency run at {rate:.0f} frames/s: {failure[0]}") from failure[0]
    if not children:
        raise BenchError(f"latency run at {rate:.0f} frames/s: the producer did not finish")
    producer = children[0]
    if producer.returncode != 0:
        raise BenchError(f"the producer exited with {producer.returncode}:\n{tail(producer.log_path)}")
    lat = run.latencies_ms
    if lat.size == 0:
        raise BenchError(f"latency run at {rate:.0f} frames/s: no frame was decided")
    # Steady state: the first frames wait for the producer's start (its idempotent session, the new
    # topic's metadata), which is no cost of the consumer; they are left out of p50/p99, kept in
    # p99_all and max.
    first = float(run.produced_ms.min())
    warmup_ms = min(LATENCY_WARMUP_S * 1000.0, 0.1 * (float(run.produced_ms.max()) - first))
    steady = lat[run.produced_ms >= first + warmup_ms]
    return LatencyRun(
        rate=rate,
        frames=int(lat.size),
        achieved_rate=_achieved_rate(config, topic),
        p50_ms=float(np.percentile(steady, 50)),
        p99_ms=float(np.percentile(steady, 99)),
        max_ms=float(lat.max()),
        p99_all_ms=float(np.percentile(lat, 99)),
        warmup_s=warmup_ms / 1000.0,
        producer=producer,
        consumer=run,
    )


def _achieved_rate(config: dict[str, Any], topic: str) -> float:
    """Frames per second the producer really sent: count / span of the first and last produce timestamps."""
    probe = Consumer({**_plain(config), "group.id": unique("probe"), "enable.auto.commit": False})
    try:
        first: list[float] = []
        last: list[float] = []
        total = 0
        for p in range(2):
            low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high <= low:
                continue
            total += high - low
            for offset, out in ((low, first), (high - 1, last)):
                probe.assign([TopicPartition(topic, p, offset)])
                msgs = probe.consume(1, 10)
                if msgs and msgs[0].error() is None:
                    out.append(msgs[0].timestamp()[1] / 1000.0)
        span = max(last) - min(first) if first and last else 0.0
        return total / span if span > 0 else float("nan")
    finally:
        probe.close()


# ---------------------------------------------------------------------------- consumer processes


@dataclass
class DrainRun:
    processes: int
    frames: int
    drain_s: float
    partition_sizes: list[int]
    children: list[ChildResult]

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.drain_s if self.drain_s > 0 else float("nan")


def measure_consumer_processes(
    counts: Sequence[int],
    base_settings: dict[str, Any],
    config: dict[str, Any],
    values: Sequence[bytes],
    keys: Sequence[bytes],
    scratch: Path,
    timeout_s: float,
) -> dict[int, DrainRun]:
    """For each ``n`` in ``counts``: ``n`` × ``python -m consumer`` in one group drain a burst of frames.

    Every group gets its own empty 2-partition topic, and all the processes start together (their
    start-up is long and not what is measured) and join their groups before anything is timed. Then, one
    group after the other, ``values`` are produced onto its topic and the clock runs until the group's
    commits cover all of them; the other groups meanwhile idle on their empty topics.
    """
    groups = {n: (unique(f"drain{n}"), unique(f"drain{n}")) for n in counts}  # n -> (topic, group)
    children: dict[int, list[Child]] = {n: [] for n in counts}

    def alive() -> None:
        for members in children.values():
            for child in members:
                child.ensure_alive()

    durations: dict[int, tuple[float, list[int]]] = {}
    try:
        for n, (topic, group) in groups.items():
            ensure_topics(config, [TopicSpec(topic, 2)])
            settings = {**base_settings, "topic": topic, "group_id": group}
            for i in range(n):
                path = scratch / f"consumer-{n}-{i}.log"
                children[n].append(Child(consumer_args({**settings, "instance_id": f"bench-{n}-{i}"}), path))
        for n, (_, group) in groups.items():
            wait_group_stable(config, group, n, 2, timeout_s, alive)
        for n, (topic, group) in groups.items():
            probe = CommitProbe(config, group, topic, 2)
            try:
                started = time.perf_counter()
                preload(config, topic, values, keys)
                deadline = time.monotonic() + timeout_s
                while probe.total() < len(values):
                    alive()
                    if time.monotonic() > deadline:
                        raise BenchError(f"{n} consumer(s) did not drain {len(values)} frames in {timeout_s:.0f} s")
                    time.sleep(0.05)
                durations[n] = (time.perf_counter() - started, partition_sizes(config, topic))
            finally:
                probe.close()
    finally:
        results = {n: stop_children(members, 60) for n, members in children.items()}
    return {n: DrainRun(n, len(values), durations[n][0], durations[n][1], results[n]) for n in counts}


# ------------------------------------------------------------------------------------------ producer


@dataclass
class ProducerRun:
    sent: int
    elapsed_s: float
    ok: bool

    @property
    def frames_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else float("nan")


def measure_producer(config: dict[str, Any], stream_file: Path, n_frames: int, stream_frames: int) -> ProducerRun:
    """:func:`producer.replay.replay` at rate 0 (as fast as possible), reading the dataset file itself."""
    from producer.replay import replay
    from producer.settings import ProducerSettings

    settings = ProducerSettings.model_validate(
        {
            "bootstrap_servers": config["bootstrap.servers"],
            "topic": unique("producer"),
            "data": str(stream_file),
            "rate": 0.0,
            "limit": n_frames,
            "repeat": -(-n_frames // stream_frames),
            "partitions": 2,
            "progress": False,
            "metrics_port": 0,
        }
    )
    result = replay(settings)
    return ProducerRun(result.sent, result.elapsed_s, result.ok)


# ----------------------------------------------------------------------------------------- retrainer


@dataclass
class RetrainerRun:
    published: bool
    wall_s: float
    child: ChildResult
    training_s: float | None


def measure_retrainer(
    settings: dict[str, Any], registry: Path, timeout_s: float, scratch: Path, config: dict[str, Any]
) -> RetrainerRun:
    """``python -m retrainer`` over an edge-case topic until it published version 1, or read it all without.

    Gives the retrainer's peak RSS through a real retrain, and its own training time from its report.
    ``settings`` must name ``edge_topic`` and ``group_id``.
    """
    from edgeloop.registry import ModelRegistry

    args = ["-m", "retrainer"]
    for name, value in settings.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    path = scratch / "retrainer.log"
    started = time.perf_counter()
    child = Child(args, path)
    published = False
    edge_topic, group = settings["edge_topic"], settings["group_id"]
    edge_frames = sum(partition_sizes(config, edge_topic))
    read_all_since: float | None = None
    probe = CommitProbe(config, group, edge_topic, 2)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            child.ensure_alive()
            latest = ModelRegistry(registry).latest() if registry.exists() else None
            if latest is not None and latest.version >= 1:
                published = True
                break
            if probe.total() >= edge_frames:
                read_all_since = read_all_since or time.monotonic()
                if time.monotonic() - read_all_since > 3.0:  # everything read and committed, nothing published
                    break
            time.sleep(0.2)
    finally:
        probe.close()
        result = stop_children([child], 60)[0]
    wall_s = time.perf_counter() - started
    training_s = None
    reports = sorted((registry / "retrain-reports").glob("attempt-*.json")) if registry.exists() else []
    if reports:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            training_s = float(orjson.loads(reports[-1].read_bytes())["training_seconds"])
    return RetrainerRun(published, wall_s, result, training_s)
