"""The two baselines the benchmark compares edgeloop's consumer with (pure numpy / river, no Kafka).

(a) **river, per point** (:class:`RiverDBSTREAMBaseline`): the obvious river way to cluster a stream —
``DBSTREAM.learn_one`` on every reference frame, then ``predict_one`` on every production frame, one
Python dict per frame. It gives a (macro-)cluster per frame and no out-of-distribution score; it is here
as the throughput of a per-point online clusterer, not as a detector.

(b) **the original tool's method** (:class:`OriginalToolReference`, :class:`OriginalToolMonitor`):
UpTrain 0.0.3's embedding data-drift check and edge-case rule on the 34 raw pixel coordinates, as
described in ``../shared/ORIGINAL_TOOL.md`` (read from UpTrain 0.0.3's ``data_drift.py``,
``framework.py`` and ``helper_funcs.py``). Reimplemented, not copied:

- reference: k-means with 20 clusters on the raw pixels, ``random_state=1``, ``n_init=10``
  (:func:`kmeans` reproduces scikit-learn's ``KMeans``: greedy k-means++ seeding drawn from one
  ``RandomState(1)`` across the 10 initialisations, Lloyd iterations with scikit-learn's tolerance, the
  run with the lowest inertia kept; scikit-learn is not a dependency. Checked once against
  scikit-learn 1.2.2 on ``training_data.json``: the same centroids, labels and inertia). Per cluster: the centroid, the
  member count and ``var`` = the mean **L1** distance of its members to the centroid; the reference
  distribution is counts / N.
- production, in batches of 16 frames: each frame goes to the centroid with the smallest L1 distance;
  the production distribution is the counts over the last 2,000 frames (all of them while fewer);
  no check before 1,000 frames. (The original took the window from per-batch snapshots of running
  counts, one batch short while under 2,000 frames, so its production "distribution" summed to less
  than 1 and the greedy cost then drew on its 1e9-per-unit penalty: any stream looked drifted between
  1,000 and 2,000 frames. This uses the window as ORIGINAL_TOOL.md states it; on the real stream, which
  drifts from the start, both select the same frames.)
- drift: the greedy "earth-moving cost" (:func:`earth_moving_cost`) > 300 pixels.
- edge case, only while drift is detected: ``d = L1(x, assigned) / var(assigned) > 2`` **and**
  ``min_k L1(x, c_k) / var_k > 1``.

The method is the original's; the implementation is vectorised per batch (the original looped in Python
over clusters and frames), so its throughput here is that of the method, not of the original code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeloop.errors import EdgeloopError
from edgeloop.features import featurise
from edgeloop.kmeans import KMeansError, KMeansResult
from edgeloop.kmeans import kmeans as _kmeans

log = logging.getLogger(__name__)

__all__ = [
    "KMeansResult",
    "OriginalToolMonitor",
    "OriginalToolReference",
    "OriginalToolRun",
    "RiverDBSTREAMBaseline",
    "RiverRun",
    "earth_moving_cost",
    "kmeans",
    "run_original_tool",
    "run_river_dbstream",
]

# The original tool's constants (ORIGINAL_TOOL.md).
ORIGINAL_CLUSTERS = 20
ORIGINAL_RANDOM_STATE = 1
ORIGINAL_N_INIT = 10
ORIGINAL_BATCH = 16
ORIGINAL_WINDOW = 2000
ORIGINAL_MIN_FRAMES = 1000
ORIGINAL_COST_THRESHOLD = 300.0
ORIGINAL_ASSIGNED_RATIO = 2.0
ORIGINAL_ALL_RATIO = 1.0
RIVER_DEFAULTS: dict[str, float] = {"clustering_threshold": 0.3, "fading_factor": 1e-4, "cleanup_interval": 1e9}


class BaselineError(EdgeloopError):
    """A baseline was given data it cannot work on (too few points, wrong shape)."""


# ------------------------------------------------------------------------------------------ k-means


def kmeans(
    x: np.ndarray,
    n_clusters: int = ORIGINAL_CLUSTERS,
    *,
    n_init: int = ORIGINAL_N_INIT,
    random_state: int = ORIGINAL_RANDOM_STATE,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> KMeansResult:
    """:func:`edgeloop.kmeans.kmeans` with the original tool's settings as defaults; bad input raises
    :class:`BaselineError`."""
    try:
        return _kmeans(x, n_clusters, n_init=n_init, random_state=random_state, max_iter=max_iter, tol=tol)
    except KMeansError as exc:
        raise BaselineError(str(exc)) from exc


# -------------------------------------------------------------------------------- the original tool


def l1_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``(n, k)`` L1 distances of every row of ``x`` to every centre."""
    return np.abs(x[:, None, :] - centers[None, :, :]).sum(axis=2)


