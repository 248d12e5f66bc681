"""Offline quality of the edge-case flags on the real orientation pack (no Kafka).

The product claim: the flags are selective (a small share of the stream) and concentrated where the
deployed model is wrong. This script builds :class:`consumer.clustering.ReferenceClusters` on the training
data (with its labels), scores the whole stream and the golden set, and reports:

- the flag rate over the stream and the golden-set flag ("OOD") rate;
- version 0's error rate among flagged frames vs over the whole stream (and their ratio);
- how ranking by score alone does at fixed flag budgets (error rate in the top 1/2/5/10 %);
- flagged frames within the first 1,200 / 3,000 frames and how many distinct sequences they come from;
- what absorbing the flagged frames with their labels (as a retrain would) does to the flag rate;
- the drift monitor over the stream (windows with PSI drift, OOD-rate alarms);
- score() time per frame on the stream and, with ``--timing``, for 100 / 1,000 / 10,000 micro-clusters.

Usage::

    uv run python scripts/flag_quality.py                       # tuned defaults
    uv run python scripts/flag_quality.py --mode pose --flag-on density --threshold-quantile 0.99 \\
        --threshold-margin 1
    uv run python scripts/flag_quality.py --sweep --json quality.json

Data: ``--data-dir``, else ``EDGELOOP_DATA_DIR``, else ``../shared/datasets/orientation``. Model:
``--model`` (a torch state_dict), default UpTrain's ``uptrain_models/version_0`` of the pack.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consumer.clustering import ReferenceClusters
from consumer.drift import DriftMonitor, summarise

log = logging.getLogger("flag_quality")

FIRST_BLOCKS = (1200, 3000)
BUDGETS = (0.01, 0.02, 0.05, 0.10)


def data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("EDGELOOP_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "orientation"


def load(path: Path) -> dict[str, np.ndarray]:
    rows = orjson.loads(path.read_bytes())
    return {
        "kps": np.array([r["kps"] for r in rows], dtype=np.float64),
        "gt": np.array([r["gt"] for r in rows], dtype=np.int64),
        "sequence": np.array([r.get("sequence", "") for r in rows]),
        "source": np.array([r.get("source", "") for r in rows]),
    }


def v0_predictor(model_path: Path) -> Any:
    """UpTrain's state_dict as a predictor: ``edgeloop.model`` when there, else the forward pass in numpy."""
    try:
        from edgeloop.model import load_uptrain_state_dict

        return load_uptrain_state_dict(model_path).predict
    except ImportError:  # the model module is optional for this script
        import torch

        sd = torch.load(model_path, map_location="cpu", weights_only=True)
        w1, b1 = sd["layer_1.weight"].double().numpy(), sd["layer_1.bias"].double().numpy()
        w2, b2 = sd["layer_out.weight"].double().numpy(), sd["layer_out.bias"].double().numpy()

        def predict(kps: np.ndarray) -> np.ndarray:
            logit = np.maximum(kps @ w1.T + b1, 0.0) @ w2.T + b2
            return (logit[:, 0] > 0).astype(np.int64)

        return predict


def build(params: dict[str, Any], train: dict[str, np.ndarray]) -> ReferenceClusters:
    return ReferenceClusters(**params).learn(train["kps"], labels=train["gt"])


