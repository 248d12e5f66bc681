"""Per-batch decisions, without Kafka: score against the reference, predict, track drift.

:class:`Monitor` is what the Kafka loop calls once per batch. It owns the reference micro-clustering,
the model serving predictions (and its version), and the drift monitor; a model swap replaces the model
and absorbs the new version's added training data into the reference, so the region the edge cases came
from stops being flagged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from consumer.clustering import ReferenceClusters
from consumer.drift import DriftMonitor, WindowReport
from edgeloop.frames import KEYPOINT_NAMES
from edgeloop.model import OrientationModel

log = logging.getLogger(__name__)


@dataclass
class BatchDecisions:
    """One decision per frame of the batch (arrays of equal length)."""

    score: np.ndarray
    is_ood: np.ndarray
    nearest: np.ndarray
    prediction: np.ndarray
    model_version: int
    windows: list[WindowReport]
    scoring_s: float

    def __len__(self) -> int:
        return len(self.score)


class Monitor:
    def __init__(
        self, reference: ReferenceClusters, model: OrientationModel, model_version: int, drift: DriftMonitor
    ) -> None:
        self.reference = reference
        self.model = model
        self.model_version = model_version
        self.drift = drift

    def decide(self, kps: np.ndarray) -> BatchDecisions:
        started = time.perf_counter()
        result = self.reference.score(kps)
        scoring_s = time.perf_counter() - started
        prediction = self.model.predict(kps) if len(kps) else np.empty(0, dtype=np.int64)
        windows = self.drift.update(result.nearest, result.is_ood)
        return BatchDecisions(
            score=result.score,
            is_ood=result.is_ood,
            nearest=result.nearest,
            prediction=prediction,
            model_version=self.model_version,
            windows=windows,
            scoring_s=scoring_s,
        )

    def explain(self, kps: np.ndarray, rows: np.ndarray, top: int = 3) -> list[list[str]]:
        """Names of the keypoints that deviate most from the nearest micro-cluster, per flagged row."""
        deviations = self.reference.keypoint_deviation(kps[rows])  # (m, 17), NaN where missing
        order = np.argsort(-np.nan_to_num(deviations, nan=-np.inf), axis=1)[:, :top]
        return [[KEYPOINT_NAMES[k] for k in row] for row in order]

    def swap_model(self, model: OrientationModel, version: int, additions: np.ndarray | None) -> None:
        """Serve ``model`` from now on and absorb its added training data into the reference."""
        if additions is not None and len(additions):
            self.reference.absorb(additions)
        log.info(
            "model version %d -> %d; reference absorbed %d points (%d micro-clusters)",
            self.model_version,
            version,
            0 if additions is None else len(additions),
            self.reference.n_clusters,
        )
        self.model = model
        self.model_version = version
