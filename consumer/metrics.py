"""The consumer's Prometheus metrics (``edgeloop_consumer_*``); label sets are bounded."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from edgeloop.metrics import BatchHistogram

FRAMES_CONSUMED = Counter("edgeloop_consumer_frames_consumed_total", "Messages read from the frames topic.")
FRAMES_SCORED = Counter("edgeloop_consumer_frames_scored_total", "Valid frames scored against the reference.")
FRAMES_FLAGGED = Counter(
    "edgeloop_consumer_frames_flagged_total",
    "Frames flagged (out of distribution or an uncertain prediction) and sent as edge cases.",
)
DEAD_LETTERS = Counter(
    "edgeloop_consumer_dead_letters_total", "Bad frames sent to the dead-letter topic, by reason.", ["reason"]
)
PREDICTIONS = Counter(
    "edgeloop_consumer_predictions_total", "Model predictions served, by predicted class.", ["prediction"]
)
OOD_RATE = Gauge("edgeloop_consumer_ood_rate_ratio", "Share of frames out of distribution in the last drift window.")
DRIFT_PSI = Gauge("edgeloop_consumer_drift_psi", "PSI of the last window's micro-cluster distribution.")
DRIFT_EMD = Gauge(
    "edgeloop_consumer_drift_emd",
    "Earth mover's distance between the last window's and the reference centroids.",
)
DRIFT_ALARM = Gauge("edgeloop_consumer_drift_alarm", "1 while the drift alarm (ADWIN on the OOD rate) is raised.")
DRIFT_ALARMS = Counter("edgeloop_consumer_drift_alarms_total", "Drift alarms raised.")
MICRO_CLUSTERS = Gauge("edgeloop_consumer_micro_clusters", "Micro-clusters in the reference clustering.")
REFERENCE_POINTS = Gauge("edgeloop_consumer_reference_points", "Reference points absorbed by the clustering.")
MODEL_VERSION = Gauge("edgeloop_consumer_model_version", "Model version serving predictions.")
MODEL_SWAPS = Counter("edgeloop_consumer_model_swaps_total", "Hot swaps to a new model version.")
MODEL_REJECTED = Counter(
    "edgeloop_consumer_model_rejected_total", "Announced model versions refused (hash mismatch, unreadable)."
)
BATCH_SECONDS = BatchHistogram(
    "edgeloop_consumer_batch_processing_seconds", "Time to decode, score, predict and publish one batch."
)
SCORING_SECONDS = BatchHistogram(
    "edgeloop_consumer_scoring_seconds", "Time to featurise and score one batch against the reference."
)
DECISION_LATENCY = BatchHistogram(
    "edgeloop_consumer_frame_to_decision_seconds", "Time from the frame's producer timestamp to its decision."
)
LAG = Gauge("edgeloop_consumer_lag_messages", "Consumer lag per assigned partition.", ["partition"])
LAST_PROGRESS = Gauge(
    "edgeloop_consumer_last_progress_timestamp_seconds",
    "Unix time of the last frame processed, per assigned partition.",
    ["partition"],
)
ASSIGNED_PARTITIONS = Gauge("edgeloop_consumer_assigned_partitions", "Partitions assigned to this instance.")
COMMITS = Counter("edgeloop_consumer_commits_total", "Offset commits that succeeded.")
DELIVERY_FAILURES = Counter(
    "edgeloop_consumer_delivery_failures_total",
    "Edge-case or dead-letter deliveries that failed (batch retried).",
)
KAFKA_ERRORS = Counter(
    "edgeloop_consumer_kafka_errors_total", "Errors reported by the Kafka client, by code.", ["code"]
)
BROKER_UP = Gauge("edgeloop_consumer_broker_up", "0 while the client reports all brokers down, else 1.")
POLL_INTERVAL_EXCEEDED = Counter(
    "edgeloop_consumer_max_poll_interval_exceeded_total", "Times processing outlasted max.poll.interval.ms."
)
