"""The loop under a real Prometheus: every dashboard panel gets data, and the numbers add up.

Prometheus (Debian's ``prometheus`` binary) runs on 127.0.0.1 with a generated scrape configuration
(1 s interval) and the project's alert rules. The producer, two consumers (one group) and the retrainer
run as ``python -m`` processes on the session's real broker, on fresh topics, on a synthetic pack, each
serving ``/metrics`` on a free port. A few broken frames are sent too, for the dead-letter panel.

Then, through Prometheus's HTTP API only:

- every query of every panel of ``ops/grafana/dashboards/edgeloop.json`` returns data (a finite value);
- the values agree with what the services counted and the broker holds: frames scored = frames the
  producer sent (= lines of the consumers' decision logs), dead letters by reason = the broken frames sent
  (= records on the dead-letter topic), frames flagged = edge-case records on the topic = edge cases the
  retrainer received; golden accuracy per version = the registry's metadata; lag 0 at the end;
- every alert rule evaluates without error on the real series.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeloop.report import write_report
from edgeloop.synthetic import synthetic_pack
from tests.kafka_helpers import high_watermarks, produce, unique_name, wait_until
from tests.ops.ops_files import ALERT_RULES, concrete, dashboard, panel_queries

log = logging.getLogger(__name__)

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.kafka,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="the prometheus server binary is not installed (Debian: apt-get install prometheus; .ci/run does it)",
    ),
]

STREAM = 3000
RETRAIN_AFTER = 15  # edge cases collected after near-duplicate removal: a few dozen here
THRESHOLD_QUANTILE = "0.6"
# Broken frames for the dead-letter panel, with the reason the consumer must give each.
BAD_FRAMES = {
    b"this is not json": "not_json",
    b'{"id": 1, "ts": 0}': "missing_kps",
    b'{"id": 2, "kps": [1.0, 2.0, 3.0]}': "bad_kps_length",
}
# The producer's process exits when the replay is done, and its /metrics with it. Here it stays up
# (the metrics server is a daemon thread of the same process) until the test has read everything.
PRODUCER_THEN_WAIT = (
    "import signal, sys\n"
    "from producer.__main__ import main\n"
    "code = main(sys.argv[1:])\n"
    "print(f'producer main returned {code}', flush=True)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
    "signal.pause()\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Services:
    """The processes of one run; all stopped (by pid) at the end, whatever happened."""

    logs: Path
    env: dict[str, str]
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - the child writes it until it ends
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.logs)
        log.close()
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                tail = "\n".join(self.log(name).splitlines()[-25:])
                raise AssertionError(f"{name} exited with {process.returncode}:\n{tail}")

    def stop_all(self) -> dict[str, int | None]:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, process in self.running.items():
            try:
                codes[name] = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait(timeout=10)
        return codes


class PrometheusAPI:
    def __init__(self, base: str) -> None:
        self.base = base
        # Called while waiting: raises when a service died, so a wait fails at once with its log.
        self.alive: Callable[[], None] = lambda: None

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}" if params else f"{self.base}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (``[{"metric": labels, "value": [t, "v"]}]``) of ``expr``, now."""
        data = self.get("/api/v1/query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return list(data["result"])

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr}: expected one series, got {result}"
        return float(result[0]["value"][1])

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}

    def eventually(self, expr: str, accept: Callable[[list[dict[str, Any]]], bool], timeout: float = 60) -> Any:
        seen: list[Any] = []

        def check() -> bool:
            self.alive()
            seen[:] = [self.query(expr)]
            return accept(seen[0])

        try:
            wait_until(check, timeout, interval=0.5, what=expr)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last result: {seen[0] if seen else None}") from None
        return seen[0]


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[dict[str, list[int]]], PrometheusAPI]]:
    """Factory: start Prometheus scraping ``{job: [ports on 127.0.0.1]}`` every second."""
    started: list[subprocess.Popen[bytes]] = []

    def start(jobs: dict[str, list[int]]) -> PrometheusAPI:
        assert PROMETHEUS is not None
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
            "rule_files": [str(ALERT_RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}
                for job, ports in jobs.items()
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - the child writes it until it ends
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        started.append(process)
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(ready, 60, interval=0.25, what="prometheus /-/ready")
        return PrometheusAPI(base)

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def test_every_panel_has_data_and_the_counts_agree(
    kafka_config: dict[str, Any],
    new_topic: Callable[..., str],
    prometheus_for: Callable[[dict[str, list[int]]], PrometheusAPI],
    tmp_path: Path,
) -> None:
    pack = synthetic_pack(tmp_path / "pack", seed=7, training=1000, stream=STREAM, golden=300)
    frames = new_topic(2, prefix="frames")
    edges = new_topic(2, prefix="edges")
    dlq = new_topic(1, prefix="dlq")
    versions = new_topic(1, prefix="versions", config={"cleanup.policy": "compact"})
    registry = tmp_path / "registry"
    ports = {"producer": free_port(), "consumer-0": free_port(), "consumer-1": free_port(), "retrainer": free_port()}
    prometheus = prometheus_for(
        {
            "producer": [ports["producer"]],
            "consumer": [ports["consumer-0"], ports["consumer-1"]],
            "retrainer": [ports["retrainer"]],
        }
    )
    env = {**os.environ, "EDGELOOP_BOOTSTRAP_SERVERS": kafka_config["bootstrap.servers"], "PYTHONUNBUFFERED": "1"}
    env.pop("EDGELOOP_METRICS_PORT", None)
    (tmp_path / "logs").mkdir()
    services = Services(tmp_path / "logs", env)
    prometheus.alive = services.check_alive
    python = sys.executable
    started = time.monotonic()
    try:
        services.start("retrainer", [
            python, "-m", "retrainer", "--registry", str(registry), "--training-data", str(pack.training),
            "--golden-data", str(pack.golden), "--master-annotations", str(pack.master),
            "--retrain-after", str(RETRAIN_AFTER), "--max-retrains", "1", "--epochs", "3",
            "--edge-topic", edges, "--model-versions-topic", versions, "--group-id", unique_name("retrainer"),
            "--metrics-port", str(ports["retrainer"]),
        ])  # fmt: skip
        # The retrainer publishes version 0 before it serves /metrics: wait for its scrape to be up.
        prometheus.eventually('up{job="retrainer"} == 1', bool, timeout=180)
        group = unique_name("monitor")
        for i in (0, 1):
            services.start(f"consumer-{i}", [
                python, "-m", "consumer", "--registry", str(registry), "--training-data", str(pack.training),
                "--topic", frames, "--edge-topic", edges, "--dlq-topic", dlq, "--model-versions-topic", versions,
                "--group-id", group, "--instance-id", f"ops-{i}", "--window-size", "300", "--batch-size", "500",
                # A low threshold: the test needs edge cases whatever the tuned default flags on this pack.
                "--threshold-quantile", THRESHOLD_QUANTILE,
                "--decision-log", str(tmp_path / "decisions" / f"consumer-{i}.jsonl"),
                "--metrics-port", str(ports[f"consumer-{i}"]),
            ])  # fmt: skip
        # Both monitors up and sharing the two partitions before the stream starts (no rebalance mid-stream).
        prometheus.eventually(
            "count(edgeloop_consumer_assigned_partitions == 1) == 2",
            bool,
            timeout=240,
        )
        services.check_alive()
        services.start("producer", [
            python, "-c", PRODUCER_THEN_WAIT, "--data", str(pack.stream), "--topic", frames, "--rate", "600",
            "--partitions", "2", "--no-progress", "--metrics-port", str(ports["producer"]),
        ])  # fmt: skip
        produce(kafka_config, frames, [(b"broken", value) for value in BAD_FRAMES])

        # Wait until the producer is done, the monitors have read everything, and the retrainer has
        # received every edge case (all through Prometheus).
        wait_until(lambda: "producer main returned" in services.log("producer"), 120, 0.5, "the replay to end")
        assert "producer main returned 0" in services.log("producer"), services.log("producer")[-2000:]
        consumed = STREAM + len(BAD_FRAMES)
        prometheus.eventually(
            "sum(edgeloop_consumer_frames_consumed_total)",
            lambda r: finite(r) and float(r[0]["value"][1]) == consumed,
            timeout=180,
        )
        flagged = prometheus.value("sum(edgeloop_consumer_frames_flagged_total)")
        assert flagged >= RETRAIN_AFTER, f"only {flagged} frames flagged: too few for a retrain"
        prometheus.eventually(
            "sum(edgeloop_retrainer_edge_cases_received_total)",
            lambda r: finite(r) and float(r[0]["value"][1]) == flagged,
            timeout=120,
        )
        prometheus.eventually(
            'sum(edgeloop_retrainer_retrains_total{outcome=~"published|rejected"})',
            lambda r: finite(r) and float(r[0]["value"][1]) >= 1,
            timeout=240,
        )
        prometheus.eventually(
            "max by (partition) (edgeloop_consumer_lag_messages)",
            lambda r: len(r) == 2 and all(float(x["value"][1]) == 0 for x in r),
            timeout=60,
        )
        services.check_alive()
        time.sleep(2.5)  # two more scrapes: every gauge has its final value
        window = f"{int(time.monotonic() - started) + 30}s"

        # 1. Every panel's every query returns data.
        empty = []
        for title, ref, expr in panel_queries():
            result = prometheus.query(concrete(expr, window))
            if not finite(result):
                empty.append((title, ref, concrete(expr, window), result))
        assert not empty, "panels without data:\n" + "\n".join(map(str, empty))

        # 2. The values agree with what the services counted and what the broker holds.
        assert prometheus.value("sum(edgeloop_producer_frames_sent_total)") == STREAM
        assert prometheus.value("sum(edgeloop_producer_frames_acked_total)") == STREAM
        assert sum(high_watermarks(kafka_config, frames).values()) == consumed
        assert prometheus.value("sum(edgeloop_consumer_frames_scored_total)") == STREAM
        decisions = [
            json.loads(line)
            for path in sorted((tmp_path / "decisions").glob("*.jsonl"))
            for line in path.read_text().splitlines()
        ]
        assert len(decisions) == STREAM
        per_instance = prometheus.by("edgeloop_consumer_frames_scored_total", "instance")
        assert len(per_instance) == 2 and all(v > 0 for v in per_instance.values()), per_instance
        assert prometheus.by("sum by (reason) (edgeloop_consumer_dead_letters_total)", "reason") == {
            reason: 1.0 for reason in BAD_FRAMES.values()
        }
        assert sum(high_watermarks(kafka_config, dlq).values()) == len(BAD_FRAMES)
        assert flagged == sum(1 for d in decisions if d["flagged"])
        assert flagged == sum(high_watermarks(kafka_config, edges).values())
        assert prometheus.value("sum(edgeloop_retrainer_edge_cases_received_total)") == flagged
        assert prometheus.value("max(edgeloop_retrainer_retrain_threshold)") == RETRAIN_AFTER
        # Golden accuracy per version as the registry recorded it.
        recorded = {
            str(meta["version"]): meta["golden_accuracy"]
            for meta in (json.loads(p.read_text()) for p in sorted(registry.glob("v*.json")))
        }
        exported = prometheus.by("max by (version) (edgeloop_retrainer_golden_accuracy_ratio)", "version")
        assert exported.keys() <= recorded.keys() and exported, (exported, recorded)
        for version, accuracy in exported.items():
            assert accuracy == pytest.approx(recorded[version]), version
        latest = max(int(v) for v in recorded)
        assert prometheus.value("max(edgeloop_retrainer_model_version)") == latest
        if latest > 0:  # a published retrain: both monitors swapped to it
            swapped = prometheus.eventually(
                "edgeloop_consumer_model_version",
                lambda r: len(r) == 2 and all(float(x["value"][1]) == latest for x in r),
                timeout=60,
            )
            assert len(swapped) == 2
        p99 = prometheus.value(
            concrete(
                "histogram_quantile(0.99, sum by (le) "
                "(rate(edgeloop_consumer_frame_to_decision_seconds_bucket[$__rate_interval])))",
                window,
            )
        )
        assert 0 < p99 < 60

        # The dashboard's annotation query (model swaps) is valid PromQL too (a 400 would raise).
        for annotation in dashboard()["annotations"]["list"]:
            prometheus.query(annotation["expr"])
        log.info(
            "prometheus saw: %d frames sent, %d scored (%s per instance), %d flagged, %d edge cases received, "
            "dead letters %s, golden accuracy %s, latency p99 %.3f s",
            STREAM, prometheus.value("sum(edgeloop_consumer_frames_scored_total)"), per_instance, flagged,
            prometheus.value("sum(edgeloop_retrainer_edge_cases_received_total)"),
            prometheus.by("sum by (reason) (edgeloop_consumer_dead_letters_total)", "reason"), exported, p99,
        )  # fmt: skip

        # 3. Every alert rule evaluates on the real series without an error.
        groups = prometheus.get("/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) >= 10
        broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        assert not broken, broken
        firing = {a["labels"]["alertname"] for a in prometheus.get("/api/v1/alerts")["alerts"]}
        assert "EdgeloopRetrainFailed" not in firing and "EdgeloopNoConsumer" not in firing, firing
    finally:
        codes = services.stop_all()
    assert codes.get("retrainer") == 0 and codes.get("consumer-0") == 0 and codes.get("consumer-1") == 0, codes

    # The run's own outputs (decision logs, registry, the retrainer's buffer) make a report too.
    page = write_report(tmp_path)
    drawn = sorted(p.name for p in (tmp_path / "pictures").glob("*.png"))
    assert drawn == ["accuracy.png", "edge_cases.png", "ood_rate.png"]  # no reference.json: the demo writes it
    assert page.read_text().count("data:image/png;base64,") == 3
