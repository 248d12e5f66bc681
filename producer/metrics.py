"""The producer's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from edgeloop.metrics import BatchHistogram

FRAMES_SENT = Counter("edgeloop_producer_frames_sent_total", "Frames handed to the Kafka client.")
FRAMES_ACKED = Counter("edgeloop_producer_frames_acked_total", "Frames whose delivery the broker acknowledged.")
FRAMES_FAILED = Counter("edgeloop_producer_frames_failed_total", "Frames whose delivery failed.")
BYTES_SENT = Counter("edgeloop_producer_bytes_sent_total", "Bytes of frame values handed to the Kafka client.")
DELIVERY_LATENCY = BatchHistogram(
    "edgeloop_producer_delivery_latency_seconds", "Time from produce() to the broker's acknowledgement."
)
REPLAY_RATE = Gauge("edgeloop_producer_target_rate_frames_per_second", "Target replay rate (0 = unlimited).")
