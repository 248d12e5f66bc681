"""Synthetic pose data: stick figures in COCO-17 order, for tests and the demo's default data.

**Everything here is synthetic.** No person was recorded: poses are drawn from a hand-written
kinematic model so that the project can run end to end without the real data pack
(``../shared/datasets/orientation``). The numbers it produces say nothing about real-world accuracy.

How a frame is made (vectorised over all frames with numpy):

1. Each pose class has two key poses, ``a`` and ``b`` (for example a push-up's top and bottom), given as
   absolute segment directions in a side view of a body facing right (degrees, y up): torso, head,
   upper arm, forearm, thigh and shin of each side. A phase in [0, 1] blends them and per-frame
   joint-angle jitter is added.
2. The joints are chained from the mid-hip along the segments (torso length = 1) in 3-D: the body's
   left/right axis is depth, so shoulders, hips, eyes and ears get a lateral offset.
3. The figure is turned about the vertical axis (yaw: a side view for lying bodies, anything from side
   to front for standing ones), tilted by a camera elevation, projected, rolled a little in the image
   plane, mirrored to face left or right, scaled, and placed at a random position that keeps the whole
   figure inside the frame (1280x720 by default).
4. Keypoint noise is added; a few points go missing, as ``(0, 0)`` with score 0 (the project's
   convention for a missing point).

Vertical classes (``gt = 0``): standing, squatting, lunging. Horizontal classes (``gt = 1``): pushup,
plank, lying. :func:`generate_poses` draws independent poses as arrays; :func:`synthetic_frames` yields
frame dicts grouped in simulated videos (consecutive frames of a sequence are small perturbations of one
base pose, with the key-pose phase moving like a repetition), and :func:`synthetic_pack` writes a data
pack laid out like the real one.

Examples
--------
>>> poses = generate_poses(4, seed=1, classes=["standing", "pushup"])
>>> poses["kps"].shape, poses["gt"].dtype.name
((4, 34), 'int64')
>>> frame = next(synthetic_frames(1, seed=1))
>>> sorted(frame)
['class', 'frame_idx', 'frame_wh', 'gt', 'id', 'kps', 'scores', 'sequence', 'source']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from edgeloop.datasets import GOLDEN_FILE, MASTER_FILE, STREAM_FILE, TRAINING_FILE, DataPack
from edgeloop.frames import N_COORDS, N_KEYPOINTS

log = logging.getLogger(__name__)

DEFAULT_FRAME_SIZE = (1280, 720)
SOURCE = "synthetic"

# Segment directions, in this order (degrees, side view, body facing +x, y up).
_SEGMENTS = ("torso", "head", "l_upper_arm", "l_forearm", "r_upper_arm", "r_forearm",
             "l_thigh", "l_shin", "r_thigh", "r_shin")  # fmt: skip
_N_SEGMENTS = len(_SEGMENTS)


@dataclass(frozen=True)
class PoseClass:
    """One pose class: its label, two key poses (segment directions in degrees) and the jitter around them."""

    name: str
    gt: int
    key_a: tuple[float, ...]
    key_b: tuple[float, ...]
    jitter_deg: tuple[float, ...]
    max_yaw_deg: float  # how far from a side view the camera may be
    moving: bool  # True: the phase sweeps a ↔ b in a video (repetitions); False: it drifts a little


#                 torso head  l_ua  l_fa  r_ua  r_fa  l_th  l_sh  r_th  r_sh
_VERTICAL_JITTER = (4.0, 8.0, 12.0, 15.0, 12.0, 15.0, 4.0, 4.0, 4.0, 4.0)
_HORIZONTAL_JITTER = (4.0, 8.0, 6.0, 6.0, 6.0, 6.0, 3.0, 3.0, 3.0, 3.0)
POSE_CLASSES: tuple[PoseClass, ...] = (
    # Upright, arms hanging (a) or loosely bent (b).
    PoseClass("standing", 0,
              (90, 92, 265, 268, 275, 272, 268, 270, 272, 270),
              (88, 95, 250, 300, 290, 320, 268, 270, 272, 270),
              _VERTICAL_JITTER, 80.0, False),
    # Half squat (a) to deep squat (b): hips back, knees forward, arms out in front.
    PoseClass("squatting", 0,
              (76, 85, 350, 355, 345, 350, 315, 255, 318, 257),
              (64, 80, 0, 5, 355, 0, 350, 245, 352, 247),
              _VERTICAL_JITTER, 80.0, True),
    # Left leg forward; shallow (a) to deep (b) with the back knee near the floor.
    PoseClass("lunging", 0,
              (88, 90, 268, 270, 272, 270, 320, 265, 245, 215),
              (90, 92, 268, 270, 272, 270, 345, 270, 235, 190),
              _VERTICAL_JITTER, 80.0, True),
    # Body in a straight line from the ankles, on straight arms (a, top) or bent ones (b, bottom).
    PoseClass("pushup", 1,
              (18, 20, 265, 268, 267, 270, 198, 198, 198, 198),
              (8, 10, 175, 280, 177, 282, 188, 188, 188, 188),
              _HORIZONTAL_JITTER, 30.0, True),
    # Forearm plank: elbows under the shoulders, forearms flat.
    PoseClass("plank", 1,
              (10, 12, 268, 5, 270, 7, 190, 190, 190, 190),
              (6, 8, 266, 2, 268, 4, 186, 186, 186, 186),
              _HORIZONTAL_JITTER, 30.0, False),
    # Flat on the floor, arms along the body (a) or a little away from it (b).
    PoseClass("lying", 1,
              (0, 3, 183, 182, 181, 180, 180, 180, 181, 181),
              (2, 8, 150, 160, 175, 178, 180, 181, 182, 182),
              _HORIZONTAL_JITTER, 30.0, False),
)  # fmt: skip
POSE_NAMES: tuple[str, ...] = tuple(p.name for p in POSE_CLASSES)
VERTICAL_POSES: tuple[str, ...] = tuple(p.name for p in POSE_CLASSES if p.gt == 0)
HORIZONTAL_POSES: tuple[str, ...] = tuple(p.name for p in POSE_CLASSES if p.gt == 1)

_KEY_A = np.array([p.key_a for p in POSE_CLASSES], dtype=np.float64)
_KEY_B = np.array([p.key_b for p in POSE_CLASSES], dtype=np.float64)
_JITTER = np.array([p.jitter_deg for p in POSE_CLASSES], dtype=np.float64)
_MAX_YAW = np.radians([p.max_yaw_deg for p in POSE_CLASSES])
_MOVING = np.array([p.moving for p in POSE_CLASSES])
_GT = np.array([p.gt for p in POSE_CLASSES], dtype=np.int64)

# Body proportions in torso lengths: head (mid-shoulder to head centre), upper arm, forearm, thigh, shin.
_LENGTHS = np.array([0.38, 0.55, 0.5, 0.85, 0.8])
_HALF_SHOULDER, _HALF_HIP = 0.33, 0.2
_MARGIN_PX = 2.0  # keeps every point strictly inside the frame and away from the (0, 0) "missing" marker

# Mixes of the synthetic pack: training is mostly vertical with only a few push-ups (the product's
# premise: push-ups are sparse in training and arrive in bulk in production).
TRAINING_MIX: Mapping[str, float] = {
    "standing": 0.30, "squatting": 0.20, "lunging": 0.20, "lying": 0.20, "plank": 0.06, "pushup": 0.04,
}  # fmt: skip
STREAM_BLOCKS: tuple[Mapping[str, float], ...] = (
    {"standing": 0.4, "squatting": 0.3, "lunging": 0.3},
    {"pushup": 0.7, "plank": 0.15, "lying": 0.15},
)
GOLDEN_MIX: Mapping[str, float] = dict.fromkeys(POSE_NAMES, 1.0)


@dataclass
class _Params:
    """Everything that decides one frame, one row per frame."""

    pose: np.ndarray  # (n,) index into POSE_CLASSES
    phase: np.ndarray  # (n,) blend of key pose a (0) and b (1)
    angle_noise: np.ndarray  # (n, 10) degrees
    length_scale: np.ndarray  # (n, 5)
    yaw: np.ndarray  # (n,) radians
    elevation: np.ndarray  # (n,) radians
    roll: np.ndarray  # (n,) radians
    facing: np.ndarray  # (n,) +1 right, -1 left
    size: np.ndarray  # (n,) torso length in pixels
    place: np.ndarray  # (n, 2) position of the figure in the free space of the frame, in [0, 1]

    def take(self, index: np.ndarray | slice) -> _Params:
        return _Params(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _pose_weights(
    classes: Sequence[str] | Mapping[str, float] | None, weights: Sequence[float] | None = None
) -> np.ndarray:
    """Probabilities over POSE_CLASSES from class names (uniform), a name -> weight mapping, or names + weights."""
    if classes is None:
        names: list[str] = list(POSE_NAMES)
        w = np.ones(len(names))
    elif isinstance(classes, Mapping):
        names, w = list(classes), np.array(list(classes.values()), dtype=np.float64)
    else:
        names = list(classes)
        w = np.ones(len(names)) if weights is None else np.asarray(weights, dtype=np.float64)
    unknown = [c for c in names if c not in POSE_NAMES]
    if unknown:
        raise ValueError(f"unknown pose classes {unknown}; choose from {', '.join(POSE_NAMES)}")
    if len(w) != len(names) or not len(names) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("pose weights must be one non-negative number per class, not all zero")
    probs = np.zeros(len(POSE_NAMES))
    np.add.at(probs, [POSE_NAMES.index(c) for c in names], w)
    return probs / probs.sum()


def _sample_params(rng: np.random.Generator, pose: np.ndarray, frame_h: float) -> _Params:
    n = len(pose)
    return _Params(
        pose=pose,
        phase=rng.random(n),
        angle_noise=rng.standard_normal((n, _N_SEGMENTS)) * _JITTER[pose],
        length_scale=np.clip(rng.normal(1.0, 0.05, (n, len(_LENGTHS))), 0.85, 1.15),
        yaw=rng.uniform(-1.0, 1.0, n) * _MAX_YAW[pose],
        elevation=np.radians(rng.uniform(-5.0, 20.0, n)),
        roll=np.radians(np.clip(rng.normal(0.0, 3.0, n), -8.0, 8.0)),
        facing=rng.choice(np.array([-1.0, 1.0]), n),
        size=rng.uniform(0.09, 0.25, n) * frame_h,
        place=rng.random((n, 2)),
    )


# Lateral (depth) offset of each joint: the body's left/right axis; limbs stay in the plane of their root.
_DEPTH = np.array([0.0, 0.055, -0.055, 0.11, -0.11, _HALF_SHOULDER, -_HALF_SHOULDER,
                   _HALF_SHOULDER, -_HALF_SHOULDER, _HALF_SHOULDER, -_HALF_SHOULDER,
                   _HALF_HIP, -_HALF_HIP, _HALF_HIP, -_HALF_HIP, _HALF_HIP, -_HALF_HIP])[:, None]  # fmt: skip
# (root joint, middle joint, end joint, first segment, length index of the first segment) of each limb.
_LIMBS = ((5, 7, 9, 2, 1), (6, 8, 10, 4, 1), (11, 13, 15, 6, 3), (12, 14, 16, 8, 3))


_RENDER_BATCH = 8192


def _render(
    params: _Params,
    rng: np.random.Generator,
    frame_size: tuple[int, int],
    noise: float,
    missing_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (n, 17, 2) in pixels and scores (n, 17) of the frames ``params`` describes."""
    n = len(params.pose)
    if n <= _RENDER_BATCH:
        return _render_batch(params, rng, frame_size, noise, missing_rate)
    # Batches small enough for the joint-major temporaries to stay in cache: about three times faster.
    keypoints = np.empty((n, N_KEYPOINTS, 2))
    scores = np.empty((n, N_KEYPOINTS))
    for start in range(0, n, _RENDER_BATCH):
        part = slice(start, start + _RENDER_BATCH)
        keypoints[part], scores[part] = _render_batch(params.take(part), rng, frame_size, noise, missing_rate)
    return keypoints, scores


