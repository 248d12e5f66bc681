"""The benchmark's baselines on small synthetic data: correctness only, never timing."""

from __future__ import annotations

import numpy as np
import pytest

from edgeloop.bench.baselines import (
    BaselineError,
    OriginalToolMonitor,
    OriginalToolReference,
    earth_moving_cost,
    kmeans,
    run_original_tool,
    run_river_dbstream,
    select_first,
)
from edgeloop.synthetic import generate_poses


def blobs(seed: int = 0, per: int = 40, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated blobs in 34 dimensions (pixel-like scale) and their true labels."""
    rng = np.random.default_rng(seed)
    centres = np.array([np.full(34, 100.0), np.full(34, 400.0), np.tile([700.0, 100.0], 17)])
    x = np.concatenate([c + rng.normal(0, spread, (per, 34)) for c in centres])
    return x, np.repeat(np.arange(3), per)


# ------------------------------------------------------------------------------------------ k-means


def test_kmeans_finds_obvious_clusters() -> None:
    x, truth = blobs()
    result = kmeans(x, 3, n_init=4, random_state=1)
    # Each true blob maps to exactly one cluster and vice versa.
    pairs = {(int(t), int(label)) for t, label in zip(truth, result.labels, strict=True)}
    assert len(pairs) == 3
    assert len({label for _, label in pairs}) == 3
    for t, label in pairs:
        np.testing.assert_allclose(result.centers[label], x[truth == t].mean(axis=0))
    expected_inertia = sum(((x[truth == t] - x[truth == t].mean(axis=0)) ** 2).sum() for t in range(3))
    assert result.inertia == pytest.approx(expected_inertia)


def test_kmeans_is_deterministic_for_a_seed_and_seed_matters() -> None:
    x = generate_poses(300, seed=3)["kps"]
    a = kmeans(x, 20, n_init=3, random_state=1)
    b = kmeans(x, 20, n_init=3, random_state=1)
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = kmeans(x, 20, n_init=1, random_state=2)
    assert not np.array_equal(a.centers, c.centers)


def test_kmeans_more_inits_never_worse() -> None:
    x = generate_poses(300, seed=4)["kps"]
    one = kmeans(x, 20, n_init=1, random_state=1)
    ten = kmeans(x, 20, n_init=10, random_state=1)
    # The first of the ten runs is the single run (same RandomState stream), so ten can only be better.
    assert ten.inertia <= one.inertia


def test_kmeans_refuses_too_few_points() -> None:
    with pytest.raises(BaselineError, match="at least"):
        kmeans(np.zeros((5, 34)), 20)


# ------------------------------------------------------------------------------ earth-moving cost


def test_earth_moving_cost_zero_for_equal_distributions() -> None:
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 3.0]])
    p = np.array([0.2, 0.5, 0.3])
    assert earth_moving_cost(p, p, centers) == 0.0


def test_earth_moving_cost_fills_from_the_nearest_opposite_cluster() -> None:
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 3.0]])
    ref = np.array([0.5, 0.0, 0.5])
    prod = np.array([0.0, 0.5, 0.5])
    # Cluster 1 has a surplus 0.5, cluster 0 the matching deficit at L1 distance 10: counted from both
    # sides, as the original does.
    assert earth_moving_cost(prod, ref, centers) == pytest.approx(2 * 0.5 * 10)
    # Two deficits: cluster 0's surplus goes to the nearer (2, distance 3) first, then to 1 (distance 10).
    ref2 = np.array([0.0, 0.3, 0.7])
    prod2 = np.array([0.6, 0.0, 0.4])
    surplus_side = 0.3 * 3 + 0.3 * 10
    deficit_side = 0.3 * 10 + 0.3 * 3
    assert earth_moving_cost(prod2, ref2, centers) == pytest.approx(surplus_side + deficit_side)


# ------------------------------------------------------------------------------- original tool rule


def reference_frames() -> np.ndarray:
    return blobs(seed=1, per=60, spread=3.0)[0]


def reference_and_far_frames() -> tuple[OriginalToolReference, np.ndarray, np.ndarray]:
    x = reference_frames()
    reference = OriginalToolReference.fit(x, n_clusters=3, n_init=2)
    rng = np.random.default_rng(2)
    near = x[rng.integers(0, len(x), 3000)] + rng.normal(0, 0.5, (3000, 34))
    far = np.full((3000, 34), 2000.0) + rng.normal(0, 1.0, (3000, 34))
    return reference, near, far


def test_reference_stats_are_counts_and_mean_l1() -> None:
    x, truth = blobs(seed=5, per=30, spread=2.0)
    reference = OriginalToolReference.fit(x, n_clusters=3, n_init=2)
    assert sorted(reference.counts.tolist()) == [30.0, 30.0, 30.0]
    assert reference.ref_dist.sum() == pytest.approx(1.0)
    own = np.array([np.abs(x[truth == t] - x[truth == t].mean(axis=0)).sum(axis=1).mean() for t in range(3)])
    np.testing.assert_allclose(np.sort(reference.var), np.sort(own))


def test_no_edge_cases_and_no_check_before_1000_frames() -> None:
    reference, _, far = reference_and_far_frames()
    monitor = OriginalToolMonitor(reference)
    for start in range(0, 992, 16):
        verdict = monitor.process_batch(far[start : start + 16])
        assert verdict.cost is None
        assert not verdict.drift
        assert not verdict.edge.any()
    verdict = monitor.process_batch(far[992:1008])  # frame count reaches 1008 >= 1000: first check
    assert verdict.cost is not None and verdict.cost > 300
    assert verdict.drift
    assert verdict.edge.all()  # far from every cluster: d > 2 and min ratio > 1


def test_edge_rule_fires_only_while_drift_is_detected() -> None:
    reference, near, far = reference_and_far_frames()
    # In distribution (the reference frames again, in proportion): no drift, so an outlier in a batch
    # past the first check is not an edge case.
    monitor = OriginalToolMonitor(reference)
    interleaved = reference_frames().reshape(3, 60, 34).transpose(1, 0, 2).reshape(180, 34)  # blob 0, 1, 2, 0, ...
    stream = np.tile(interleaved, (9, 1))[:1504]
    for start in range(0, len(stream), 16):
        batch = stream[start : start + 16].copy()
        if start == 1488:
            batch[0] = far[0]
        verdict = monitor.process_batch(batch)
        assert not verdict.drift
        assert not verdict.edge.any()
    assert verdict.cost is not None and verdict.cost < 300
    # The same outliers are edge cases once the window has drifted.
    drifting = OriginalToolMonitor(reference)
    for start in range(0, 1200, 16):
        drifting.process_batch(far[start : start + 16])
    batch = near[:16].copy()
    batch[0] = far[1500]
    verdict = drifting.process_batch(batch)
    assert verdict.drift
    assert verdict.edge[0]
    assert not verdict.edge[1:].any()  # in-distribution frames stay unflagged during drift


def test_run_original_tool_stops_after_the_trigger_and_counts() -> None:
    reference, near, far = reference_and_far_frames()
    stream = np.concatenate([near[:1024], far[:2000]])
    run = run_original_tool(reference, stream)
    assert run.frames == len(stream)
    assert run.batches == len(stream) // 16
    assert len(run.edge_rows) > 0
    assert run.edge_rows.min() >= 1024  # only the far frames, and only once drift sets in
    assert np.all(np.diff(run.edge_rows) > 0)  # stream order
    stopped = run_original_tool(reference, stream, stop_after_edges=200)
    assert 200 < len(stopped.edge_rows) <= 216
    np.testing.assert_array_equal(stopped.edge_rows, run.edge_rows[: len(stopped.edge_rows)])


def test_select_first_keeps_distinct_ids_in_order() -> None:
    ids = np.array([10, 11, 10, 12, 13, 11, 14])
    rows = np.array([0, 1, 2, 3, 4, 5, 6])
    assert select_first(rows, ids, 3).tolist() == [0, 1, 3]
    assert select_first(rows, ids, 100).tolist() == [0, 1, 3, 4, 6]
    assert select_first(rows, ids, 0).tolist() == []


# ------------------------------------------------------------------------------------------- river


def test_river_dbstream_baseline_runs_and_separates_obvious_poses() -> None:
    vertical = generate_poses(150, seed=7, classes=["standing"])["kps"]
    horizontal = generate_poses(150, seed=8, classes=["lying"])["kps"]
    reference = np.concatenate([vertical, horizontal])
    stream = np.concatenate([generate_poses(40, seed=9, classes=["standing"])["kps"],
                             generate_poses(40, seed=10, classes=["lying"])["kps"]])  # fmt: skip
    run = run_river_dbstream(reference, stream)
    assert run.frames == 80
    assert run.labels.shape == (80,)
    assert run.micro_clusters > 1 and run.macro_clusters >= 1
    assert run.params["clustering_threshold"] == 0.3
    # Standing and lying bodies never share a macro-cluster.
    assert not set(run.labels[:40].tolist()) & set(run.labels[40:].tolist())
