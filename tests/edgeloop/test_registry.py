"""The model registry: atomic, crash-safe publishing, monotonic versions, verified weights-only loads."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from edgeloop.errors import EdgeloopError
from edgeloop.model import OrientationModel, TrainingConfig, train_model
from edgeloop.registry import (
    ModelRegistry,
    ModelVersion,
    RegistryError,
    TrainingAdditions,
    ensure_initial_version,
)

CRASHED = 77  # exit status of a child process that "crashed" mid-publish


def toy_data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    kps = rng.uniform(0, 400, size=(n, 34))
    return kps, (kps[:, 1] > kps[:, 33]).astype(np.int64)


@pytest.fixture(scope="module")
def model() -> OrientationModel:
    kps, gt = toy_data()
    return train_model(kps, gt, config=TrainingConfig(epochs=1, features="pose"))


def crash_during_publish(root: Path, model: OrientationModel, when_renaming_to: str) -> None:
    """Publish in a child process that dies (``os._exit``: no cleanup, no finally) at one rename."""
    pid = os.fork()
    if pid == 0:  # the child
        try:
            real_replace = os.replace

            def dying_replace(src: Any, dst: Any) -> None:
                if str(dst).endswith(when_renaming_to):
                    os._exit(CRASHED)
                real_replace(src, dst)

            os.replace = dying_replace  # type: ignore[assignment]
            ModelRegistry(root).publish(model, golden_accuracy=0.5)
        finally:
            os._exit(1)  # the publish finished: the crash point was never reached
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == CRASHED


def test_publish_writes_hashed_artifact_and_metadata(tmp_path: Path, model: OrientationModel) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    version = registry.publish(model, golden_accuracy=0.95, previous_golden_accuracy=0.9)
    assert version.version == 0
    artifact = Path(version.artifact)
    assert artifact == (tmp_path / "reg" / "v000000.pt").resolve()
    assert version.sha256 == hashlib.sha256(artifact.read_bytes()).hexdigest()
    metadata = json.loads((tmp_path / "reg" / "v000000.json").read_text())
    assert metadata["sha256"] == version.sha256
    assert metadata["features"] == "pose"
    assert metadata["trained_on"] == {"training": 64, "edge_cases": 0}
    assert metadata["config"] == model.config.to_dict()  # type: ignore[union-attr]
    assert metadata["artifact"] == "v000000.pt"  # relative: the registry directory can move
    assert [v.version for v in registry.versions()] == [0]
    assert registry.latest() == version

    loaded = registry.load(0)
    kps, _ = toy_data(20, seed=3)
    assert loaded.features == "pose"
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.predict_proba(kps), model.predict_proba(kps))
    assert not [p.name for p in (tmp_path / "reg").iterdir() if ".tmp-" in p.name]


def test_empty_registry(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.latest() is None
    assert registry.versions() == []
    with pytest.raises(RegistryError, match=r"model version 3 is not in the registry .*published: none"):
        registry.load(3)


def test_version_numbers_are_monotonic_across_reopen(tmp_path: Path, model: OrientationModel) -> None:
    assert ModelRegistry(tmp_path).publish(model).version == 0
    assert ModelRegistry(tmp_path).publish(model).version == 1
    reopened = ModelRegistry(tmp_path)
    assert [v.version for v in reopened.versions()] == [0, 1]
    assert reopened.publish(model).version == 2
    # Deleting a published version (an operator cleaning up) must not free its number.
    for suffix in ("pt", "json"):
        (tmp_path / f"v000002.{suffix}").unlink()
    assert ModelRegistry(tmp_path).latest().version == 1  # type: ignore[union-attr]
    assert ModelRegistry(tmp_path).publish(model).version == 3


def test_crash_before_artifact_rename_leaves_registry_valid(tmp_path: Path, model: OrientationModel) -> None:
    ModelRegistry(tmp_path).publish(model)  # v0
    crash_during_publish(tmp_path, model, when_renaming_to="v000001.pt")
    leftovers = sorted(p.name for p in tmp_path.iterdir() if ".tmp-" in p.name)
    assert len(leftovers) == 1 and leftovers[0].startswith(".v000001.pt.tmp-")  # the crash left it
    registry = ModelRegistry(tmp_path)
    assert [v.version for v in registry.versions()] == [0]
    assert registry.latest().version == 0  # type: ignore[union-attr]
    registry.load(0)
    assert registry.publish(model).version == 2  # never 1 again


def test_crash_after_artifact_before_metadata(tmp_path: Path, model: OrientationModel) -> None:
    ModelRegistry(tmp_path).publish(model)  # v0
    crash_during_publish(tmp_path, model, when_renaming_to="v000001.json")
    assert (tmp_path / "v000001.pt").is_file()  # the orphaned artifact
    assert not (tmp_path / "v000001.json").exists()
    (tmp_path / ".high_water").unlink()  # even without the reservation, the orphan's name counts
    registry = ModelRegistry(tmp_path)
    assert [v.version for v in registry.versions()] == [0]
    with pytest.raises(RegistryError, match="model version 1 is not in the registry"):
        registry.load(1)
    new = registry.publish(model, golden_accuracy=0.7)
    assert new.version == 2
    assert registry.latest() == new


def test_tampered_artifact_is_refused_with_both_hashes(tmp_path: Path, model: OrientationModel) -> None:
    registry = ModelRegistry(tmp_path)
    version = registry.publish(model)
    artifact = Path(version.artifact)
    data = bytearray(artifact.read_bytes())
    data[-20] ^= 0xFF
    artifact.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(RegistryError) as caught:
        registry.load(0)
    message = str(caught.value)
    assert str(artifact) in message
    assert version.sha256 in message and actual in message
    assert isinstance(caught.value, EdgeloopError)


class _Canary:
    """Unpickling this would create a file: the proof that arbitrary code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (Path.touch, (self.path,))


