"""The metrics table (docs/metrics.md, included in the README) lists exactly what the services export."""

from __future__ import annotations

import re

from tests.ops.ops_files import METRICS_DOC, exported_metrics

ROW = re.compile(r"^\| `(edgeloop_[a-z0-9_]+)` \| (\w+) \|([^|]*)\|([^|]+)\|$")


def documented() -> dict[str, tuple[str, tuple[str, ...], str]]:
    rows: dict[str, tuple[str, tuple[str, ...], str]] = {}
    for line in METRICS_DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            name, kind, labels, meaning = match.groups()
            assert name not in rows, f"{name} is listed twice in {METRICS_DOC.name}"
            rows[name] = (kind, tuple(re.findall(r"`(\w+)`", labels)), meaning.strip())
    return rows


def test_every_exported_metric_is_documented_with_its_type_and_labels() -> None:
    exported = exported_metrics()
    rows = documented()
    assert len(exported) > 40  # the three services' modules were really read
    missing = sorted(set(exported) - set(rows))
    stale = sorted(set(rows) - set(exported))
    assert not missing, f"exported but not in {METRICS_DOC}: {missing}"
    assert not stale, f"documented in {METRICS_DOC} but not exported by any service: {stale}"
    wrong = {
        name: {"doc": rows[name][:2], "code": exported[name]} for name in exported if rows[name][:2] != exported[name]
    }
    assert not wrong, f"type or labels differ between the table and the code: {wrong}"


def test_names_follow_prometheus_conventions() -> None:
    for name, (kind, labels) in exported_metrics().items():
        service = name.split("_")[1]
        assert service in {"producer", "consumer", "retrainer"}, name
        assert name.endswith("_total") == (kind == "counter"), f"{name}: only counters end in _total"
        if kind == "histogram":
            assert name.endswith("_seconds"), f"{name}: histograms here measure time, in seconds"
        # A frame id or a free-form text as a label would make the series count unbounded.
        assert not {"id", "frame_id", "message", "reason_text"} & set(labels), f"{name}: unbounded label {labels}"
