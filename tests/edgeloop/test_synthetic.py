"""The synthetic pose generator: determinism, geometry, missing points, videos and the data pack."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from edgeloop.datasets import DataPack, open_dataset, read_labelled, read_master_annotations
from edgeloop.frames import validate_frame
from edgeloop.synthetic import (
    HORIZONTAL_POSES,
    POSE_NAMES,
    STREAM_BLOCKS,
    VERTICAL_POSES,
    generate_poses,
    synthetic_frames,
    synthetic_pack,
)


def torso_angle(kps: np.ndarray) -> np.ndarray:
    """Angle of mid-shoulder -> mid-hip against the image's horizontal axis, in [0, 90] degrees."""
    k = kps.reshape(-1, 17, 2)
    v = (k[:, 11] + k[:, 12]) / 2 - (k[:, 5] + k[:, 6]) / 2
    return np.degrees(np.arctan2(np.abs(v[:, 1]), np.abs(v[:, 0])))


def test_same_seed_same_poses_other_seed_other_poses() -> None:
    a, b, c = generate_poses(500, seed=7), generate_poses(500, seed=7), generate_poses(500, seed=8)
    for key in ("kps", "gt", "pose", "scores"):
        assert np.array_equal(a[key], b[key])
    assert not np.allclose(a["kps"], c["kps"])
    assert list(synthetic_frames(300, seed=3)) == list(synthetic_frames(300, seed=3))
    assert list(synthetic_frames(300, seed=3)) != list(synthetic_frames(300, seed=4))


def test_shapes_dtypes_and_labels() -> None:
    poses = generate_poses(1200, seed=1)
    assert poses["kps"].shape == (1200, 34) and poses["kps"].dtype == np.float64
    assert poses["scores"].shape == (1200, 17) and poses["gt"].dtype == np.int64
    assert set(poses["pose"].tolist()) == set(POSE_NAMES)
    horizontal = np.isin(poses["pose"], HORIZONTAL_POSES)
    assert np.array_equal(poses["gt"], horizontal.astype(np.int64))
    assert generate_poses(0, seed=1)["kps"].shape == (0, 34)


@pytest.mark.parametrize("frame_size", [(1280, 720), (320, 240), (608, 1080)])
def test_every_present_point_is_inside_the_frame(frame_size: tuple[int, int]) -> None:
    poses = generate_poses(20000, seed=2, frame_size=frame_size)  # more than one render batch
    k = poses["kps"].reshape(-1, 17, 2)
    present = poses["scores"] > 0
    x, y = k[..., 0][present], k[..., 1][present]
    assert (x > 0).all() and (x < frame_size[0]).all()
    assert (y > 0).all() and (y < frame_size[1]).all()
    # Figures use the frame: positions spread over it rather than sitting in one spot.
    centres = k[:, 11]
    assert np.ptp(centres[:, 0]) > 0.6 * frame_size[0] and np.ptp(centres[:, 1]) > 0.4 * frame_size[1]


def test_torso_is_horizontal_for_gt1_and_vertical_for_gt0() -> None:
    poses = generate_poses(12000, seed=5, missing_rate=0.0)
    angle = torso_angle(poses["kps"])
    for name in POSE_NAMES:
        a = angle[poses["pose"] == name]
        if name in HORIZONTAL_POSES:
            assert np.median(a) < 20 and np.percentile(a, 95) < 35, (name, np.percentile(a, [50, 95]))
        else:
            assert np.median(a) > 70 and np.percentile(a, 5) > 55, (name, np.percentile(a, [5, 50]))


def test_both_facings_and_varied_sizes() -> None:
    poses = generate_poses(4000, seed=6, classes=["pushup", "lying"], missing_rate=0.0)
    k = poses["kps"].reshape(-1, 17, 2)
    head_right = k[:, 0, 0] > k[:, 11, 0]
    assert 0.4 < head_right.mean() < 0.6
    length = np.linalg.norm(k[:, 15] - k[:, 5], axis=1)  # shoulder to ankle
    assert np.percentile(length, 90) > 2 * np.percentile(length, 10)


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.1])
def test_missing_points_are_zero_with_score_zero_at_the_requested_rate(rate: float) -> None:
    poses = generate_poses(20000, seed=9, missing_rate=rate)
    k = poses["kps"].reshape(-1, 17, 2)
    missing = (k == 0).all(axis=2)
    assert np.array_equal(missing, poses["scores"] == 0)
    assert abs(missing.mean() - rate) < 0.003
    present_scores = poses["scores"][~missing]
    assert (present_scores >= 0.3).all() and (present_scores <= 1.0).all()


