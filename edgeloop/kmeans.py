"""k-means (L2) as scikit-learn's ``KMeans`` computes it, in numpy (scikit-learn is not a dependency).

Used by the benchmark's reproduction of the original tool (:mod:`edgeloop.bench.baselines`, which
checked it once against scikit-learn 1.2.2: the same centroids, labels and inertia) and by the score
index of the reference clustering (:mod:`consumer.score_index`), which groups micro-clusters with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeloop.errors import EdgeloopError

__all__ = ["KMeansError", "KMeansResult", "kmeans"]


class KMeansError(EdgeloopError):
    """k-means was given data it cannot cluster (wrong shape, fewer points than clusters)."""


@dataclass(frozen=True)
class KMeansResult:
    """Centroids ``(k, d)``, the label of every point, the inertia (sum of squared L2 distances)."""

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int


def _squared_distances(x: np.ndarray, centers: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    """``(n, k)`` squared L2 distances, clipped at 0 (the expansion can go slightly negative)."""
    c_sq = np.einsum("ij,ij->i", centers, centers)
    d = x_sq[:, None] - 2.0 * (x @ centers.T) + c_sq[None, :]
    return np.maximum(d, 0.0, out=d)


def _kmeans_plusplus(x: np.ndarray, k: int, x_sq: np.ndarray, rs: np.random.RandomState) -> np.ndarray:
    """Greedy k-means++ as scikit-learn 1.2 seeds it (``2 + log(k)`` candidates per centre)."""
    n = x.shape[0]
    trials = 2 + int(np.log(k))
    centers = np.empty((k, x.shape[1]))
    first = rs.randint(n)
    centers[0] = x[first]
    closest = _squared_distances(x, centers[:1], x_sq)[:, 0]
    potential = closest.sum()
    for c in range(1, k):
        draws = rs.uniform(size=trials) * potential
        candidates = np.searchsorted(np.cumsum(closest), draws)
        np.clip(candidates, None, n - 1, out=candidates)
        to_candidates = _squared_distances(x, x[candidates], x_sq).T  # (trials, n)
        np.minimum(closest, to_candidates, out=to_candidates)
        potentials = to_candidates.sum(axis=1)
        best = int(np.argmin(potentials))
        potential = potentials[best]
        closest = to_candidates[best]
        centers[c] = x[candidates[best]]
    return centers


def _lloyd(x: np.ndarray, centers: np.ndarray, x_sq: np.ndarray, max_iter: int, tol: float) -> KMeansResult:
    k = centers.shape[0]
    labels_old = np.full(x.shape[0], -1)
    labels = labels_old
    strict = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is reported
        distances = _squared_distances(x, centers, x_sq)
        labels = np.argmin(distances, axis=1)
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centers)
        np.add.at(sums, labels, x)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            # As scikit-learn: the points farthest from their centre become the empty clusters' centres.
            far = np.argsort(-distances[np.arange(len(x)), labels], kind="stable")[: len(empty)]
            for cluster, point in zip(empty.tolist(), far.tolist(), strict=True):
                old = labels[point]
                if counts[old] > 1:
                    sums[old] -= x[point]
                    counts[old] -= 1
                sums[cluster] = x[point]
                counts[cluster] = 1
        new_centers = sums / np.maximum(counts, 1)[:, None]
        shift = float(((new_centers - centers) ** 2).sum())
        centers = new_centers
        if np.array_equal(labels, labels_old):
            strict = True
            break
        if shift <= tol:
            break
        labels_old = labels
    distances = _squared_distances(x, centers, x_sq)
    if not strict:
        labels = np.argmin(distances, axis=1)
    inertia = float(distances[np.arange(len(x)), labels].sum())
    return KMeansResult(centers, labels, inertia, n_iter)


def kmeans(
    x: np.ndarray,
    n_clusters: int,
    *,
    n_init: int = 10,
    random_state: int = 0,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> KMeansResult:
    """k-means (L2) as scikit-learn's ``KMeans(n_clusters, random_state, n_init)`` computes it, in numpy.

    ``n_init`` k-means++ seedings, all drawn from one ``numpy.random.RandomState(random_state)`` in turn,
    each refined by Lloyd iterations until the labels stop changing or the centres move less than
    ``tol`` × the mean per-feature variance; the run with the lowest inertia wins (a later run replaces
    an earlier one only when strictly lower). The data are centred first, as scikit-learn does for
    precision. Deterministic for a ``random_state``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0, 1, (50, 2)), rng.normal(100, 1, (50, 2))])
    >>> result = kmeans(x, 2, n_init=3)
    >>> sorted(np.bincount(result.labels).tolist())
    [50, 50]
    """
    data = np.asarray(x, dtype=np.float64)
    if data.ndim != 2:
        raise KMeansError(f"k-means needs a 2-D array (points, features), got shape {data.shape}")
    if data.shape[0] < n_clusters:
        raise KMeansError(f"k-means with {n_clusters} clusters needs at least that many points, got {len(data)}")
    if n_init < 1:
        raise KMeansError(f"n_init must be >= 1, got {n_init}")
    mean = data.mean(axis=0)
    centred = data - mean
    x_sq = np.einsum("ij,ij->i", centred, centred)
    tolerance = float(np.mean(np.var(centred, axis=0))) * tol
    rs = np.random.RandomState(random_state)
    best: KMeansResult | None = None
    for _ in range(n_init):
        seeds = _kmeans_plusplus(centred, n_clusters, x_sq, rs)
        run = _lloyd(centred, seeds, x_sq, max_iter, tolerance)
        if best is None or run.inertia < best.inertia:
            best = run
    assert best is not None
    return KMeansResult(best.centers + mean, best.labels, best.inertia, best.n_iter)
