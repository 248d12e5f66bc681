"""Paths of the operations files and helpers to read them (shared by the tests in ``tests/ops``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
PROMETHEUS_CONFIG = OPS / "prometheus" / "prometheus.yml"
ALERT_RULES = OPS / "prometheus" / "alerts.yml"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yml")
DASHBOARD = OPS / "grafana" / "dashboards" / "edgeloop.json"
DATASOURCES = OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = OPS / "grafana" / "provisioning" / "dashboards" / "edgeloop.yml"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
METRICS_DOC = ROOT / "docs" / "metrics.md"

# Grafana's interval variables, replaced by a fixed window when a panel's query is sent to Prometheus
# directly (Grafana would substitute them from the panel's time range and step).
GRAFANA_VARIABLES = ("$__rate_interval", "$__interval", "$__range")
METRIC_NAME = re.compile(r"\b(edgeloop_[a-z0-9_]+)\b")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every panel with queries, rows' nested panels included (collapsed rows keep theirs inside)."""
    board = board or dashboard()
    found: list[dict[str, Any]] = []
    for panel in board["panels"]:
        if panel.get("type") == "row":
            found.extend(p for p in panel.get("panels", []) if p.get("targets"))
        elif panel.get("targets"):
            found.append(panel)
    return found


def panel_queries(board: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """``(panel title, refId, expr)`` of every query of every panel."""
    return [(p["title"], t["refId"], t["expr"]) for p in panels(board) for t in p["targets"]]


def concrete(expr: str, window: str) -> str:
    """The query as Prometheus itself takes it: Grafana's interval variables replaced by ``window``."""
    for variable in GRAFANA_VARIABLES:
        expr = expr.replace(variable, window)
    return expr


def rule_expressions() -> list[tuple[str, str]]:
    """``(alert name, expr)`` of every alerting rule."""
    groups = load_yaml(ALERT_RULES)["groups"]
    return [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"] if "alert" in rule]


def metric_names_in(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


SERVICE_METRIC_MODULES = ("producer.metrics", "consumer.metrics", "retrainer.metrics")


def exported_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """``{metric family name: (type, label names)}`` the services define (counters with ``_total``)."""
    import importlib

    from prometheus_client.metrics import MetricWrapperBase

    from edgeloop.metrics import BatchHistogram

    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for module_name in SERVICE_METRIC_MODULES:
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, BatchHistogram):
                found[value.name] = ("histogram", ())
            elif isinstance(value, MetricWrapperBase):
                kind = value._type
                name = value._name + ("_total" if kind == "counter" else "")
                found[name] = (kind, tuple(value._labelnames))
    return found


def sample_names(metrics: dict[str, tuple[str, tuple[str, ...]]]) -> set[str]:
    """The series names a scrape shows for these families (histograms as _bucket, _sum, _count)."""
    names: set[str] = set()
    for name, (kind, _labels) in metrics.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names
