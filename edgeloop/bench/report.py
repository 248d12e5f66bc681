"""Rendering a benchmark report: the table on stdout and the README's markdown section, both from the JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

REQUIRED_KEYS = (
    "consumer_frames_per_s",
    "limit_frames_per_s",
    "ratio_vs_limit",
    "baselines",
    "latency_ms",
    "scaling_micro_clusters",
    "two_consumers_speedup",
    "producer_frames_per_s",
    "retrain_s",
    "rss_mib",
    "quality",
)
REQUIRED_QUALITY_KEYS = (
    "v0_golden",
    "v1_golden",
    "labels",
    "flag_rate",
    "random_prefix_v1_golden",
    "original_rule_v1_golden",
    "v0_error_rate_among_flagged",
    "v0_error_rate_stream",
)
BASELINE_NAMES = {
    "river_dbstream_per_point": "river DBSTREAM, learn_one/predict_one per frame",
    "original_tool_kmeans_l1": "original tool's method (k-means 20, L1, 16-frame batches), vectorised",
}


def missing_keys(report: Mapping[str, Any]) -> list[str]:
    """Required keys (the issue's list) absent from ``report``; ``quality.x`` for the nested ones."""
    missing = [k for k in REQUIRED_KEYS if k not in report]
    quality = report.get("quality") or {}
    missing += [f"quality.{k}" for k in REQUIRED_QUALITY_KEYS if k not in quality]
    return missing


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def _pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * float(value):.{digits}f}%"


def _ratio(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.2f}×"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def sections(report: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, shared by the stdout and the markdown rendering."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    ratios = report.get("ratios", {})
    rows = [
        ["limit: consume() + orjson.loads, nothing else", _num(report.get("limit_frames_per_s")), "1.00×"],
        [
            "edgeloop consumer (decode → validate → featurise → score → predict → publish → commit)",
            _num(report.get("consumer_frames_per_s")),
            _ratio(report.get("ratio_vs_limit")),
        ],
    ]
    out.append(("Throughput over Kafka (same frames, same broker)", ["path", "frames/s", "vs limit"], rows))
    rows = [
        [
            "edgeloop scoring, in process (Monitor.decide per batch)",
            _num(report.get("edgeloop_offline_frames_per_s")),
            "",
            "",
        ]
    ]
    for name, fps in (report.get("baselines") or {}).items():
        rows.append(
            [
                BASELINE_NAMES.get(name, name),
                _num(fps),
                _ratio(ratios.get(f"consumer_vs_{name}")),
                _ratio(ratios.get(f"offline_vs_{name}")),
            ]
        )
    out.append(
        ("Baselines, in process (no Kafka)", ["method", "frames/s", "edgeloop consumer ÷", "edgeloop scoring ÷"], rows)
    )
    latency = report.get("latency_ms") or {}
    rows = [
        [
            _num(float(rate)),
            _num(v.get("achieved_rate")),
            _num(v.get("p50"), 1),
            _num(v.get("p99"), 1),
            _num(v.get("p99_with_warmup"), 1),
            _num(v.get("max"), 1),
            _num(v.get("frames")),
        ]
        for rate, v in latency.items()
    ]
    out.append(
        (
            "Frame-to-decision latency (produce → committed decision)",
            ["target frames/s", "achieved frames/s", "p50 ms", "p99 ms", "p99 incl. warm-up", "max ms", "frames"],
            rows,
        )
    )
    details = report.get("scaling_details") or {}
    rows = [
        [
            str(count),
            _num(details.get(count, {}).get("n_clusters")),
            _num(fps),
            _num(details.get(count, {}).get("build_s"), 1),
        ]
        for count, fps in (report.get("scaling_micro_clusters") or {}).items()
    ]
    if report.get("scaling_drop") is not None:
        rows.append(["drop, fewest → most clusters", "", _ratio(report["scaling_drop"]), ""])
    out.append(("Scaling with the reference size", ["max_clusters", "micro-clusters", "frames/s", "build s"], rows))
    procs = report.get("consumer_processes") or {}
    rows = [
        [
            str(n),
            _num(v.get("frames")),
            _num(v.get("drain_s"), 2),
            _num(v.get("frames_per_s")),
            str(v.get("partition_sizes")),
        ]
        for n, v in procs.items()
    ]
    rows.append(["speedup 2 vs 1", "", "", _ratio(report.get("two_consumers_speedup")), ""])
    out.append(
        (
            "Consumer processes on a 2-partition topic",
            ["processes", "frames", "drain s", "frames/s", "per partition"],
            rows,
        )
    )
    retrain = report.get("retrain_details") or {}
    rows = [
        ["producer replay at rate 0", f"{_num(report.get('producer_frames_per_s'))} frames/s"],
        [
            f"retrain: train on {retrain.get('training_rows', '?')} training + "
            f"{retrain.get('edge_cases', '?')} edge-case frames",
            f"{_num(report.get('retrain_s'), 2)} s",
        ],
    ]
    if retrain.get("retrainer_service_training_s") is not None:
        rows.append(["retrain inside `python -m retrainer`", f"{_num(retrain['retrainer_service_training_s'], 2)} s"])
    for service, mib in (report.get("rss_mib") or {}).items():
        rows.append([f"peak RSS: {service}", "n/a" if mib is None else f"{_num(mib)} MiB"])
    out.append(("Producer, retraining, memory", ["figure", "value"], rows))
    q = report.get("quality") or {}
    rows = [
        ["v0 golden accuracy", _pct(q.get("v0_golden"))],
        [f"v1 golden accuracy (edgeloop, {q.get('labels')} labels)", _pct(q.get("v1_golden"), 2)],
        [
            f"v1, {q.get('labels')} random frames of the same prefix ({q.get('prefix_frames')} frames, "
            f"mean of {len(q.get('random_prefix_v1_golden_by_seed') or [])} seeds)",
            _pct(q.get("random_prefix_v1_golden"), 2),
        ],
        [
            f"v1, the original tool's rule ({q.get('original_rule_labels')} labels)",
            _pct(q.get("original_rule_v1_golden"), 2),
        ],
        ["flag rate under v0 (out of distribution or uncertain), edgeloop", _pct(q.get("flag_rate"), 2)],
        ["flag rate, original tool's rule", _pct(q.get("original_rule_flag_rate"), 2)],
        ["flag rate after absorbing v1 (rest of the stream)", _pct(q.get("flag_rate_after_v1"), 2)],
        ["v0 error rate among edgeloop's flagged frames", _pct(q.get("v0_error_rate_among_flagged"))],
        [
            "v0 error rate among the original rule's flagged frames",
            _pct(q.get("original_rule_v0_error_rate_among_flagged")),
        ],
        ["v0 error rate, whole stream", _pct(q.get("v0_error_rate_stream"))],
    ]
    out.append(("Detection quality (offline, the services' own logic)", ["figure", "value"], rows))
    return out


