"""Retrainer settings: flags or ``EDGELOOP_*`` variables (``--retrain-after`` / ``EDGELOOP_RETRAIN_AFTER``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edgeloop.errors import ConfigurationError
from edgeloop.kafka import EDGE_CASES_TOPIC, MODEL_VERSIONS_TOPIC, RETRAINER_GROUP
from edgeloop.model import TrainingConfig
from edgeloop.settings import ServiceSettings
from retrainer.retraining import RetrainConfig

BUFFER_FILE = "edge-cases.jsonl"


class RetrainerSettings(ServiceSettings):
    """Collects edge cases, annotates them, retrains at the threshold and publishes new model versions.

    Every flag is also an environment variable: EDGELOOP_ and the flag's name in capitals with underscores
    (--retrain-after 50 = EDGELOOP_RETRAIN_AFTER=50); librdkafka options pass as EDGELOOP_KAFKA_<KEY>. For fault
    tests only, EDGELOOP_RETRAINER_CRASH_AT=before_publish|after_publish|after_announce makes the process SIGKILL
    itself at that point of its first retrain.
    """

    edge_topic: str = Field(EDGE_CASES_TOPIC, description="Topic the edge cases are read from.")
    model_versions_topic: str = Field(
        MODEL_VERSIONS_TOPIC, description="Compacted topic new versions are announced on."
    )
    labels_topic: str | None = Field(
        None, description='Topic of labels {"id", "gt"} for edge cases (optional; with or instead of a master file).'
    )
    group_id: str = Field(RETRAINER_GROUP, description="Consumer group of the retrainer.")
    model_name: str = Field("orientation", description="Model name (key on the model-versions topic).")
    registry: str = Field("edgeloop-run/registry", description="Model registry directory (shared with the consumer).")
    buffer: str | None = Field(
        None, description=f"Durable edge-case buffer, JSON Lines (default: REGISTRY/{BUFFER_FILE})."
    )
    training_data: str | None = Field(
        None, description="Training data (labelled, any dataset format): every version trains on it. Required."
    )
    golden_data: str | None = Field(
        None,
        description="Golden set (labelled, any dataset format) deciding whether a candidate is published. Required.",
    )
    master_annotations: str | None = Field(
        None,
        description='Master annotation file [{"id", "gt"}] (UpTrain MASTER_FILE); needed unless --labels-topic is set.',
    )
    retrain_after: int = Field(200, description="Annotated edge cases per retrain (the threshold).")
    max_retrains: int = Field(0, description="Most retrains (0 = unlimited); edge cases are still collected after.")
    policy: Literal["always", "not-worse", "better"] = Field(
        "not-worse", description="Publish the candidate always, when not worse, or only when better on the golden set."
    )
    tolerance: float = Field(0.0, description="Golden-accuracy slack of the policy (not-worse: cand >= prev - tol).")
    retry_after_s: float = Field(30.0, description="Wait after a failed retrain before trying it again.")
    edge_case_weight: float = Field(5.0, description="Weight of an edge case in training (repeats, as the original).")
    edge_case_weighting: Literal["repeat", "loss"] = Field(
        "repeat", description="repeat: each edge case appears WEIGHT times per epoch; loss: once, loss scaled."
    )
    epochs: int = Field(10, description="Training epochs per candidate.")
    features: Literal["pose", "raw"] = Field(
        "pose", description="Input features of retrained versions (pose: translation/scale invariant)."
    )
    initial_features: Literal["pose", "raw"] = Field(
        "pose",
        description="Input features of version 0 when the registry is empty (raw: the original tool's model). Keep "
        "it equal to the consumer's --model-features: whichever service starts first trains version 0.",
    )
    augment: bool = Field(True, description="Random affine augmentation of the keypoints while training.")
    seed: int = Field(0, description="Seed of training (the same data and seed give the same model).")
    near_duplicate_radius: float = Field(
        0.01, description="RMS pose distance at or below which an edge case duplicates a collected one (0: exact only)."
    )
    near_duplicate_scope: Literal["global", "sequence"] = Field(
        "global", description="Compare with every collected edge case (global) or those of the same sequence."
    )
    near_duplicate_features: Literal["pose", "raw"] = Field("pose", description="Features of the near-duplicate test.")
    per_sequence_cap: int = Field(0, description="Most edge cases one sequence may contribute (0 = no cap).")
    batch_size: int = Field(500, description="Largest batch of messages taken from Kafka at once.")
    poll_timeout_s: float = Field(0.5, description="How long one poll waits for messages.")
    label_refresh_s: float = Field(5.0, description="How often the master file is checked for new labels.")
    announce_timeout_s: float = Field(30.0, description="How long an announcement waits for the broker's ack.")
    session_timeout_ms: int = Field(10_000, description="librdkafka session.timeout.ms.")
    max_poll_interval_ms: int = Field(300_000, description="librdkafka max.poll.interval.ms (covers one retrain).")
    metrics_port: int = Field(9103, description="Port of the Prometheus /metrics endpoint (0 = off).")

    def buffer_path(self) -> Path:
        return Path(self.buffer) if self.buffer else Path(self.registry) / BUFFER_FILE

    def check(self) -> None:
        """Raise :class:`ConfigurationError` naming every missing or unusable setting."""
        problems = []
        if not self.training_data:
            problems.append("the training data is missing: set --training-data or EDGELOOP_TRAINING_DATA")
        if not self.golden_data:
            problems.append("the golden set is missing: set --golden-data or EDGELOOP_GOLDEN_DATA")
        if not self.master_annotations and not self.labels_topic:
            problems.append(
                "no label source: set --master-annotations (EDGELOOP_MASTER_ANNOTATIONS) and/or "
                "--labels-topic (EDGELOOP_LABELS_TOPIC)"
            )
        for name in ("training_data", "golden_data", "master_annotations"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                flag = "--" + name.replace("_", "-")
                problems.append(f"{flag} {value} does not exist or is not a file")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be >= 1, got {self.batch_size}")
        if problems:
            raise ConfigurationError("retrainer settings: " + "; ".join(problems))

    def training_config(self) -> TrainingConfig:
        return TrainingConfig(
            epochs=self.epochs,
            edge_case_weight=self.edge_case_weight,
            edge_case_weighting=self.edge_case_weighting,
            augment=self.augment,
            features=self.features,
            seed=self.seed,
        )

    def retrain_config(self) -> RetrainConfig:
        return RetrainConfig(
            retrain_after=self.retrain_after,
            policy=self.policy,
            tolerance=self.tolerance,
            max_retrains=self.max_retrains,
            retry_after_s=self.retry_after_s,
            training=self.training_config(),
            initial=TrainingConfig(features=self.initial_features, seed=self.seed),
        )