def evaluate(
    params: dict[str, Any],
    train: dict[str, np.ndarray],
    stream: dict[str, np.ndarray],
    golden: dict[str, np.ndarray],
    wrong: np.ndarray,
    *,
    extras: bool = True,
) -> dict[str, Any]:
    started = time.perf_counter()
    rc = build(params, train)
    learn_s = time.perf_counter() - started
    started = time.perf_counter()
    result = rc.score(stream["kps"])
    score_s = time.perf_counter() - started
    flags = result.is_ood
    stream_error = float(wrong.mean())
    flagged_error = float(wrong[flags].mean()) if flags.any() else float("nan")
    order = np.argsort(-np.nan_to_num(result.score, nan=np.inf), kind="stable")
    out: dict[str, Any] = {
        "params": {**params, "resolved_radius": rc.radius},
        "n_clusters": rc.n_clusters,
        "threshold": rc.threshold,
        "frames": int(flags.size),
        "flagged": int(flags.sum()),
        "flag_rate": float(flags.mean()),
        "v0_error_rate_stream": stream_error,
        "v0_error_rate_among_flagged": flagged_error,
        "enrichment": flagged_error / stream_error if stream_error else float("nan"),
        "golden_flag_rate": float(rc.score(golden["kps"]).is_ood.mean()),
        "flagged_sequences": int(np.unique(stream["sequence"][flags]).size),
        "flagged_by_source": {
            s: int((flags & (stream["source"] == s)).sum()) for s in np.unique(stream["source"]).tolist()
        },
        "error_rate_in_top": {
            f"{b:.0%}": float(wrong[order[: int(b * flags.size)]].mean()) for b in BUDGETS if int(b * flags.size)
        },
        "learn_s": learn_s,
        "score_us_per_frame": score_s / flags.size * 1e6,
    }
    for n in FIRST_BLOCKS:
        head = flags[:n]
        out[f"flagged_in_first_{n}"] = int(head.sum())
        out[f"sequences_flagged_in_first_{n}"] = int(np.unique(stream["sequence"][:n][head]).size)
    if extras:
        # A retrain adds the flagged frames, labelled, to the training data; the consumer absorbs them.
        absorbed = ReferenceClusters.from_state_dict(rc.state_dict())
        absorbed.absorb(stream["kps"][flags], labels=stream["gt"][flags])
        out["flag_rate_after_absorbing_flagged"] = float(absorbed.score(stream["kps"]).is_ood.mean())
        monitor = DriftMonitor(rc, window_size=2000)
        reports = monitor.update(result.nearest, result.is_ood)
        out["drift"] = summarise(reports)
    return out


def timing(n_frames: int = 20_000, seed: int = 0) -> list[dict[str, Any]]:
    """score() time per frame for 100 / 1,000 / 10,000 micro-clusters (random 34-D data, best of 3)."""
    rng = np.random.default_rng(seed)
    frames = rng.normal(300.0, 100.0, (n_frames, 34))
    rows = []
    for k in (100, 1000, 10_000):
        reference = rng.normal(300.0, 100.0, (k, 34))
        labels = rng.integers(0, 2, k)
        # A tiny radius makes every reference point its own micro-cluster: exactly k of them.
        rc = ReferenceClusters(mode="raw", max_clusters=k, radius=1e-3, calibration_size=500).learn(reference, labels)
        for flag_on in ("density", "boundary"):
            rc.flag_on = flag_on
            rc.score(frames[:1000])
            best = min(_timed(rc, frames) for _ in range(3))
            rows.append({"clusters": rc.n_clusters, "flag_on": flag_on, "us_per_frame": best / n_frames * 1e6})
    return rows


def _timed(rc: ReferenceClusters, frames: np.ndarray) -> float:
    started = time.perf_counter()
    rc.score(frames)
    return time.perf_counter() - started


