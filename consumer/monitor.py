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

from consumer.clustering import Explanation, ReferenceClusters, ScoreResult
from consumer.drift import DriftMonitor, WindowReport
from edgeloop.model import OrientationModel
from edgeloop.registry import TrainingAdditions

log = logging.getLogger(__name__)


@dataclass
class BatchDecisions:
    """One decision per frame of the batch (arrays of equal length)."""

    result: ScoreResult
    prediction: np.ndarray
    model_version: int
    windows: list[WindowReport]
    scoring_s: float

    @property
    def score(self) -> np.ndarray:
        return self.result.score

    @property
    def is_ood(self) -> np.ndarray:
        return self.result.is_ood

    @property
    def nearest(self) -> np.ndarray:
        return self.result.nearest

    def __len__(self) -> int:
        return len(self.result)


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
            result=result,
            prediction=prediction,
            model_version=self.model_version,
            windows=windows,
            scoring_s=scoring_s,
        )

    def explain(self, kps: np.ndarray, decisions: BatchDecisions) -> list[Explanation]:
        """Why each flagged frame of the batch was flagged (nearest micro-cluster, deviating keypoints)."""
        return self.reference.explain(kps, decisions.result)

    def swap_model(self, model: OrientationModel, version: int, additions: TrainingAdditions | None) -> None:
        """Serve ``model`` from now on and absorb its added training data into the reference."""
        if additions is not None and len(additions):
            self.reference.learn(additions.kps, labels=additions.gt)
            self.drift.set_reference(self.reference.shares, self.reference.centres)
        log.info(
            "model version %d -> %d; reference absorbed %d points (%d micro-clusters)",
            self.model_version,
            version,
            0 if additions is None else len(additions),
            self.reference.n_clusters,
        )
        self.model = model
        self.model_version = version
