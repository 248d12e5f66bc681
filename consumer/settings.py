"""Consumer settings: flags or ``EDGELOOP_*`` environment variables (``--batch-size`` / ``EDGELOOP_BATCH_SIZE``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgeloop.frames import DEFAULT_MAX_EXTRA_FIELDS, DEFAULT_MAX_MESSAGE_BYTES
from edgeloop.kafka import DLQ_TOPIC, EDGE_CASES_TOPIC, FRAMES_TOPIC, MODEL_VERSIONS_TOPIC, MONITOR_GROUP
from edgeloop.settings import ServiceSettings


class ConsumerSettings(ServiceSettings):
    """Scores every frame against the reference, flags edge cases, tracks drift and serves predictions."""

    topic: str = Field(FRAMES_TOPIC, description="Topic the frames are read from.")
    edge_topic: str = Field(EDGE_CASES_TOPIC, description="Topic the out-of-distribution frames are sent to.")
    dlq_topic: str = Field(DLQ_TOPIC, description="Dead-letter topic for frames that fail validation.")
    model_versions_topic: str = Field(MODEL_VERSIONS_TOPIC, description="Compacted topic announcing models.")
    group_id: str = Field(MONITOR_GROUP, description="Consumer group of the monitors.")
    model_name: str = Field("orientation", description="Model name (key on the model-versions topic).")
    registry: str = Field("edgeloop-run/registry", description="Model registry directory (shared with the retrainer).")
    training_data: str | None = Field(
        None,
        description="Reference training data (labelled; any dataset format). Needed to bootstrap version 0 "
        "when the registry is empty; the reference clustering is built from it.",
    )
    features: Literal["pose", "raw"] = Field(
        "pose", description="Features of the reference clustering (pose: translation/scale invariant)."
    )
    flag_on: Literal["density", "boundary", "auto"] = Field(
        "density",
        description="What the clustering flags: 'density' = unlike the reference; 'boundary' = far from the "
        "reference where its labels mix (tuned for raw pixels); 'auto' = boundary when labelled.",
    )
    max_clusters: int | None = Field(None, description="Budget of reference micro-clusters (default 400).")
    threshold_quantile: float | None = Field(
        0.99, description="OOD threshold = this quantile of the reference's own leave-one-out scores."
    )
    uncertainty_band: float = Field(
        0.3,
        description="Also flag frames whose prediction p(horizontal) is within this of 0.5 (0 = flag only "
        "out-of-distribution frames).",
    )
    model_features: Literal["pose", "raw"] = Field(
        "pose", description="Input features of version 0 when the consumer has to bootstrap the registry."
    )
    threshold: float | None = Field(None, description="Absolute OOD threshold (overrides --threshold-quantile).")
    window_size: int = Field(2000, description="Frames per drift window.")
    batch_size: int = Field(2000, description="Largest batch taken from Kafka at once.")
    poll_timeout_s: float = Field(
        0.01, description="How long one poll waits for frames (bounds the wait of a frame at low rates)."
    )
    delivery_timeout_s: float = Field(
        30.0, description="How long a batch waits for its edge cases / dead letters to be acknowledged."
    )
    max_inflight_batches: int = Field(
        2,
        description="Batches whose outputs may await the broker's acknowledgement while the next are decided "
        "(0 = settle and commit each batch synchronously before the next: fewest duplicates after a crash).",
    )
    decision_log: str | None = Field(
        None, description="JSON Lines file receiving one decision per scored frame (the ledger)."
    )
    max_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, description="Frames larger than this are refused.")
    max_extra_fields: int = Field(DEFAULT_MAX_EXTRA_FIELDS, description="Frames with more unknown fields are refused.")
    exactly_once: bool = Field(
        False, description="Wrap edge cases and offset commits in a Kafka transaction (exactly-once)."
    )
    transactional_id: str | None = Field(
        None, description="Transactional id for --exactly-once (default: group id + instance id)."
    )
    instance_id: str | None = Field(None, description="Name of this instance (logs, transactional id).")
    max_poll_interval_ms: int = Field(300_000, description="librdkafka max.poll.interval.ms.")
    session_timeout_ms: int = Field(10_000, description="librdkafka session.timeout.ms.")
    seed: int = Field(0, description="Seed for the reference clustering and the version-0 training.")
    metrics_port: int = Field(9102, description="Port of the Prometheus /metrics endpoint (0 = off).")
