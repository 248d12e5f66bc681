"""The ledger of the fault tests: what was acknowledged (A), decided, flagged (E) and expected (E*).

- A: the frames on the input topic (every one of them had a successful delivery report: the producer
  exits 0 only when ``acked == sent``), keyed by ``(partition, offset)``.
- decisions: the consumer's decision log (JSON Lines, one record per scored frame).
- E: the edge cases on the edge topic (read ``read_committed``), by frame id.
- E*: the frames a deterministic run flags, computed here in-process from the same training data with
  the consumer's own reference clustering (``consumer.service.build_reference``); the clustering does
  not learn from the stream, so a frame's flag depends on the frame alone.

Processes: :class:`Processes` starts the producer and consumers as real subprocesses, each with its own
log file, and kills whatever is still running when the test ends (also when it fails).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from tests.kafka_helpers import partitions_of, unique_name, wait_until

REPO = Path(__file__).resolve().parents[2]
Key = tuple[int, int]  # (partition, offset)
# How the fault tests' consumers flag: the product defaults (raw boundary score, tuned on the real pack)
# flag next to nothing on the small synthetic pack; this flags ~5% of it, so kills land among edge cases.
FLAGGING: dict[str, Any] = {"flag_on": "density", "features": "pose", "threshold_quantile": 0.95}


# --------------------------------------------------------------------------------------- processes
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout:.0f} s; log tail:\n{self.output()[-3000:]}"
            ) from None

    def signal(self, signum: int) -> None:
        if self.alive():
            self.popen.send_signal(signum)


class Processes:
    """Subprocesses of one test; :meth:`close` kills those still running (by pid, never by name)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Proc:
        log = self.log_dir / f"{name}-{len(self.procs)}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, *argv], cwd=REPO, env=full_env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(10)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def producer_argv(data: Path, topic: str, bootstrap: str, *extra: str) -> list[str]:
    return [
        "-m", "producer", "--data", str(data), "--topic", topic, "--bootstrap-servers", bootstrap,
        "--metrics-port", "0", "--no-progress", *extra,
    ]  # fmt: skip


@dataclass
class ConsumerRun:
    """Arguments of one consumer instance (a subprocess); :meth:`argv` builds the command line."""

    bootstrap: str
    topic: str
    edge_topic: str
    dlq_topic: str
    versions_topic: str
    group: str
    registry: Path
    training: Path
    decision_log: Path
    batch_size: int = 200
    max_inflight_batches: int = 2  # the consumer's default: batches awaiting acknowledgement while it goes on
    metrics_port: int = 0
    extra: tuple[str, ...] = ()

    def argv(self, *more: str, module: str = "consumer") -> list[str]:
        return [
            "-m", module, "--bootstrap-servers", self.bootstrap, "--topic", self.topic,
            "--edge-topic", self.edge_topic, "--dlq-topic", self.dlq_topic,
            "--model-versions-topic", self.versions_topic, "--group-id", self.group,
            "--registry", str(self.registry), "--training-data", str(self.training),
            "--decision-log", str(self.decision_log), "--metrics-port", str(self.metrics_port),
            "--batch-size", str(self.batch_size), "--session-timeout-ms", "6000",
            "--max-inflight-batches", str(self.max_inflight_batches),
            *(arg for k, v in FLAGGING.items() for arg in (f"--{k.replace('_', '-')}", str(v))), *self.extra, *more,
        ]  # fmt: skip

    @property
    def uncommitted_window(self) -> int:
        """Most frames decided but not yet committed at any moment: the batch in hand plus those in flight."""
        return self.batch_size * (self.max_inflight_batches + 1)

    def with_(self, **changes: Any) -> ConsumerRun:
        fields = {**self.__dict__, **changes}
        return ConsumerRun(**fields)


def broker_run(
    config: Mapping[str, Any], registry_template: Path, training: Path, tmp_path: Path, partitions: int = 2,
    **changes: Any,
) -> ConsumerRun:  # fmt: skip
    """A :class:`ConsumerRun` on fresh topics of a test's own broker (``config``), with a registry copy."""
    import shutil

    from tests.kafka_helpers import create_topic

    registry = tmp_path / unique_name("registry")
    shutil.copytree(registry_template, registry)
    run = ConsumerRun(
        bootstrap=config["bootstrap.servers"], topic=create_topic(config, unique_name("frames"), partitions),
        edge_topic=create_topic(config, unique_name("edges"), 2), dlq_topic=create_topic(config, unique_name("dlq")),
        versions_topic=create_topic(config, unique_name("versions"), 1, {"cleanup.policy": "compact"}),
        group=unique_name("monitor"), registry=registry, training=training,
        decision_log=tmp_path / unique_name("decisions"),
    )  # fmt: skip
    return run.with_(**changes) if changes else run