def _render_batch(
    params: _Params,
    rng: np.random.Generator,
    frame_size: tuple[int, int],
    noise: float,
    missing_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (n, 17, 2) in pixels and scores (n, 17) of the frames ``params`` describes."""
    n = len(params.pose)
    pose = params.pose
    # Joint-major (17, n) arrays: every operation below runs over one contiguous row per joint.
    angles = np.radians((_KEY_A[pose] + params.phase[:, None] * (_KEY_B[pose] - _KEY_A[pose]) + params.angle_noise).T)
    seg_x, seg_y = np.cos(angles), np.sin(angles)  # (10, n) unit vectors of the segments
    lengths = (_LENGTHS * params.length_scale).T  # (5, n)
    x = np.zeros((N_KEYPOINTS, n))
    y = np.zeros((N_KEYPOINTS, n))
    x[5] = x[6] = seg_x[0]  # shoulders: the torso has unit length, the hips are the origin
    y[5] = y[6] = seg_y[0]
    head_x, head_y = seg_x[0] + lengths[0] * seg_x[1], seg_y[0] + lengths[0] * seg_y[1]
    up_x, up_y = seg_x[1], seg_y[1]
    face_x, face_y = up_y, -up_x  # the head direction turned -90 degrees: where the face points
    x[0], y[0] = head_x + 0.13 * face_x, head_y + 0.13 * face_y
    x[1] = x[2] = head_x + 0.09 * face_x + 0.05 * up_x
    y[1] = y[2] = head_y + 0.09 * face_y + 0.05 * up_y
    x[3] = x[4] = head_x - 0.01 * face_x + 0.02 * up_x
    y[3] = y[4] = head_y - 0.01 * face_y + 0.02 * up_y
    for root, middle, end, first, length in _LIMBS:
        x[middle] = x[root] + lengths[length] * seg_x[first]
        y[middle] = y[root] + lengths[length] * seg_y[first]
        x[end] = x[middle] + lengths[length + 1] * seg_x[first + 1]
        y[end] = y[middle] + lengths[length + 1] * seg_y[first + 1]

    # Camera: yaw about the vertical axis, then elevation, then an orthographic projection.
    cos_yaw, sin_yaw = np.cos(params.yaw), np.sin(params.yaw)
    x_cam = x * cos_yaw + _DEPTH * sin_yaw
    depth_cam = _DEPTH * cos_yaw - x * sin_yaw
    y_cam = y * np.cos(params.elevation) + depth_cam * np.sin(params.elevation)
    cos_roll, sin_roll = np.cos(params.roll), np.sin(params.roll)
    scale = params.size * params.facing
    points = np.empty((2, N_KEYPOINTS, n))
    points[0] = (x_cam * cos_roll - y_cam * sin_roll) * scale
    points[1] = -(x_cam * sin_roll + y_cam * cos_roll) * params.size  # image y points down
    points += rng.standard_normal(points.shape) * (noise * params.size)

    # Shrink the figures that do not fit, then place them in the free space of the frame.
    frame = np.array(frame_size, dtype=np.float64)[:, None]
    low, high = points.min(axis=1), points.max(axis=1)  # (2, n)
    extent = np.maximum(high - low, 1e-9)
    fit = np.minimum(1.0, ((frame - 2 * _MARGIN_PX) / extent).min(axis=0))
    points *= fit
    low, extent = low * fit, extent * fit
    points += (_MARGIN_PX - low + params.place.T * (frame - 2 * _MARGIN_PX - extent))[:, None, :]

    # Confidences skewed towards 1, in [0.3, 1]; squaring a uniform draw is far cheaper than a beta draw.
    scores = np.round(1.0 - 0.7 * rng.random((n, N_KEYPOINTS)) ** 2, 2)
    missing = rng.random((n, N_KEYPOINTS)) < missing_rate
    keypoints = points.transpose(2, 1, 0).copy()  # (n, 17, 2)
    keypoints[missing] = 0.0
    scores[missing] = 0.0
    return keypoints, scores


def generate_poses(
    n: int,
    seed: int | np.random.Generator = 0,
    classes: Sequence[str] | Mapping[str, float] | None = None,
    *,
    weights: Sequence[float] | None = None,
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    missing_rate: float = 0.02,
    noise: float = 0.015,
) -> dict[str, np.ndarray]:
    """Draw ``n`` independent synthetic poses.

    Parameters
    ----------
    n
        Number of poses.
    seed
        Seed (or a numpy ``Generator``): the same seed gives the same poses.
    classes
        Pose class names to draw from uniformly (default: all of :data:`POSE_NAMES`), or a mapping
        name -> weight; ``weights`` gives the weights of a list of names.
    frame_size
        ``(width, height)`` in pixels; every present point lies strictly inside it.
    missing_rate
        Probability that a keypoint is missing: ``(0, 0)`` with score 0.
    noise
        Keypoint noise, as a standard deviation in torso lengths.

    Returns
    -------
    dict
        ``kps`` (n, 34) float64 pixels x0, y0, ..., ``gt`` (n,) int64 (1 horizontal, 0 vertical),
        ``pose`` (n,) class names, ``scores`` (n, 17) float64.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    if not 0.0 <= missing_rate <= 1.0:
        raise ValueError("missing_rate must be in [0, 1]")
    rng = _rng(seed)
    pose = rng.choice(len(POSE_CLASSES), size=n, p=_pose_weights(classes, weights))
    points, scores = _render(_sample_params(rng, pose, frame_size[1]), rng, frame_size, noise, missing_rate)
    return {
        "kps": points.reshape(n, N_COORDS),
        "gt": _GT[pose],
        "pose": np.asarray(POSE_NAMES)[pose],
        "scores": scores,
    }


def _plan_sequences(
    rng: np.random.Generator,
    n: int,
    probs: np.ndarray,
    blocks: Sequence[Mapping[str, float]] | None,
    sequence_length: tuple[int, int],
    block_sequences: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Pose and length of each simulated video, enough of them for ``n`` frames (the last one cut)."""
    lo, hi = sequence_length
    if lo < 1 or hi < lo:
        raise ValueError("sequence_length must be (min, max) with 1 <= min <= max")
    mean = (lo + hi) / 2
    count = int(n / mean * 1.5) + 8  # plenty; the surplus is dropped
    lengths = rng.integers(lo, hi + 1, count)
    while lengths.sum() < n:
        lengths = np.concatenate([lengths, rng.integers(lo, hi + 1, count)])
    if blocks:
        block_probs = [_pose_weights(b) for b in blocks]
        bl, bh = block_sequences
        per_block = rng.integers(bl, bh + 1, len(lengths))
        which = np.repeat(np.arange(len(per_block)) % len(blocks), per_block)[: len(lengths)]
        uniform = rng.random(len(lengths))
        cumulative = np.cumsum(np.array(block_probs), axis=1)  # (blocks, classes)
        pose = (uniform[:, None] > cumulative[which]).sum(axis=1)
    else:
        pose = rng.choice(len(POSE_CLASSES), size=len(lengths), p=probs)
    pose = np.minimum(pose, len(POSE_CLASSES) - 1)  # float round-off at the top of the cumulative sum
    ends = np.cumsum(lengths)
    keep = int(np.searchsorted(ends, n)) + 1
    lengths, pose = lengths[:keep], pose[:keep]
    lengths[-1] -= int(lengths.sum()) - n
    return pose, lengths


def synthetic_frames(
    n: int,
    seed: int | np.random.Generator = 0,
    classes: Sequence[str] | Mapping[str, float] | None = None,
    *,
    weights: Sequence[float] | None = None,
    blocks: Sequence[Mapping[str, float]] | None = None,
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    missing_rate: float = 0.02,
    noise: float = 0.015,
    id_start: int = 0,
    sequence_length: tuple[int, int] = (20, 120),
    block_sequences: tuple[int, int] = (1, 4),
    sequence_prefix: str = "synthetic",
    chunk_frames: int = 65536,
) -> Iterator[dict[str, Any]]:
    """Yield ``n`` synthetic frame dicts grouped in simulated videos.

    Each video (``sequence``) has one pose class and one base pose (position, size, camera, body
    proportions); its frames are small perturbations of it, and for moving classes (squats, lunges,
    push-ups) the key-pose phase sweeps back and forth like repetitions, so consecutive frames are
    near-duplicates as in real video.

    Parameters
    ----------
    classes, weights
        As in :func:`generate_poses`: the class of each video.
    blocks
        Instead of ``classes``: a cycle of class mixes (name -> weight). Videos come in blocks of
        ``block_sequences`` videos, each block drawn from the next mix, e.g. vertical and horizontal
        blocks alternating like a production stream.
    id_start
        Id of the first frame; ids are consecutive.
    sequence_length
        (min, max) frames per video.
    sequence_prefix
        Sequences are named ``<prefix>/<class>/<number>``.

    Yields
    ------
    dict
        ``{"id", "kps" (34 floats, 2 decimals), "gt", "source": "synthetic", "sequence", "frame_idx",
        "class", "scores" (17), "frame_wh"}``, in sequence order.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    if n == 0:
        return
    rng = _rng(seed)
    probs = _pose_weights(classes, weights)
    seq_pose, seq_len = _plan_sequences(rng, n, probs, blocks, sequence_length, block_sequences)
    base = _sample_params(rng, seq_pose, frame_size[1])
    n_seq = len(seq_pose)
    period = rng.uniform(16.0, 60.0, n_seq)  # frames per repetition
    start_phase = rng.uniform(0.0, 2 * np.pi, n_seq)
    drift = rng.uniform(0.0, 2 * np.pi, (n_seq, 2))
    starts = np.concatenate([[0], np.cumsum(seq_len)[:-1]])
    frame_wh = list(frame_size)
    names = np.asarray(POSE_NAMES)

    first = 0
    while first < n_seq:
        # Whole videos per chunk, so the memory stays bounded for any n.
        last = first + 1
        while last < n_seq and starts[last] - starts[first] + seq_len[last] <= chunk_frames:
            last += 1
        seq = np.repeat(np.arange(first, last), seq_len[first:last])
        t = np.arange(len(seq)) + starts[first] - starts[seq]
        p = base.take(seq)
        wave = np.sin(2 * np.pi * t / period[seq] + start_phase[seq])
        p.phase = np.where(_MOVING[p.pose], 0.5 + 0.5 * wave, np.clip(p.phase + 0.05 * wave, 0.0, 1.0))
        p.angle_noise = p.angle_noise + rng.normal(0.0, 1.5, p.angle_noise.shape)
        p.yaw = p.yaw + np.radians(rng.normal(0.0, 0.5, len(seq)))
        p.roll = p.roll + np.radians(rng.normal(0.0, 0.3, len(seq)))
        p.size = p.size * (1.0 + rng.normal(0.0, 0.01, len(seq)))
        slow = np.sin(2 * np.pi * t[:, None] / (4 * period[seq, None]) + drift[seq])
        p.place = np.clip(p.place + 0.03 * slow, 0.0, 1.0)
        points, scores = _render(p, rng, frame_size, noise, missing_rate)
        kps_rows = np.round(points.reshape(len(seq), N_COORDS), 2).tolist()
        score_rows = scores.tolist()
        pose_names = names[p.pose].tolist()
        gts = _GT[p.pose].tolist()
        seq_numbers = seq.tolist()
        first_id = id_start + int(starts[first])
        for i, (kps, sc, name, gt, number, idx) in enumerate(
            zip(kps_rows, score_rows, pose_names, gts, seq_numbers, t.tolist(), strict=True)
        ):
            yield {
                "id": first_id + i,
                "kps": kps,
                "gt": gt,
                "source": SOURCE,
                "sequence": f"{sequence_prefix}/{name}/{number:05d}",
                "frame_idx": idx,
                "class": name,
                "scores": sc,
                "frame_wh": frame_wh,
            }
        first = last


def _write_json_list(path: Path, records: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(list(records)))
    os.replace(tmp, path)  # a reader never sees half a file


def synthetic_pack(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    *,
    training: int = 1000,
    stream: int = 6000,
    golden: int = 2000,
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    missing_rate: float = 0.02,
    training_mix: Mapping[str, float] = TRAINING_MIX,
    stream_blocks: Sequence[Mapping[str, float]] = STREAM_BLOCKS,
    golden_mix: Mapping[str, float] = GOLDEN_MIX,
) -> DataPack:
    """Write a synthetic data pack laid out like ``../shared/datasets/orientation`` and return it.

    Files (JSON lists, UpTrain's names): ``training_data.json`` (independent poses, mostly vertical,
    only a few push-ups), ``real_world_testing_data.json`` (the stream: videos in blocks, vertical and
    horizontal blocks alternating, push-ups the bulk of the horizontal ones), ``golden_testing_data.json``
    (videos of every class, drawn apart from the stream) and ``master_annotation_data.json``
    (``[{"id", "gt"}]`` for every stream frame), plus a README saying it is synthetic. Ids are unique over
    the pack: training from 1e9, stream from 2e9, golden from 3e9.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Independent generators per file: changing one size leaves the other files unchanged.
    train_rng, stream_rng, golden_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    poses = generate_poses(training, train_rng, training_mix, frame_size=frame_size, missing_rate=missing_rate)
    training_rows = [
        {"id": 1_000_000_000 + i, "kps": kps, "gt": gt, "source": SOURCE, "class": name}
        for i, (kps, gt, name) in enumerate(
            zip(np.round(poses["kps"], 2).tolist(), poses["gt"].tolist(), poses["pose"].tolist(), strict=True)
        )
    ]
    stream_rows = list(
        synthetic_frames(
            stream, stream_rng, blocks=stream_blocks, frame_size=frame_size, missing_rate=missing_rate,
            id_start=2_000_000_000, sequence_prefix="synthetic-stream",
        )
    )  # fmt: skip
    golden_rows = list(
        synthetic_frames(
            golden, golden_rng, golden_mix, frame_size=frame_size, missing_rate=missing_rate,
            id_start=3_000_000_000, sequence_prefix="synthetic-golden",
        )
    )  # fmt: skip
    _write_json_list(out / TRAINING_FILE, training_rows)
    _write_json_list(out / STREAM_FILE, stream_rows)
    _write_json_list(out / GOLDEN_FILE, golden_rows)
    _write_json_list(out / MASTER_FILE, [{"id": r["id"], "gt": r["gt"]} for r in stream_rows])

    def counts(rows: Sequence[dict[str, Any]]) -> str:
        gt = np.fromiter((r["gt"] for r in rows), dtype=np.int64, count=len(rows))
        return f"{len(rows)} (gt0 {int((gt == 0).sum())}, gt1 {int((gt == 1).sum())})"

    (out / "README.md").write_text(
        "# Synthetic orientation pack (generated, not real data)\n\n"
        f"Written by `edgeloop.synthetic.synthetic_pack(seed={seed})`: stick figures from a kinematic "
        "model, no person recorded.\n\n"
        f"- {TRAINING_FILE}: {counts(training_rows)}\n- {STREAM_FILE}: {counts(stream_rows)}\n"
        f"- {GOLDEN_FILE}: {counts(golden_rows)}\n- {MASTER_FILE}: {len(stream_rows)} labels\n\n"
        "gt = 1 horizontal body, gt = 0 vertical body; keypoints COCO-17, pixels in a "
        f"{frame_size[0]}x{frame_size[1]} frame, (0, 0) = missing.\n"
    )
    log.info("wrote synthetic pack to %s: training %d, stream %d, golden %d", out, training, stream, golden)
    return DataPack.from_dir(out)