def earth_moving_cost(prod_dist: np.ndarray, ref_dist: np.ndarray, centers: np.ndarray) -> float:
    """The original tool's greedy earth-moving cost between two distributions over the same clusters.

    For every cluster ``j`` on its own, its surplus or deficit ``|p_j - r_j|`` is filled from the other
    clusters of the opposite sign, nearest first (L1 distance between centroids), each giving at most
    its own ``|p_k - r_k|``; the cost is the moved mass × distance, summed over all ``j``. The other
    clusters' balances are not updated from one ``j`` to the next, and both the surplus and the deficit sides are
    counted: this is the original's statistic, not an optimal transport distance. Clusters of the same
    sign get the original's prohibitive cost of 1e9 per unit (never used: the opposite side always holds
    enough).

    Examples
    --------
    >>> centers = np.array([[0.0, 0.0], [10.0, 0.0]])
    >>> earth_moving_cost(np.array([0.0, 1.0]), np.array([1.0, 0.0]), centers)
    20.0
    """
    delta = np.asarray(prod_dist, dtype=np.float64) - np.asarray(ref_dist, dtype=np.float64)
    k = delta.shape[0]
    between = l1_distances(centers, centers)
    other = -delta[None, :] * np.ones((k, 1))  # what cluster k offers to j (sign: opposite of j)
    np.fill_diagonal(other, 0.0)
    cost = np.where(other * delta[:, None] < 0, 1e9, between)
    order = np.argsort(cost, axis=1, kind="stable")  # Python's sorted() is stable too
    dirt = np.take_along_axis(np.abs(other), order, axis=1)
    unit = np.take_along_axis(cost, order, axis=1)
    before = np.cumsum(dirt, axis=1) - dirt
    moved = np.clip(np.minimum(dirt, np.abs(delta)[:, None] - before), 0.0, None)
    return float((moved * unit).sum())


@dataclass(frozen=True)
class OriginalToolReference:
    """The original tool's reference: 20 k-means clusters of the raw pixel keypoints.

    Attributes
    ----------
    centers
        ``(k, 34)`` centroids in pixels.
    counts
        Reference frames per cluster (k-means' own L2 labels).
    var
        Mean L1 distance of each cluster's members to its centroid (the original's "var").
    """

    centers: np.ndarray
    counts: np.ndarray
    var: np.ndarray

    @property
    def ref_dist(self) -> np.ndarray:
        return self.counts / self.counts.sum()

    @classmethod
    def fit(
        cls,
        kps: np.ndarray,
        n_clusters: int = ORIGINAL_CLUSTERS,
        *,
        random_state: int = ORIGINAL_RANDOM_STATE,
        n_init: int = ORIGINAL_N_INIT,
    ) -> OriginalToolReference:
        x = _raw(kps)
        result = kmeans(x, n_clusters, n_init=n_init, random_state=random_state)
        counts = np.bincount(result.labels, minlength=n_clusters).astype(np.float64)
        own = np.abs(x - result.centers[result.labels]).sum(axis=1)
        var = np.bincount(result.labels, weights=own, minlength=n_clusters) / np.maximum(counts, 1)
        # A one-member cluster has var 0 and every ratio by it infinite; the original divided regardless.
        var = np.where(var > 0, var, np.finfo(np.float64).tiny)
        return cls(result.centers, counts, var)