def render_table(report: Mapping[str, Any]) -> str:
    """The report as plain text tables (stdout)."""
    lines = [f"edgeloop bench ({report.get('mode')}) — {report.get('timestamp')}", _where(report), ""]
    for title, header, rows in sections(report):
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
        lines.append(title)
        lines.append("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for row in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        lines.append("")
    for note in report.get("notes") or []:
        lines.append(f"note: {note}")
    return "\n".join(lines).rstrip() + "\n"


def _where(report: Mapping[str, Any]) -> str:
    m = report.get("machine") or {}
    v = report.get("versions") or {}
    load = m.get("load_average_at_start") or []
    return (
        f"{m.get('cpu_model')} ({m.get('cores')} cores, load average {', '.join(map(str, load))} at start); "
        f"Python {v.get('python')}, numpy {v.get('numpy')}, torch {v.get('torch')}, confluent-kafka "
        f"{v.get('confluent-kafka')} / librdkafka {v.get('librdkafka')}, river {v.get('river')}, Kafka "
        f"{v.get('kafka broker')}; data: {(report.get('data') or {}).get('description')}"
    )


def render_markdown(report: Mapping[str, Any]) -> str:
    """The README's benchmark section, generated from a report."""
    lines = [
        "## Benchmarks",
        "",
        f"Measured {report.get('timestamp')} with `{report.get('command')}` ({report.get('mode')} run, "
        f"{_num(report.get('elapsed_s'))} s). {_where(report)}.",
        "",
        "Every comparison is a ratio of figures measured side by side in the same run, on the same frames "
        "and the same broker; absolute numbers move with the machine and its load.",
        "",
    ]
    for title, header, rows in sections(report):
        lines.append(f"### {title}")
        lines.append("")
        lines += _table(header, rows)
        lines.append("")
    for note in report.get("notes") or []:
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"