def test_class_choice_and_weights() -> None:
    only = generate_poses(300, seed=1, classes=["pushup"])
    assert set(only["pose"].tolist()) == {"pushup"} and (only["gt"] == 1).all()
    weighted = generate_poses(10000, seed=1, classes={"standing": 3.0, "plank": 1.0})
    assert abs((weighted["pose"] == "standing").mean() - 0.75) < 0.03
    with pytest.raises(ValueError, match="unknown pose classes"):
        generate_poses(10, seed=1, classes=["handstand"])


def test_frames_are_valid_messages_grouped_in_videos() -> None:
    frames = list(synthetic_frames(3000, seed=11, id_start=500, sequence_length=(10, 60)))
    assert len(frames) == 3000
    assert [f["id"] for f in frames] == list(range(500, 3500))
    for f in frames[:200]:
        validate_frame(f)
        assert f["source"] == "synthetic" and f["frame_wh"] == [1280, 720]
    # Each sequence is one contiguous run with frame_idx 0, 1, ... and one class.
    runs = [list(group) for _, group in itertools.groupby(frames, key=lambda f: f["sequence"])]
    assert len({r[0]["sequence"] for r in runs}) == len(runs)
    assert all(len(r) <= 60 for r in runs) and len(runs) >= 3000 // 60
    for run in runs:
        assert [f["frame_idx"] for f in run] == list(range(len(run)))
        assert len({(f["class"], f["gt"]) for f in run}) == 1


def test_consecutive_frames_of_a_video_are_near_duplicates() -> None:
    frames = list(synthetic_frames(4000, seed=12, missing_rate=0.0))
    kps = np.array([f["kps"] for f in frames]).reshape(-1, 17, 2)
    same = np.array([a["sequence"] == b["sequence"] for a, b in itertools.pairwise(frames)])
    step = np.linalg.norm(kps[1:] - kps[:-1], axis=2).mean(axis=1)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(frames), (2, 2000))
    apart = np.linalg.norm(kps[i] - kps[j], axis=2).mean(axis=1)
    assert np.median(step[same]) < 0.1 * np.median(apart)


def test_stream_blocks_alternate_vertical_and_horizontal() -> None:
    frames = list(synthetic_frames(6000, seed=13, blocks=STREAM_BLOCKS, block_sequences=(1, 4)))
    first_of_sequence = [f for i, f in enumerate(frames) if i == 0 or f["sequence"] != frames[i - 1]["sequence"]]
    groups = [f["gt"] for f in first_of_sequence]
    run_lengths = [len(list(g)) for _, g in itertools.groupby(groups)]
    assert len(run_lengths) >= 4 and max(run_lengths) <= 4
    classes = {f["class"] for f in frames}
    assert classes <= set(POSE_NAMES) and "pushup" in classes and classes & set(VERTICAL_POSES)


def test_pack_layout_counts_and_ids(tmp_path: Path) -> None:
    pack = synthetic_pack(tmp_path / "pack", seed=4, training=400, stream=1500, golden=600)
    assert isinstance(pack, DataPack) and DataPack.from_dir(tmp_path / "pack") == pack
    kps, gt, train_ids = read_labelled(pack.training)
    assert kps.shape == (400, 34)
    train_classes = [r["class"] for r in open_dataset(pack.training)]
    assert 0.6 < np.mean(gt == 0) < 0.8  # mostly vertical
    assert train_classes.count("pushup") < 0.1 * len(train_classes)  # only a few push-ups
    stream = list(open_dataset(pack.stream))
    assert len(stream) == 1500
    assert sum(f["class"] == "pushup" for f in stream) > 0.2 * len(stream)  # push-ups arrive in bulk
    master = read_master_annotations(pack.master)
    assert master == {f["id"]: f["gt"] for f in stream}
    golden = list(open_dataset(pack.golden))
    assert len(golden) == 600 and {f["class"] for f in golden} == set(POSE_NAMES)
    ids = np.concatenate([train_ids, [f["id"] for f in stream], [f["id"] for f in golden]])
    assert len(np.unique(ids)) == len(ids)
    assert "synthetic" in (tmp_path / "pack" / "README.md").read_text().lower()


def test_pack_defaults_and_determinism(tmp_path: Path) -> None:
    a = synthetic_pack(tmp_path / "a", seed=1)
    b = synthetic_pack(tmp_path / "b", seed=1)
    assert [len(read_labelled(p)[1]) for p in (a.training, a.stream, a.golden)] == [1000, 6000, 2000]
    for name in ("training", "stream", "golden", "master"):
        assert getattr(a, name).read_bytes() == getattr(b, name).read_bytes()
