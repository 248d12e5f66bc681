"""The demo's report: what the run did, from the decision log, the registry and the annotations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from edgeloop.datasets import read_labelled, read_master_annotations
from edgeloop.registry import ModelRegistry


def read_decisions(run_dir: Path) -> list[dict[str, Any]]:
    """Every decision of the run (all consumer instances), in stream order (producer sequence number)."""
    rows: list[dict[str, Any]] = []
    for path in sorted((run_dir / "decisions").glob("*.jsonl")):
        with open(path, "rb") as handle:
            rows.extend(orjson.loads(line) for line in handle if line.strip())
    rows.sort(key=lambda r: (r.get("seq") is None, r.get("seq") or 0))
    return rows


def build_report(run_dir: Path, paths: dict[str, Path], registry_dir: Path, elapsed_s: float) -> dict[str, Any]:
    decisions = read_decisions(run_dir)
    registry = ModelRegistry(registry_dir)
    versions = registry.versions()
    stream_kps, stream_gt, stream_ids = read_labelled(paths["stream"])
    labels = read_master_annotations(paths["master"])

    # Latest decision per frame id (a redelivered frame is decided twice; both agree on the flag).
    flagged_ids = {r["id"] for r in decisions if r["flagged"]}
    scored_ids = {r["id"] for r in decisions}
    per_version: dict[int, list[int]] = {}
    for r in decisions:
        counts = per_version.setdefault(int(r["version"]), [0, 0])
        counts[0] += 1
        counts[1] += int(r["flagged"])

    # v0's errors: v0 re-run over the frames that were scored, compared with the master annotation.
    v0 = registry.load(0)
    scored = np.isin(stream_ids, np.fromiter(scored_ids, dtype=np.int64, count=len(scored_ids)))
    flagged = np.isin(stream_ids, np.fromiter(flagged_ids, dtype=np.int64, count=len(flagged_ids)))
    truth = np.asarray([labels.get(int(i), int(g)) for i, g in zip(stream_ids, stream_gt, strict=True)])
    wrong = v0.predict(stream_kps) != truth
    err_stream = float(wrong[scored].mean()) if scored.any() else float("nan")
    err_flagged = float(wrong[flagged].mean()) if flagged.any() else float("nan")

    edge_cases = [v.trained_on.get("edge_cases", 0) for v in versions]
    # "E edge cases identified out of S samples": S = frames replayed up to the last edge case that the
    # first retrain used (as the original tool counted the samples seen until its retrain).
    seq_of = {r["id"]: r.get("seq") for r in decisions}
    samples_before_v1 = len(decisions)
    if len(versions) > 1:
        used = registry.load_training_additions(versions[1].version).ids
        seqs = [int(seq) for i in used if (seq := seq_of.get(int(i))) is not None]
        if seqs:
            samples_before_v1 = int(max(seqs)) + 1
    return {
        "frames_replayed": max((int(r.get("seq") or 0) + 1 for r in decisions), default=0),
        "frames_scored": len(scored_ids),
        "decisions": len(decisions),
        "edge_cases": int(max(edge_cases, default=0)),
        "dead_letters": _dead_letters(run_dir),
        "versions": [
            {
                "version": v.version,
                "golden_accuracy": v.golden_accuracy,
                "previous_golden_accuracy": v.previous_golden_accuracy,
                "trained_on": v.trained_on,
            }
            for v in versions
        ],
        "ood_rate_by_version": {str(k): (f / n if n else 0.0) for k, (n, f) in sorted(per_version.items())},
        "frames_by_version": {str(k): n for k, (n, _f) in sorted(per_version.items())},
        "flagged_frames": len(flagged_ids),
        "flag_rate": len(flagged_ids) / len(scored_ids) if scored_ids else 0.0,
        "v0_error_rate_among_flagged": err_flagged,
        "v0_error_rate_stream": err_stream,
        "samples_before_first_retrain": samples_before_v1,
        "elapsed_s": round(elapsed_s, 2),
        "data": {k: str(v) for k, v in paths.items()},
    }


def _dead_letters(run_dir: Path) -> int:
    marker = run_dir / "dead_letters.json"
    return int(orjson.loads(marker.read_bytes())["count"]) if marker.exists() else 0


def print_table(report: dict[str, Any]) -> None:
    versions = report["versions"]
    v0 = versions[0]["golden_accuracy"] if versions else float("nan")
    last = versions[-1] if versions else None
    print()
    print(f"{'':2}{'model':<28}{'golden accuracy':>16}")
    print(f"{'':2}{'version 0':<28}{v0:>16.4f}")
    if len(versions) > 1 and last is not None:
        edge = last["trained_on"].get("edge_cases", 0)
        print(f"  {edge} edge cases identified out of {report['samples_before_first_retrain']} samples")
        for v in versions[1:]:
            print(f"{'':2}{'version ' + str(v['version']):<28}{v['golden_accuracy']:>16.4f}")
    else:
        print("  no retrain happened (fewer edge cases than the threshold)")
    print()
    print(
        f"  flagged {report['flagged_frames']} of {report['frames_scored']} frames "
        f"({100 * report['flag_rate']:.1f}%); v0 error rate among flagged "
        f"{100 * report['v0_error_rate_among_flagged']:.1f}% vs stream-wide {100 * report['v0_error_rate_stream']:.1f}%"
    )
    rates = ", ".join(f"v{k}: {100 * r:.1f}%" for k, r in report["ood_rate_by_version"].items())
    print(f"  OOD rate by serving version: {rates}; dead letters: {report['dead_letters']}")
    print(f"  elapsed {report['elapsed_s']:.1f}s")
