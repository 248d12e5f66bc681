"""Near-duplicate filtering: consecutive video frames that barely differ must not eat the label budget.

A camera at 30 frames/s sends dozens of almost identical poses per second. When a whole block of them
is out of distribution, collecting every one (as the original tool did: 208 consecutive frames of one
yoga block) spends the annotation budget on one region of pose space. :class:`NearDuplicateFilter`
keeps a candidate only when its pose features are farther than ``radius`` from every frame already
collected (globally, or within the same sequence), and optionally caps how many frames one sequence
may contribute, so the collected set spreads over the distinct novel regions.

Distances are NaN-aware (missing keypoints are NaN in :func:`edgeloop.features.featurise`): the
root-mean-square difference over the coordinates present in *both* frames. All pairwise distances
of a batch come from three matrix products (see :func:`masked_rms_distances`), never a Python loop
over pairs.

Examples
--------
>>> import numpy as np
>>> f = NearDuplicateFilter(radius=0.1, scope="global")
>>> feats = np.array([[0.0] * 34, [0.01] * 34, [1.0] * 34])
>>> decision = f.select(feats, [None, None, None])
>>> decision.accepted.tolist(), decision.reasons.tolist()
([True, False, True], ['', 'near', ''])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from edgeloop.frames import N_COORDS
from retrainer.errors import RetrainerError

__all__ = ["NearDuplicateDecision", "NearDuplicateFilter", "Scope", "masked_rms_distances"]

Scope = Literal["global", "sequence"]
SCOPES: tuple[str, ...] = get_args(Scope)
# Rows of already-collected features compared per matrix product: bounds memory to chunk × batch floats.
_CHUNK_ROWS = 4096


def masked_rms_distances(a: np.ndarray, b: np.ndarray, min_shared: int = 12) -> np.ndarray:
    """Root-mean-square distance between every row of ``a`` and every row of ``b``, ignoring NaN.

    Only coordinates present (not NaN) in both rows count. Pairs sharing fewer than ``min_shared``
    coordinates are not comparable and get ``inf`` (never a near duplicate).

    Uses ``Σ m_a m_b (a - b)² = (m_a a²)·m_b + m_a·(m_b b²) - 2 (m_a a)·(m_b b)`` with presence masks
    ``m``: three BLAS matrix products instead of an ``(n, m, 34)`` broadcast.

    Parameters
    ----------
    a, b
        ``(n, d)`` and ``(m, d)`` float arrays, NaN where a coordinate is missing.
    min_shared
        Fewest coordinates present in both rows for the distance to be defined.

    Returns
    -------
    numpy.ndarray
        ``(n, m)`` float64.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[0.0, 0.0, np.nan, 1.0]])
    >>> b = np.array([[3.0, 4.0, 7.0, 1.0]])
    >>> masked_rms_distances(a, b, min_shared=2).round(4).tolist()  # sqrt((9 + 16 + 0) / 3)
    [[2.8868]]
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise RetrainerError(f"feature arrays must be (n, d) and (m, d), got {a.shape} and {b.shape}")
    mask_a = (~np.isnan(a)).astype(np.float64)
    mask_b = (~np.isnan(b)).astype(np.float64)
    a0 = np.nan_to_num(a, nan=0.0)
    b0 = np.nan_to_num(b, nan=0.0)
    squared = (a0 * a0) @ mask_b.T + mask_a @ (b0 * b0).T - 2.0 * (a0 @ b0.T)
    shared = mask_a @ mask_b.T
    with np.errstate(invalid="ignore", divide="ignore"):
        # Cancellation can leave tiny negatives where two rows are equal.
        distances = np.sqrt(np.maximum(squared, 0.0) / shared)
    return np.where(shared >= min_shared, distances, np.inf)


@dataclass(frozen=True)
class NearDuplicateDecision:
    """The verdict on a batch of candidates, row for row.

    ``reasons`` is ``""`` for an accepted row, ``"near"`` for a near duplicate of a collected (or an
    earlier accepted) frame, ``"cap"`` when its sequence already gave ``per_sequence_cap`` frames.
    ``nearest`` is the distance to the closest collected or earlier-accepted comparable frame.
    """

    accepted: np.ndarray
    reasons: np.ndarray
    nearest: np.ndarray


