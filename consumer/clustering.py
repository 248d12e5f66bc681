"""The reference distribution as online micro-clusters, and out-of-distribution scoring against it.

:class:`ReferenceClusters` summarises the frames a model was trained on in at most ``max_clusters``
micro-clusters, each a *cluster feature* (CF, as in BIRCH/CluStream): the count, linear sum and squared
sum of its members per coordinate, plus a count per class label when the reference is labelled. From a
CF follow its centre, its radius (root-mean-square distance of the members to the centre), its weight and
its label mix, and two CFs merge by adding them, so the summary is built in one pass with bounded memory
and new training data is absorbed later without a rebuild (:meth:`~ReferenceClusters.absorb`).

Two scores, both vectorised over a batch (one float32 matrix product against all centres):

``"density"``
    Each micro-cluster is read as an isotropic Gaussian (centre, radius) weighted by its share of the
    reference. The score is the per-coordinate negative log-likelihood under the best component::

        density = min_j  0.5 * (d_j / r_j)**2 + log(r_j) - density_weight * log(w_j / W) / n_coords

    ``d_j / r_j`` is the distance relative to the radius; ``log(r_j)`` and the weight term are the density:
    a frame that only a light or diffuse micro-cluster covers lies in a sparsely supported region and
    scores higher than one equally close to a heavy, tight micro-cluster.
``"boundary"`` (default; needs a labelled reference)
    The frame's reference neighbourhood (the nearest micro-clusters, taken until they hold
    ``neighbourhood`` reference points) gives a label mix and a mean member distance; the score is::

        boundary = (1 - share of the majority label) * mean distance / absorption radius

    high for a frame far from the reference whose nearest reference straddles the class boundary, which
    is where a model trained on that reference extrapolates its decision boundary. On the orientation
    pack with UpTrain's raw-pixel model this ranks the model's errors far better than the density score
    (see ``scripts/flag_quality.py``).

Missing keypoints (NaN after :func:`edgeloop.features.featurise`) are left out of every distance, which is
rescaled to all coordinates, so a frame with a missing ankle is compared on what it has, never as if the
ankle sat at the origin.

Threshold
    Calibrated on the reference itself: a bounded, seeded reservoir of reference features (and labels) is
    kept and scored leave-one-out (each point subtracted from the CF of the micro-cluster that covers it,
    which CF arithmetic allows exactly), and the threshold is the ``threshold_quantile`` of those
    self-scores, optionally pushed further out by ``threshold_margin``. An absolute ``threshold``
    overrides it.

Why numpy and not river's stream clusterers
    river 0.26.1's ``DenStream`` computes a micro-cluster radius as the norm of the squared-sum vector
    instead of the square root of its sum, so its epsilon test always passes, and ``DBSTREAM`` /
    ``CluStream`` learn at 30-300 µs per point with ``predict_one`` slower still, one Python call per
    frame. The CF arithmetic is a few lines of numpy, and scoring becomes a matrix product per batch.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> reference = rng.normal(0.0, 1.0, size=(500, 4))
>>> clusters = ReferenceClusters(
...     mode="none", flag_on="density", max_clusters=20, threshold_quantile=0.99, threshold_margin=1.0
... ).learn(reference)
>>> clusters.n_clusters <= 20
True
>>> result = clusters.score(np.array([[0.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]]))
>>> result.is_ood.tolist()
[False, True]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from consumer.score_index import ComponentIndex
from edgeloop.errors import EdgeloopError
from edgeloop.features import KEYPOINT_NAMES, featurise

__all__ = ["ClusteringError", "Explanation", "ReferenceClusters", "ScoreResult"]

logger = logging.getLogger(__name__)

ClusterMode = Literal["pose", "raw", "none"]
FlagOn = Literal["auto", "density", "boundary"]
ScoreKind = Literal["density", "boundary"]
# Threshold defaults per score kind (quantile, margin), tuned with scripts/flag_quality.py.
DEFAULT_THRESHOLDS: dict[str, tuple[float, float]] = {"boundary": (1.0, 2.0), "density": (0.99, 1.0)}
STATE_SCHEMA = 1
# Frames are scored in row blocks sized so that a (rows x clusters) float32 work matrix holds about this
# many entries (1 MiB, cache-sized), whatever the batch size and the number of clusters.
SCORE_BLOCK_ENTRIES = 1 << 18
# Learning works through a batch in chunks of this many rows: the leader step builds a chunk x chunk
# distance matrix for the points no micro-cluster covers.
LEARN_CHUNK_ROWS = 1024
# Pairwise-merge search over centres is done in row blocks of this size (K x K would not fit at 10^4).
MERGE_BLOCK_ROWS = 1024
# The radius of a micro-cluster is shrunk towards the absorption radius with this many pseudo-members, so
# a singleton (radius 0) still has a sensible extent.
RADIUS_PRIOR_COUNT = 1.0
# Auto radius (first batch): this quantile of the nearest-neighbour distances within the batch.
AUTO_RADIUS_QUANTILE = 0.5
AUTO_RADIUS_SAMPLE = 2000
# The boundary score looks at most this many nearest micro-clusters to gather its neighbourhood.
NEIGHBOURHOOD_CLUSTERS = 64
TOP_KEYPOINTS = 3
# From this many micro-clusters on, the density score searches an exact index instead of scoring every
# micro-cluster (consumer/score_index.py; the result is the same), this many frames per search.
INDEX_MIN_CLUSTERS = 2000
INDEX_BLOCK_ROWS = 4096


class ClusteringError(EdgeloopError):
    """The reference clustering was used wrongly (not learned yet, wrong shape, bad state)."""


@dataclass(frozen=True)
class ScoreResult:
    """Scores of a batch of frames, one entry per row.

    Attributes
    ----------
    score
        float64 score that is compared with the threshold (:attr:`ReferenceClusters.score_kind`; higher = more
        unusual); NaN for a frame with no keypoint at all.
    is_ood
        bool, ``score > threshold`` (a frame without keypoints is flagged too).
    nearest
        int64 index of the best micro-cluster, valid for the clustering's ``revision`` at scoring time
        (``-1`` for a frame without keypoints).
    threshold
        The threshold in force when the batch was scored.
    revision
        :attr:`ReferenceClusters.revision` at scoring time.
    density
        The density score (always computed).
    minority
        Share of the minority labels in the reference neighbourhood; only with the boundary score.
    """

    score: np.ndarray
    is_ood: np.ndarray
    nearest: np.ndarray
    threshold: float
    revision: int
    density: np.ndarray
    minority: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @property
    def flagged(self) -> np.ndarray:
        """Row indices of the flagged frames."""
        return np.flatnonzero(self.is_ood)


@dataclass(slots=True)
class Explanation:
    """Why one frame was flagged: its nearest micro-cluster and the keypoints that deviate most."""

    row: int
    kind: str
    score: float
    threshold: float
    nearest_cluster: int
    cluster_weight: float
    keypoints: tuple[int, ...]
    keypoint_names: tuple[str, ...]
    deviations: tuple[float, ...]
    minority: float | None = None

    @property
    def reason(self) -> str:
        """One line for logs and the edge-case message."""
        worst = ", ".join(f"{n} {d:.3g}" for n, d in zip(self.keypoint_names, self.deviations, strict=True))
        mix = "" if self.minority is None else f", neighbourhood minority-label share {self.minority:.2f}"
        return (
            f"{self.kind} score {self.score:.3g} > threshold {self.threshold:.3g}; nearest reference "
            f"micro-cluster {self.nearest_cluster} (weight {self.cluster_weight:.3g}{mix}); most deviating "
            f"keypoints: {worst}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "score": self.score,
            "threshold": self.threshold,
            "nearest_cluster": self.nearest_cluster,
            "cluster_weight": self.cluster_weight,
            "minority": self.minority,
            "keypoints": list(self.keypoint_names),
            "deviations": list(self.deviations),
            "reason": self.reason,
        }


class ReferenceClusters:
    """Online micro-clustering of the reference (training) distribution, with OOD scoring.

    The defaults are tuned for the product's case, a model that reads raw pixel keypoints (UpTrain's
    orientation MLP) with a labelled reference: raw features, boundary score, threshold twice the worst
    leave-one-out reference self-score. On the orientation pack this flags 3.2% of the stream, where
    version 0 errs 7.4 times as often as on the whole stream (``scripts/flag_quality.py``). An
    unlabelled reference gets the density score with the 0.99 quantile. For a model-agnostic "is this
    pose unlike the reference" check use ``mode="pose", flag_on="density"``.

    Parameters
    ----------
    mode
        Features: ``"raw"`` (pixels, default: what the monitored model reads), ``"pose"``
        (translation/scale-normalised keypoints, orientation kept), or
        ``"none"`` (the input is already a feature matrix, any width; NaN = missing).
    max_clusters
        Memory bound: when learning leaves more micro-clusters, the pairs whose merge adds the least
        within-cluster variance (Ward's criterion) are merged until it holds.
    radius
        Absorption radius in feature units: a point joins its nearest micro-cluster when it lies within
        this distance of the centre, else it starts a new one. ``None``: the median nearest-neighbour
        distance within the first learned batch.
    flag_on
        Which score is thresholded: ``"boundary"`` (needs labels in :meth:`learn`), ``"density"``, or
        ``"auto"`` (default): boundary when the reference holds at least two labelled classes, else
        density (see :attr:`score_kind`).
    density_weight
        Weight of the density term (``-log`` micro-cluster weight) in the density score; 0 = off.
    neighbourhood
        Reference points gathered for the boundary score.
    threshold_quantile
        Quantile of the leave-one-out reference self-scores the threshold is based on; ``None``: 1.0
        (the worst self-score) for boundary, 0.99 for density.
    threshold_margin
        The threshold sits this many times as far above the median self-score as the quantile does:
        ``median + margin * (quantile - median)``; 1 = the quantile itself. ``None``: 2 for boundary, 1
        for density.
    threshold
        Absolute threshold; overrides ``threshold_quantile`` when given.
    calibration_size
        Size of the seeded reservoir of reference points kept for calibration (bounded memory).
    seed
        Seeds the reservoir; the same data in the same order with the same seed gives the same state.
    """

    def __init__(
        self,
        *,
        mode: ClusterMode = "raw",
        max_clusters: int = 400,
        radius: float | None = None,
        flag_on: FlagOn = "auto",
        density_weight: float = 1.0,
        neighbourhood: float = 60.0,
        threshold_quantile: float | None = None,
        threshold_margin: float | None = None,
        threshold: float | None = None,
        calibration_size: int = 4096,
        seed: int = 0,
    ) -> None:
        if mode not in ("pose", "raw", "none"):
            raise ClusteringError(f"unknown feature mode {mode!r}; use 'pose', 'raw' or 'none'")
        if flag_on not in ("auto", "density", "boundary"):
            raise ClusteringError(f"unknown flag_on {flag_on!r}; use 'auto', 'density' or 'boundary'")
        if max_clusters < 1:
            raise ClusteringError(f"max_clusters must be at least 1, got {max_clusters}")
        if radius is not None and not radius > 0:
            raise ClusteringError(f"radius must be positive (feature units) or None for auto, got {radius}")
        if threshold_quantile is not None and not 0.0 < threshold_quantile <= 1.0:
            raise ClusteringError(f"threshold_quantile must be in (0, 1], got {threshold_quantile}")
        if threshold_margin is not None and not threshold_margin > 0:
            raise ClusteringError(f"threshold_margin must be positive, got {threshold_margin}")
        if density_weight < 0:
            raise ClusteringError(f"density_weight must be >= 0, got {density_weight}")
        if not neighbourhood > 0:
            raise ClusteringError(f"neighbourhood must be a positive number of points, got {neighbourhood}")
        if calibration_size < 1:
            raise ClusteringError(f"calibration_size must be at least 1, got {calibration_size}")
        self.mode: ClusterMode = mode
        self.max_clusters = int(max_clusters)
        self.radius = None if radius is None else float(radius)
        self.flag_on: FlagOn = flag_on
        self.density_weight = float(density_weight)
        self.neighbourhood = float(neighbourhood)
        self.threshold_quantile = None if threshold_quantile is None else float(threshold_quantile)
        self.threshold_margin = None if threshold_margin is None else float(threshold_margin)
        self.absolute_threshold = None if threshold is None else float(threshold)
        self.calibration_size = int(calibration_size)
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._dim = 0
        self._n_classes = 0
        # Cluster features, float64 so that absorbing many batches does not lose precision.
        self._count = np.zeros(0)  # (K,) members
        self._dim_count = np.zeros((0, 0))  # (K, D) members with that coordinate present
        self._linear = np.zeros((0, 0))  # (K, D) linear sum
        self._squares = np.zeros((0, 0))  # (K, D) squared sum
        self._class_count = np.zeros((0, 0))  # (K, C) labelled members per class
        self._reservoir = np.zeros((0, 0))
        self._reservoir_labels = np.zeros(0, dtype=np.int64)  # -1 = unlabelled
        self._seen = 0  # reference points seen (for reservoir sampling)
        self._calibrated_threshold = float("nan")
        self.revision = 0
        self._derived: _Derived | None = None

    # ------------------------------------------------------------------ features
    def features(self, X: np.ndarray) -> np.ndarray:
        """The feature matrix this clustering compares (a new float64 array; NaN = missing)."""
        arr = np.asarray(X)
        if self.mode == "none":
            if arr.ndim != 2:
                raise ClusteringError(f"expected a 2-D feature matrix, got shape {arr.shape}")
            return np.array(arr, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[None, :]
        return featurise(arr, self.mode)

    # ------------------------------------------------------------------ properties
    @property
    def n_clusters(self) -> int:
        return int(self._count.shape[0])

    @property
    def n_seen(self) -> int:
        """Reference points learned so far."""
        return self._seen

    @property
    def n_classes(self) -> int:
        """Label classes seen (0 for an unlabelled reference)."""
        return self._n_classes

    @property
    def score_kind(self) -> ScoreKind:
        """The score in force: ``flag_on``, with ``"auto"`` resolved by whether the reference is labelled."""
        if self.flag_on != "auto":
            return self.flag_on
        labelled_classes = int(np.count_nonzero(self._class_count.sum(axis=0) > 0)) if self.n_clusters else 0
        return "boundary" if labelled_classes >= 2 else "density"

    @property
    def threshold(self) -> float:
        """The score above which a frame is flagged."""
        if self.absolute_threshold is not None:
            return self.absolute_threshold
        return self._calibrated_threshold

    @property
    def weights(self) -> np.ndarray:
        """Member count of each micro-cluster (a copy)."""
        return self._count.copy()

    @property
    def shares(self) -> np.ndarray:
        """Share of the reference in each micro-cluster (sums to 1): the reference distribution for drift."""
        total = self._count.sum()
        return self._count / total if total > 0 else self._count.copy()

    @property
    def centres(self) -> np.ndarray:
        """``(K, D)`` centres in feature units (NaN where no member had the coordinate)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._dim_count > 0, self._linear / np.maximum(self._dim_count, 1), np.nan)

    @property
    def radii(self) -> np.ndarray:
        """``(K,)`` radius of each micro-cluster as used in scoring (shrunk towards the absorption radius)."""
        return np.sqrt(self._derive().radius2)

    @property
    def class_counts(self) -> np.ndarray:
        """``(K, C)`` labelled members per class (a copy)."""
        return self._class_count.copy()

    def assignment_counts(self, nearest: np.ndarray) -> np.ndarray:
        """How many frames of ``nearest`` fall in each micro-cluster: ``(K,)`` int64 (``-1`` ignored)."""
        nearest = np.asarray(nearest)
        return np.bincount(nearest[nearest >= 0], minlength=self.n_clusters).astype(np.int64)

    # ------------------------------------------------------------------ learning
    def learn(self, X: np.ndarray, labels: np.ndarray | None = None) -> ReferenceClusters:
        """Absorb reference points ``X`` (one pass, batch-wise); returns ``self``.

        Parameters
        ----------
        X
            ``(n, 34)`` keypoints (or features for mode ``"none"``); never modified. Rows without any
            keypoint are ignored.
        labels
            Optional ``(n,)`` non-negative integer class labels (the ``gt`` of training data); they feed
            the boundary score.
        """
        F = self.features(X)
        lab = self._check_labels(labels, F.shape[0])
        keep = ~np.isnan(F).all(axis=1)
        F, lab = F[keep], lab[keep]
        if F.shape[0] == 0:
            return self
        if self._dim == 0:
            self._init_dim(F.shape[1])
        elif F.shape[1] != self._dim:
            raise ClusteringError(f"expected {self._dim} feature columns, got {F.shape[1]}")
        if lab.size and lab.max(initial=-1) >= self._n_classes:
            grow = max(2, int(lab.max()) + 1) - self._n_classes
            self._class_count = np.hstack([self._class_count, np.zeros((self.n_clusters, grow))])
            self._n_classes += grow
        if self.radius is None:
            self.radius = _auto_radius(F[:AUTO_RADIUS_SAMPLE])
            logger.info("reference clustering: absorption radius %.4g (auto from the first batch)", self.radius)
        for start in range(0, F.shape[0], LEARN_CHUNK_ROWS):
            stop = start + LEARN_CHUNK_ROWS
            self._learn_chunk(F[start:stop], lab[start:stop])
            self._reduce_to_budget()
        self._update_reservoir(F, lab)
        self.revision += 1
        self._derived = None
        self._calibrate()
        logger.info(
            "reference clustering revision %d: %d points in %d micro-clusters, %s threshold %.4g",
            self.revision,
            self._seen,
            self.n_clusters,
            self.score_kind,
            self.threshold,
        )
        return self

    def absorb(self, X: np.ndarray, labels: np.ndarray | None = None) -> ReferenceClusters:
        """Absorb new training data (a new model version) exactly like the first: :meth:`learn`."""
        return self.learn(X, labels)

    @staticmethod
    def _check_labels(labels: np.ndarray | None, n: int) -> np.ndarray:
        if labels is None:
            return np.full(n, -1, dtype=np.int64)
        lab = np.asarray(labels)
        if lab.shape != (n,):
            raise ClusteringError(f"labels must have shape ({n},) like the reference rows, got {lab.shape}")
        integral = np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool
        if not integral and not (
            np.issubdtype(lab.dtype, np.floating) and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab))
        ):
            raise ClusteringError("labels must be non-negative integers (class ids such as gt 0/1)")
        lab = lab.astype(np.int64)
        if lab.size and lab.min() < 0:
            raise ClusteringError("labels must be non-negative integers (class ids such as gt 0/1)")
        return lab

    def _init_dim(self, dim: int) -> None:
        self._dim = dim
        self._dim_count = np.zeros((0, dim))
        self._linear = np.zeros((0, dim))
        self._squares = np.zeros((0, dim))
        self._reservoir = np.zeros((0, dim))

    def _learn_chunk(self, F: np.ndarray, lab: np.ndarray) -> None:
        present = ~np.isnan(F)
        F0 = np.where(present, F, 0.0)
        assert self.radius is not None
        leftover = np.ones(F.shape[0], dtype=bool)
        if self.n_clusters:
            centres = np.where(self._dim_count > 0, self._linear / np.maximum(self._dim_count, 1), 0.0)
            d2 = _masked_sq_distances(F0, present, centres, self._dim_count > 0)
            nearest = d2.argmin(axis=1)
            covered = d2[np.arange(F.shape[0]), nearest] <= self.radius**2
            self._add_to(nearest[covered], F0[covered], present[covered], lab[covered])
            leftover = ~covered
        if leftover.any():
            self._leader_step(F0[leftover], present[leftover], lab[leftover])

    def _add_to(self, index: np.ndarray, F0: np.ndarray, present: np.ndarray, lab: np.ndarray) -> None:
        np.add.at(self._count, index, 1.0)
        np.add.at(self._dim_count, index, present.astype(np.float64))
        np.add.at(self._linear, index, F0)
        np.add.at(self._squares, index, F0 * F0)
        labelled = lab >= 0
        if labelled.any():
            np.add.at(self._class_count, (index[labelled], lab[labelled]), 1.0)

    def _leader_step(self, F0: np.ndarray, present: np.ndarray, lab: np.ndarray) -> None:
        """New micro-clusters for points no existing one covers: each uncovered point in order leads a
        new micro-cluster and takes every later uncovered point within the radius."""
        assert self.radius is not None
        within = _masked_sq_distances(F0, present, F0, present) <= self.radius**2
        free = np.ones(F0.shape[0], dtype=bool)
        owner = np.full(F0.shape[0], -1)
        n_new = 0
        # One Python step per *new micro-cluster* (bounded by the chunk), not per point.
        for leader in range(F0.shape[0]):
            if not free[leader]:
                continue
            members = within[leader] & free
            owner[members] = n_new
            free &= ~members
            n_new += 1
        self._count = np.concatenate([self._count, np.zeros(n_new)])
        self._dim_count = np.vstack([self._dim_count, np.zeros((n_new, self._dim))])
        self._linear = np.vstack([self._linear, np.zeros((n_new, self._dim))])
        self._squares = np.vstack([self._squares, np.zeros((n_new, self._dim))])
        self._class_count = np.vstack([self._class_count, np.zeros((n_new, self._n_classes))])
        self._add_to(owner + self.n_clusters - n_new, F0, present, lab)

    def _reduce_to_budget(self) -> None:
        """Merge the pairs of micro-clusters with the smallest Ward cost until at most ``max_clusters``."""
        while self.n_clusters > self.max_clusters:
            excess = self.n_clusters - self.max_clusters
            partner, cost = self._cheapest_partners()
            idx = np.arange(self.n_clusters)
            # Reciprocal cheapest partners are disjoint pairs; there is always at least one (the
            # globally cheapest pair), so every round makes progress.
            pairs = np.flatnonzero((partner[partner] == idx) & (idx < partner))
            pairs = pairs[np.argsort(cost[pairs], kind="stable")][:excess]
            a, b = pairs, partner[pairs]
            keep = np.ones(self.n_clusters, dtype=bool)
            keep[b] = False
            for name in ("_count", "_dim_count", "_linear", "_squares", "_class_count"):
                arr = getattr(self, name)
                arr[a] += arr[b]
                setattr(self, name, arr[keep])

    def _cheapest_partners(self) -> tuple[np.ndarray, np.ndarray]:
        present = self._dim_count > 0
        centres = np.where(present, self._linear / np.maximum(self._dim_count, 1), 0.0)
        n = self._count
        partner = np.empty(self.n_clusters, dtype=np.int64)
        cost = np.empty(self.n_clusters)
        for start in range(0, self.n_clusters, MERGE_BLOCK_ROWS):
            stop = min(start + MERGE_BLOCK_ROWS, self.n_clusters)
            rows = np.arange(stop - start)
            d2 = _masked_sq_distances(centres[start:stop], present[start:stop], centres, present)
            # Ward: merging i and j adds n_i n_j / (n_i + n_j) * |c_i - c_j|^2 to the within-cluster sum.
            ward = d2 * (n[start:stop, None] * n[None, :]) / (n[start:stop, None] + n[None, :])
            ward[rows, np.arange(start, stop)] = np.inf
            partner[start:stop] = ward.argmin(axis=1)
            cost[start:stop] = ward[rows, partner[start:stop]]
        return partner, cost

    def _update_reservoir(self, F: np.ndarray, lab: np.ndarray) -> None:
        """Reservoir sampling (Algorithm R, vectorised): a uniform sample of everything seen."""
        n_before = self._seen
        room = max(0, self.calibration_size - self._reservoir.shape[0])
        self._reservoir = np.vstack([self._reservoir, F[:room]])
        self._reservoir_labels = np.concatenate([self._reservoir_labels, lab[:room]])
        rest = F[room:]
        if rest.shape[0]:
            # Point number t (1-based over the whole stream) replaces slot u ~ U[0, t) when u < size.
            t = n_before + room + np.arange(1, rest.shape[0] + 1)
            slots = np.floor(self._rng.random(rest.shape[0]) * t).astype(np.int64)
            hit = slots < self.calibration_size
            # Fancy assignment keeps the last write per slot, as the sequential algorithm would.
            self._reservoir[slots[hit]] = rest[hit]
            self._reservoir_labels[slots[hit]] = lab[room:][hit]
        self._seen = n_before + F.shape[0]

    def _calibrate(self) -> None:
        kind = self.score_kind
        if kind == "boundary" and self._n_classes == 0:
            raise ClusteringError(
                "flag_on='boundary' needs a labelled reference: pass labels= to learn()/absorb(), "
                "or use flag_on='density'"
            )
        scores = self._scores(self._reservoir, loo_labels=self._reservoir_labels)[0]
        finite = scores[np.isfinite(scores)]
        if finite.size == 0:
            self._calibrated_threshold = float("inf")
            return
        typical = float(np.median(finite))
        quantile, margin = DEFAULT_THRESHOLDS[kind]
        quantile = quantile if self.threshold_quantile is None else self.threshold_quantile
        margin = margin if self.threshold_margin is None else self.threshold_margin
        high = float(np.quantile(finite, quantile))
        self._calibrated_threshold = typical + margin * (high - typical)

    # ------------------------------------------------------------------ scoring
    def score(self, X: np.ndarray, *, features: np.ndarray | None = None) -> ScoreResult:
        """Score a batch of frames (``(n, 34)`` keypoints, or features for mode ``"none"``).

        Vectorised: one float32 matrix product per block of rows against all centres (or the index, see
        :data:`INDEX_MIN_CLUSTERS`). ``features``: :meth:`features` of ``X`` when the caller has them
        already (the monitor computes pose features once for the clustering and the model).
        """
        if self.n_clusters == 0:
            raise ClusteringError("the reference clustering is empty: call learn() with reference data first")
        F = self.features(X) if features is None else features
        if F.shape[1] != self._dim:
            raise ClusteringError(f"expected {self._dim} feature columns, got {F.shape[1]}")
        score, density, nearest, minority = self._scores(F)
        empty = np.isnan(F).all(axis=1)
        for arr in (score, density):
            arr[empty] = np.nan
        nearest[empty] = -1
        threshold = self.threshold
        return ScoreResult(
            score=score,
            is_ood=(score > threshold) | empty,
            nearest=nearest,
            threshold=threshold,
            revision=self.revision,
            density=density,
            minority=minority,
        )

    def _scores(
        self, F: np.ndarray, loo_labels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(flag score, density, nearest, minority) for feature rows, block by block.

        With ``loo_labels`` the rows are reference points scored leave-one-out: each is subtracted (with
        its label, ``-1`` = none) from the micro-cluster whose centre is nearest, the one covering it.
        """
        d = self._derive()
        n = F.shape[0]
        boundary = self.score_kind == "boundary"
        need_d2 = boundary or loo_labels is not None
        index = d.index if not need_d2 else None
        density = np.empty(n)
        nearest = np.empty(n, dtype=np.int64)
        minority = np.empty(n) if boundary else None
        flag = np.empty(n) if boundary else density
        step = _block_rows(self.n_clusters) if index is None else INDEX_BLOCK_ROWS
        for start in range(0, n, step):
            block = F[start : start + step]
            rows = np.arange(block.shape[0])
            present = ~np.isnan(block)
            sl = slice(start, start + block.shape[0])
            if index is not None:
                whole = present.all(axis=1)
                # Density score from INDEX_MIN_CLUSTERS on: complete frames through the index (the same
                # minimum as brute force), frames with missing keypoints by brute force.
                at = np.flatnonzero(whole) + start
                density[at], nearest[at], _ = index.search(block[whole] - d.offset)
                if not whole.all():
                    at = np.flatnonzero(~whole) + start
                    S = self._component_scores(block[~whole], present[~whole], d, need_d2=False)[0]
                    nearest[at] = S.argmin(axis=1)
                    density[at] = S[np.arange(at.size), nearest[at]]
                continue
            S, d2 = self._component_scores(block, present, d, need_d2)
            own = own_label = None
            if loo_labels is not None:
                assert d2 is not None
                own = d2.argmin(axis=1)
                own_label = loo_labels[sl]
                S[rows, own] = self._loo_density(block, present, own)
            best = S.argmin(axis=1)
            nearest[sl] = best
            density[sl] = S[rows, best]
            if boundary:
                assert minority is not None and d2 is not None
                flag[sl], minority[sl] = self._boundary(d2, d, own, own_label)
        return flag, density, nearest, minority

    def _component_scores(
        self, block: np.ndarray, present: np.ndarray, d: _Derived, need_d2: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(rows, K)`` float32 density components (and squared distances when ``need_d2``) of a block.

        Complete rows take one float32 matmul of ``[x, |x|^2, 1]`` (``[x, x*x, 1]`` when some centre
        lacks coordinates); rows with missing keypoints take the masked distances.
        """
        whole = present.all(axis=1)
        if whole.all():
            A = d.augment(block)
            return A @ d.score_aug, (np.maximum(A @ d.dist_aug, 0.0) if need_d2 else None)
        d2 = self._masked_sq_distances32(block, present, d)
        if whole.any():
            A = d.augment(block[whole])
            d2[whole] = np.maximum(A @ d.dist_aug, 0.0)
        return d2 * d.inv_2r2[None, :] + d.bias[None, :], d2

    def _masked_sq_distances32(self, F: np.ndarray, present: np.ndarray, d: _Derived) -> np.ndarray:
        """``(rows, K)`` float32 squared distances over the coordinates present in both, rescaled to all."""
        X = np.where(present, F - d.offset, 0.0).astype(np.float32)
        pm = present.astype(np.float32)
        d2 = (X * X) @ d.centre_mask_t - 2.0 * (X @ d.centres_t) + pm @ d.centre_sq_t
        overlap = pm @ d.centre_mask_t
        with np.errstate(divide="ignore", invalid="ignore"):
            d2 = np.where(overlap > 0, d2 * (self._dim / overlap), np.inf).astype(np.float32)
        return np.maximum(d2, 0.0, out=d2)

    def _boundary(
        self, d2: np.ndarray, d: _Derived, own: np.ndarray | None, own_label: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boundary score and minority share from the ``neighbourhood`` nearest reference points."""
        n, k = d2.shape
        m = min(k, NEIGHBOURHOOD_CLUSTERS)
        rows = np.arange(n)[:, None]
        idx = np.argpartition(d2, m - 1, axis=1)[:, :m] if m < k else np.broadcast_to(np.arange(k), (n, k))
        dd = d2[rows, idx]
        order = np.argsort(dd, axis=1, kind="stable")
        idx = idx[rows, order]
        dd = dd[rows, order]
        weight = d.count[idx]
        if own is not None:
            weight = np.maximum(weight - (idx == own[:, None]), 0.0)
        before = np.cumsum(weight, axis=1) - weight
        # Only the first few columns hold the neighbourhood; cut the rest before the heavier work.
        used = int(np.count_nonzero((before < self.neighbourhood).any(axis=0)))
        idx, dd, weight, before = idx[:, :used], dd[:, :used], weight[:, :used], before[:, :used]
        take = np.minimum(np.maximum(self.neighbourhood - before, 0.0), weight)
        if own is None or own_label is None:
            mix = d.label_mix[idx]  # (n, used, C) label shares of each micro-cluster
            label_weight = take * d.labelled[idx]
        else:
            # Leave-one-out (calibration only): the point's own label leaves its own micro-cluster.
            classes = d.class_count[idx].copy()
            is_own = idx == own[:, None]
            labelled = own_label >= 0
            onehot = np.zeros((n, d.class_count.shape[1]))
            onehot[np.flatnonzero(labelled), own_label[labelled]] = 1.0
            classes -= is_own[:, :, None] * onehot[:, None, :]
            n_labelled = np.maximum(classes.sum(axis=2), 0.0)
            mix = classes / np.maximum(n_labelled, 1e-12)[:, :, None]
            label_weight = take * (n_labelled > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.einsum("nm,nmc->nc", label_weight, mix) / label_weight.sum(axis=1, keepdims=True)
            spread = (take * np.sqrt(dd + d.radius2[idx])).sum(axis=1) / take.sum(axis=1)
        minority = np.nan_to_num(1.0 - share.max(axis=1), nan=0.0)
        assert self.radius is not None
        return minority * spread / self.radius, minority

    def _loo_density(self, F: np.ndarray, present: np.ndarray, own: np.ndarray) -> np.ndarray:
        """Density component of each point against its own micro-cluster with the point subtracted."""
        F0 = np.where(present, F, 0.0)
        n = self._count[own] - 1.0
        dim_n = self._dim_count[own] - present
        linear = self._linear[own] - F0
        squares = self._squares[own] - F0 * F0
        radius2 = _shrunk_radius2(n, dim_n, linear, squares, self._radius_prior2())
        with np.errstate(invalid="ignore", divide="ignore"):
            centre = linear / np.maximum(dim_n, 1)
        both = present & (dim_n > 0)
        diff = np.where(both, F0 - centre, 0.0)
        overlap = both.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            d2 = np.where(overlap > 0, (diff * diff).sum(axis=1) * (self._dim / overlap), np.inf)
        weight = np.maximum(n, 1e-12) / max(self._count.sum() - 1.0, 1e-12)
        score = 0.5 * d2 / radius2 + 0.5 * np.log(radius2) - self.density_weight * np.log(weight) / self._dim
        return np.where(n <= 0, np.inf, score)

    def _radius_prior2(self) -> float:
        assert self.radius is not None
        return float(self.radius) ** 2

    def _derive(self) -> _Derived:
        if self._derived is None:
            self._derived = _Derived.build(self)
        return self._derived

    # ------------------------------------------------------------------ explanations
    def explain(
        self,
        X: np.ndarray,
        result: ScoreResult,
        rows: Sequence[int] | None = None,
        *,
        features: np.ndarray | None = None,
    ) -> list[Explanation]:
        """Why frames were flagged: nearest micro-cluster, score, top-3 deviating keypoints.

        Parameters
        ----------
        X
            The batch that was scored (same rows as ``result``).
        result
            What :meth:`score` returned for ``X``.
        rows
            Rows to explain; default the flagged ones. Work is done for these rows only.
        features
            :meth:`features` of the whole of ``X``, when the caller has them.
        """
        if result.revision != self.revision:
            raise ClusteringError(
                f"the result was scored at revision {result.revision} but the clustering is at "
                f"{self.revision} (it absorbed data since): score the batch again before explaining it"
            )
        idx = result.flagged if rows is None else np.asarray(rows, dtype=np.int64)
        if idx.size == 0:
            return []
        F = self.features(np.asarray(X)[idx]) if features is None else features[idx]
        nearest = result.nearest[idx]
        valid = nearest >= 0
        dev = np.full(F.shape, np.nan)
        dev[valid] = np.abs(F[valid] - self._derive().centres[nearest[valid]])
        names: Sequence[str]
        if self.mode != "none":
            with np.errstate(invalid="ignore"):
                unit = np.sqrt((dev.reshape(F.shape[0], -1, 2) ** 2).sum(axis=2))  # NaN = missing
            names = KEYPOINT_NAMES
        else:
            unit = dev
            names = [f"feature_{i}" for i in range(self._dim)]
        ranked = np.argsort(-np.nan_to_num(unit, nan=-1.0), axis=1, kind="stable")[:, :TOP_KEYPOINTS]
        top_values = np.take_along_axis(unit, ranked, axis=1)
        # Python lists from here on: one conversion per array, not per element.
        kind, threshold = self.score_kind, float(result.threshold)
        weights = np.where(valid, self._count[np.maximum(nearest, 0)], 0.0).tolist()
        minority = [None] * idx.size if result.minority is None else result.minority[idx].tolist()
        out: list[Explanation] = []
        for row, score, c, weight, mix, keys, values in zip(
            idx.tolist(),
            result.score[idx].tolist(),
            nearest.tolist(),
            weights,
            minority,
            ranked.tolist(),
            top_values.tolist(),
            strict=True,
        ):
            top = [(k, v) for k, v in zip(keys, values, strict=True) if math.isfinite(v)]
            out.append(
                Explanation(
                    row=row,
                    kind=kind,
                    score=score,
                    threshold=threshold,
                    nearest_cluster=c,
                    cluster_weight=weight,
                    keypoints=tuple(k for k, _ in top),
                    keypoint_names=tuple(names[k] for k, _ in top),
                    deviations=tuple(v for _, v in top),
                    minority=mix,
                )
            )
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this clustering exactly (JSON-able with orjson's numpy option)."""
        return {
            "schema": STATE_SCHEMA,
            "params": {
                "mode": self.mode,
                "max_clusters": self.max_clusters,
                "radius": self.radius,
                "flag_on": self.flag_on,
                "density_weight": self.density_weight,
                "neighbourhood": self.neighbourhood,
                "threshold_quantile": self.threshold_quantile,
                "threshold_margin": self.threshold_margin,
                "threshold": self.absolute_threshold,
                "calibration_size": self.calibration_size,
                "seed": self.seed,
            },
            "dim": self._dim,
            "n_classes": self._n_classes,
            "count": self._count.copy(),
            "dim_count": self._dim_count.copy(),
            "linear": self._linear.copy(),
            "squares": self._squares.copy(),
            "class_count": self._class_count.copy(),
            "reservoir": self._reservoir.copy(),
            "reservoir_labels": self._reservoir_labels.copy(),
            "seen": self._seen,
            "calibrated_threshold": self._calibrated_threshold,
            "revision": self.revision,
            # The generator state holds 128-bit integers, beyond JSON numbers: kept as strings.
            "rng": _stringify_ints(self._rng.bit_generator.state),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ReferenceClusters:
        """Rebuild a clustering from :meth:`state_dict` (or its JSON round trip)."""
        if state.get("schema") != STATE_SCHEMA:
            raise ClusteringError(
                f"reference clustering state has schema {state.get('schema')!r}, this code reads "
                f"{STATE_SCHEMA}: rebuild it from the reference data"
            )
        try:
            self = cls(**state["params"])
            dim = int(state["dim"])
            n_classes = int(state["n_classes"])
            self._dim, self._n_classes = dim, n_classes
            self._count = np.asarray(state["count"], dtype=np.float64).reshape(-1)
            k = self._count.shape[0]
            self._dim_count = np.asarray(state["dim_count"], dtype=np.float64).reshape(k, dim)
            self._linear = np.asarray(state["linear"], dtype=np.float64).reshape(k, dim)
            self._squares = np.asarray(state["squares"], dtype=np.float64).reshape(k, dim)
            self._class_count = np.asarray(state["class_count"], dtype=np.float64).reshape(k, n_classes)
            self._reservoir = np.asarray(state["reservoir"], dtype=np.float64).reshape(-1, dim)
            self._reservoir_labels = np.asarray(state["reservoir_labels"], dtype=np.int64).reshape(-1)
            self._seen = int(state["seen"])
            self._calibrated_threshold = float(state["calibrated_threshold"])
            self.revision = int(state["revision"])
            self._rng.bit_generator.state = _destringify_ints(state["rng"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ClusteringError(
                f"reference clustering state is incomplete or malformed ({exc!r}); rebuild it from the reference data"
            ) from exc
        return self

    def to_bytes(self) -> bytes:
        """JSON bytes of :meth:`state_dict` (orjson; float64 values round-trip exactly; no pickle)."""
        return orjson.dumps(self.state_dict(), option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_bytes(cls, data: bytes) -> ReferenceClusters:
        """Rebuild a clustering from :meth:`to_bytes`."""
        try:
            state = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ClusteringError(f"reference clustering state is not valid JSON ({exc}); re-create it") from exc
        return cls.from_state_dict(state)

    def __repr__(self) -> str:
        return (
            f"ReferenceClusters(mode={self.mode!r}, score_kind={self.score_kind!r}, n_clusters={self.n_clusters}, "
            f"seen={self._seen}, radius={self.radius}, threshold={self.threshold:.4g}, revision={self.revision})"
        )


@dataclass(frozen=True)
class _Derived:
    """Arrays derived from the CFs for scoring, rebuilt once per revision."""

    offset: np.ndarray  # (D,) subtracted before the float32 matmul, against cancellation
    centres: np.ndarray  # (K, D) float64 centres, NaN where absent (ReferenceClusters.centres)
    centres_t: np.ndarray  # (D, K) float32 centres minus offset, 0 where absent
    score_aug: np.ndarray  # (D + 2 or 2D + 1, K) float32: augment(x) @ score_aug = component scores
    dist_aug: np.ndarray  # (D + 2 or 2D + 1, K) float32: augment(x) @ dist_aug = squared distances
    centre_mask_t: np.ndarray  # (D, K) float32 presence
    centre_sq_t: np.ndarray  # (D, K) float32 per-coordinate squares
    radius2: np.ndarray  # (K,) float64
    inv_2r2: np.ndarray  # (K,) float32
    bias: np.ndarray  # (K,) float32 log-radius and density terms
    count: np.ndarray  # (K,) float64
    class_count: np.ndarray  # (K, C) float64
    label_mix: np.ndarray  # (K, C) share of each label among a micro-cluster's labelled members
    labelled: np.ndarray  # (K,) float64, 1 where a micro-cluster has labelled members
    complete: bool  # every centre has every coordinate
    index: ComponentIndex | None  # for the density score at INDEX_MIN_CLUSTERS micro-clusters and more

    def augment(self, block: np.ndarray) -> np.ndarray:
        """float32 ``[x, |x|^2, 1]`` (all centres complete) or ``[x, x*x, 1]`` of complete rows, shifted."""
        X = (block - self.offset).astype(np.float32)
        ones = np.ones((X.shape[0], 1), np.float32)
        if self.complete:
            return np.hstack([X, (X * X).sum(axis=1, keepdims=True), ones])
        return np.hstack([X, X * X, ones])

    @classmethod
    def build(cls, rc: ReferenceClusters) -> _Derived:
        present = rc._dim_count > 0
        centres = np.where(present, rc._linear / np.maximum(rc._dim_count, 1), 0.0)
        counts = present.sum(axis=0)
        offset = np.where(counts > 0, centres.sum(axis=0) / np.maximum(counts, 1), 0.0)
        shifted = np.where(present, centres - offset, 0.0)
        radius2 = _shrunk_radius2(rc._count, rc._dim_count, rc._linear, rc._squares, rc._radius_prior2())
        weight = rc._count / rc._count.sum()
        bias = 0.5 * np.log(radius2) - rc.density_weight * np.log(weight) / rc._dim
        centre_sq = (shifted * shifted).sum(axis=1)
        n_labelled = rc._class_count.sum(axis=1)
        inv_2r2 = 0.5 / radius2
        complete = bool(present.all())
        # A complete frame's distance to a centre over the centre's coordinates, rescaled to all of them:
        # u_j * (x*x . m_j - 2 x . c_j + |c_j|^2) with u_j = D / |m_j|; one product with [x, x*x, 1], or with
        # [x, |x|^2, 1] when every centre is complete (u = 1, m = 1).
        rescale = rc._dim / np.maximum(present.sum(axis=1), 1)
        squares_row = inv_2r2[None, :] if complete else present.T * (inv_2r2 * rescale)
        score_aug = np.vstack(
            [-2.0 * shifted.T * (inv_2r2 * rescale), squares_row, centre_sq * inv_2r2 * rescale + bias]
        )
        dist_aug = np.vstack(
            [
                -2.0 * shifted.T * rescale,
                np.ones((1, len(rescale))) if complete else present.T * rescale,
                centre_sq * rescale,
            ]
        )
        index = None
        if rc.n_clusters >= INDEX_MIN_CLUSTERS and rc.score_kind == "density":
            index = ComponentIndex.build(shifted, present, inv_2r2 * rescale, bias, seed=rc.seed)
        return cls(
            offset=offset,
            centres=np.where(present, centres, np.nan),
            centres_t=np.ascontiguousarray(shifted.T, dtype=np.float32),
            score_aug=np.ascontiguousarray(score_aug, dtype=np.float32),
            dist_aug=np.ascontiguousarray(dist_aug, dtype=np.float32),
            centre_mask_t=np.ascontiguousarray(present.T, dtype=np.float32),
            centre_sq_t=np.ascontiguousarray((shifted * shifted).T, dtype=np.float32),
            radius2=radius2,
            inv_2r2=(0.5 / radius2).astype(np.float32),
            bias=bias.astype(np.float32),
            count=rc._count.copy(),
            class_count=rc._class_count.copy(),
            label_mix=rc._class_count / np.maximum(n_labelled, 1e-12)[:, None],
            labelled=(n_labelled > 0).astype(np.float64),
            complete=complete,
            index=index,
        )


def _block_rows(n_clusters: int) -> int:
    return int(min(4096, max(64, SCORE_BLOCK_ENTRIES // max(n_clusters, 1))))


def _shrunk_radius2(
    n: np.ndarray, dim_n: np.ndarray, linear: np.ndarray, squares: np.ndarray, prior2: float
) -> np.ndarray:
    """Squared radius (sum over coordinates of the member variance), shrunk towards ``prior2``.

    Shrinkage with :data:`RADIUS_PRIOR_COUNT` pseudo-members gives singletons the absorption radius
    instead of 0 and keeps tiny clusters from claiming an implausibly tight (dense) support.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.maximum(dim_n, 1)
        var = np.where(dim_n > 0, squares / safe - (linear / safe) ** 2, 0.0)
    var = np.maximum(var, 0.0)
    present = (dim_n > 0).sum(axis=1)
    # Rescale to all coordinates when some were never seen, like distances.
    total = var.sum(axis=1) * np.where(present > 0, dim_n.shape[1] / np.maximum(present, 1), 1.0)
    n = np.maximum(n, 0.0)
    return (n * total + RADIUS_PRIOR_COUNT * prior2) / (n + RADIUS_PRIOR_COUNT)


def _masked_sq_distances(A0: np.ndarray, a_present: np.ndarray, B0: np.ndarray, b_present: np.ndarray) -> np.ndarray:
    """Squared distances over the coordinates present in both, rescaled to all coordinates (float64).

    Used by learning, where float64 keeps merge decisions exact; scoring has its own float32 path.
    """
    dim = A0.shape[1]
    if a_present.all() and b_present.all():
        d2 = (A0 * A0).sum(axis=1)[:, None] - 2.0 * (A0 @ B0.T) + (B0 * B0).sum(axis=1)[None, :]
        return np.maximum(d2, 0.0)
    am = a_present.astype(np.float64)
    bm = b_present.astype(np.float64)
    d2 = (A0 * A0) @ bm.T - 2.0 * (A0 @ B0.T) + am @ (B0 * B0).T
    overlap = am @ bm.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap > 0, np.maximum(d2, 0.0) * (dim / overlap), np.inf)


def _auto_radius(F: np.ndarray) -> float:
    if F.shape[0] < 2:
        return 1.0
    present = ~np.isnan(F)
    d2 = _masked_sq_distances(np.where(present, F, 0.0), present, np.where(present, F, 0.0), present)
    np.fill_diagonal(d2, np.inf)
    nn = np.sqrt(d2.min(axis=1))
    nn = nn[np.isfinite(nn) & (nn > 0)]
    return float(np.quantile(nn, AUTO_RADIUS_QUANTILE)) if nn.size else 1.0


def _stringify_ints(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stringify_ints(v) for k, v in value.items()}
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    return {"__int__": str(value)}


def _destringify_ints(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__int__"}:
            return int(value["__int__"])
        return {k: _destringify_ints(v) for k, v in value.items()}
    return value
