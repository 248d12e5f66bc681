"""The two-level index finds the same best micro-cluster as brute force, and scores far fewer of them."""

from __future__ import annotations

import numpy as np
import pytest

import consumer.clustering as clustering
from consumer.clustering import ReferenceClusters
from consumer.score_index import ComponentIndex
from edgeloop.synthetic import generate_poses


def brute_force(X: np.ndarray, C: np.ndarray, M: np.ndarray, s: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n, K)`` float64 component scores: s_j * masked squared distance + b_j."""
    diff = X[:, None, :] - C[None, :, :]
    return s[None, :] * ((diff * diff) * M[None, :, :]).sum(axis=2) + b[None, :]


def components(seed: int, k: int = 3000, dim: int = 12) -> tuple[np.ndarray, ...]:
    """Centres near a 3-D subspace (like poses), 10% with a missing coordinate, varied scales/biases."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(k, 3)) @ rng.normal(size=(3, dim)) + 0.05 * rng.normal(size=(k, dim))
    M = np.ones((k, dim), dtype=bool)
    partial = rng.random(k) < 0.1
    M[partial, rng.integers(0, dim, partial.sum())] = False
    C[~M] = 0.0
    s = rng.uniform(50.0, 500.0, k) * dim / M.sum(axis=1)
    b = rng.uniform(-3.0, -1.0, k)
    return C, M, s, b


def frames(C: np.ndarray, seed: int, n: int = 400) -> np.ndarray:
    """Frames near centres, and some far from all of them."""
    rng = np.random.default_rng(seed)
    near = C[rng.integers(0, C.shape[0], n)] + 0.05 * rng.normal(size=(n, C.shape[1]))
    far = 4.0 * rng.normal(size=(n // 4, C.shape[1]))
    return np.vstack([near, far])


@pytest.mark.parametrize("seed", [0, 1])
def test_search_returns_the_brute_force_minimum(seed: int) -> None:
    C, M, s, b = components(seed)
    X = frames(np.where(M, C, 0.0), seed + 10)
    index = ComponentIndex.build(C, M, s, b, seed=seed)
    best, arg, scored = index.search(X)
    S = brute_force(X, C, M, s, b)
    expected = S.min(axis=1)
    np.testing.assert_allclose(best, expected, rtol=1e-5, atol=1e-5)
    # The same component wherever the runner-up is not a near tie.
    runner_up = np.sort(S, axis=1)[:, 1]
    clear = runner_up - expected > 1e-3 * (1.0 + np.abs(expected))
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(arg[clear], S.argmin(axis=1)[clear])
    # It prunes: far fewer exact scores than the K per frame brute force computes.
    assert scored < 0.35 * S.size


def test_search_handles_an_empty_batch_and_components_all_complete() -> None:
    C, M, s, b = components(3, k=500)
    M[:] = True
    index = ComponentIndex.build(C, M, s, b)
    best, arg, scored = index.search(np.zeros((0, C.shape[1])))
    assert best.shape == arg.shape == (0,) and scored == 0
    X = frames(C, 4, n=50)
    best, arg, _ = index.search(X)
    np.testing.assert_allclose(best, brute_force(X, C, M, s, b).min(axis=1), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def large_reference() -> tuple[ReferenceClusters, np.ndarray]:
    poses = generate_poses(6000, seed=21, missing_rate=0.02)
    reference = ReferenceClusters(mode="pose", flag_on="density", max_clusters=4000, radius=0.05, seed=3)
    reference.learn(poses["kps"], labels=poses["gt"])
    stream = generate_poses(1500, seed=22, missing_rate=0.02)["kps"]
    return reference, stream


def test_reference_scoring_through_the_index_equals_brute_force(
    large_reference: tuple[ReferenceClusters, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, stream = large_reference
    assert reference.n_clusters >= clustering.INDEX_MIN_CLUSTERS
    reference._derived = None
    assert reference._derive().index is not None
    indexed = reference.score(stream)
    monkeypatch.setattr(clustering, "INDEX_MIN_CLUSTERS", 10**9)
    reference._derived = None
    assert reference._derive().index is None
    brute = reference.score(stream)
    reference._derived = None
    # Frames with a missing keypoint took the brute-force path in both runs; the others the index.
    assert np.isnan(reference.features(stream)).any(axis=1).any()
    # Brute force multiplies in float32 (about 1e-3 of rounding here), the index scores in float64.
    np.testing.assert_allclose(indexed.score, brute.score, rtol=1e-4, atol=2e-3)
    assert (indexed.nearest == brute.nearest).mean() > 0.995
    np.testing.assert_array_equal(indexed.is_ood, brute.is_ood)


def test_the_boundary_score_does_not_use_the_index(large_reference: tuple[ReferenceClusters, np.ndarray]) -> None:
    reference, _ = large_reference
    boundary = ReferenceClusters.from_state_dict({**reference.state_dict(), "params": {
        **reference.state_dict()["params"], "flag_on": "boundary"}})  # fmt: skip
    assert boundary.n_clusters >= clustering.INDEX_MIN_CLUSTERS
    assert boundary._derive().index is None
