"""Prometheus helpers shared by the services.

Per-message ``Histogram.observe`` calls cost a lock and a Python call each; at 100k frames/s that is a
real share of the budget. :class:`BatchHistogram` takes a whole numpy array of observations at once and
exposes them as an ordinary Prometheus histogram.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Frame-to-decision and delivery latencies measured here run from ~0.2 ms (idle) to seconds (backlog).
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class BatchHistogram(Collector):
    """A histogram fed with arrays of observations (``observe_many``), exported like ``Histogram``."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float] = LATENCY_BUCKETS_S,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.upper = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.upper) + 1, dtype=np.int64)  # last = +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: np.ndarray | Sequence[float]) -> None:
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return
        idx = np.searchsorted(self.upper, v, side="left")
        counts = np.bincount(idx, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(v.sum())

    def observe(self, value: float) -> None:
        self.observe_many(np.asarray([value]))

    @property
    def count(self) -> int:
        return int(self._counts.sum())

    def quantile(self, q: float) -> float:
        """An upper-bound estimate of quantile ``q`` from the buckets (for logs and reports)."""
        with self._lock:
            counts = self._counts.copy()
        total = counts.sum()
        if total == 0:
            return float("nan")
        k = int(np.searchsorted(np.cumsum(counts), q * total, side="left"))
        return float(self.upper[k]) if k < len(self.upper) else float("inf")

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total_sum = self._sum
        buckets = [(repr(float(u)), int(c)) for u, c in zip(self.upper, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", int(cumulative[-1])))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, total_sum)
        yield family

    def describe(self) -> Iterable[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)


def serve_metrics(host: str, port: int) -> int | None:
    """Serve ``/metrics`` on host:port in a daemon thread; port 0 means off. Returns the port."""
    if port <= 0:
        return None
    server, _thread = start_http_server(port, addr=host)
    bound = int(server.server_address[1])
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound
