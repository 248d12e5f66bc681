"""The retrainer process against the real broker: edge cases in → version 1 published and announced.

Each test runs ``python -m retrainer`` as a subprocess on fresh topics and its own registry; crash tests
make it SIGKILL itself at a named point (``EDGELOOP_RETRAINER_CRASH_AT``) and restart it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edgeloop.datasets import DataPack
from edgeloop.registry import ModelRegistry
from retrainer.buffer import EdgeCaseBuffer
from tests.kafka_helpers import committed_offsets, consume, high_watermarks, produce, unique_name, wait_until
from tests.retrainer.conftest import edge_case_message

RETRAIN_AFTER = 30
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Retrainer:
    """One ``python -m retrainer`` process with its log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "retrainer", *args], cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"retrainer still running after {timeout:.0f}s; log:\n{self.tail()}") from None

    def stop(self, timeout: float = 60.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        code = self.wait(timeout)
        self.log.close()
        return code


@pytest.fixture
def loop(
    tmp_path: Path, small_pack: DataPack, kafka_config: dict[str, Any], new_topic: Callable[..., str]
) -> Iterator[dict[str, Any]]:
    """Fresh topics, a group and a registry; ``start(env=...)`` launches a retrainer (killed at teardown)."""
    edge_topic = new_topic(2, prefix="edge-cases")
    versions_topic = new_topic(1, prefix="model-versions", config={"cleanup.policy": "compact"})
    group = unique_name("retrainer")
    registry = tmp_path / "registry"
    processes: list[Retrainer] = []

    def start(extra: list[str] | None = None, env: dict[str, str] | None = None, metrics_port: int = 0) -> Retrainer:
        # --policy always: these tests are about publishing and announcing; the policy has its unit tests.
        args = [
            "--bootstrap-servers", kafka_config["bootstrap.servers"], "--edge-topic", edge_topic,
            "--model-versions-topic", versions_topic, "--group-id", group, "--registry", str(registry),
            "--training-data", str(small_pack.training), "--golden-data", str(small_pack.golden),
            "--retrain-after", str(RETRAIN_AFTER), "--max-retrains", "1", "--metrics-port", str(metrics_port),
            "--batch-size", "200", "--poll-timeout-s", "0.2", "--policy", "always", *(extra or []),
        ]  # fmt: skip
        if not any(a in ("--labels-topic", "--master-annotations") for a in (extra or [])):
            args += ["--master-annotations", str(small_pack.master)]
        full_env = {k: v for k, v in os.environ.items() if k != "EDGELOOP_RETRAINER_CRASH_AT"}
        full_env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
        process = Retrainer(args, tmp_path / f"retrainer-{len(processes)}.log", full_env)
        processes.append(process)
        return process

    yield {
        "start": start, "edge_topic": edge_topic, "versions_topic": versions_topic, "group": group,
        "registry": registry, "config": kafka_config,
    }  # fmt: skip
    for process in processes:
        if process.alive():
            process.process.kill()
            process.process.wait(10)
        process.log.close()


def produce_edge_cases(loop: dict[str, Any], frames: list[dict[str, Any]]) -> None:
    records = [(str(f["id"]).encode(), orjson.dumps(edge_case_message(f))) for f in frames]
    produce(loop["config"], loop["edge_topic"], records)


def all_committed(loop: dict[str, Any], topic: str | None = None) -> bool:
    topic = topic or loop["edge_topic"]
    high = high_watermarks(loop["config"], topic)
    committed = committed_offsets(loop["config"], loop["group"], topic)
    return all(committed.get(p) == h for p, h in high.items() if h > 0)


def announced(loop: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Exactly ``count`` messages on the model-versions topic (asserts none beyond), decoded."""
    messages = consume(loop["config"], loop["versions_topic"], count, timeout=30)
    assert all(m.key() == b"orientation" for m in messages)
    return [orjson.loads(m.value() or b"") for m in messages]


def wait_for_version(loop: dict[str, Any], version: int, process: Retrainer, timeout: float = 120.0) -> None:
    def published() -> bool:
        assert process.alive(), f"retrainer exited with {process.process.returncode}:\n{process.tail()}"
        return (loop["registry"] / f"v{version:06d}.json").exists()

    wait_until(published, timeout, interval=0.25, what=f"version {version} in {loop['registry']}")


def metric(port: int, name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    raise AssertionError(f"metric {wanted} not served; served: {[ln for ln in text.splitlines() if name in ln]}")


def test_edge_cases_in_version_one_published_and_announced(
    loop: dict[str, Any], stream_frames: list[dict[str, Any]]
) -> None:
    frames = stream_frames[:600]
    produce_edge_cases(loop, frames + frames[:100])  # the first 100 twice: at-least-once upstream
    port = free_port()
    retrainer = loop["start"](metrics_port=port)
    wait_for_version(loop, 1, retrainer)
    wait_until(lambda: all_committed(loop), 60, interval=0.25, what="every edge case committed")
    assert metric(port, "edgeloop_retrainer_edge_cases_received_total") == 700
    id_duplicates = metric(port, "edgeloop_retrainer_edge_cases_duplicate_total", 'kind="id"')
    assert metric(port, "edgeloop_retrainer_model_version") == 1
    assert metric(port, "edgeloop_retrainer_retrains_total", 'outcome="published"') == 1
    assert metric(port, "edgeloop_retrainer_retrain_threshold") == RETRAIN_AFTER
    assert metric(port, "edgeloop_retrainer_training_seconds_count") == 1
    assert metric(port, "edgeloop_retrainer_labels_pending") == 0
    golden_v1 = metric(port, "edgeloop_retrainer_golden_accuracy_ratio", 'version="1"')
    near = metric(port, "edgeloop_retrainer_edge_cases_duplicate_total", 'kind="near"')
    capped = metric(port, "edgeloop_retrainer_edge_cases_duplicate_total", 'kind="cap"')
    assert retrainer.stop() == 0, retrainer.tail()

    registry = ModelRegistry(loop["registry"])
    assert [v.version for v in registry.versions()] == [0, 1]
    v1 = registry.get(1)
    assert v1.trained_on == {"training": 300, "edge_cases": RETRAIN_AFTER}
    assert v1.golden_accuracy == pytest.approx(golden_v1)
    messages = announced(loop, 2)
    assert [m["version"] for m in messages] == [0, 1]
    assert messages[1]["sha256"] == v1.sha256
    assert messages[1]["trained_on"] == {"training": 300, "edge_cases": RETRAIN_AFTER}
    assert messages[1]["previous_golden_accuracy"] == pytest.approx(registry.get(0).golden_accuracy)

    buffer = EdgeCaseBuffer.open(loop["registry"] / "edge-cases.jsonl")
    # Every message was collected once or dropped as a duplicate: a redelivered frame that had been
    # collected is a duplicate by id, one dropped as a near duplicate is dropped as such again.
    assert id_duplicates == sum(1 for f in frames[:100] if f["id"] in buffer.edge_cases) > 0
    assert len(buffer.edge_cases) + id_duplicates + near + capped == 700
    assert len(buffer.edge_cases) >= RETRAIN_AFTER
    truth = {f["id"]: f["gt"] for f in frames}
    assert all(case.gt == truth[i] for i, case in buffer.edge_cases.items())
    additions = registry.load_training_additions(1)
    assert sorted(additions.ids.tolist()) == sorted(buffer.attempts[0].new_edge_case_ids)


@pytest.mark.faults
@pytest.mark.parametrize("point", ["before_publish", "after_publish", "after_announce"])
def test_killed_mid_retrain_then_restarted_publishes_exactly_one_version_one(
    loop: dict[str, Any], stream_frames: list[dict[str, Any]], point: str
) -> None:
    produce_edge_cases(loop, stream_frames[:600])
    crashed = loop["start"](env={"EDGELOOP_RETRAINER_CRASH_AT": point})
    assert crashed.wait(120) == -signal.SIGKILL, crashed.tail()
    assert f"SIGKILL at {point}" in crashed.tail()
    registry = ModelRegistry(loop["registry"])
    assert [v.version for v in registry.versions()] == ([0] if point == "before_publish" else [0, 1])
    assert not all_committed(loop)  # the batch that crossed the threshold was never committed
    before = EdgeCaseBuffer.open(loop["registry"] / "edge-cases.jsonl")
    crossing = before.attempts[0]
    # Killed during the attempt, its outcome is not recorded; killed after announcing, it is (only the commit is due).
    assert crossing.outcome == ("published" if point == "after_announce" else None)
    assert len(crossing.new_edge_case_ids) == RETRAIN_AFTER
    before.close()

    restarted = loop["start"]()
    wait_for_version(loop, 1, restarted)
    wait_until(lambda: all_committed(loop), 60, interval=0.25, what="every edge case committed")
    assert restarted.stop() == 0, restarted.tail()

    assert [v.version for v in registry.versions()] == [0, 1]
    v1 = registry.get(1)
    assert v1.trained_on == {"training": 300, "edge_cases": RETRAIN_AFTER}
    assert sorted(registry.load_training_additions(1).ids.tolist()) == sorted(crossing.edge_case_ids)
    assert [m["version"] for m in announced(loop, 2)] == [0, 1]  # v1 announced exactly once
    after = EdgeCaseBuffer.open(loop["registry"] / "edge-cases.jsonl")
    assert [(a.attempt, a.outcome) for a in after.attempts] == [(1, "published")]
    assert len(after.edge_cases) == len(set(after.edge_cases))


def test_edge_cases_wait_for_labels_from_the_labels_topic(
    loop: dict[str, Any], stream_frames: list[dict[str, Any]], new_topic: Callable[..., str]
) -> None:
    labels_topic = new_topic(1, prefix="labels")
    frames = stream_frames[:600]
    produce_edge_cases(loop, frames)
    port = free_port()
    retrainer = loop["start"](["--labels-topic", labels_topic], metrics_port=port)
    wait_until(lambda: all_committed(loop), 90, interval=0.25, what="every edge case committed")
    pending = metric(port, "edgeloop_retrainer_labels_pending")
    assert pending >= RETRAIN_AFTER  # collected, none labelled: nothing dropped, nothing trained
    assert not (loop["registry"] / "v000001.json").exists()
    time.sleep(1.0)
    assert metric(port, "edgeloop_retrainer_retrains_total", 'outcome="published"') == 0

    produce(loop["config"], labels_topic, [orjson.dumps({"id": f["id"], "gt": f["gt"]}) for f in frames])
    wait_for_version(loop, 1, retrainer)
    wait_until(lambda: all_committed(loop, labels_topic), 60, interval=0.25, what="labels committed")
    assert metric(port, "edgeloop_retrainer_labels_pending") == 0
    assert retrainer.stop() == 0, retrainer.tail()
    assert ModelRegistry(loop["registry"]).get(1).trained_on["edge_cases"] == RETRAIN_AFTER
    assert [m["version"] for m in announced(loop, 2)] == [0, 1]
