"""Producer settings: flags or ``EDGELOOP_*`` environment variables (``--rate`` / ``EDGELOOP_RATE``)."""

from __future__ import annotations

from pydantic import Field

from edgeloop.kafka import FRAMES_TOPIC
from edgeloop.settings import ServiceSettings


class ProducerSettings(ServiceSettings):
    """Replays a dataset onto the frames topic, as a camera app would."""

    topic: str = Field(FRAMES_TOPIC, description="Topic the frames are written to.")
    data: str | None = Field(
        None,
        description="Dataset to replay: UpTrain JSON list, JSON Lines or COCO keypoints (default: a synthetic stream).",
    )
    rate: float = Field(0.0, description="Frames per second (0 = as fast as possible).")
    realtime: bool = Field(
        False, description="Replay at the pace of the frames' own timestamps (`ts`, else frame_idx / --fps)."
    )
    fps: float = Field(30.0, description="Frame rate assumed by --realtime when frames have no `ts`.")
    repeat: int = Field(1, description="How many times the dataset is replayed.")
    limit: int = Field(0, description="Stop after this many frames (0 = no limit).")
    skip: int = Field(0, description="Skip this many frames at the start of the dataset.")
    synthetic_frames: int = Field(6000, description="Size of the synthetic stream used when --data is absent.")
    seed: int = Field(0, description="Seed of the synthetic stream.")
    partitions: int = Field(2, description="Partitions of the topic if the producer has to create it.")
    include_labels: bool = Field(False, description="Keep the `gt` label in the frames (off: a camera has none).")
    progress: bool = Field(True, description="Show a progress bar on a terminal (plain log lines otherwise).")
    flush_timeout_s: float = Field(60.0, description="How long to wait for outstanding deliveries at the end.")
    metrics_port: int = Field(9101, description="Port of the Prometheus /metrics endpoint (0 = off).")
