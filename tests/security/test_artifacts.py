"""Model artifacts: sha256 verified before load, weights-only loading, a tampered version refused live."""

from __future__ import annotations

import json
import os
import pickle
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from edgeloop.datasets import read_labelled
from edgeloop.model import TrainingConfig
from edgeloop.registry import ModelRegistry, RegistryError, ensure_initial_version
from edgeloop.synthetic import synthetic_pack
from tests.faults.ledger import ConsumerRun, Processes, read_decisions, wait_decided
from tests.kafka_helpers import produce, unique_name, wait_until


class _Exploit:
    """Unpickling this runs a shell command: what a weights-only load must never do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.target}",))


@pytest.fixture
def registry_with_v1(tmp_path: Path) -> tuple[ModelRegistry, Path]:
    pack = synthetic_pack(tmp_path / "pack", seed=11, training=300, stream=300, golden=20)
    kps, gt, _ids = read_labelled(pack.training)
    registry = ModelRegistry(tmp_path / "registry")
    ensure_initial_version(registry, kps, gt, TrainingConfig(seed=0, epochs=2))
    registry.publish(registry.load(0))  # version 1: valid until tampered with
    return registry, pack.stream


def test_tampered_artifact_is_refused_with_a_clear_error(registry_with_v1: tuple[ModelRegistry, Path]) -> None:
    registry, _ = registry_with_v1
    artifact = Path(registry.get(1).artifact)
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="failed verification: sha256 is") as err:
        registry.load(1)
    assert "was not loaded" in str(err.value)
    assert registry.load(0) is not None  # the other versions are untouched


def test_a_pickle_that_runs_code_is_refused_even_with_a_matching_hash(
    registry_with_v1: tuple[ModelRegistry, Path], tmp_path: Path
) -> None:
    # The attacker rewrote the artifact and its recorded hash: only weights-only loading stops it.
    import hashlib

    import torch

    registry, _ = registry_with_v1
    target = tmp_path / "pwned"
    artifact = Path(registry.get(1).artifact)
    payload = pickle.dumps({"weight": _Exploit(target)})
    buffer_path = tmp_path / "exploit.pt"
    torch.save({"weight": _Exploit(target)}, buffer_path)  # a torch zip file carrying the exploit
    for blob in (payload, buffer_path.read_bytes()):
        artifact.write_bytes(blob)
        meta_path = registry.metadata_path(1)
        meta = json.loads(meta_path.read_text())
        meta["sha256"] = hashlib.sha256(blob).hexdigest()
        meta_path.write_text(json.dumps(meta))
        with pytest.raises(RegistryError, match="cannot be loaded"):
            registry.load(1)
        assert not target.exists(), "unpickling ran the attacker's code"


@pytest.mark.timeout(150)
def test_running_consumer_refuses_a_tampered_version_and_keeps_serving(
    registry_with_v1: tuple[ModelRegistry, Path], kafka_config: dict[str, Any], new_topic: Callable[..., str],
    tmp_path: Path,
) -> None:  # fmt: skip
    registry, stream = registry_with_v1
    # The consumer starts on version 0; version 1 appears, is tampered with, then announced.
    v1 = Path(registry.get(1).artifact)
    v1_bytes, v1_meta = v1.read_bytes(), registry.metadata_path(1).read_bytes()
    v1.unlink()
    registry.metadata_path(1).unlink()
    run = ConsumerRun(
        bootstrap=kafka_config["bootstrap.servers"], topic=new_topic(1, prefix="frames"),
        edge_topic=new_topic(1, prefix="edges"), dlq_topic=new_topic(1, prefix="dlq"),
        versions_topic=new_topic(1, prefix="versions", config={"cleanup.policy": "compact"}),
        group=unique_name("monitor"), registry=registry.root, training=stream.parent / "training_data.json",
        decision_log=tmp_path / "decisions.jsonl", batch_size=50,
    )  # fmt: skip
    with Processes(tmp_path) as procs:
        consumer = procs.start("consumer", run.argv("--instance-id", "tamper-test"))
        wait_until(lambda: "assigned" in consumer.output() or not consumer.alive(), 90, what="consumer assigned")
        v1.write_bytes(v1_bytes[:-1] + bytes([v1_bytes[-1] ^ 0xFF]))  # one bit off
        registry.metadata_path(1).write_bytes(v1_meta)
        announced = registry.get(1)
        produce(kafka_config, run.versions_topic, [(b"orientation", orjson.dumps(announced.to_message()))])
        wait_until(lambda: "refused" in consumer.output() or not consumer.alive(), 60, what="v1 refused")
        assert consumer.alive(), consumer.output()[-3000:]
        frames = [orjson.dumps({"id": 5_000 + i, "seq": i, "kps": [50.0 + i % 7 + j for j in range(34)]})
                  for i in range(120)]  # fmt: skip
        produce(kafka_config, run.topic, frames, partition=0)
        wait_decided(run.decision_log, {(0, o) for o in range(120)}, 60, consumer)
        consumer.signal(signal.SIGTERM)
        assert consumer.wait(30) == 0
    out = consumer.output()
    assert "model version 1 refused, still serving 0" in out
    assert "sha256" in out  # the error says what was wrong
    assert {d["version"] for d in read_decisions(run.decision_log)} == {0}
