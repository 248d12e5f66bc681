"""Detection quality, offline, with the services' own logic and no broker.

edgeloop: the consumer's :func:`consumer.service.build_monitor` (reference micro-clusters + version 0)
decides the stream batch by batch in stream order; the flagged frames go, batch by batch, through the
retrainer's :class:`retrainer.collector.EdgeCaseCollector` (id and near-duplicate dedupe, master-file
annotation) configured from :class:`retrainer.settings.RetrainerSettings`' defaults; the first
``budget`` collected edge cases train version 1 with the retrainer's training configuration, and both
versions are scored on the golden set.

Label-selection baselines at the same budget, trained with the same configuration:

- ``random_prefix``: as many random frames from the same stream prefix (up to the frame that completed
  edgeloop's budget), mean over seeds;
- ``original_rule``: the first distinct frames the original tool's rule selected
  (:mod:`edgeloop.bench.baselines`).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.bench.baselines import OriginalToolReference, OriginalToolRun, run_original_tool, select_first
from edgeloop.bench.data import BenchData
from edgeloop.model import TrainingConfig, accuracy, train_model

log = logging.getLogger(__name__)


@dataclass
class Selection:
    """Which stream rows a method labelled, and what version 1 trained on them scored (None: no rows)."""

    rows: np.ndarray
    v1_golden: float | None
    train_s: float
    model: Any = None  # version 1 (None: no rows)


@dataclass
class QualityRun:
    budget: int
    labels: int
    v0_golden: float
    edgeloop: Selection
    prefix_frames: int
    flagged: np.ndarray  # per stream frame, version 0's reference
    v0_prediction: np.ndarray
    offline_frames_per_s: float  # Monitor.decide over the stream, no Kafka
    random_prefix: list[Selection]
    original_rule: Selection
    original_run: OriginalToolRun
    original_fit_s: float
    flag_rate_after_v1: float | None
    retrain_200_s: float  # training on 1,000 training frames + 200 stream frames (retrain_s)
    retrain_200_rows: str  # which 200 frames those were
    collector: dict[str, int] = field(default_factory=dict)
    training_config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, data: BenchData) -> dict[str, Any]:
        gt = data.stream_gt
        wrong = self.v0_prediction != gt
        flagged = self.flagged
        random_scores = [s.v1_golden for s in self.random_prefix if s.v1_golden is not None]
        original_flagged = np.zeros(len(gt), dtype=bool)
        original_flagged[self.original_run.edge_rows] = True
        return {
            "v0_golden": self.v0_golden,
            "v1_golden": self.edgeloop.v1_golden,
            "labels": self.labels,
            "budget": self.budget,
            "flag_rate": float(flagged.mean()),
            "flagged_frames": int(flagged.sum()),
            "stream_frames": len(gt),
            "v0_error_rate_among_flagged": float(wrong[flagged].mean()) if flagged.any() else None,
            "v0_error_rate_stream": float(wrong.mean()),
            "flag_rate_after_v1": self.flag_rate_after_v1,
            "prefix_frames": self.prefix_frames,
            "random_prefix_v1_golden": statistics.fmean(random_scores) if random_scores else None,
            "random_prefix_v1_golden_by_seed": random_scores,
            "original_rule_v1_golden": self.original_rule.v1_golden,
            "original_rule_labels": len(self.original_rule.rows),
            "original_rule_flag_rate": float(original_flagged.mean()),
            "original_rule_first_selection_row": int(self.original_rule.rows[0])
            if len(self.original_rule.rows)
            else None,
            "original_rule_v0_error_rate_among_flagged": (
                float(wrong[original_flagged].mean()) if original_flagged.any() else None
            ),
            "edgeloop_first_selection_row": int(self.edgeloop.rows[0]) if len(self.edgeloop.rows) else None,
            "collector": self.collector,
            "training_config": self.training_config,
            "v1_train_s": self.edgeloop.train_s,
            "retrain_triggered": self.labels >= self.budget,
        }


def _train_and_score(data: BenchData, rows: np.ndarray, config: TrainingConfig) -> Selection:
    if not len(rows):
        return Selection(rows, None, 0.0)
    started = time.perf_counter()
    model = train_model(data.train_kps, data.train_gt, data.stream_kps[rows], data.stream_gt[rows], config=config)
    train_s = time.perf_counter() - started
    return Selection(rows, accuracy(model, data.golden_kps, data.golden_gt), train_s, model)


def measure_quality(
    data: BenchData,
    scratch: Path,
    *,
    budget: int = 200,
    seeds: tuple[int, ...] = (0, 1, 2),
    batch_size: int = 2000,
) -> QualityRun:
    """Run the offline pipeline and both label-selection baselines on ``data`` (see the module docstring)."""
    from consumer.service import build_monitor
    from consumer.settings import ConsumerSettings
    from edgeloop.registry import ModelRegistry, TrainingAdditions
    from retrainer.annotation import MasterFileAnnotator
    from retrainer.buffer import EdgeCaseBuffer
    from retrainer.collector import EdgeCaseCollector
    from retrainer.near_duplicates import NearDuplicateFilter
    from retrainer.settings import RetrainerSettings

    pack = data.pack
    registry_dir = scratch / "quality-registry"
    # No broker is contacted: the address only fills the field.
    consumer_settings = ConsumerSettings.model_validate(
        {"bootstrap_servers": "127.0.0.1:1", "training_data": str(pack.training), "registry": str(registry_dir)}
    )
    retrainer_settings = RetrainerSettings.model_validate(
        {
            "bootstrap_servers": "127.0.0.1:1",
            "training_data": str(pack.training),
            "golden_data": str(pack.golden),
            "master_annotations": str(pack.master),
            "registry": str(registry_dir),
            "retrain_after": budget,
        }
    )
    training_config = retrainer_settings.training_config()
    monitor = build_monitor(consumer_settings, ModelRegistry(registry_dir))
    v0_golden = accuracy(monitor.model, data.golden_kps, data.golden_gt)

    buffer = EdgeCaseBuffer.open(scratch / "quality-edge-cases.jsonl")
    collector = EdgeCaseCollector(
        buffer,
        NearDuplicateFilter(
            radius=retrainer_settings.near_duplicate_radius,
            scope=retrainer_settings.near_duplicate_scope,
            per_sequence_cap=retrainer_settings.per_sequence_cap,
        ),
        master=MasterFileAnnotator(pack.master),
        features=retrainer_settings.near_duplicate_features,
    )
    n = len(data.stream_ids)
    flagged = np.zeros(n, dtype=bool)
    prediction = np.zeros(n, dtype=np.int64)
    collected: list[int] = []  # stream rows, in collection order
    counts = {"received": 0, "duplicate_id": 0, "duplicate_near": 0, "capped": 0, "collected": 0, "pending": 0}
    decide_s = 0.0
    for start in range(0, n, batch_size):
        kps = data.stream_kps[start : start + batch_size]
        began = time.perf_counter()
        decisions = monitor.decide(kps)
        decide_s += time.perf_counter() - began
        flagged[start : start + len(kps)] = decisions.flagged  # out of distribution or uncertain
        prediction[start : start + len(kps)] = decisions.prediction
        if len(collected) >= budget:
            continue
        rows = np.flatnonzero(decisions.flagged) + start
        if not len(rows):
            continue
        result = collector.collect([data.stream_records[r] for r in rows.tolist()])
        for key in counts:
            counts[key] += int(getattr(result, key))
        position: dict[int, int] = {}
        for r in rows.tolist():
            position.setdefault(int(data.stream_ids[r]), r)
        collected.extend(position[i] for i in result.collected_ids)
    buffer.close()
    labelled = [r for r in collected if int(data.stream_ids[r]) in data.master][:budget]
    if not labelled:
        log.warning("edgeloop collected no labelled edge case over the whole stream: no version 1")
    edgeloop_rows = np.asarray(labelled, dtype=np.int64)
    labels = len(edgeloop_rows)
    # The prefix the edge cases came from: up to the last of them (the whole stream if there is none).
    prefix = int(edgeloop_rows.max()) + 1 if labels else n
    edgeloop = _train_and_score(data, edgeloop_rows, training_config)

    # After the swap the consumer absorbs version 1's additions: the flag rate on the rest of the stream.
    flag_rate_after_v1: float | None = None
    if labels and prefix < n:
        additions = TrainingAdditions(
            data.stream_kps[edgeloop_rows], data.stream_gt[edgeloop_rows], data.stream_ids[edgeloop_rows]
        )
        monitor.swap_model(edgeloop.model, 1, additions)  # as the consumer does on the announcement
        rest = [monitor.decide(data.stream_kps[s : s + batch_size]).flagged for s in range(prefix, n, batch_size)]
        flag_rate_after_v1 = float(np.concatenate(rest).mean())

    random_prefix = []
    for seed in seeds:
        rows = np.sort(np.random.default_rng(seed).choice(prefix, size=min(labels, prefix), replace=False))
        random_prefix.append(_train_and_score(data, rows, training_config))

    began = time.perf_counter()
    reference = OriginalToolReference.fit(data.train_kps)
    original_fit_s = time.perf_counter() - began
    original_run = run_original_tool(reference, data.stream_kps)
    original_rows = select_first(original_run.edge_rows, data.stream_ids, labels)
    original_rule = _train_and_score(data, original_rows, training_config)

    if labels >= 200:
        retrain_200_s, retrain_200_rows = edgeloop.train_s, "edgeloop's first 200 edge cases"
    else:
        # edgeloop collected fewer: time the same training on 200 stream frames (which ones barely matters).
        rows = np.sort(np.random.default_rng(0).choice(n, size=min(200, n), replace=False))
        retrain_200_s = _train_and_score(data, rows, training_config).train_s
        retrain_200_rows = f"200 random stream frames (edgeloop collected only {labels})"

    return QualityRun(
        budget=budget,
        labels=labels,
        v0_golden=v0_golden,
        edgeloop=edgeloop,
        prefix_frames=prefix,
        flagged=flagged,
        v0_prediction=prediction,
        offline_frames_per_s=n / decide_s if decide_s > 0 else float("nan"),
        random_prefix=random_prefix,
        original_rule=original_rule,
        original_run=original_run,
        original_fit_s=original_fit_s,
        flag_rate_after_v1=flag_rate_after_v1,
        retrain_200_s=retrain_200_s,
        retrain_200_rows=retrain_200_rows,
        collector=counts,
        training_config=training_config.to_dict(),
    )
