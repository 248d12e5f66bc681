"""Fixtures of the retrainer tests: a small synthetic data pack and edge-case-shaped messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from edgeloop.datasets import DataPack
from edgeloop.synthetic import synthetic_pack


def edge_case_message(frame: dict[str, Any], model_version: int = 0) -> dict[str, Any]:
    """What the consumer sends to the edge-cases topic for ``frame`` (the label stripped: a camera has none)."""
    message = {k: v for k, v in frame.items() if k != "gt"}
    message.update(
        {
            "schema": 1,
            "ts": 1_700_000_000_000,
            "score": 3.5,
            "reason": "far_from_reference",
            "nearest_cluster": 7,
            "model_version": model_version,
            "prediction": 0,
            "flagged_at": "2026-12-01T00:00:00.000+00:00",
        }
    )
    return message


@pytest.fixture(scope="session")
def small_pack(tmp_path_factory: pytest.TempPathFactory) -> DataPack:
    """A synthetic pack: 300 training rows, a 1,500-frame stream, 500 golden frames (read-only: copy to edit)."""
    return synthetic_pack(tmp_path_factory.mktemp("pack"), seed=3, training=300, stream=1500, golden=500)


@pytest.fixture(scope="session")
def stream_frames(small_pack: DataPack) -> list[dict[str, Any]]:
    return list(orjson.loads(Path(small_pack.stream).read_bytes()))
