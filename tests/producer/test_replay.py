"""The producer against the real broker: every frame arrives once, in order per sequence."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edgeloop.datasets import open_dataset
from edgeloop.frames import decode_frame
from edgeloop.synthetic import synthetic_pack
from producer.replay import replay
from producer.settings import ProducerSettings
from tests.kafka_helpers import consume, high_watermarks

REAL_STREAM = Path(__file__).resolve().parents[2] / "../shared/datasets/orientation/real_world_testing_data.json"


def settings_for(kafka_config: dict[str, Any], topic: str, **fields: Any) -> ProducerSettings:
    return ProducerSettings(
        bootstrap_servers=kafka_config["bootstrap.servers"], topic=topic, metrics_port=0, progress=False, **fields
    )


def assert_round_trip(kafka_config: dict[str, Any], topic: str, data: Path) -> None:
    expected = list(open_dataset(data))
    result = replay(settings_for(kafka_config, topic, data=str(data)))
    assert result.ok and result.acked == len(expected) == result.sent and result.failed == 0
    messages = consume(kafka_config, topic, len(expected), timeout=120)
    frames = [decode_frame(m.value()) for m in messages]
    # Exactly once: every dataset id arrives, each producer sequence number once.
    assert sorted(f["seq"] for f in frames) == list(range(len(expected)))
    assert sorted(f["id"] for f in frames) == sorted(r["id"] for r in expected)
    # In order per key: within a sequence (one key, one partition) frames come in dataset order.
    by_key: dict[bytes, list[int]] = defaultdict(list)
    partitions_of_key: dict[bytes, set[int]] = defaultdict(set)
    for m, f in zip(messages, frames, strict=True):
        by_key[m.key()].append(f["seq"])
        partitions_of_key[m.key()].add(m.partition())
    assert all(seqs == sorted(seqs) for seqs in by_key.values())
    assert all(len(p) == 1 for p in partitions_of_key.values())
    # A camera has no labels: gt is not forwarded; the keypoints are the dataset's.
    kps_of = {r["id"]: r["kps"] for r in expected}
    assert all("gt" not in f and f["kps"] == kps_of[f["id"]] for f in frames)


def test_round_trip_of_a_generated_pack(
    kafka_config: dict[str, Any], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    pack = synthetic_pack(tmp_path, seed=3, training=50, stream=1500, golden=50)
    assert_round_trip(kafka_config, new_topic(partitions=2), pack.stream)


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_STREAM.exists(), reason="the real data pack ../shared/datasets is absent")
def test_round_trip_of_the_real_stream(kafka_config: dict[str, Any], new_topic: Callable[..., str]) -> None:
    assert_round_trip(kafka_config, new_topic(partitions=2), REAL_STREAM)


def test_limit_skip_repeat_and_labels(
    kafka_config: dict[str, Any], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    data = tmp_path / "frames.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps({"id": i, "kps": [float(i)] * 34, "gt": i % 2}) for i in range(10)))
    topic = new_topic()
    result = replay(settings_for(kafka_config, topic, data=str(data), skip=2, limit=12, repeat=2, include_labels=True))
    assert result.acked == 12
    frames = [decode_frame(m.value()) for m in consume(kafka_config, topic, 12)]
    assert [f["id"] for f in frames] == [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5]
    assert [f["gt"] for f in frames] == [i % 2 for i in [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5]]


def test_refused_frames_make_the_producer_fail(
    kafka_config: dict[str, Any], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    # The topic takes at most 200-byte messages: every frame is refused by the broker.
    topic = new_topic(config={"max.message.bytes": "200"})
    data = tmp_path / "frames.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps({"id": i, "kps": [1.5] * 34}) for i in range(5)))
    proc = subprocess.run(
        [sys.executable, "-m", "producer", "--data", str(data), "--topic", topic, "--metrics-port", "0",
         "--bootstrap-servers", kafka_config["bootstrap.servers"], "--no-progress",
         "--flush-timeout-s", "20"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "acked 0, failed 5" in proc.stdout
    assert sum(high_watermarks(kafka_config, topic).values()) == 0


def test_help_lists_every_setting() -> None:
    proc = subprocess.run([sys.executable, "-m", "producer", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for flag in ("--bootstrap-servers", "--topic", "--data", "--rate", "--realtime", "--repeat", "--limit", "--skip"):
        assert flag in proc.stdout
    assert "EDGELOOP_" in proc.stdout  # the environment variable names are explained
