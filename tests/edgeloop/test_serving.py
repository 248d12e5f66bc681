"""The torch-free serving path: same predictions as the torch model, verified before it is read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeloop.model import TrainingConfig, train_model
from edgeloop.registry import ModelRegistry, RegistryError
from edgeloop.serving import ServingError, ServingModel
from edgeloop.synthetic import generate_poses


@pytest.mark.parametrize("features", ["pose", "raw"])
def test_numpy_weights_predict_what_the_torch_model_predicts(tmp_path: Path, features: str) -> None:
    poses = generate_poses(400, seed=2, missing_rate=0.05)
    model = train_model(poses["kps"], poses["gt"], config=TrainingConfig(features=features, epochs=2, seed=3))  # type: ignore[arg-type]
    registry = ModelRegistry(tmp_path)
    published = registry.publish(model)
    served = registry.load_serving(published.version)
    assert isinstance(served, ServingModel) and served.features == features
    probe = generate_poses(500, seed=9, missing_rate=0.05)["kps"]
    # float32 sums in another order: equal to a few 1e-6 (raw pixels reach 1e3, so allow 1e-4).
    np.testing.assert_allclose(served.predict_proba(probe), model.predict_proba(probe), rtol=0, atol=1e-4)
    assert np.array_equal(served.predict(probe), model.predict(probe))


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    poses = generate_poses(200, seed=1)
    registry = ModelRegistry(tmp_path)
    version = registry.publish(train_model(poses["kps"], poses["gt"], config=TrainingConfig(epochs=1))).version
    path = registry.weights_path(version)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match=r"model weights .* failed verification"):
        registry.load_serving(version)


def test_pickles_and_wrong_shapes_are_not_served() -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ServingError):
        ServingModel.from_npz(buffer.getvalue(), "pose")
    with pytest.raises(ServingError, match="lack"):
        ServingModel({"layer_1.weight": np.zeros((64, 34))}, "pose")


def test_the_consumer_serves_without_importing_torch(tmp_path: Path) -> None:
    poses = generate_poses(300, seed=5)
    registry = ModelRegistry(tmp_path / "registry")
    registry.publish(train_model(poses["kps"], poses["gt"], config=TrainingConfig(features="pose", epochs=1)))
    training = tmp_path / "training.json"
    import orjson

    training.write_bytes(
        orjson.dumps(
            [
                {"id": i, "kps": k.tolist(), "gt": int(g)}
                for i, (k, g) in enumerate(zip(poses["kps"], poses["gt"], strict=True))
            ]
        )
    )
    code = (
        "import sys\n"
        "from consumer.service import build_monitor\n"
        "from consumer.settings import ConsumerSettings\n"
        "from edgeloop.registry import ModelRegistry\n"
        f"s = ConsumerSettings(bootstrap_servers='unused', registry={str(tmp_path / 'registry')!r},\n"
        f"                     training_data={str(training)!r})\n"
        "m = build_monitor(s, ModelRegistry(s.registry))\n"
        "d = m.decide(m.reference.centres[:0].reshape(0, 34))\n"
        "print(type(m.model).__name__, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.split() == ["ServingModel", "False"]
