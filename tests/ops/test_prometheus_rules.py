"""The alert rules and the scrape configuration, checked by Prometheus's own promtool.

promtool comes with Debian's ``prometheus`` package (``.ci/run`` installs it); without it these tests
skip and say so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from consumer.settings import ConsumerSettings
from producer.settings import ProducerSettings
from retrainer.settings import RetrainerSettings
from tests.ops.ops_files import (
    ALERT_RULES,
    ALERT_TESTS,
    PROMETHEUS_CONFIG,
    exported_metrics,
    load_yaml,
    metric_names_in,
    rule_expressions,
    sample_names,
)

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: install Debian's prometheus package (apt-get install prometheus)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", str(ALERT_RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in done.stdout


@needs_promtool
def test_alerts_fire_when_they_should_and_only_then() -> None:
    # alerts_test.yml: drift alarm, dead-letter growth and share, lag growth, no frames, no consumer,
    # retrain failed; each with the series that must and must not trigger it, before and after `for`.
    done = promtool("test", "rules", str(ALERT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_promtool_unit_tests_are_not_vacuous(tmp_path: Path) -> None:
    # The same unit tests against rules with the drift alarm's threshold flipped must fail: promtool
    # really compares the alerts it computes with the expected ones.
    alarm = "max(edgeloop_consumer_drift_alarm)"
    broken = ALERT_RULES.read_text().replace(f"{alarm} > 0", f"{alarm} < 0")
    assert broken != ALERT_RULES.read_text()
    tests_text = ALERT_TESTS.read_text().replace("../../ops/prometheus/alerts.yml", "broken_alerts.yml")
    (tmp_path / "broken_alerts.yml").write_text(broken)
    (tmp_path / "alerts_test.yml").write_text(tests_text)
    done = promtool("test", "rules", str(tmp_path / "alerts_test.yml"))
    assert done.returncode != 0
    assert "EdgeloopDriftAlarm" in done.stdout + done.stderr


@needs_promtool
def test_scrape_config_passes_promtool_check() -> None:
    done = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is valid prometheus config file syntax" in done.stdout


def test_required_alerts_exist() -> None:
    names = {name for name, _ in rule_expressions()}
    required = {
        "EdgeloopDriftAlarm",
        "EdgeloopDeadLettersGrowing",
        "EdgeloopConsumerLagGrowing",
        "EdgeloopNoFrames",
        "EdgeloopRetrainFailed",
    }
    assert required <= names, f"missing alerts: {sorted(required - names)}"
    for group in load_yaml(ALERT_RULES)["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_alert_rules_use_only_metrics_the_services_export() -> None:
    known = sample_names(exported_metrics())
    used = {name for _, expr in rule_expressions() for name in metric_names_in(expr)}
    assert used, "no edgeloop metric found in the rules"
    assert used <= known, f"rules use metrics no service exports: {sorted(used - known)}"


def test_scrape_config_targets_the_services_metrics_ports() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["producer"]["static_configs"][0]["targets"] == [
        f"producer:{ProducerSettings.model_fields['metrics_port'].default}"
    ]
    # The consumer replicas are found one by one through DNS (see the comment in prometheus.yml).
    (dns,) = jobs["consumer"]["dns_sd_configs"]
    assert dns == {
        "names": ["consumer"],
        "type": "A",
        "port": ConsumerSettings.model_fields["metrics_port"].default,
        "refresh_interval": "10s",
    }
    port = RetrainerSettings.model_fields["metrics_port"].default
    assert jobs["retrainer"]["static_configs"][0]["targets"] == [f"retrainer:{port}"]
    assert config["rule_files"] == [ALERT_RULES.name]
