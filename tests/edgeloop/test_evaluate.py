"""``edgeloop evaluate`` prints the accuracy of a published version on a labelled file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from edgeloop.cli import main
from edgeloop.model import TrainingConfig, accuracy, train_model
from edgeloop.registry import ModelRegistry
from edgeloop.synthetic import generate_poses


def test_evaluate_json_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    poses = generate_poses(300, seed=4, classes=["standing", "lying"], missing_rate=0.0)
    model = train_model(poses["kps"], poses["gt"], config=TrainingConfig(features="pose", epochs=3, seed=0))
    ModelRegistry(tmp_path / "registry").publish(model, golden_accuracy=None)
    held_out = generate_poses(120, seed=5, classes=["standing", "lying"], missing_rate=0.0)
    data = tmp_path / "labelled.jsonl"
    data.write_bytes(
        b"\n".join(
            orjson.dumps({"id": i, "kps": k.tolist(), "gt": int(g)})
            for i, (k, g) in enumerate(zip(held_out["kps"], held_out["gt"], strict=True))
        )
    )
    expected = accuracy(model, held_out["kps"], held_out["gt"])

    assert (
        main(["evaluate", "--registry", str(tmp_path / "registry"), "--version", "0", "--data", str(data), "--json"])
        == 0
    )
    result = orjson.loads(capsys.readouterr().out)
    assert result["n"] == 120 and result["version"] == 0
    assert result["accuracy"] == pytest.approx(expected)
    assert result["correct"] == round(expected * 120)

    assert main(["evaluate", "--registry", str(tmp_path / "registry"), "--data", str(data)]) == 0
    assert f"accuracy {expected:.4f}" in capsys.readouterr().out

    assert main(["evaluate", "--registry", str(tmp_path / "registry"), "--version", "3", "--data", str(data)]) == 1
    assert "not in the registry" in capsys.readouterr().err
    assert np.isfinite(expected)
