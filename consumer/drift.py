"""Windowed drift statistics over the reference micro-clusters, and an OOD-rate alarm.

The consumer scores every frame against :class:`consumer.clustering.ReferenceClusters`; each frame lands
in a micro-cluster (``nearest``) and is flagged or not (``is_ood``). :class:`DriftMonitor` turns those two
arrays into statistics per window of frames (count-based by default, or time-based):

PSI (population stability index)
    ``sum_k (q_k - p_k) * ln(q_k / p_k)`` between the window's share of frames per micro-cluster ``q`` and
    the reference's share ``p``, both smoothed with ``epsilon`` so empty clusters stay finite. 0 for the
    same distribution; the usual reading is < 0.1 stable, 0.1-0.25 moderate, > 0.25 a major shift.
EMD (earth mover's distance between the two distributions over the micro-cluster centres)
    Ground distance = Euclidean distance between centres (feature units). An exact EMD is a linear
    programme; two numpy approximations are offered:

    ``"greedy"`` (default)
        each micro-cluster with surplus mass sends it to the nearest micro-clusters with a deficit, in
        order of distance (UpTrain 0.0.3's "earth-moving cost" with L2 instead of L1). The result is a
        feasible transport plan, so it is an *upper bound* of the exact EMD. O(K^2 log K) per window.
    ``"projected"``
        both distributions projected on the first principal axis of the centres, where the 1-D EMD is
        exact (the integral of the difference of the CDFs); projection is 1-Lipschitz, so this is a
        *lower bound* of the exact EMD. O(K log K).
OOD-rate alarm (river's ADWIN)
    ADWIN watches the OOD indicator stream for a change of its mean. Feeding it one value per frame would
    be one Python call per frame, so it is fed the OOD *rate* of consecutive chunks of ``adwin_chunk``
    frames (default 50): ADWIN compares means, and a chunk mean has the same mean as the frames it sums.
    ADWIN is checked after every chunk (``clock=1``). An alarm starts when ADWIN detects a rise of the
    rate; it ends once ADWIN has detected a fall and its estimate is back below half-way between the
    level the alarm rose from and the highest level seen since. Both transitions are logged.

Examples
--------
>>> import numpy as np
>>> monitor = DriftMonitor(np.array([0.5, 0.5]), centres=np.array([[0.0], [1.0]]), window_size=4)
>>> reports = monitor.update(np.array([0, 1, 0, 1, 0, 0, 0, 0]), np.zeros(8, dtype=bool))
>>> [round(r.psi, 3) for r in reports]
[0.0, 4.604]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from river import drift as river_drift

from edgeloop.errors import EdgeloopError

__all__ = ["DriftError", "DriftMonitor", "WindowReport", "earth_movers_distance", "greedy_emd", "psi"]

logger = logging.getLogger(__name__)

EmdMethod = Literal["greedy", "projected", "auto"]
# "auto": the greedy plan sorts a (surplus x deficit) distance matrix per window, which at 4,500
# micro-clusters cost ~45 µs per frame (measured here, 10x the scoring itself); above this many
# micro-clusters the projected EMD (O(K log K)) is used instead.
GREEDY_EMD_MAX_CLUSTERS = 500
# The greedy plan sorts only this many nearest deficits of each surplus micro-cluster (see _greedy_emd).
GREEDY_NEAREST = 16


class DriftError(EdgeloopError):
    """The drift monitor was configured or fed wrongly."""


def psi(reference: np.ndarray, observed: np.ndarray, epsilon: float = 1e-4) -> float:
    """Population stability index between two distributions over the same bins.

    Parameters
    ----------
    reference, observed
        Non-negative weights per bin (counts or shares; each is normalised here).
    epsilon
        Added to every share before renormalising, so an empty bin costs a large but finite amount.

    Examples
    --------
    >>> psi(np.array([1.0, 1.0]), np.array([5.0, 5.0]))
    0.0
    """
    p = _smoothed(reference, epsilon)
    q = _smoothed(observed, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def _smoothed(weights: np.ndarray, epsilon: float) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    share = w / total if total > 0 else np.full(w.shape, 1.0 / max(w.size, 1))
    return (share + epsilon) / (1.0 + epsilon * w.size)


def earth_movers_distance(
    reference: np.ndarray, observed: np.ndarray, centres: np.ndarray, method: EmdMethod = "greedy"
) -> float:
    """Approximate EMD between two distributions over the points ``centres`` (``(K, D)``).

    ``"greedy"`` is an upper bound of the exact value, ``"projected"`` a lower bound (module docstring).
    Both distributions are normalised to total mass 1, so the result is in feature units.
    """
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(observed, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    p = p / p.sum()
    q = q / q.sum()
    C = _fill_missing_coordinates(np.asarray(centres, dtype=np.float64))
    if method == "projected":
        return _projected_emd(p, q, C)
    if method == "greedy":
        return _greedy_emd(p, q, C)
    raise DriftError(f"unknown EMD method {method!r}; use 'greedy' or 'projected'")


def greedy_emd(reference: np.ndarray, observed: np.ndarray, centres: np.ndarray) -> float:
    """:func:`earth_movers_distance` with the greedy method (an upper bound of the exact EMD)."""
    return earth_movers_distance(reference, observed, centres, "greedy")


def projected_emd(reference: np.ndarray, observed: np.ndarray, centres: np.ndarray) -> float:
    """:func:`earth_movers_distance` with the 1-D projection (a lower bound of the exact EMD)."""
    return earth_movers_distance(reference, observed, centres, "projected")


def _fill_missing_coordinates(C: np.ndarray) -> np.ndarray:
    """A centre coordinate no member had (NaN) takes the mean of that coordinate over the others."""
    if not np.isnan(C).any():
        return C
    with np.errstate(invalid="ignore"):
        fill = np.nanmean(np.where(np.isnan(C).all(axis=0), 0.0, C), axis=0)
    return np.where(np.isnan(C), fill, C)


def _projected_emd(p: np.ndarray, q: np.ndarray, C: np.ndarray) -> float:
    order, gaps = _projection(p, C)
    return _projected_emd_on(p, q, order, gaps)


def _projection(p: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centres' order along the first principal axis of the ``p``-weighted centres, and the gaps
    between consecutive ones: all the projected EMD needs besides the two distributions."""
    centred = C - (p[:, None] * C).sum(axis=0)
    cov = (centred * p[:, None]).T @ centred
    _, vecs = np.linalg.eigh(cov)
    x = centred @ vecs[:, -1]
    order = np.argsort(x, kind="stable")
    return order, np.diff(x[order])