def _raw(kps: np.ndarray) -> np.ndarray:
    x = np.asarray(kps, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 34:
        raise BaselineError(f"keypoints must have shape (n, 34), got {x.shape}")
    return x


@dataclass
class BatchVerdict:
    """What the original tool decided for one batch."""

    assigned: np.ndarray
    edge: np.ndarray
    drift: bool
    cost: float | None  # None before the first check (fewer than 1,000 frames)


class OriginalToolMonitor:
    """The original tool's production side, one batch (16 frames) at a time.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> reference = OriginalToolReference.fit(rng.uniform(0, 100, (200, 34)), n_init=1)
    >>> monitor = OriginalToolMonitor(reference)
    >>> verdict = monitor.process_batch(rng.uniform(0, 100, (16, 34)))
    >>> verdict.drift, verdict.cost is None, int(verdict.edge.sum())
    (False, True, 0)
    """

    def __init__(
        self,
        reference: OriginalToolReference,
        *,
        window: int = ORIGINAL_WINDOW,
        min_frames: int = ORIGINAL_MIN_FRAMES,
        cost_threshold: float = ORIGINAL_COST_THRESHOLD,
    ) -> None:
        self.reference = reference
        self.window = window
        self.min_frames = min_frames
        self.cost_threshold = cost_threshold
        self.count = 0
        self.drift_detected = False
        self._recent = np.empty(0, dtype=np.int64)  # assigned cluster of the last `window` frames

    def process_batch(self, kps: np.ndarray) -> BatchVerdict:
        x = _raw(kps)
        ref = self.reference
        distances = l1_distances(x, ref.centers)
        assigned = np.argmin(distances, axis=1)
        self._recent = np.concatenate([self._recent, assigned])[-self.window :]
        self.count += len(x)
        cost: float | None = None
        if self.count < self.min_frames:
            self.drift_detected = False
        else:
            prod = np.bincount(self._recent, minlength=len(ref.counts)) / len(self._recent)
            cost = earth_moving_cost(prod, ref.ref_dist, ref.centers)
            self.drift_detected = cost > self.cost_threshold
        if self.drift_detected:
            own = distances[np.arange(len(x)), assigned] / ref.var[assigned]
            nearest_ratio = (distances / ref.var[None, :]).min(axis=1)
            edge = (own > ORIGINAL_ASSIGNED_RATIO) & (nearest_ratio > ORIGINAL_ALL_RATIO)
        else:
            edge = np.zeros(len(x), dtype=bool)
        return BatchVerdict(assigned, edge, self.drift_detected, cost)


@dataclass
class OriginalToolRun:
    """The original tool over a whole stream."""

    edge_rows: np.ndarray  # stream positions of the selected edge cases, in stream order
    drift_batches: int
    batches: int
    max_cost: float
    elapsed_s: float
    frames: int
    costs: list[float] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else float("inf")

    def first(self, n: int) -> np.ndarray:
        """The first ``n`` selected stream positions (what a label budget of ``n`` would annotate)."""
        return self.edge_rows[:n]


def run_original_tool(
    reference: OriginalToolReference,
    stream_kps: np.ndarray,
    *,
    batch_size: int = ORIGINAL_BATCH,
    stop_after_edges: int | None = None,
) -> OriginalToolRun:
    """Feed the stream to :class:`OriginalToolMonitor` in batches; time only the monitoring.

    ``stop_after_edges`` stops once more than that many edge cases were selected (the original checked
    its retraining trigger after every batch).
    """
    x = _raw(stream_kps)
    monitor = OriginalToolMonitor(reference)
    edges: list[np.ndarray] = []
    n_edges = 0
    drift_batches = 0
    costs: list[float] = []
    done = 0
    started = time.perf_counter()
    for start in range(0, len(x), batch_size):
        verdict = monitor.process_batch(x[start : start + batch_size])
        done = min(start + batch_size, len(x))
        if verdict.cost is not None:
            costs.append(verdict.cost)
        if verdict.drift:
            drift_batches += 1
            rows = np.flatnonzero(verdict.edge)
            if len(rows):
                edges.append(rows + start)
                n_edges += len(rows)
        if stop_after_edges is not None and n_edges > stop_after_edges:
            break
    elapsed = time.perf_counter() - started
    edge_rows = np.concatenate(edges) if edges else np.empty(0, dtype=np.int64)
    return OriginalToolRun(
        edge_rows=edge_rows,
        drift_batches=drift_batches,
        batches=len(range(0, done, batch_size)),
        max_cost=max(costs) if costs else 0.0,
        elapsed_s=elapsed,
        frames=done,
        costs=costs,
    )


# ------------------------------------------------------------------------------------------- river


@dataclass
class RiverRun:
    labels: np.ndarray
    elapsed_s: float
    frames: int
    micro_clusters: int
    macro_clusters: int
    params: dict[str, Any]

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else float("inf")


class RiverDBSTREAMBaseline:
    """river's ``DBSTREAM``, one frame (one dict) at a time.

    Parameters
    ----------
    features
        ``"pose"`` (edgeloop's normalised features, the same space as its own clustering) or ``"raw"``.
        Missing keypoints become 0 (river has no notion of a missing value).
    **params
        ``river.cluster.DBSTREAM`` parameters. Defaults (:data:`RIVER_DEFAULTS`): ``clustering_threshold``
        0.3 (a radius in pose-normalised units that gives ~400 micro-clusters on the 1,000 training
        frames), ``fading_factor`` 1e-4 and ``cleanup_interval`` 1e9: with river's own defaults (0.01,
        2) every micro-cluster that is not reinforced within two points is cleaned up, so after the
        reference pass only ~10 survive and the "reference" is forgotten; a monitor needs it kept.
    """

    def __init__(self, features: str = "pose", **params: Any) -> None:
        from river import cluster  # the import costs ~0.5 s; only the benchmark pays it

        self.features = features
        self.params = {**RIVER_DEFAULTS, **params}
        self.model = cluster.DBSTREAM(**self.params)

    def _dicts(self, kps: np.ndarray) -> list[dict[int, float]]:
        x = np.nan_to_num(featurise(np.asarray(kps, dtype=np.float64), self.features), nan=0.0)  # type: ignore[arg-type]
        return [dict(enumerate(row)) for row in x.tolist()]

    def learn(self, kps: np.ndarray) -> None:
        for point in self._dicts(kps):
            self.model.learn_one(point)

    def predict(self, kps: np.ndarray) -> np.ndarray:
        """Per frame: features → dict → ``predict_one`` (the per-point path being measured)."""
        return np.fromiter((self.model.predict_one(p) for p in self._dicts(kps)), dtype=np.int64, count=len(kps))


def run_river_dbstream(
    reference_kps: np.ndarray, stream_kps: np.ndarray, *, features: str = "pose", **params: Any
) -> RiverRun:
    """``learn_one`` on the reference, then time ``predict_one`` over the stream (feature work included)."""
    baseline = RiverDBSTREAMBaseline(features, **params)
    baseline.learn(reference_kps)
    baseline.predict(stream_kps[:1])  # the first predict_one reclusters: set-up, not per-frame cost
    started = time.perf_counter()
    labels = baseline.predict(stream_kps)
    elapsed = time.perf_counter() - started
    return RiverRun(
        labels=labels,
        elapsed_s=elapsed,
        frames=len(stream_kps),
        micro_clusters=len(baseline.model.micro_clusters),
        macro_clusters=int(baseline.model.n_clusters),
        params={"features": features, **baseline.params},
    )


def select_first(rows: Sequence[int] | np.ndarray, ids: np.ndarray, budget: int) -> np.ndarray:
    """The first ``budget`` stream positions of ``rows`` with distinct frame ids, in stream order."""
    seen: set[int] = set()
    out: list[int] = []
    if budget <= 0:
        return np.empty(0, dtype=np.int64)
    for row in np.asarray(rows).tolist():
        frame_id = int(ids[row])
        if frame_id in seen:
            continue
        seen.add(frame_id)
        out.append(row)
        if len(out) >= budget:
            break
    return np.asarray(out, dtype=np.int64)
