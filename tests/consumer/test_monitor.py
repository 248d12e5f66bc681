"""Monitor.decide: out-of-distribution and uncertain frames are flagged, each with its reason."""

from __future__ import annotations

import numpy as np
import pytest

from consumer.clustering import ReferenceClusters
from consumer.drift import DriftMonitor
from consumer.monitor import Monitor
from edgeloop.model import TrainingConfig, train_model
from edgeloop.synthetic import generate_poses


@pytest.fixture(scope="module")
def monitor() -> Monitor:
    poses = generate_poses(800, seed=1, classes=["standing", "squatting", "pushup", "plank"], missing_rate=0.0)
    reference = ReferenceClusters(mode="pose", flag_on="density", threshold_quantile=0.99).learn(
        poses["kps"], labels=poses["gt"]
    )
    model = train_model(poses["kps"], poses["gt"], config=TrainingConfig(features="pose", seed=0, epochs=5))
    return Monitor(reference, model, 0, DriftMonitor(reference, window_size=100), uncertainty_band=0.3)


def test_flags_are_the_union_of_ood_and_uncertain(monitor: Monitor) -> None:
    kps = generate_poses(400, seed=2, missing_rate=0.0)["kps"]  # all six classes: some are foreign
    d = monitor.decide(kps)
    assert np.array_equal(d.flagged, d.is_ood | (np.abs(d.probability - 0.5) < 0.3))
    assert np.array_equal(d.prediction, (d.probability > 0.5).astype(np.int64))
    assert d.is_ood.any() and d.flagged.sum() >= d.is_ood.sum()
    kps_before = kps.copy()
    reasons = {why.row: monitor.reason(why, d) for why in monitor.explain(kps, d)}
    assert sorted(reasons) == np.flatnonzero(d.flagged).tolist()
    for row, reason in reasons.items():
        assert ("out of distribution" in reason) == bool(d.is_ood[row])
        assert ("uncertain prediction" in reason) == bool(d.uncertain[row])
    assert np.array_equal(kps, kps_before)


def test_a_zero_band_flags_only_out_of_distribution_frames(monitor: Monitor) -> None:
    strict = Monitor(monitor.reference, monitor.model, 0, monitor.drift, uncertainty_band=0.0)
    d = strict.decide(generate_poses(300, seed=3, missing_rate=0.0)["kps"])
    assert not d.uncertain.any() and np.array_equal(d.flagged, d.is_ood)


def test_an_empty_batch_decides_nothing(monitor: Monitor) -> None:
    d = monitor.decide(np.empty((0, 34)))
    assert len(d) == 0 and d.flagged.shape == (0,) and d.prediction.shape == (0,)


def test_the_pose_features_are_computed_once_and_give_the_same_decisions(monitor: Monitor) -> None:
    # With a numpy-served pose model, decide() hands the clustering's pose features to the model.
    from edgeloop.serving import ServingModel

    served = ServingModel({k: v.numpy() for k, v in monitor.model.state_dict().items()}, "pose")
    shared = Monitor(monitor.reference, served, 0, DriftMonitor(monitor.reference, window_size=100), 0.3)
    kps = generate_poses(300, seed=5, missing_rate=0.05)["kps"]
    d = shared.decide(kps)
    np.testing.assert_allclose(d.probability, served.predict_proba(kps), rtol=0, atol=1e-12)
    np.testing.assert_allclose(d.probability, monitor.model.predict_proba(kps), atol=1e-4)
    assert d.features is not None and np.array_equal(d.features, monitor.reference.features(kps), equal_nan=True)
    assert np.array_equal(d.score, monitor.reference.score(kps).score, equal_nan=True)
