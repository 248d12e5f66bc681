"""Pose features: invariance to where and how big the body is, orientation kept, missing keypoints as NaN.

The stick figures built here (:func:`standing_pose`, :func:`lying_pose`) are reused by the clustering
tests.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.features import FeatureError, featurise, missing_mask, normalise_pose
from edgeloop.frames import KEYPOINT_NAMES

# A standing body in image coordinates (y grows downwards), COCO-17 order, about 170 px tall: head above
# shoulders above hips above knees above ankles.
STANDING = np.array(
    [
        (0, 0), (-5, -3), (5, -3), (-10, 0), (10, 0),  # nose, eyes, ears
        (-20, 25), (20, 25), (-25, 55), (25, 55), (-27, 85), (27, 85),  # shoulders, elbows, wrists
        (-12, 90), (12, 90), (-12, 130), (12, 130), (-12, 170), (12, 170),  # hips, knees, ankles
    ],
    dtype=np.float64,
)  # fmt: skip


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return points @ rot.T


def pose_batch(
    n: int, *, degrees: float = 0.0, seed: int = 0, jitter: float = 3.0, scale: tuple[float, float] = (0.8, 1.5)
) -> np.ndarray:
    """``n`` stick figures ``(n, 34)`` rotated by ``degrees`` (90 = lying), with per-point jitter, random
    size and random position in a 1280x720 frame (no coordinate exactly 0)."""
    rng = np.random.default_rng(seed)
    body = _rotate(STANDING, degrees)
    points = body[None] + rng.normal(0.0, jitter, size=(n, 17, 2))
    size = rng.uniform(*scale, size=(n, 1, 1))
    offset = rng.uniform([300.0, 250.0], [900.0, 450.0], size=(n, 1, 2))
    return (points * size + offset).reshape(n, 34)


def standing_pose(n: int = 1, seed: int = 0, **kwargs: float) -> np.ndarray:
    return pose_batch(n, degrees=0.0, seed=seed, **kwargs)  # type: ignore[arg-type]


def lying_pose(n: int = 1, seed: int = 0, **kwargs: float) -> np.ndarray:
    return pose_batch(n, degrees=90.0, seed=seed, **kwargs)  # type: ignore[arg-type]


def test_translation_and_scale_do_not_change_the_features() -> None:
    poses = standing_pose(20, seed=1)
    moved = poses * 2.5 + np.tile([-140.0, 61.0], 17)
    np.testing.assert_allclose(normalise_pose(moved), normalise_pose(poses), atol=1e-12)


def test_orientation_is_kept() -> None:
    standing = normalise_pose(standing_pose(1, jitter=0.0))
    lying = normalise_pose(lying_pose(1, jitter=0.0))
    # Same body, rotated: the features differ by about the body's own extent, not by noise.
    assert np.linalg.norm(standing - lying) > 1.0
    # Standing: the ankles are below the hips (positive y) and the nose above; lying: along x instead.
    s, ly = standing.reshape(17, 2), lying.reshape(17, 2)
    assert s[15, 1] > 0.4 and s[0, 1] < -0.4 and abs(s[15, 0]) < 0.2
    assert abs(ly[15, 0]) > 0.4 and abs(ly[15, 1]) < 0.2


def test_origin_is_the_mid_hip_and_the_bbox_scale_is_one() -> None:
    f = normalise_pose(standing_pose(5, seed=2)).reshape(5, 17, 2)
    np.testing.assert_allclose((f[:, 11] + f[:, 12]) / 2, 0.0, atol=1e-12)
    extent = (f.max(axis=1) - f.min(axis=1)).max(axis=1)
    np.testing.assert_allclose(extent, 1.0)


def test_torso_scale_makes_the_shoulder_to_hip_distance_one() -> None:
    f = normalise_pose(standing_pose(5, seed=3), scale="torso").reshape(5, 17, 2)
    torso = np.linalg.norm((f[:, 5] + f[:, 6]) / 2 - (f[:, 11] + f[:, 12]) / 2, axis=1)
    np.testing.assert_allclose(torso, 1.0)


def test_missing_keypoints_become_nan_not_zero() -> None:
    kps = standing_pose(3, seed=4)
    kps[0, 30:32] = 0.0  # left ankle at (0, 0) = missing
    kps[1, 0] = np.nan  # nose x NaN = nose missing
    mask = missing_mask(kps)
    assert mask.shape == (3, 17) and mask.dtype == bool
    assert mask[0].tolist() == [i == 15 for i in range(17)]
    assert mask[1].tolist() == [i == 0 for i in range(17)]
    assert not mask[2].any()
    f = normalise_pose(kps)
    assert np.isnan(f[0, 30:32]).all() and np.isnan(f[1, 0:2]).all()
    assert np.isfinite(np.delete(f[0], [30, 31])).all()
    # The other keypoints do not move because one went missing (same centre and scale here).
    full = normalise_pose(standing_pose(3, seed=4))
    np.testing.assert_allclose(np.delete(f[0], [30, 31]), np.delete(full[0], [30, 31]), atol=0.02)


def test_a_lone_zero_coordinate_is_a_real_position() -> None:
    kps = standing_pose(1, seed=5)
    kps[0, 0] = 0.0  # x = 0 but y != 0: the nose sits on the left edge of the image
    assert not missing_mask(kps)[0, 0]
    assert np.isfinite(normalise_pose(kps)[0, :2]).all()


def test_centre_falls_back_to_mid_shoulder_then_to_the_mean() -> None:
    kps = standing_pose(2, seed=6, jitter=0.0)
    kps[:, 22:24] = 0.0  # left hip missing
    kps[1, 10:12] = 0.0  # and, in row 1, the left shoulder too
    f = normalise_pose(kps).reshape(2, 17, 2)
    np.testing.assert_allclose((f[0, 5] + f[0, 6]) / 2, 0.0, atol=1e-12)
    np.testing.assert_allclose(np.nanmean(f[1], axis=0), 0.0, atol=1e-12)


def test_degenerate_and_empty_rows() -> None:
    kps = np.vstack([np.tile([50.0, 60.0], 17), np.zeros(34)])
    f = normalise_pose(kps)
    np.testing.assert_array_equal(f[0], np.zeros(34))  # all points equal: centred, not divided by 0
    assert np.isnan(f[1]).all()  # nothing present


def test_input_is_never_mutated_and_output_is_float64() -> None:
    kps = standing_pose(4, seed=7).astype(np.float32)
    kps[0, :2] = 0.0
    before = kps.copy()
    for out in (normalise_pose(kps), featurise(kps, "pose"), featurise(kps, "raw"), missing_mask(kps)):
        assert out is not kps
    np.testing.assert_array_equal(kps, before)
    assert normalise_pose(kps).dtype == np.float64


def test_raw_mode_keeps_pixels() -> None:
    kps = standing_pose(2, seed=8)
    kps[1, 4:6] = 0.0
    raw = featurise(kps, "raw")
    np.testing.assert_array_equal(raw[0], kps[0])
    assert np.isnan(raw[1, 4:6]).all()
    np.testing.assert_array_equal(np.delete(raw[1], [4, 5]), np.delete(kps[1], [4, 5]))


def test_a_single_frame_keeps_its_shape() -> None:
    one = standing_pose(1, seed=9)[0]
    assert normalise_pose(one).shape == (34,)
    assert missing_mask(one).shape == (17,)
    np.testing.assert_allclose(normalise_pose(one), normalise_pose(one[None])[0])


@pytest.mark.parametrize("bad", [np.zeros((3, 33)), np.zeros((2, 17, 2)), np.array(["a"] * 34)])
def test_bad_shapes_and_types_say_what_is_wrong(bad: np.ndarray) -> None:
    with pytest.raises(FeatureError, match=r"keypoints must"):
        normalise_pose(bad)


def test_unknown_mode_and_scale_are_rejected() -> None:
    with pytest.raises(FeatureError, match="mode"):
        featurise(np.zeros((1, 34)), "angles")  # type: ignore[arg-type]
    with pytest.raises(FeatureError, match="scale"):
        normalise_pose(np.zeros((1, 34)), scale="height")  # type: ignore[arg-type]


def test_keypoint_names_are_coco_17() -> None:
    assert len(KEYPOINT_NAMES) == 17 and KEYPOINT_NAMES[11] == "left_hip" and KEYPOINT_NAMES[16] == "right_ankle"
