"""Offline replay of the closed loop on a data pack: which flag rule gives the best version 1?

Runs the real components without Kafka, in stream order: the reference clustering flags frames, the
retrainer's near-duplicate filter collects them until ``--budget`` annotated edge cases, version 1 is
trained on training + edge cases, and both versions are evaluated on the golden set.

    uv run python scripts/loop_quality.py --data-dir ../shared/datasets/orientation
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from consumer.clustering import ReferenceClusters
from consumer.drift import DriftMonitor
from consumer.monitor import Monitor
from edgeloop.datasets import read_labelled
from edgeloop.features import featurise
from edgeloop.model import TrainingConfig, accuracy, train_model
from retrainer.near_duplicates import NearDuplicateFilter


def collect(
    flags: np.ndarray, kps: np.ndarray, sequences: list[str], budget: int, radius: float, cap: int
) -> np.ndarray:
    """Stream-order indices the retrainer would collect from the flagged frames (first ``budget``)."""
    nd = NearDuplicateFilter(radius=radius, per_sequence_cap=cap)
    chosen: list[int] = []
    flagged = np.flatnonzero(flags)
    for start in range(0, len(flagged), 256):
        idx = flagged[start : start + 256]
        feats = featurise(kps[idx], "pose")
        seqs = [sequences[i] for i in idx]
        decision = nd.select(feats, seqs)
        keep = idx[decision.accepted]
        nd.add(feats[decision.accepted], [sequences[i] for i in keep])
        chosen.extend(keep.tolist())
        if len(chosen) >= budget:
            break
    return np.asarray(chosen[:budget], dtype=np.int64)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, default=Path("../shared/datasets/orientation"))
    p.add_argument("--budget", type=int, default=200)
    p.add_argument("--seeds", type=int, default=3, help="training seeds of version 1")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    d = args.data_dir
    train_kps, train_gt, _ = read_labelled(d / "training_data.json")
    stream_kps, stream_gt, _ = read_labelled(d / "real_world_testing_data.json")
    golden_kps, golden_gt, _ = read_labelled(d / "golden_testing_data.json")
    import orjson

    sequences = [str(r.get("sequence")) for r in orjson.loads((d / "real_world_testing_data.json").read_bytes())]
    results: list[dict[str, Any]] = []
    # (model features, clustering parameters, uncertainty band); the first row is the consumer's default.
    rules: list[tuple[str, dict[str, Any], float]] = [
        ("pose", {"mode": "pose", "flag_on": "density", "threshold_quantile": 0.99}, 0.3),
        ("pose", {"mode": "pose", "flag_on": "density", "threshold_quantile": 0.99}, 0.2),
        ("pose", {"mode": "pose", "flag_on": "density", "threshold_quantile": 0.99}, 0.0),
        ("pose", {"mode": "raw", "flag_on": "boundary"}, 0.0),
        ("raw", {"mode": "raw", "flag_on": "boundary"}, 0.0),
        ("raw", {"mode": "pose", "flag_on": "density", "threshold_quantile": 0.99}, 0.3),
    ]
    for model_features, params, band in rules:
        t = time.perf_counter()
        v0 = train_model(train_kps, train_gt, config=TrainingConfig(features=model_features))
        reference = ReferenceClusters(**params).learn(train_kps, labels=train_gt)
        monitor = Monitor(reference, v0, 0, DriftMonitor(reference), uncertainty_band=band)
        decisions = monitor.decide(stream_kps)
        flags, wrong = decisions.flagged, decisions.prediction != stream_gt
        chosen = collect(flags, stream_kps, sequences, args.budget, radius=0.05, cap=20)
        row: dict[str, Any] = {
            "model": model_features, **params, "uncertainty_band": band,
            "flag_rate": round(float(flags.mean()), 4),
            "enrichment": round(float(wrong[flags].mean() / wrong.mean()), 2) if flags.any() else 0.0,
            "labels": len(chosen), "last_frame": int(chosen[-1]) if len(chosen) else -1,
            "sequences": len({sequences[i] for i in chosen}),
            "v0_golden": round(accuracy(v0, golden_kps, golden_gt), 4),
        }  # fmt: skip
        if len(chosen):
            v1s = [
                accuracy(
                    train_model(train_kps, train_gt, stream_kps[chosen], stream_gt[chosen],
                                config=TrainingConfig(features=model_features, seed=seed)),
                    golden_kps, golden_gt,
                )
                for seed in range(args.seeds)
            ]  # fmt: skip
            row["v1_golden"] = [round(a, 4) for a in v1s]
        row["s"] = round(time.perf_counter() - t, 1)
        print(json.dumps(row), flush=True)
        results.append(row)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
