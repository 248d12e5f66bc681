"""The closed loop end to end on synthetic data: ``edgeloop demo`` on the real broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from edgeloop.registry import ModelRegistry


def test_the_loop_closes_on_synthetic_data(kafka_config: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "edgeloop.cli", "demo", "--out", str(out), "--bootstrap-servers",
         kafka_config["bootstrap.servers"], "--synthetic-frames", "12000", "--no-metrics", "--timeout", "400"],
        capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = orjson.loads((out / "report.json").read_bytes())
    # Every frame replayed was scored, exactly the stream, nothing went to the dead-letter topic.
    assert report["frames_replayed"] == report["frames_scored"] == 12000
    assert report["dead_letters"] == 0
    # Version 1 was published from 200 edge cases and the consumer swapped to it mid-stream.
    versions = {v["version"]: v for v in report["versions"]}
    assert set(versions) == {0, 1} and versions[1]["trained_on"]["edge_cases"] == 200
    assert report["frames_by_version"]["1"] > 0
    # The region the edge cases came from stops being flagged once absorbed.
    assert report["ood_rate_by_version"]["1"] < 0.5 * report["ood_rate_by_version"]["0"]
    registry = ModelRegistry(out / "registry")
    assert [v.version for v in registry.versions()] == [0, 1]
    assert len(registry.load_training_additions(1)) == 200
    # The before/after table and the pictures.
    assert "200 edge cases identified out of" in proc.stdout and "version 1" in proc.stdout
    assert (out / "report.html").stat().st_size > 10_000
    assert {p.name for p in (out / "pictures").glob("*.png")} >= {"reference_clusters.png", "edge_cases.png"}
