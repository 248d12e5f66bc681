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
from typing import TYPE_CHECKING

import numpy as np

from consumer.clustering import Explanation, ReferenceClusters, ScoreResult
from consumer.drift import DriftMonitor, WindowReport
from edgeloop.registry import TrainingAdditions
from edgeloop.serving import ServingModel

if TYPE_CHECKING:
    from edgeloop.model import OrientationModel

log = logging.getLogger(__name__)


@dataclass
class BatchDecisions:
    """One decision per frame of the batch (arrays of equal length)."""

    result: ScoreResult
    probability: np.ndarray  # the model's p(horizontal body)
    prediction: np.ndarray
    uncertain: np.ndarray  # the prediction is within the uncertainty band of 0.5
    flagged: np.ndarray  # edge case: out of distribution or uncertain
    model_version: int
    windows: list[WindowReport]
    scoring_s: float
    features: np.ndarray | None = None  # the reference clustering's features of the batch

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
    """Decides batches of frames.

    A frame is flagged as an edge case when the reference clustering finds it out of distribution, or
    when the serving model is unsure of it: ``|p - 0.5| < uncertainty_band`` (0 switches that off). The
    second reason catches the frames that look familiar as a whole but sit where the model's decision
    is close; on the orientation pack it is what makes the flags point at the model's errors (see the
    README's detection-quality section).
    """

    def __init__(
        self,
        reference: ReferenceClusters,
        model: ServingModel | OrientationModel,
        model_version: int,
        drift: DriftMonitor,
        uncertainty_band: float = 0.0,
    ) -> None:
        self.reference = reference
        self.model = model
        self.model_version = model_version
        self.drift = drift
        self.uncertainty_band = float(uncertainty_band)

    def decide(self, kps: np.ndarray) -> BatchDecisions:
        started = time.perf_counter()
        features = self.reference.features(kps)
        result = self.reference.score(kps, features=features)
        scoring_s = time.perf_counter() - started
        if not len(kps):
            probability = np.empty(0, dtype=np.float64)
        elif isinstance(self.model, ServingModel) and self.model.features == "pose" == self.reference.mode:
            # The same pose features feed the model: computed once.
            probability = self.model.predict_proba(kps, pose=features)
        else:
            probability = self.model.predict_proba(kps)
        prediction = (probability > 0.5).astype(np.int64)
        uncertain = np.abs(probability - 0.5) < self.uncertainty_band
        windows = self.drift.update(result.nearest, result.is_ood)
        return BatchDecisions(
            result=result,
            probability=probability,
            prediction=prediction,
            uncertain=uncertain,
            flagged=result.is_ood | uncertain,
            model_version=self.model_version,
            windows=windows,
            scoring_s=scoring_s,
            features=features,
        )

    def explain(self, kps: np.ndarray, decisions: BatchDecisions) -> list[Explanation]:
        """Nearest micro-cluster and most deviating keypoints of each flagged frame of the batch."""
        rows = np.flatnonzero(decisions.flagged).tolist()
        return self.reference.explain(kps, decisions.result, rows=rows, features=decisions.features)

    def reason(self, why: Explanation, decisions: BatchDecisions) -> str:
        """One line saying why a frame was flagged."""
        row = why.row
        return self.describe(
            why,
            bool(decisions.is_ood[row]),
            bool(decisions.uncertain[row]),
            float(decisions.probability[row]),
            decisions.model_version,
        )

    def describe(
        self, why: Explanation, out_of_distribution: bool, uncertain: bool, probability: float, model_version: int
    ) -> str:
        """:meth:`reason` from plain values (the service converts a batch's arrays once, not per frame)."""
        parts = []
        if out_of_distribution:
            parts.append(f"out of distribution: {why.reason}")
        if uncertain:
            parts.append(
                f"uncertain prediction: p(horizontal) = {probability:.2f}, within "
                f"{self.uncertainty_band:.2f} of 0.5 (model version {model_version})"
            )
        return "; ".join(parts)

    def swap_model(
        self, model: ServingModel | OrientationModel, version: int, additions: TrainingAdditions | None
    ) -> None:
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
