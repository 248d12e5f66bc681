"""``edgeloop report``: the pictures and the HTML page of a finished run.

The run directory is made here from the real parts: a :class:`~consumer.clustering.ReferenceClusters`
fitted on synthetic poses (``reference.json``), a :class:`~edgeloop.registry.ModelRegistry` with two
published versions, the retrainer's :class:`~retrainer.buffer.EdgeCaseBuffer` with collected edge cases,
and decision logs of two consumers whose OOD rate drops after the swap to version 1.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from matplotlib.image import imread

from edgeloop import report
from edgeloop.frames import SKELETON
from edgeloop.synthetic import generate_poses

N_FRAMES = 2400
SWAP_AT = {0: 1200, 1: 1301}  # first sequence number each partition's consumer decides with v1


def write_decisions(run: Path, rng: np.random.Generator) -> dict[str, Any]:
    (run / "decisions").mkdir(parents=True)
    seq = np.arange(N_FRAMES)
    partition = seq % 2
    version = np.where(seq >= np.vectorize(SWAP_AT.get)(partition), 1, 0)
    flagged = rng.random(N_FRAMES) < np.where(version == 0, 0.25, 0.03)
    for p in (0, 1):
        rows = [
            orjson.dumps(
                {"id": 2_000_000_000 + int(s), "seq": int(s), "partition": p, "offset": int(s) // 2,
                 "version": int(v), "flagged": bool(f), "prediction": int(s % 2), "score": 1.5}
            )
            for s, v, f in zip(seq[partition == p], version[partition == p], flagged[partition == p], strict=True)
        ]  # fmt: skip
        # consumer-1's log is written in reverse: the report must order by sequence number itself
        (run / "decisions" / f"consumer-{p}.jsonl").write_bytes(b"\n".join(rows[:: 1 if p == 0 else -1]) + b"\n")
    return {"flagged": flagged, "version": version}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from consumer.clustering import ReferenceClusters
    from edgeloop.model import TrainingConfig, train_model
    from edgeloop.registry import ModelRegistry, TrainingAdditions
    from retrainer.buffer import EdgeCaseBuffer

    run = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(3)
    training = generate_poses(600, seed=1, classes={"standing": 0.5, "squatting": 0.3, "pushup": 0.2})
    reference = ReferenceClusters(mode="pose", max_clusters=40, seed=0).learn(training["kps"])
    (run / "reference.json").write_bytes(
        orjson.dumps(
            {"features": "pose", "centres": reference.centres, "weights": reference.weights, "radii": reference.radii},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
    )
    edges = generate_poses(30, seed=2, classes=["pushup", "plank", "lying"])
    registry = ModelRegistry(run / "registry")
    config = TrainingConfig(epochs=1, seed=0)
    registry.publish(train_model(training["kps"], training["gt"], config=config), golden_accuracy=0.712)
    registry.publish(
        train_model(training["kps"], training["gt"], edges["kps"], edges["gt"], config=config),
        golden_accuracy=0.934,
        previous_golden_accuracy=0.712,
        additions=TrainingAdditions(edges["kps"], edges["gt"], np.arange(30) + 2_000_000_000),
    )
    buffer = EdgeCaseBuffer.open(run / "registry" / "edge-cases.jsonl")
    frames = [
        {"id": 2_000_000_000 + i, "kps": kps, "score": float(5 + i), "reason": "test", "model_version": 0}
        for i, kps in enumerate(edges["kps"].tolist())
    ]
    labels: list[int | None] = [int(g) for g in edges["gt"]]
    labels[0] = None  # pending at first, labelled later by a label record
    buffer.append_edge_cases(frames, labels)
    buffer.record_labels([2_000_000_000], [int(edges["gt"][0])], source="master")
    buffer.close()
    decided = write_decisions(run, rng)
    flagged = decided["flagged"]
    summary = {"frames_replayed": N_FRAMES, "frames_scored": N_FRAMES, "edge_cases": 30, "dead_letters": 2,
               "flagged_frames": int(flagged.sum()), "flag_rate": float(flagged.mean())}  # fmt: skip
    (run / "report.json").write_bytes(orjson.dumps(summary))
    return run


@pytest.fixture(scope="module")
def written(run_dir: Path) -> Path:
    return report.write_report(run_dir)


PICTURES = ("reference_clusters.png", "edge_cases.png", "ood_rate.png", "accuracy.png")


def test_write_report_draws_every_picture(run_dir: Path, written: Path) -> None:
    assert written == run_dir / "report.html"
    for name in PICTURES:
        image = imread(run_dir / "pictures" / name)
        height, width = image.shape[:2]
        assert width >= 600 and height >= 300, (name, image.shape)
        # Not a blank canvas: a real share of the pixels is drawn (not the white background).
        drawn = (image[:, :, :3] < 0.9).any(axis=2).mean()
        assert drawn > 0.01, (name, drawn)


def test_html_is_self_contained(run_dir: Path, written: Path) -> None:
    text = written.read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(embedded) == len(PICTURES)
    for name, data in zip(PICTURES, embedded, strict=True):
        assert base64.b64decode(data) == (run_dir / "pictures" / name).read_bytes()
    assert "<td>version 1</td><td>golden accuracy 93.40%; trained on 600 training + 30 edge cases" in text
    assert "<td>version 0</td><td>golden accuracy 71.20%" in text
    assert f"<td>frames scored</td><td>{N_FRAMES}</td>" in text
    assert "Not drawn" not in text  # everything was there


def test_run_data_is_read_in_stream_order_with_labels_applied(run_dir: Path) -> None:
    data = report.read_run(run_dir)
    assert data.seq.tolist() == list(range(N_FRAMES))
    assert report.swap_points(data.seq, data.version, data.partition) == {1: sorted(SWAP_AT.values())}
    assert report.swap_points(data.seq, data.version) == {1: [min(SWAP_AT.values())]}
    assert len(data.centres) == len(data.weights) > 5 and data.reference_features == "pose"
    assert [int(m["version"]) for m in data.versions] == [0, 1]
    assert len(data.edge_kps) == 30 and None not in data.edge_gt  # the late label was applied
    # OOD rate per version from the logs: about 25 % under v0, 3 % under v1 (as written).
    v0, v1 = (float(data.flagged[data.version == v].mean()) for v in (0, 1))
    assert 0.2 < v0 < 0.3 and 0.0 < v1 < 0.06


def test_rolling_rate_is_the_trailing_mean() -> None:
    flags = (np.random.default_rng(0).random(500) < 0.3).astype(np.float64)
    window = 37
    expected = [flags[max(0, i + 1 - window) : i + 1].mean() for i in range(len(flags))]
    assert np.allclose(report._rolling_rate(flags, window), expected)


def test_skeleton_drops_bones_with_a_missing_end() -> None:
    pose = np.arange(34, dtype=np.float64)
    assert report.skeleton_segments(pose).shape == (len(SKELETON), 2, 2)
    pose[0:2] = np.nan  # the nose: two bones (nose-left eye, nose-right eye) lose an end
    segments = report.skeleton_segments(pose)
    assert segments.shape == (len(SKELETON) - 2, 2, 2)
    assert np.isfinite(segments).all()


def test_missing_parts_are_noted_not_fatal(tmp_path: Path) -> None:
    write_decisions(tmp_path, np.random.default_rng(1))
    path = report.write_report(tmp_path)
    text = path.read_text()
    assert text.count("data:image/png;base64,") == 2  # OOD rate over the stream, OOD rate per version
    assert "no reference.json" in text and "no registry/" in text
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["accuracy.png", "ood_rate.png"]


def test_cli(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "elsewhere" / "r.html"
    assert report.main(["--run", str(run_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text().count("data:image/png;base64,") == len(PICTURES)
    assert report.main(["--run", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "edgeloop demo --out" in err


def test_unreadable_reference_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "reference.json").write_bytes(orjson.dumps({"centres": [[1.0, 2.0]], "weights": [1.0]}))
    with pytest.raises(report.ReportError, match="centres"):
        report.read_run(tmp_path)
