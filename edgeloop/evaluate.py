"""``edgeloop evaluate``: the accuracy of a published model version on a labelled file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from edgeloop.datasets import read_labelled
from edgeloop.errors import EdgeloopError
from edgeloop.registry import ModelRegistry


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeloop evaluate", description=__doc__)
    p.add_argument("--registry", type=Path, required=True, help="model registry directory (e.g. edgeloop-run/registry)")
    p.add_argument("--version", type=int, default=None, help="version to evaluate (default: the latest)")
    p.add_argument("--data", type=Path, required=True, help="labelled file: UpTrain JSON list or JSON Lines with gt")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        registry = ModelRegistry(args.registry)
        chosen = args.version if args.version is not None else registry.latest()
        if chosen is None:
            raise EdgeloopError(f"the registry {args.registry} has no published version")
        model = registry.load(chosen)
        version = registry.get(chosen if isinstance(chosen, int) else chosen.version)
        kps, gt, _ids = read_labelled(args.data)
    except EdgeloopError as exc:
        print(f"edgeloop evaluate: {exc}", file=sys.stderr)
        return 1
    predicted = model.predict(kps)
    correct = int(np.sum(predicted == gt))
    result = {
        "version": version.version,
        "data": str(args.data),
        "n": len(gt),
        "correct": correct,
        "accuracy": correct / len(gt) if len(gt) else float("nan"),
        "features": version.features,
        "sha256": version.sha256,
    }
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(
            f"version {result['version']}: accuracy {result['accuracy']:.4f} ({correct}/{result['n']}) on {args.data}"
        )
    return 0
