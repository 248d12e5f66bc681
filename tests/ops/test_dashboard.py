"""The provisioned Grafana dashboard: the panels the operators need, on metrics that exist."""

from __future__ import annotations

import re

from tests.ops.ops_files import (
    COMPOSE,
    DASHBOARD,
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    dashboard,
    exported_metrics,
    load_yaml,
    metric_names_in,
    panel_queries,
    panels,
    sample_names,
)


def queries_of(title_words: str) -> list[str]:
    """The queries of the one panel whose title contains ``title_words`` (case-insensitive)."""
    matching = [p for p in panels() if title_words.lower() in p["title"].lower()]
    assert len(matching) == 1, f"expected one panel titled like {title_words!r}, found {[p['title'] for p in matching]}"
    return [t["expr"] for t in matching[0]["targets"]]


def test_dashboard_has_a_panel_for_everything_the_operators_watch() -> None:
    compact = {title: [re.sub(r"\s+", "", q) for q in queries_of(title)] for title in (
        "frames per second", "ood rate", "drift statistics", "drift alarm", "edge cases collected vs threshold",
        "model version", "golden accuracy per version", "lag per partition", "latency p50 / p99",
        "dead letters by reason", "micro-clusters",
    )}  # fmt: skip
    fps = " ".join(compact["frames per second"])
    assert "rate(edgeloop_producer_frames_sent_total" in fps and "rate(edgeloop_consumer_frames_scored_total" in fps
    assert any("edgeloop_consumer_ood_rate_ratio" in q for q in compact["ood rate"])
    drift = " ".join(compact["drift statistics"])
    assert "edgeloop_consumer_drift_psi" in drift and "edgeloop_consumer_drift_emd" in drift
    assert compact["drift alarm"][0] == "max(edgeloop_consumer_drift_alarm)"
    edge = " ".join(compact["edge cases collected vs threshold"])
    assert "edgeloop_retrainer_edge_cases_collected" in edge and "edgeloop_retrainer_retrain_threshold" in edge
    versions = " ".join(compact["model version"])
    assert "edgeloop_retrainer_model_version" in versions and "edgeloop_consumer_model_version" in versions
    assert compact["golden accuracy per version"] == ["maxby(version)(edgeloop_retrainer_golden_accuracy_ratio)"]
    assert compact["lag per partition"] == ["maxby(partition)(edgeloop_consumer_lag_messages)"]
    latency = compact["latency p50 / p99"]
    bucket_rate = "sumby(le)(rate(edgeloop_consumer_frame_to_decision_seconds_bucket[$__rate_interval]))"
    assert f"histogram_quantile(0.5,{bucket_rate})" in latency
    assert f"histogram_quantile(0.99,{bucket_rate})" in latency
    assert compact["dead letters by reason"] == [
        "sumby(reason)(rate(edgeloop_consumer_dead_letters_total[$__rate_interval]))"
    ]
    assert any("edgeloop_consumer_micro_clusters" in q for q in compact["micro-clusters"])


def test_every_query_uses_metrics_the_services_export() -> None:
    known = sample_names(exported_metrics())
    for title, ref, expr in panel_queries():
        used = metric_names_in(expr)
        # Besides the services' metrics, only Prometheus's own scrape health (`up`) is read.
        assert used or expr.startswith("up{"), f"panel {title!r} query {ref} reads no edgeloop metric: {expr}"
        assert used <= known, f"panel {title!r} query {ref} uses unknown metrics {sorted(used - known)}"


def test_counters_are_only_read_through_rate_or_as_totals() -> None:
    # A raw counter graphed over time is a saw-tooth of restarts; rate() or a deliberate total only.
    counters = {name for name, (kind, _) in exported_metrics().items() if kind == "counter"}
    for title, ref, expr in panel_queries():
        for name in metric_names_in(expr) & counters:
            rated = re.search(rf"(rate|increase)\(\s*{name}\b", expr)
            total = re.fullmatch(rf"sum(\s*by\s*\(\w+\))?\s*\(\s*{name}\s*\)", expr.strip())
            assert rated or total, f"panel {title!r} {ref}: counter {name} neither rated nor summed: {expr}"


def test_panels_use_the_provisioned_datasource_and_do_not_overlap() -> None:
    board = dashboard()
    (source,) = load_yaml(DATASOURCES)["datasources"]
    uid = source["uid"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        if "targets" in panel:
            assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == uid, (panel["title"], target["refId"])
                assert target["refId"] and target["expr"].strip()
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), f"{panel['title']}: duplicate refIds"
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, f"{panel['title']} is wider than the dashboard"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in occupied, f"{panel['title']} overlaps {occupied[(x, y)]}"
                occupied[(x, y)] = panel["title"]
    assert board["uid"] == "edgeloop"
    for annotation in board["annotations"]["list"]:
        assert annotation["datasource"]["uid"] == uid


def test_grafana_provisioning_points_at_the_mounted_dashboard_directory() -> None:
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(v.rsplit(":", 2)[:2] if v.count(":") == 2 else v.split(":", 1) for v in grafana["volumes"])
    assert mounts["./ops/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./ops/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert DASHBOARD.parent.name == "dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