def test_pickled_objects_are_refused_even_with_a_matching_hash(tmp_path: Path, model: OrientationModel) -> None:
    import torch

    registry = ModelRegistry(tmp_path / "reg")
    registry.publish(model)
    canary = tmp_path / "code-ran"
    artifact = tmp_path / "reg" / "v000000.pt"
    # An attacker able to write both files: a torch.save'd "state dict" hiding an arbitrary object.
    torch.save({"layer_1.weight": _Canary(canary)}, artifact)
    meta_path = tmp_path / "reg" / "v000000.json"
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = hashlib.sha256(artifact.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match=r"only a torch\.save'd state dict of tensors"):
        registry.load(0)
    assert not canary.exists()
    # A plain pickle (not a torch archive) is refused too.
    artifact.write_bytes(pickle.dumps(_Canary(canary), protocol=2))
    meta["sha256"] = hashlib.sha256(artifact.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RegistryError, match="cannot be loaded"):
        registry.load(0)
    assert not canary.exists()


def test_to_message_is_exactly_the_model_versions_schema(tmp_path: Path, model: OrientationModel) -> None:
    registry = ModelRegistry(tmp_path, model_name="orientation")
    version = registry.publish(model, golden_accuracy=0.991, previous_golden_accuracy=0.92)
    message = version.to_message()
    assert set(message) == {
        "schema",
        "model",
        "version",
        "artifact",
        "sha256",
        "features",
        "trained_on",
        "golden_accuracy",
        "previous_golden_accuracy",
        "created_at",
    }
    assert message["schema"] == 1
    assert message["model"] == "orientation"
    assert message["version"] == 0
    assert message["trained_on"] == {"training": 64, "edge_cases": 0}
    assert message["golden_accuracy"] == 0.991 and message["previous_golden_accuracy"] == 0.92
    assert message["features"] == "pose"
    assert Path(message["artifact"]).is_file()
    assert message["created_at"].endswith("+00:00") and "T" in message["created_at"]
    decoded = orjson.loads(orjson.dumps(message))
    assert decoded == message
    parsed = ModelVersion.from_message(decoded)
    assert parsed.to_message() == message
    registry.load(parsed)  # a message's version loads, checked against the registry's hash

    forged = ModelVersion.from_message({**decoded, "sha256": "0" * 64})
    with pytest.raises(RegistryError, match="announces sha256 0000"):
        registry.load(forged)
    with pytest.raises(RegistryError, match="schema 2 is not supported"):
        ModelVersion.from_message({**decoded, "schema": 2})
    with pytest.raises(RegistryError, match="malformed model-versions message"):
        ModelVersion.from_message({k: v for k, v in decoded.items() if k != "sha256"})


def test_training_additions_round_trip_and_are_verified(tmp_path: Path, model: OrientationModel) -> None:
    registry = ModelRegistry(tmp_path)
    registry.publish(model)
    kps, gt = toy_data(12, seed=9)
    ids = np.arange(1000, 1012)
    version = registry.publish(
        model, additions=TrainingAdditions(kps, gt, ids), trained_on={"training": 64, "edge_cases": 12}
    )
    assert version.additions_count == 12
    assert version.to_message()["trained_on"] == {"training": 64, "edge_cases": 12}
    np.testing.assert_array_equal(registry.training_additions(1), kps)
    loaded = registry.load_training_additions(1)
    np.testing.assert_array_equal(loaded.gt, gt)
    np.testing.assert_array_equal(loaded.ids, ids)
    assert registry.training_additions(0).shape == (0, 34)

    path = Path(version.additions)  # type: ignore[arg-type]
    path.write_bytes(path.read_bytes()[:-8] + b"tampered")
    with pytest.raises(RegistryError, match=r"training additions file .*failed verification"):
        registry.training_additions(1)


def test_ensure_initial_version_bootstraps_only_once(tmp_path: Path) -> None:
    kps, gt = toy_data(64)
    registry = ModelRegistry(tmp_path)
    config = TrainingConfig(epochs=1, features="pose")
    first = ensure_initial_version(registry, kps, gt, config, golden=(kps, gt))
    assert first.version == 0
    assert first.golden_accuracy is not None and 0.0 <= first.golden_accuracy <= 1.0
    assert first.previous_golden_accuracy is None
    assert first.trained_on == {"training": 64, "edge_cases": 0}
    again = ensure_initial_version(ModelRegistry(tmp_path), kps, gt, config)
    assert again == first
    assert [v.version for v in registry.versions()] == [0]
    assert registry.load(0).features == "pose"
