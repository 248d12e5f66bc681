"""The retrainer's Prometheus metrics (``edgeloop_retrainer_*``); every label set is bounded."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from edgeloop.metrics import BatchHistogram

# Training one version takes ~1 s (pose MLP, 1,200 rows) to a minute (large sets, slow machines).
TRAINING_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0)

EDGE_CASES_RECEIVED = Counter(
    "edgeloop_retrainer_edge_cases_received_total", "Edge-case messages read from the edge-cases topic."
)
EDGE_CASES_DUPLICATE = Counter(
    "edgeloop_retrainer_edge_cases_duplicate_total",
    "Edge cases not collected: kind=id (frame already collected), near (pose too close to a collected "
    "one), cap (its sequence reached the per-sequence cap).",
    ["kind"],
)
EDGE_CASES_INVALID = Counter(
    "edgeloop_retrainer_edge_cases_invalid_total", "Edge-case messages that were not valid frames (skipped)."
)
EDGE_CASES_COLLECTED = Gauge(
    "edgeloop_retrainer_edge_cases_collected",
    "Annotated edge cases collected since the last retrain (towards the threshold).",
)
EDGE_CASES_TOTAL = Gauge("edgeloop_retrainer_edge_cases_buffered", "Edge cases in the durable buffer, all versions.")
RETRAIN_THRESHOLD = Gauge(
    "edgeloop_retrainer_retrain_threshold", "Annotated edge cases that trigger a retrain (retrain_after)."
)
LABELS_PENDING = Gauge("edgeloop_retrainer_labels_pending", "Collected edge cases still waiting for a label.")
LABELS_RECEIVED = Counter("edgeloop_retrainer_labels_received_total", "Labels read from the labels topic.")
LABELS_INVALID = Counter("edgeloop_retrainer_labels_invalid_total", "Labels-topic messages that could not be used.")
RETRAINS = Counter(
    "edgeloop_retrainer_retrains_total", "Retrain attempts by outcome (published, rejected, failed).", ["outcome"]
)
TRAINING_SECONDS = BatchHistogram(
    "edgeloop_retrainer_training_seconds", "Time to train one candidate version.", buckets=TRAINING_BUCKETS_S
)
LAST_TRAINING = Gauge("edgeloop_retrainer_last_training_timestamp_seconds", "Unix time the last training finished.")
GOLDEN_ACCURACY = Gauge(
    "edgeloop_retrainer_golden_accuracy_ratio", "Golden-set accuracy of each evaluated version.", ["version"]
)
MODEL_VERSION = Gauge("edgeloop_retrainer_model_version", "Latest published model version.")
COMMITS = Counter("edgeloop_retrainer_commits_total", "Offset commits that succeeded.")

for _outcome in ("published", "rejected", "failed"):
    RETRAINS.labels(outcome=_outcome)
for _kind in ("id", "near", "cap"):
    EDGE_CASES_DUPLICATE.labels(kind=_kind)