SWEEP: list[dict[str, Any]] = [
    {"mode": "raw", "flag_on": "boundary", "max_clusters": k, "neighbourhood": nb, "threshold_margin": m}
    for k in (200, 400)
    for nb in (40, 60)
    for m in (1.5, 2.0, 2.5)
] + [
    {"mode": m, "flag_on": "density", "max_clusters": k, "threshold_quantile": 0.99, "threshold_margin": 1.0}
    for m in ("pose", "raw")
    for k in (50, 200)
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--model", help="torch state_dict of the monitored model (default: UpTrain version_0)")
    parser.add_argument("--mode", choices=("raw", "pose"))
    parser.add_argument("--flag-on", choices=("boundary", "density"))
    parser.add_argument("--max-clusters", type=int)
    parser.add_argument("--neighbourhood", type=float)
    parser.add_argument("--density-weight", type=float)
    parser.add_argument("--threshold-quantile", type=float)
    parser.add_argument("--threshold-margin", type=float)
    parser.add_argument("--threshold", type=float, help="absolute threshold")
    parser.add_argument("--sweep", action="store_true", help="also evaluate a small grid of settings")
    parser.add_argument("--timing", action="store_true", help="also time score() for 100/1,000/10,000 clusters")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    root = data_dir(args.data_dir)
    if not (root / "training_data.json").exists():
        print(f"no orientation pack at {root}: pass --data-dir or set EDGELOOP_DATA_DIR", file=sys.stderr)
        return 2
    train = load(root / "training_data.json")
    stream = load(root / "real_world_testing_data.json")
    golden = load(root / "golden_testing_data.json")
    predict = v0_predictor(Path(args.model) if args.model else root / "uptrain_models" / "version_0")
    wrong = predict(stream["kps"]) != stream["gt"]

    chosen = {
        "mode": args.mode,
        "flag_on": args.flag_on,
        "max_clusters": args.max_clusters,
        "neighbourhood": args.neighbourhood,
        "density_weight": args.density_weight,
        "threshold_quantile": args.threshold_quantile,
        "threshold_margin": args.threshold_margin,
        "threshold": args.threshold,
    }
    params = {k: v for k, v in chosen.items() if v is not None}
    results: dict[str, Any] = {"main": evaluate(params, train, stream, golden, wrong)}
    _print(results["main"])
    if args.sweep:
        results["sweep"] = []
        print(f"\n{'settings':<78} {'flag':>6} {'x err':>6} {'golden':>7} {'seqs':>5} {'1st 3000':>8}")
        for p in SWEEP:
            r = evaluate(p, train, stream, golden, wrong, extras=False)
            results["sweep"].append(r)
            label = ", ".join(f"{k}={v}" for k, v in p.items())
            print(
                f"{label:<78} {r['flag_rate']:6.3f} {r['enrichment']:6.2f} {r['golden_flag_rate']:7.3f} "
                f"{r['flagged_sequences']:5d} {r['flagged_in_first_3000']:8d}"
            )
    if args.timing:
        results["timing"] = timing()
        print("\nscore() per frame (random 34-D frames, best of 3):")
        for row in results["timing"]:
            print(f"  {row['clusters']:>6} clusters  {row['flag_on']:<8}  {row['us_per_frame']:8.2f} µs")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return 0


def _print(r: dict[str, Any]) -> None:
    p = r["params"]
    print("settings:", ", ".join(f"{k}={v}" for k, v in p.items()) or "defaults")
    print(f"micro-clusters {r['n_clusters']}, threshold {r['threshold']:.4g}")
    print(
        f"flagged {r['flagged']} of {r['frames']} frames ({r['flag_rate']:.1%}); golden-set flag rate "
        f"{r['golden_flag_rate']:.1%}"
    )
    print(
        f"v0 error rate: {r['v0_error_rate_among_flagged']:.1%} among flagged vs {r['v0_error_rate_stream']:.1%} "
        f"over the stream = {r['enrichment']:.2f}x"
    )
    print(
        "v0 error rate in the top-scored frames:", ", ".join(f"{k} {v:.1%}" for k, v in r["error_rate_in_top"].items())
    )
    for n in FIRST_BLOCKS:
        print(
            f"first {n} frames: {r[f'flagged_in_first_{n}']} flagged, from "
            f"{r[f'sequences_flagged_in_first_{n}']} sequences"
        )
    print(f"flagged frames come from {r['flagged_sequences']} sequences; by source {r['flagged_by_source']}")
    if "flag_rate_after_absorbing_flagged" in r:
        print(f"flag rate after absorbing the flagged frames with labels: {r['flag_rate_after_absorbing_flagged']:.1%}")
        print(f"drift over the stream (2,000-frame windows): {r['drift']}")
    print(f"learn {r['learn_s']:.2f} s; score {r['score_us_per_frame']:.2f} µs/frame over the stream")


if __name__ == "__main__":
    raise SystemExit(main())
