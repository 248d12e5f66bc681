"""Drift statistics: PSI, EMD approximations, windows, and the ADWIN alarm on the OOD rate."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from consumer.clustering import ReferenceClusters
from consumer.drift import DriftError, DriftMonitor, earth_movers_distance, greedy_emd, projected_emd, psi


@pytest.fixture()
def reference() -> ReferenceClusters:
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (400, 4)), rng.normal(10, 1, (400, 4))])
    return ReferenceClusters(mode="none", flag_on="density", max_clusters=20, seed=0).learn(X)


def _two_modes(rng: np.random.Generator, n: int) -> np.ndarray:
    X = np.concatenate([rng.normal(0, 1, (n // 2, 4)), rng.normal(10, 1, (n - n // 2, 4))])
    return X[rng.permutation(n)]


# --------------------------------------------------------------------------- statistics
def test_psi_is_near_zero_on_the_same_distribution_and_large_on_a_shifted_one() -> None:
    q = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(q * 1000, q) < 1e-9
    assert 0.0 < psi(np.array([260, 240, 250, 250]), q) < 0.01
    assert psi(np.array([1000, 0, 0, 0]), q) > 1.0
    # Smoothing keeps an empty bin finite, and a smaller epsilon makes it cost more.
    assert np.isfinite(psi(np.array([1, 0]), np.array([0, 1]), epsilon=1e-6))
    assert psi(np.array([1, 0]), np.array([0.5, 0.5]), 1e-6) > psi(np.array([1, 0]), np.array([0.5, 0.5]), 1e-2)


def test_greedy_emd_moves_mass_to_the_nearest_deficit() -> None:
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    q = np.array([0.5, 0.5, 0.0])
    assert greedy_emd(q * 10, q, centres) == pytest.approx(0.0)
    assert greedy_emd(np.array([0.0, 1.0, 0.0]), q, centres) == pytest.approx(0.5)  # half moves 1 unit
    assert greedy_emd(np.array([0.0, 0.0, 1.0]), q, centres) == pytest.approx(0.5 * 10 + 0.5 * 9)


def test_projected_emd_is_exact_in_one_dimension_and_a_lower_bound_otherwise() -> None:
    line = np.array([[0.0], [1.0], [3.0]])
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
    # Exact 1-D EMD: the CDFs differ by 0.5 over [0, 1] and over [1, 3].
    assert projected_emd(p, q, line) == pytest.approx(0.5 * 1 + 0.5 * 2)
    assert greedy_emd(p, q, line) == pytest.approx(projected_emd(p, q, line))
    rng = np.random.default_rng(1)
    for _ in range(20):
        centres = rng.normal(size=(12, 3))
        a, b = rng.random(12), rng.random(12)
        assert projected_emd(a, b, centres) <= greedy_emd(a, b, centres) + 1e-12
    with pytest.raises(DriftError, match="EMD method"):
        earth_movers_distance(a, b, centres, "exact")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- windows
def test_windows_report_psi_emd_and_rate(reference: ReferenceClusters) -> None:
    monitor = DriftMonitor(reference, window_size=200)
    rng = np.random.default_rng(1)
    same = reference.score(_two_modes(rng, 400))
    reports = monitor.update(same.nearest, same.is_ood)
    assert [r.frames for r in reports] == [200, 200] and [r.first_frame for r in reports] == [0, 200]
    shifted = reference.score(rng.normal(0, 1, (200, 4)))  # only one of the two modes
    (report,) = monitor.update(shifted.nearest, shifted.is_ood)
    assert report.psi > 5 * max(r.psi for r in reports) and report.psi_drift
    assert report.emd > 5 * max(r.emd for r in reports)
    assert not any(r.psi_drift for r in reports)
    assert report.counts.sum() == 200 and report.index == 2
    assert report.ood_rate == pytest.approx(shifted.is_ood.mean())


def test_windows_span_batches(reference: ReferenceClusters) -> None:
    monitor = DriftMonitor(reference, window_size=200)
    rng = np.random.default_rng(2)
    sizes = [150, 150, 90, 10, 0, 450]
    closed = []
    for n in sizes:
        result = reference.score(_two_modes(rng, n)) if n else reference.score(np.zeros((0, 4)))
        closed += monitor.update(result.nearest, result.is_ood)
    assert [r.frames for r in closed] == [200, 200, 200, 200] and monitor.frames_seen == 850
    partial = monitor.flush()
    assert partial is not None and partial.frames == 50 and monitor.flush() is None


def test_time_based_windows(reference: ReferenceClusters) -> None:
    monitor = DriftMonitor(reference, window_seconds=10.0)
    rng = np.random.default_rng(3)
    result = reference.score(_two_modes(rng, 300))
    ts = 1_000_000.0 + np.arange(300) * 100.0  # 10 frames per second
    reports = monitor.update(result.nearest[:130], result.is_ood[:130], ts=ts[:130])
    reports += monitor.update(result.nearest[130:], result.is_ood[130:], ts=ts[130:])
    assert [r.frames for r in reports] == [100, 100]
    assert reports[0].start_ts == ts[0] and reports[0].end_ts == ts[99] and reports[1].start_ts == ts[100]
    with pytest.raises(DriftError, match="timestamps"):
        monitor.update(result.nearest, result.is_ood)


def test_monitor_follows_the_reference_when_it_absorbs_data(reference: ReferenceClusters) -> None:
    monitor = DriftMonitor(reference, window_size=100)
    rng = np.random.default_rng(4)
    before = reference.score(_two_modes(rng, 50))
    assert monitor.update(before.nearest, before.is_ood) == []
    reference.absorb(rng.normal(-20, 1, (300, 4)))  # a new region: new micro-clusters, new indices
    after = reference.score(rng.normal(-20, 1, (100, 4)))
    (report,) = monitor.update(after.nearest, after.is_ood)
    # The half window scored against the old reference was dropped; the new one sees the new shares.
    assert report.frames == 100 and report.counts.shape == (reference.n_clusters,)
    assert report.ood_rate < 0.1


def test_bad_input_says_what_is_wrong(reference: ReferenceClusters) -> None:
    monitor = DriftMonitor(reference, window_size=10)
    with pytest.raises(DriftError, match="differ in length"):
        monitor.update(np.zeros(3, dtype=np.int64), np.zeros(2, dtype=bool))
    with pytest.raises(DriftError, match="out of range"):
        monitor.update(np.array([reference.n_clusters]), np.array([False]))
    with pytest.raises(DriftError, match="centres"):
        DriftMonitor(np.array([0.5, 0.5]), centres=np.zeros((3, 2)))
    with pytest.raises(DriftError, match="ReferenceClusters"):
        DriftMonitor(np.array([0.5, 0.5]))
    with pytest.raises(DriftError, match="window_size"):
        DriftMonitor(reference, window_size=0)


# --------------------------------------------------------------------------- ADWIN alarm
def test_adwin_alarm_starts_on_a_step_in_ood_rate_and_ends_when_it_falls(
    reference: ReferenceClusters, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = DriftMonitor(reference, window_size=1000)
    rng = np.random.default_rng(2)
    nearest = np.zeros(20_000, dtype=np.int64)
    with caplog.at_level(logging.WARNING, logger="consumer.drift"):
        calm = monitor.update(nearest, rng.random(20_000) < 0.005)
        assert not any(r.alarm or r.alarm_started for r in calm)
        storm = monitor.update(nearest, rng.random(20_000) < 0.4)
        started = [r.index for r in storm if r.alarm_started]
        # Detected within the first two windows of the step, and on until the rate falls.
        assert started and started[0] <= 21 and storm[-1].alarm and monitor.alarm
        after = monitor.update(np.zeros(40_000, dtype=np.int64), rng.random(40_000) < 0.005)
        ended = [r.index for r in after if r.alarm_ended]
        assert ended and ended[0] <= 42 and not after[-1].alarm and not monitor.alarm
    assert "drift alarm started" in caplog.text and "drift alarm ended" in caplog.text
    assert monitor.ood_rate_estimate < 0.05


def test_a_stationary_stream_raises_no_alarm(reference: ReferenceClusters) -> None:
    for seed in range(3):
        monitor = DriftMonitor(reference, window_size=1000)
        rng = np.random.default_rng(10 + seed)
        reports = monitor.update(np.zeros(60_000, dtype=np.int64), rng.random(60_000) < 0.05)
        assert len(reports) == 60 and not any(r.alarm or r.alarm_started for r in reports)


def test_a_fall_in_ood_rate_alone_raises_no_alarm(reference: ReferenceClusters) -> None:
    monitor = DriftMonitor(reference, window_size=1000)
    rng = np.random.default_rng(5)
    monitor.update(np.zeros(20_000, dtype=np.int64), rng.random(20_000) < 0.3)
    reports = monitor.update(np.zeros(20_000, dtype=np.int64), rng.random(20_000) < 0.01)
    assert not any(r.alarm_started for r in reports) and not monitor.alarm


def test_small_batches_feed_adwin_like_one_big_batch(reference: ReferenceClusters) -> None:
    rng = np.random.default_rng(6)
    flags = np.concatenate([rng.random(5000) < 0.01, rng.random(5000) < 0.5])
    nearest = np.zeros(flags.size, dtype=np.int64)
    whole = DriftMonitor(reference, window_size=500)
    pieces = DriftMonitor(reference, window_size=500)
    a = whole.update(nearest, flags)
    b = [r for i in range(0, flags.size, 37) for r in pieces.update(nearest[i : i + 37], flags[i : i + 37])]
    assert [r.as_dict() for r in a] == [r.as_dict() for r in b]
    assert any(r.alarm_started for r in a)


def _greedy_reference(p: np.ndarray, q: np.ndarray, centres: np.ndarray) -> float:
    """The greedy plan written plainly: each surplus, in index order, fills its nearest deficits."""
    p, q = p / p.sum(), q / q.sum()
    need = np.maximum(p - q, 0.0)
    cost = 0.0
    for i in np.flatnonzero(q - p > 1e-15):
        mass = q[i] - p[i]
        for j in np.argsort(np.linalg.norm(centres - centres[i], axis=1), kind="stable"):
            if need[j] <= 1e-15:
                continue
            moved = min(mass, need[j])
            need[j] -= moved
            mass -= moved
            cost += moved * float(np.linalg.norm(centres[i] - centres[j]))
            if mass <= 0.0:
                break
    return cost


@pytest.mark.parametrize("clusters", [5, 40, 300])
def test_greedy_emd_is_the_plain_greedy_plan(clusters: int) -> None:
    # The implementation sorts only the 16 nearest deficits of each surplus and walks further when
    # they are full; the plan, and so the cost, is the plain one.
    rng = np.random.default_rng(clusters)
    for _ in range(5):
        centres = rng.normal(size=(clusters, 6))
        p = rng.random(clusters)
        q = rng.random(clusters) * (rng.random(clusters) < 0.3)  # many empty bins: deficits run out
        q[0] += 1.0
        assert greedy_emd(p, q, centres) == pytest.approx(_greedy_reference(p, q, centres), rel=1e-9, abs=1e-12)