def _projected_emd_on(p: np.ndarray, q: np.ndarray, order: np.ndarray, gaps: np.ndarray) -> float:
    """1-D EMD along the projection: the integral of the difference of the two CDFs."""
    cdf_diff = np.cumsum(p[order] - q[order])[:-1]
    return float(np.sum(np.abs(cdf_diff) * gaps))


def _greedy_emd(p: np.ndarray, q: np.ndarray, C: np.ndarray) -> float:
    diff = q - p
    surplus = np.flatnonzero(diff > 1e-15)
    deficit = np.flatnonzero(diff < -1e-15)
    if surplus.size == 0 or deficit.size == 0:
        return 0.0
    Cs, Cd = C[surplus], C[deficit]
    dist = np.sqrt(np.maximum((Cs**2).sum(axis=1)[:, None] - 2.0 * Cs @ Cd.T + (Cd**2).sum(axis=1)[None, :], 0.0))
    # A surplus is almost always placed within its few nearest deficits: those are sorted for every row,
    # and a row whose nearest deficits are all full walks its whole sorted row instead.
    m = min(GREEDY_NEAREST, deficit.size)
    near = np.argpartition(dist, m - 1, axis=1)[:, :m] if m < deficit.size else np.tile(np.arange(m), (len(surplus), 1))
    near = np.take_along_axis(near, np.argsort(np.take_along_axis(dist, near, axis=1), axis=1, kind="stable"), axis=1)
    need = (-diff[deficit]).tolist()
    cost = 0.0
    # Scalar Python per placement: a surplus fills one to three deficits, and numpy calls on such short
    # slices cost more than the arithmetic.
    for row, (mass, targets) in enumerate(zip(diff[surplus].tolist(), near.tolist(), strict=True)):
        d = dist[row]
        for attempt in range(2):
            for t in targets:
                room = need[t]
                if room <= 0.0:
                    continue
                moved = mass if mass < room else room
                need[t] = room - moved
                cost += moved * float(d[t])
                mass -= moved
                if mass <= 0.0:
                    break
            if mass <= 0.0 or attempt:
                break
            targets = np.argsort(d, kind="stable").tolist()
    return cost