class NearDuplicateFilter:
    """Keeps a frame only if it is farther than ``radius`` from every frame already collected.

    Parameters
    ----------
    radius
        RMS distance in feature units (pose features: fractions of the body's bounding box) at or
        below which a frame is a near duplicate. On the real orientation pack consecutive frames of one
        video are a median 0.007 apart (a quarter over 0.015) and random pairs of frames 0.36 (5 %
        closer than 0.07). The default 0.01 drops a video's held poses and slow stretches: of the
        1,138 frames one consumer run flagged (17 push-up videos) it keeps 296, and the first 200 kept
        come from 14 videos instead of 5; 0.05 kept only 44 there, too few to ever reach a threshold
        of 200. ``0`` drops exact copies only.
    scope
        ``"global"``: compare with every collected frame (the same pose filmed in two sequences is
        one region); ``"sequence"``: only with frames of the same sequence.
    per_sequence_cap
        Most frames one sequence may contribute (0 = no cap). Frames without a sequence are never
        capped.
    min_shared_coords
        Fewest coordinates present in both frames for them to be compared at all.
    """

    def __init__(
        self,
        radius: float = 0.01,
        scope: Scope = "global",
        per_sequence_cap: int = 0,
        min_shared_coords: int = 12,
    ) -> None:
        if not radius >= 0:
            raise RetrainerError(f"near-duplicate radius must be >= 0, got {radius}")
        if scope not in SCOPES:
            raise RetrainerError(f"near-duplicate scope must be one of {SCOPES}, got {scope!r}")
        if per_sequence_cap < 0:
            raise RetrainerError(f"per-sequence cap must be >= 0 (0 = no cap), got {per_sequence_cap}")
        self.radius = float(radius)
        self.scope: Scope = scope
        self.per_sequence_cap = int(per_sequence_cap)
        self.min_shared_coords = int(min_shared_coords)
        self._features = np.empty((0, N_COORDS), dtype=np.float64)
        self._size = 0
        self._sequences: list[str | None] = []
        self._sequence_codes = np.empty(0, dtype=np.int64)
        self._codes: dict[str | None, int] = {None: -1}
        self.per_sequence: Counter[str] = Counter()

    def __len__(self) -> int:
        return self._size

    def _code(self, sequence: str | None) -> int:
        code = self._codes.get(sequence)
        if code is None:
            code = self._codes[sequence] = len(self._codes) - 1
        return code

    def add(self, features: np.ndarray, sequences: Sequence[str | None]) -> None:
        """Record collected frames (after they were written durably, or when restoring the buffer)."""
        features = np.asarray(features, dtype=np.float64).reshape(-1, N_COORDS)
        if len(sequences) != features.shape[0]:
            raise RetrainerError(f"{features.shape[0]} feature rows but {len(sequences)} sequences")
        n = features.shape[0]
        if self._size + n > self._features.shape[0]:
            # Amortised doubling: collected sets grow by a batch at a time.
            capacity = max(2 * self._features.shape[0], self._size + n, 256)
            grown = np.empty((capacity, N_COORDS), dtype=np.float64)
            grown[: self._size] = self._features[: self._size]
            self._features = grown
        self._features[self._size : self._size + n] = features
        self._size += n
        self._sequences.extend(sequences)
        codes = np.fromiter((self._code(s) for s in sequences), dtype=np.int64, count=n)
        self._sequence_codes = np.concatenate([self._sequence_codes, codes])
        self.per_sequence.update(s for s in sequences if s is not None)

    def select(self, features: np.ndarray, sequences: Sequence[str | None]) -> NearDuplicateDecision:
        """Which candidates to collect; does not change the filter (call :meth:`add` for those kept).

        Candidates are judged in order: each against the collected frames and the candidates accepted
        before it in the same batch, exactly as if they had arrived one by one.
        """
        candidates = np.asarray(features, dtype=np.float64).reshape(-1, N_COORDS)
        n = candidates.shape[0]
        if len(sequences) != n:
            raise RetrainerError(f"{n} feature rows but {len(sequences)} sequences")
        accepted = np.zeros(n, dtype=bool)
        reasons = np.full(n, "", dtype=object)
        nearest = np.full(n, np.inf)
        if n == 0:
            return NearDuplicateDecision(accepted, reasons.astype(str), nearest)
        known = dict(self._codes)
        codes = np.fromiter((known.setdefault(s, len(known) - 1) for s in sequences), dtype=np.int64, count=n)
        same_scope = self.scope == "sequence"

        # Against the collected set, chunk by chunk (bounded memory), vectorised over the batch.
        for start in range(0, self._size, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, self._size)
            d = masked_rms_distances(candidates, self._features[start:stop], self.min_shared_coords)
            if same_scope:
                d = np.where(codes[:, None] == self._sequence_codes[None, start:stop], d, np.inf)
            nearest = np.minimum(nearest, d.min(axis=1))

        # Within the batch: a candidate is also judged against those accepted before it.
        within = masked_rms_distances(candidates, candidates, self.min_shared_coords)
        if same_scope:
            within = np.where(codes[:, None] == codes[None, :], within, np.inf)
        counts = Counter(self.per_sequence)
        kept: list[int] = []
        for i in range(n):
            closest = float(nearest[i])
            if kept:
                closest = min(closest, float(within[i, kept].min()))
            nearest[i] = closest
            sequence = sequences[i]
            if closest <= self.radius:
                reasons[i] = "near"
            elif self.per_sequence_cap and sequence is not None and counts[sequence] >= self.per_sequence_cap:
                reasons[i] = "cap"
            else:
                accepted[i] = True
                kept.append(i)
                if sequence is not None:
                    counts[sequence] += 1
        return NearDuplicateDecision(accepted, reasons.astype(str), nearest)
