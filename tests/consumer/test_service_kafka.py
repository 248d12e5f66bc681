"""The consumer loop on the real broker: exact flags, dead letters, model hot swap, clean stop."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import KafkaException

from consumer.service import ConsumerService, LoopStats
from consumer.settings import ConsumerSettings
from edgeloop.frames import encode_frame
from edgeloop.model import TrainingConfig, train_model
from edgeloop.registry import ModelRegistry, TrainingAdditions
from edgeloop.synthetic import generate_poses
from tests.kafka_helpers import committed_offsets, consume, high_watermarks, produce, wait_until

GROUP = "monitor-under-test"


def write_labelled(path: Path, kps: np.ndarray, gt: np.ndarray, id_start: int = 0) -> Path:
    rows = [{"id": id_start + i, "kps": k.tolist(), "gt": int(g)} for i, (k, g) in enumerate(zip(kps, gt, strict=True))]
    path.write_bytes(orjson.dumps(rows))
    return path


class RunningConsumer:
    """A ConsumerService on a thread, stopped (finish batch, flush, commit) by ``stop()``."""

    def __init__(self, settings: ConsumerSettings) -> None:
        self.stop_event = threading.Event()
        self.service = ConsumerService(settings, self.stop_event)
        self.stats: LoopStats | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.stats = self.service.run()

    def stop(self) -> LoopStats:
        self.stop_event.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the consumer did not stop within 60 s"
        assert self.stats is not None
        return self.stats


@pytest.fixture
def vertical_reference(tmp_path: Path) -> tuple[Path, np.ndarray]:
    poses = generate_poses(600, seed=11, classes=["standing", "squatting", "lunging"], missing_rate=0.0)
    return write_labelled(tmp_path / "training.json", poses["kps"], poses["gt"]), poses["kps"]


@pytest.fixture
def topics(new_topic: Callable[..., str]) -> dict[str, str]:
    return {
        "topic": new_topic(partitions=2),
        "edge_topic": new_topic(partitions=2),
        "dlq_topic": new_topic(),
        "model_versions_topic": new_topic(config={"cleanup.policy": "compact"}),
    }


@pytest.fixture
def make_settings(
    kafka_config: dict[str, Any], topics: dict[str, str], tmp_path: Path, vertical_reference: tuple[Path, np.ndarray]
) -> Iterator[Callable[..., ConsumerSettings]]:
    def make(**overrides: Any) -> ConsumerSettings:
        fields: dict[str, Any] = {
            "bootstrap_servers": kafka_config["bootstrap.servers"],
            "group_id": GROUP,
            "registry": str(tmp_path / "registry"),
            "training_data": str(vertical_reference[0]),
            "decision_log": str(tmp_path / "decisions.jsonl"),
            "threshold_quantile": 1.0,
            "uncertainty_band": 0.0,  # flags from the clustering alone: the foreign frames are known
            "features": "pose",
            "flag_on": "density",
            "metrics_port": 0,
            "poll_timeout_s": 0.1,
            **topics,
        }
        fields.update(overrides)
        return ConsumerSettings(**fields)

    yield make


def committed_total(kafka_config: dict[str, Any], topic: str) -> int:
    """Committed offsets of the group summed over partitions (-1 while the coordinator is not ready)."""
    try:
        return sum(o or 0 for o in committed_offsets(kafka_config, GROUP, topic).values())
    except KafkaException:
        return -1


@pytest.fixture
def running() -> Iterator[Callable[[ConsumerSettings], RunningConsumer]]:
    started: list[RunningConsumer] = []

    def start(settings: ConsumerSettings) -> RunningConsumer:
        started.append(RunningConsumer(settings))
        return started[-1]

    yield start
    for r in started:  # a failed test must not leave a consumer thread polling a stopped broker
        r.stop_event.set()
        r.thread.join(30)


def decisions(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def frame(i: int, kps: np.ndarray, sequence: str = "cam") -> bytes:
    return encode_frame({"id": i, "seq": i, "kps": kps.tolist(), "ts": 1_700_000_000_000, "sequence": sequence})


def test_known_foreign_frames_are_exactly_the_flagged_ones(
    make_settings: Callable[..., ConsumerSettings],
    running: Callable[[ConsumerSettings], RunningConsumer],
    kafka_config: dict[str, Any],
    topics: dict[str, str],
    vertical_reference: tuple[Path, np.ndarray],
    tmp_path: Path,
) -> None:
    reference_kps = vertical_reference[1]
    # Reference poses moved and zoomed (not foreign) and horizontal bodies (foreign) at known ids.
    rng = np.random.default_rng(5)
    familiar = reference_kps[rng.choice(len(reference_kps), 300, replace=False)].reshape(-1, 17, 2)
    familiar = (familiar * rng.uniform(0.6, 1.4, (300, 1, 1)) + rng.uniform(-150, 150, (300, 1, 2))).reshape(-1, 34)
    foreign = generate_poses(40, seed=99, classes=["lying", "plank", "pushup"], missing_rate=0.0)["kps"]
    foreign_ids = set(range(1000, 1040))
    records = [frame(i, k) for i, k in enumerate(familiar)] + [frame(1000 + i, k) for i, k in enumerate(foreign)]
    order = rng.permutation(len(records))
    produce(kafka_config, topics["topic"], [(b"cam", records[j]) for j in order])

    consumer = running(make_settings())
    wait_until(lambda: committed_total(kafka_config, topics["topic"]) == 340, timeout=90)
    stats = consumer.stop()

    edges = [orjson.loads(m.value()) for m in consume(kafka_config, topics["edge_topic"], len(foreign_ids))]
    assert {e["id"] for e in edges} == foreign_ids
    assert stats.scored == 340 and stats.flagged == 40 and stats.dead_letters == 0
    for e in edges:  # each flag says why
        assert e["score"] > e["threshold"] and e["nearest_cluster"] >= 0
        assert len(e["deviating_keypoints"]) == 3 and e["model_version"] == 0 and e["prediction"] in (0, 1)
        assert "sequence" in e and e["kps"]  # the frame itself travels with it
    logged = decisions(tmp_path / "decisions.jsonl")
    assert sorted(d["id"] for d in logged) == sorted(list(range(300)) + sorted(foreign_ids))
    assert {d["id"] for d in logged if d["flagged"]} == foreign_ids


def test_bad_frames_go_to_the_dlq_once_and_the_loop_goes_on(
    make_settings: Callable[..., ConsumerSettings],
    running: Callable[[ConsumerSettings], RunningConsumer],
    kafka_config: dict[str, Any],
    topics: dict[str, str],
    vertical_reference: tuple[Path, np.ndarray],
) -> None:
    good = vertical_reference[1][:50]
    poison = {7: b"not json", 19: b"", 23: orjson.dumps({"id": 5, "kps": [1.0] * 3}), 41: b'{"kps": []}'}
    values: list[bytes] = []
    for i in range(len(good) + len(poison)):
        values.append(poison[i] if i in poison else frame(i, good[len(values) - sum(p < i for p in poison)]))
    positions = produce(kafka_config, topics["topic"], values, partition=0)

    consumer = running(make_settings())
    total = len(values)
    wait_until(lambda: committed_total(kafka_config, topics["topic"]) == total, timeout=90)
    stats = consumer.stop()

    dead = consume(kafka_config, topics["dlq_topic"], len(poison))
    by_offset = {int(dict(m.headers())["source.offset"]): m for m in dead}
    assert sorted(by_offset) == sorted(positions[i][1] for i in poison)
    for i, raw in poison.items():
        m = by_offset[positions[i][1]]
        headers = dict(m.headers())
        assert m.value() == raw  # the original bytes
        assert headers["source.topic"].decode() == topics["topic"] and headers["source.partition"] == b"0"
        assert headers["error.reason"] and headers["error.message"]
    assert dict(dead[0].headers())["error.reason"] in (b"not_json", b"empty", b"bad_kps_length", b"missing_id")
    assert stats.scored == len(good) and stats.dead_letters == len(poison)
    assert high_watermarks(kafka_config, topics["topic"])[0] == total


def test_a_model_versions_message_swaps_the_model_mid_stream(
    make_settings: Callable[..., ConsumerSettings],
    running: Callable[[ConsumerSettings], RunningConsumer],
    kafka_config: dict[str, Any],
    topics: dict[str, str],
    vertical_reference: tuple[Path, np.ndarray],
    tmp_path: Path,
) -> None:
    settings = make_settings()
    consumer = running(settings)
    kps = vertical_reference[1]
    produce(kafka_config, topics["topic"], [(b"cam", frame(i, kps[i])) for i in range(100)])
    wait_until(lambda: committed_total(kafka_config, topics["topic"]) == 100, timeout=90)

    # The retrainer's part, done by hand: version 1 trained with horizontal poses added, then announced.
    registry = ModelRegistry(Path(settings.registry))
    extra = generate_poses(200, seed=3, classes=["lying", "plank"], missing_rate=0.0)
    model = train_model(
        kps, np.zeros(len(kps), dtype=np.int64), extra["kps"], extra["gt"], config=TrainingConfig(seed=1)
    )
    published = registry.publish(model, golden_accuracy=0.99, previous_golden_accuracy=0.9,
                                 additions=TrainingAdditions(extra["kps"], extra["gt"]))  # fmt: skip
    assert published.version == 1
    produce(kafka_config, topics["model_versions_topic"], [(b"orientation", orjson.dumps(published.to_message()))])
    wait_until(lambda: consumer.service.monitor.model_version == 1, timeout=30, what="the swap to version 1")

    horizontal = generate_poses(50, seed=8, classes=["lying", "plank"], missing_rate=0.0)["kps"]
    produce(kafka_config, topics["topic"], [(b"cam", frame(100 + i, k)) for i, k in enumerate(horizontal)])
    wait_until(lambda: committed_total(kafka_config, topics["topic"]) == 150, timeout=90)
    consumer.stop()

    logged = {d["id"]: d for d in decisions(tmp_path / "decisions.jsonl")}
    assert len(logged) == 150
    assert all(logged[i]["version"] == 0 for i in range(100))
    assert all(logged[i]["version"] == 1 for i in range(100, 150))
    # The absorbed poses are no longer foreign.
    assert sum(logged[i]["flagged"] for i in range(100, 150)) <= 5