ASSIGNED = re.compile(r"assigned \[([0-9, ]*)\]")


def assignments(proc: Proc) -> list[list[int]]:
    """Every partition list the consumer logged as ``assigned [...]``, in order."""
    return [[int(p) for p in m.group(1).split(",") if p.strip()] for m in ASSIGNED.finditer(proc.output())]


def crashpoint_argv(
    run: ConsumerRun, point: str, after: int, marker: Path, *more: str, stall_s: float = 0.0
) -> list[str]:
    """The consumer under :mod:`tests.faults.crashpoint`: SIGKILLed at ``point`` of the ``after``-th batch.

    ``point="stall"`` holds the ``after``-th batch ``stall_s`` seconds instead of killing.
    """
    consumer_args = run.argv(*more)[2:]  # without "-m consumer"
    return [
        "-m", "tests.faults.crashpoint", "--point", point, "--after", str(after), "--marker", str(marker),
        "--stall-s", str(stall_s), "--", *consumer_args,
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------- topics
def read_topic(
    config: Mapping[str, Any], topic: str, timeout: float = 30.0, isolation: str = "read_committed"
) -> list[Message]:
    """Every message of ``topic`` from the beginning up to its end (all partitions), in partition order."""
    parts = partitions_of(config, topic)
    consumer = Consumer(
        {
            "log_level": 3,
            "group.id": unique_name("ledger"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
            **config,
        }
    )
    out: list[Message] = []
    at_end: set[int] = set()
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        deadline = time.monotonic() + timeout
        while len(at_end) < len(parts):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: partitions {sorted(set(parts) - at_end)} not read to the end")
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is None:
                    out.append(msg)
                    at_end.discard(msg.partition() or 0)
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                else:
                    raise KafkaException(err)
    finally:
        consumer.close()
    return out


def acked_frames(config: Mapping[str, Any], topic: str) -> dict[Key, dict[str, Any]]:
    """A: the frames on ``topic`` by ``(partition, offset)`` (decoded JSON)."""
    return {(m.partition() or 0, m.offset() or 0): orjson.loads(m.value()) for m in read_topic(config, topic)}


def edge_cases(config: Mapping[str, Any], topic: str) -> list[dict[str, Any]]:
    """E: the edge-case records on ``topic`` (read_committed)."""
    return [orjson.loads(m.value()) for m in read_topic(config, topic)]


# ---------------------------------------------------------------------------------------- decisions
def read_decisions(path: Path) -> list[dict[str, Any]]:
    """The decision log; a torn last line (a SIGKILL mid-write) is ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            out.append(orjson.loads(line))
    return out


def duplicates(decisions: Sequence[Mapping[str, Any]]) -> int:
    """How many decisions repeat an earlier one's ``(partition, offset)``."""
    return len(decisions) - len({(d["partition"], d["offset"]) for d in decisions})


def decided_keys(decisions: Sequence[Mapping[str, Any]]) -> set[Key]:
    return {(d["partition"], d["offset"]) for d in decisions}


def in_order_per_partition(decisions: Sequence[Mapping[str, Any]]) -> bool:
    """First decisions of each offset come in increasing offset order within every partition."""
    seen: set[Key] = set()
    last: dict[int, int] = defaultdict(lambda: -1)
    for d in decisions:
        key = (d["partition"], d["offset"])
        if key in seen:
            continue
        seen.add(key)
        if d["offset"] < last[d["partition"]]:
            return False
        last[d["partition"]] = d["offset"]
    return True


def wait_decided(path: Path, keys: set[Key], timeout: float, proc: Proc | None = None) -> list[dict[str, Any]]:
    """Wait until the decision log covers ``keys``; fail early if ``proc`` dies."""

    def covered() -> list[dict[str, Any]] | None:
        if proc is not None and not proc.alive():
            raise AssertionError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.output()[-3000:]}")
        decisions = read_decisions(path)
        return decisions if keys <= decided_keys(decisions) else None

    result: list[dict[str, Any]] = wait_until(covered, timeout, interval=0.25, what=f"{len(keys)} decisions")
    return result


# -------------------------------------------------------------------------------------------- E*
def expected_flags(run: ConsumerRun, frames: Mapping[Key, Mapping[str, Any]]) -> dict[Key, bool]:
    """E* as ``{(partition, offset): flagged}``: the consumer's own decision function, run in-process.

    ``consumer.service.build_monitor`` on the run's training data and registry (reference clustering +
    the serving model) decides all the frames in one batch, without Kafka.
    """
    from consumer.service import build_monitor
    from consumer.settings import ConsumerSettings
    from edgeloop.registry import ModelRegistry

    config = ConsumerSettings(
        bootstrap_servers="unused:9092", training_data=str(run.training), registry=str(run.registry), **FLAGGING
    )
    monitor = build_monitor(config, ModelRegistry(run.registry, model_name=config.model_name))
    keys = sorted(frames)
    decisions = monitor.decide(np.asarray([frames[k]["kps"] for k in keys], dtype=np.float64))
    flags = getattr(decisions, "flagged", decisions.is_ood).tolist()
    return dict(zip(keys, (bool(f) for f in flags), strict=True))


@dataclass
class Ledger:
    """A, the decisions, E and E* of one scenario, with the checks every fault test makes."""

    acked: dict[Key, dict[str, Any]]
    decisions: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    expected: dict[Key, bool]

    @property
    def e_star(self) -> set[int]:
        return {self.acked[k]["id"] for k, flagged in self.expected.items() if flagged}

    @property
    def e_ids(self) -> Counter[int]:
        return Counter(int(e["id"]) for e in self.edges)

    @property
    def duplicates(self) -> int:
        return duplicates(self.decisions)

    @property
    def edge_duplicates(self) -> int:
        return sum(self.e_ids.values()) - len(self.e_ids)

    def assert_nothing_lost(self) -> None:
        missing = set(self.acked) - decided_keys(self.decisions)
        assert not missing, f"{len(missing)} acked frames never decided, e.g. {sorted(missing)[:5]}"
        lost_edges = self.e_star - set(self.e_ids)
        assert not lost_edges, f"{len(lost_edges)} expected edge cases not on the edge topic: {sorted(lost_edges)[:5]}"
        wrong = [d for d in self.decisions if bool(d["flagged"]) != self.expected[(d["partition"], d["offset"])]]
        assert not wrong, f"{len(wrong)} decisions disagree with the deterministic run, e.g. {wrong[:2]}"
        assert set(self.e_ids) <= self.e_star, f"unexpected edge cases {sorted(set(self.e_ids) - self.e_star)[:5]}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int, timeout: float = 5.0) -> dict[str, float]:
    """``{sample name with labels: value}`` from a /metrics endpoint."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


@contextlib.contextmanager
def timed(label: str, timings: dict[str, float]) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[label] = round(time.monotonic() - started, 2)


def signal_name(rc: int) -> str:
    return signal.Signals(-rc).name if rc < 0 else str(rc)


def wait_committed(
    config: Mapping[str, Any],
    group: str,
    topic: str,
    expected: Mapping[int, int] | None = None,
    timeout: float = 120.0,
    procs: Sequence[Proc] = (),
) -> dict[int, int | None]:
    """Wait until ``group`` committed ``expected`` (default: the high watermarks) on ``topic``.

    Transient coordinator errors (a coordinator moving, a broker restarting) are retried; it fails at
    once, with the log tail, when one of ``procs`` exits.
    """
    from tests.kafka_helpers import committed_offsets, high_watermarks

    seen: dict[int, int | None] = {}

    def done() -> bool:
        for proc in procs:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.output()[-3000:]}")
        try:
            want = expected if expected is not None else high_watermarks(config, topic)
            seen.clear()
            seen.update(committed_offsets(config, group, topic))
        except KafkaException:
            return False
        return all(seen.get(p) == o for p, o in want.items())

    try:
        wait_until(done, timeout, interval=0.3, what=f"{group} committed {expected or 'high watermarks'} on {topic}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last committed: {seen}") from None
    return dict(seen)
