"""Near-duplicate filtering: distances, in-batch order, scopes, caps, and coverage of one video."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgeloop.features import normalise_pose
from retrainer.errors import RetrainerError
from retrainer.near_duplicates import NearDuplicateFilter, masked_rms_distances


def brute_force(a: np.ndarray, b: np.ndarray, min_shared: int) -> np.ndarray:
    out = np.full((len(a), len(b)), np.inf)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            both = ~np.isnan(x) & ~np.isnan(y)
            if both.sum() >= min_shared:
                out[i, j] = np.sqrt(np.mean((x[both] - y[both]) ** 2))
    return out


def test_masked_distances_equal_the_brute_force_nan_aware_rms() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 34))
    b = rng.normal(size=(5, 34))
    a[rng.random(a.shape) < 0.2] = np.nan
    b[rng.random(b.shape) < 0.2] = np.nan
    b[4, :30] = np.nan  # only 4 coordinates left: not comparable
    got = masked_rms_distances(a, b, min_shared=12)
    want = brute_force(a, b, 12)
    assert np.isinf(got[:, 4]).all()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_a_batch_is_judged_exactly_as_frames_arriving_one_by_one() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(6, 34))
    feats = centres[rng.integers(0, 6, 60)] + rng.normal(scale=0.02, size=(60, 34))
    sequences = [f"s{i % 4}" for i in range(60)]
    batch = NearDuplicateFilter(radius=0.1, per_sequence_cap=3)
    decided = batch.select(feats, sequences)
    one_by_one = NearDuplicateFilter(radius=0.1, per_sequence_cap=3)
    kept = []
    for i in range(60):
        d = one_by_one.select(feats[i : i + 1], sequences[i : i + 1])
        if d.accepted[0]:
            one_by_one.add(feats[i : i + 1], sequences[i : i + 1])
        kept.append(bool(d.accepted[0]))
    assert decided.accepted.tolist() == kept
    # Six well separated centres: at most one frame per centre survives the radius.
    assert 1 <= decided.accepted.sum() <= 6
    assert set(decided.reasons.tolist()) <= {"", "near", "cap"}


def test_select_does_not_change_the_filter_until_add() -> None:
    f = NearDuplicateFilter(radius=0.1)
    x = np.zeros((1, 34))
    assert f.select(x, [None]).accepted.tolist() == [True]
    assert f.select(x, [None]).accepted.tolist() == [True]
    f.add(x, [None])
    assert len(f) == 1
    assert f.select(x, [None]).reasons.tolist() == ["near"]


def test_radius_zero_drops_exact_copies_only() -> None:
    f = NearDuplicateFilter(radius=0.0)
    x = np.linspace(-1, 1, 34)[None, :]
    f.add(x, ["a"])
    d = f.select(np.vstack([x, x + 1e-3]), ["b", "b"])
    assert d.reasons.tolist() == ["near", ""]


def test_sequence_scope_compares_within_the_sequence_only() -> None:
    x = np.zeros((1, 34))
    global_scope = NearDuplicateFilter(radius=0.1, scope="global")
    per_sequence = NearDuplicateFilter(radius=0.1, scope="sequence")
    for f in (global_scope, per_sequence):
        f.add(x, ["video-1"])
    assert global_scope.select(x, ["video-2"]).reasons.tolist() == ["near"]
    assert per_sequence.select(x, ["video-2"]).reasons.tolist() == [""]
    assert per_sequence.select(x, ["video-1"]).reasons.tolist() == ["near"]


def test_per_sequence_cap_counts_collected_and_batch_frames_and_spares_unknown_sequences() -> None:
    f = NearDuplicateFilter(radius=0.0, per_sequence_cap=2)
    f.add(np.full((1, 34), 5.0), ["a"])
    feats = np.arange(5 * 34, dtype=float).reshape(5, 34)
    d = f.select(feats, ["a", "a", "b", None, None])
    assert d.reasons.tolist() == ["", "cap", "", "", ""]


def test_consecutive_video_frames_collapse_to_the_distinct_phases(stream_frames: list[dict[str, Any]]) -> None:
    # One whole synthetic video (a repetition moving between two key poses) flagged frame after frame.
    by_sequence: dict[str, list[dict[str, Any]]] = {}
    for frame in stream_frames:
        by_sequence.setdefault(frame["sequence"], []).append(frame)
    video = max(by_sequence.values(), key=len)
    kps = np.asarray([fr["kps"] for fr in video], dtype=float)
    feats = normalise_pose(kps)
    f = NearDuplicateFilter(radius=0.05)
    d = f.select(feats, [fr["sequence"] for fr in video])
    kept = feats[d.accepted]
    assert 2 <= len(kept) < len(video) // 3, (len(kept), len(video))
    # Every dropped frame is within the radius of a kept one, and kept frames are all farther apart.
    to_kept = masked_rms_distances(feats[~d.accepted], kept)
    assert (to_kept.min(axis=1) <= 0.05).all()
    between = masked_rms_distances(kept, kept)
    np.fill_diagonal(between, np.inf)
    assert (between > 0.05).all()


def test_bad_parameters_say_what_to_pass() -> None:
    with pytest.raises(RetrainerError, match="radius"):
        NearDuplicateFilter(radius=-1)
    with pytest.raises(RetrainerError, match="scope"):
        NearDuplicateFilter(scope="video")  # type: ignore[arg-type]
    with pytest.raises(RetrainerError, match="cap"):
        NearDuplicateFilter(per_sequence_cap=-2)