@dataclass(frozen=True)
class WindowReport:
    """Drift statistics of one closed window of frames.

    Attributes
    ----------
    index
        Window number since the monitor started (0-based).
    first_frame
        Position in the stream (frames seen before this window).
    frames
        Frames in the window.
    ood_rate
        Share of flagged frames in the window.
    psi, emd
        Population stability index and approximate EMD of the window against the reference.
    psi_drift, emd_drift
        Whether they exceed the configured thresholds (``emd_drift`` is False without a threshold).
    alarm
        The OOD-rate alarm state at the end of the window.
    alarm_started, alarm_ended
        Whether the alarm switched on or off during the window.
    counts
        Frames per micro-cluster in the window.
    start_ts, end_ts
        First and last timestamp (ms) when timestamps were given, else None.
    """

    index: int
    first_frame: int
    frames: int
    ood_rate: float
    psi: float
    emd: float
    psi_drift: bool
    emd_drift: bool
    alarm: bool
    alarm_started: bool
    alarm_ended: bool
    counts: np.ndarray = field(repr=False)
    start_ts: float | None = None
    end_ts: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (counts left out: they are per micro-cluster and large)."""
        return {
            "index": self.index,
            "first_frame": self.first_frame,
            "frames": self.frames,
            "ood_rate": self.ood_rate,
            "psi": self.psi,
            "emd": self.emd,
            "psi_drift": self.psi_drift,
            "emd_drift": self.emd_drift,
            "alarm": self.alarm,
            "alarm_started": self.alarm_started,
            "alarm_ended": self.alarm_ended,
            "start_ts": self.start_ts,
            "end_ts": self.end_ts,
        }


class DriftMonitor:
    """Per-window PSI and EMD against the reference micro-clusters, and an ADWIN alarm on the OOD rate.

    Parameters
    ----------
    reference
        The :class:`~consumer.clustering.ReferenceClusters` the frames are scored against: its
        ``shares`` are the reference distribution and its ``centres`` the EMD ground space. The monitor
        follows it: when its ``revision`` changes (it absorbed new training data) the open window is
        dropped and the new shares and centres are used. Or a ``(K,)`` array of shares, with ``centres``.
    centres
        ``(K, D)`` micro-cluster centres, only when ``reference`` is an array of shares.
    window_size
        Frames per window (count-based windows).
    window_seconds
        Time-based windows instead: a window closes at the first frame whose timestamp is this many
        seconds after the window's first frame (timestamps, in ms, must then be passed to :meth:`update`).
    psi_epsilon
        Smoothing of the PSI shares.
    psi_threshold, emd_threshold
        Window drift thresholds (``emd_threshold=None``: EMD is reported, never flagged).
    emd_method
        ``"greedy"`` (upper bound), ``"projected"`` (lower bound), or ``"auto"`` (default): greedy up to
        ``GREEDY_EMD_MAX_CLUSTERS`` micro-clusters, projected above.
    adwin_delta
        ADWIN's confidence parameter (smaller = fewer false alarms, slower detection).
    adwin_chunk
        Frames per OOD-rate value fed to ADWIN.
    """

    def __init__(
        self,
        reference: Any,
        centres: np.ndarray | None = None,
        *,
        window_size: int = 2000,
        window_seconds: float | None = None,
        psi_epsilon: float = 1e-4,
        psi_threshold: float = 0.25,
        emd_threshold: float | None = None,
        emd_method: EmdMethod = "auto",
        adwin_delta: float = 0.002,
        adwin_chunk: int = 50,
    ) -> None:
        if window_size < 1:
            raise DriftError(f"window_size must be at least 1 frame, got {window_size}")
        if window_seconds is not None and not window_seconds > 0:
            raise DriftError(f"window_seconds must be positive or None, got {window_seconds}")
        if emd_method not in ("greedy", "projected", "auto"):
            raise DriftError(f"unknown EMD method {emd_method!r}; use 'greedy', 'projected' or 'auto'")
        if adwin_chunk < 1:
            raise DriftError(f"adwin_chunk must be at least 1 frame, got {adwin_chunk}")
        if not 0 < adwin_delta < 1:
            raise DriftError(f"adwin_delta must be in (0, 1), got {adwin_delta}")
        self.window_size = int(window_size)
        self.window_seconds = None if window_seconds is None else float(window_seconds)
        self.psi_epsilon = float(psi_epsilon)
        self.psi_threshold = float(psi_threshold)
        self.emd_threshold = None if emd_threshold is None else float(emd_threshold)
        self.emd_method: EmdMethod = emd_method
        self.adwin_delta = float(adwin_delta)
        self.adwin_chunk = int(adwin_chunk)
        self._adwin = river_drift.ADWIN(delta=self.adwin_delta, clock=1)
        self._adwin_pending = np.zeros(0, dtype=bool)
        self._alarm = False
        self._alarm_from = 0.0  # OOD-rate level the alarm rose from
        self._alarm_to = 0.0  # highest level seen while on
        self._falling = False  # ADWIN detected a fall since the alarm started
        self._frames_seen = 0
        self._windows = 0
        self._clusters: Any = None
        self._revision: int | None = None
        if centres is None:
            if not all(hasattr(reference, a) for a in ("shares", "centres", "revision")):
                raise DriftError("DriftMonitor needs a ReferenceClusters, or reference shares together with centres=")
            self._clusters = reference
            self._follow_clusters()
        else:
            self.set_reference(reference, centres)

    def _follow_clusters(self) -> None:
        if self._clusters is not None and self._clusters.revision != self._revision:
            self.set_reference(self._clusters.shares, self._clusters.centres)
            self._revision = self._clusters.revision

    @property
    def alarm(self) -> bool:
        """Whether the OOD-rate alarm is on."""
        return self._alarm

    @property
    def ood_rate_estimate(self) -> float:
        """ADWIN's current estimate of the OOD rate (mean over its adaptive window)."""
        return float(self._adwin.estimation)

    @property
    def frames_seen(self) -> int:
        return self._frames_seen

    def _emd_method_now(self) -> Literal["greedy", "projected"]:
        if self.emd_method != "auto":
            return self.emd_method
        return "greedy" if len(self._shares) <= GREEDY_EMD_MAX_CLUSTERS else "projected"

    def set_reference(self, reference_shares: np.ndarray, centres: np.ndarray) -> None:
        """Replace the reference (after the clustering absorbed new data).

        The open window is dropped, since its micro-cluster indices belong to the old reference; the
        ADWIN state is kept, so a fall of the OOD rate under the new reference can end an alarm.
        """
        shares = np.asarray(reference_shares, dtype=np.float64).reshape(-1)
        C = np.asarray(centres, dtype=np.float64)
        if C.ndim != 2 or C.shape[0] != shares.shape[0]:
            raise DriftError(
                f"centres must have one row per micro-cluster: {shares.shape[0]} shares but centres of shape {C.shape}"
            )
        if shares.size == 0 or not np.all(shares >= 0) or shares.sum() <= 0:
            raise DriftError("reference shares must be non-negative with a positive sum")
        self._shares = shares / shares.sum()
        self._centres = C
        # The projected EMD's axis depends on the reference only: computed once per reference.
        self._projection: tuple[np.ndarray, np.ndarray] | None = None
        self._reset_window()

    def _reset_window(self) -> None:
        self._counts = np.zeros(self._shares.shape[0], dtype=np.int64)
        self._window_frames = 0
        self._window_ood = 0
        self._window_first = self._frames_seen
        self._window_start_ts: float | None = None
        self._window_last_ts: float | None = None
        self._window_alarm_started = False
        self._window_alarm_ended = False

    def update(self, nearest: np.ndarray, is_ood: np.ndarray, ts: np.ndarray | None = None) -> list[WindowReport]:
        """Add a batch of scored frames; returns the windows that closed in it (often none).

        Parameters
        ----------
        nearest
            ``(n,)`` micro-cluster index per frame (``ScoreResult.nearest``; ``-1`` frames count towards
            the window and the OOD rate but no micro-cluster).
        is_ood
            ``(n,)`` bool flags (``ScoreResult.is_ood``).
        ts
            ``(n,)`` timestamps in ms; required with ``window_seconds``.
        """
        self._follow_clusters()
        nearest = np.asarray(nearest, dtype=np.int64).reshape(-1)
        flags = np.asarray(is_ood, dtype=bool).reshape(-1)
        if nearest.shape != flags.shape:
            raise DriftError(f"nearest and is_ood differ in length: {nearest.shape[0]} vs {flags.shape[0]}")
        if nearest.size and nearest.max() >= self._shares.shape[0]:
            raise DriftError(
                f"micro-cluster index {int(nearest.max())} out of range for a reference of "
                f"{self._shares.shape[0]}: score against the reference this monitor follows, or call "
                "set_reference() after the clustering absorbs data"
            )
        stamps: np.ndarray | None = None
        if self.window_seconds is not None:
            if ts is None:
                raise DriftError("time-based windows (window_seconds) need the frames' timestamps: pass ts=")
            stamps = np.asarray(ts, dtype=np.float64).reshape(-1)
            if stamps.shape != flags.shape:
                raise DriftError(f"ts has {stamps.shape[0]} entries for {flags.shape[0]} frames")
        elif ts is not None:
            stamps = np.asarray(ts, dtype=np.float64).reshape(-1)
        reports: list[WindowReport] = []
        start = 0
        n = flags.shape[0]
        while start < n:
            stop, closes = self._window_cut(start, n, stamps)
            self._absorb_segment(nearest[start:stop], flags[start:stop], None if stamps is None else stamps[start:stop])
            if closes:
                reports.append(self._close_window())
            start = stop
        return reports

    def _window_cut(self, start: int, n: int, stamps: np.ndarray | None) -> tuple[int, bool]:
        """Where the open window's part of ``[start, n)`` ends, and whether the window closes there."""
        if self.window_seconds is None:
            stop = min(n, start + self.window_size - self._window_frames)
            return stop, self._window_frames + (stop - start) >= self.window_size
        assert stamps is not None
        origin = self._window_start_ts if self._window_start_ts is not None else stamps[start]
        # Running maximum: a late timestamp never reopens a window that time already closed.
        running = np.maximum.accumulate(stamps[start:n])
        beyond = np.flatnonzero(running >= origin + self.window_seconds * 1000.0)
        if beyond.size == 0:
            return n, False
        stop = start + int(beyond[0])
        if stop == start:
            # The first frame of this batch already lies past the window: close the window before it.
            return start, True
        return stop, True

    def _absorb_segment(self, nearest: np.ndarray, flags: np.ndarray, stamps: np.ndarray | None) -> None:
        if flags.size == 0:
            return
        valid = nearest[nearest >= 0]
        self._counts += np.bincount(valid, minlength=self._counts.shape[0])
        self._window_frames += flags.size
        self._window_ood += int(flags.sum())
        self._frames_seen += flags.size
        if stamps is not None and stamps.size:
            if self._window_start_ts is None:
                self._window_start_ts = float(stamps[0])
            self._window_last_ts = float(stamps.max())
        self._feed_adwin(flags)

    def _feed_adwin(self, flags: np.ndarray) -> None:
        pending = np.concatenate([self._adwin_pending, flags])
        n_chunks = pending.size // self.adwin_chunk
        rates = pending[: n_chunks * self.adwin_chunk].reshape(n_chunks, self.adwin_chunk).mean(axis=1)
        self._adwin_pending = pending[n_chunks * self.adwin_chunk :]
        # One ADWIN update per chunk of frames, not per frame.
        for rate in rates.tolist():
            before = float(self._adwin.estimation)
            self._adwin.update(rate)
            level = float(self._adwin.estimation)
            if self._adwin.drift_detected:
                self._on_change(before, level)
            if self._alarm:
                self._alarm_to = max(self._alarm_to, level)
                if self._falling and level <= self._alarm_from + 0.5 * (self._alarm_to - self._alarm_from):
                    self._end_alarm(level)

    def _on_change(self, before: float, after: float) -> None:
        if after > before:
            self._falling = False
            if not self._alarm:
                self._alarm = True
                self._alarm_from, self._alarm_to = before, after
                self._window_alarm_started = True
                logger.warning(
                    "drift alarm started at frame %d: ADWIN saw the OOD rate rise from %.3f to %.3f",
                    self._frames_seen,
                    before,
                    after,
                )
        elif self._alarm:
            # ADWIN keeps what is left of the high period in its window until it sees no more change, so
            # the end waits for its estimate to come down to half-way, checked after every chunk.
            self._falling = True

    def _end_alarm(self, level: float) -> None:
        self._alarm = False
        self._falling = False
        self._window_alarm_ended = True
        logger.warning(
            "drift alarm ended at frame %d: ADWIN saw the OOD rate fall back to %.3f (it rose from %.3f to %.3f)",
            self._frames_seen,
            level,
            self._alarm_from,
            self._alarm_to,
        )

    def _close_window(self) -> WindowReport:
        n = self._window_frames
        psi_value = psi(self._shares, self._counts, self.psi_epsilon) if self._counts.sum() else 0.0
        emd_value = self._emd() if self._counts.sum() else 0.0
        report = WindowReport(
            index=self._windows,
            first_frame=self._window_first,
            frames=n,
            ood_rate=self._window_ood / n if n else 0.0,
            psi=psi_value,
            emd=emd_value,
            psi_drift=psi_value > self.psi_threshold,
            emd_drift=self.emd_threshold is not None and emd_value > self.emd_threshold,
            alarm=self._alarm,
            alarm_started=self._window_alarm_started,
            alarm_ended=self._window_alarm_ended,
            counts=self._counts.copy(),
            start_ts=self._window_start_ts,
            end_ts=self._window_last_ts,
        )
        self._windows += 1
        if report.psi_drift:
            logger.info(
                "window %d: PSI %.3f above %.3f (EMD %.4g)", report.index, psi_value, self.psi_threshold, emd_value
            )
        self._reset_window()
        return report

    def _emd(self) -> float:
        method = self._emd_method_now()
        if method != "projected":
            return earth_movers_distance(self._shares, self._counts, self._centres, method)
        if self._projection is None:
            self._projection = _projection(self._shares, _fill_missing_coordinates(self._centres))
        return _projected_emd_on(self._shares, self._counts / self._counts.sum(), *self._projection)

    def flush(self) -> WindowReport | None:
        """Close the open window early (at shutdown); None when it holds no frame."""
        if self._window_frames == 0:
            return None
        return self._close_window()


def summarise(reports: Sequence[WindowReport]) -> dict[str, Any]:
    """A compact summary of many windows (for reports and logs)."""
    if not reports:
        return {"windows": 0}
    return {
        "windows": len(reports),
        "frames": int(sum(r.frames for r in reports)),
        "max_psi": float(max(r.psi for r in reports)),
        "max_emd": float(max(r.emd for r in reports)),
        "windows_with_psi_drift": int(sum(r.psi_drift for r in reports)),
        "alarm_starts": int(sum(r.alarm_started for r in reports)),
        "alarm_ends": int(sum(r.alarm_ended for r in reports)),
    }
