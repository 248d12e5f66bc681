"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

- The compose file validates against the compose-spec JSON schema (vendored in check-jsonschema as
  ``vendor.compose-spec``, so no download at test time).
- It stays in step with the local demo: the topics of :func:`edgeloop.kafka.default_topics`, the
  services' settings (every ``EDGELOOP_*`` variable must be a field of the service's settings class:
  pydantic-settings ignores unknown variables, so a typo would silently do nothing), the metrics ports
  Prometheus scrapes, the data pack's file names, the broker version of ``edgeloop kafka start``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from consumer.settings import ConsumerSettings
from edgeloop.broker.distribution import KAFKA_VERSION
from edgeloop.datasets import GOLDEN_FILE, MASTER_FILE, STREAM_FILE, TRAINING_FILE
from edgeloop.kafka import default_topics
from edgeloop.settings import ENV_PREFIX, KAFKA_ENV_PREFIX
from producer.settings import ProducerSettings
from retrainer.settings import RetrainerSettings
from tests.ops.ops_files import COMPOSE, DOCKERFILE, PROMETHEUS_CONFIG, ROOT, load_yaml

SETTINGS: dict[str, type[BaseSettings]] = {
    "producer": ProducerSettings,
    "consumer": ConsumerSettings,
    "retrainer": RetrainerSettings,
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_compose_file_validates_against_the_compose_spec() -> None:
    done = check_compose_schema(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validation done" in done.stdout


def test_the_schema_check_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    # Guard against a vacuous check: the same file with a misspelt key and a bad condition must fail.
    broken = COMPOSE.read_text().replace("    depends_on:\n", "    depends_onn:\n", 1)
    broken = broken.replace("condition: service_healthy", "condition: when_ready", 1)
    (tmp_path / "docker-compose.yml").write_text(broken)
    done = check_compose_schema(tmp_path / "docker-compose.yml")
    assert done.returncode != 0
    assert "depends_onn" in done.stdout + done.stderr


def service_module(service: dict[str, Any]) -> str | None:
    command = service.get("command")
    if isinstance(command, list) and command[:2] == ["python", "-m"]:
        return str(command[2])
    return None


def test_the_three_services_run_their_python_module(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {name: service_module(s) for name, s in services.items() if service_module(s)} == {
        "producer": "producer",
        "consumer": "consumer",
        "retrainer": "retrainer",
    }
    images = {services[name]["image"] for name in SETTINGS}
    assert images == {"edgeloop:latest"}
    assert all(services[name]["build"]["dockerfile"] == DOCKERFILE.name for name in SETTINGS)


def test_every_edgeloop_variable_is_a_setting_of_its_service(compose: dict[str, Any]) -> None:
    checked = 0
    for name, settings in SETTINGS.items():
        env = compose["services"][name]["environment"]
        assert isinstance(env, dict), f"{name}: environment must be a mapping"
        fields = set(settings.model_fields)
        for variable, value in env.items():
            assert variable.startswith(ENV_PREFIX), f"{name}: {variable} is not an edgeloop setting"
            if variable.startswith(KAFKA_ENV_PREFIX):
                continue  # librdkafka passthrough (EDGELOOP_KAFKA_<KEY>)
            field = variable[len(ENV_PREFIX) :].lower()
            assert field in fields, f"{name}: {variable} is not a field of {settings.__name__}"
            checked += 1
            # The value must parse as that field's type (pydantic-settings would refuse to start).
            concrete = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
            settings.model_validate({field: concrete, "bootstrap_servers": "kafka:9092"})
    assert checked >= 15


def test_containers_serve_metrics_on_the_ports_prometheus_scrapes(compose: dict[str, Any]) -> None:
    scrape = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    for name, settings in SETTINGS.items():
        service = compose["services"][name]
        port = int(service["environment"]["EDGELOOP_METRICS_PORT"])
        assert port == settings.model_fields["metrics_port"].default
        assert service["environment"]["EDGELOOP_METRICS_HOST"] == "0.0.0.0"
        assert f"127.0.0.1:{port}/metrics" in " ".join(service["healthcheck"]["test"])
        job = scrape[name]
        targets = (
            [f"{n}:{c['port']}" for c in job.get("dns_sd_configs", []) for n in c["names"]]
            if name == "consumer"
            else job["static_configs"][0]["targets"]
        )
        assert targets == [f"{name}:{port}"]
        assert service["environment"]["EDGELOOP_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_topic_init_creates_the_loops_topics(compose: dict[str, Any]) -> None:
    script = compose["services"]["topics"]["command"][0]
    created: dict[str, tuple[int, dict[str, str]]] = {}
    for line in script.splitlines():
        words = shlex.split(line)
        if words[:1] != ["create"]:
            continue
        args = dict(zip(words[1::2], words[2::2], strict=True))
        config = dict(c.split("=", 1) for c in [args["--config"]]) if "--config" in args else {}
        created[args["--topic"]] = (int(args["--partitions"]), config)
    expected = {t.name: (t.partitions, dict(t.config)) for t in default_topics(partitions=2)}
    assert created == expected
    assert created["model-versions"][1] == {"cleanup.policy": "compact"}
    assert "--replication-factor 1" in script
    assert compose["services"]["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_kafka_is_the_official_image_in_kraft_mode(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert compose["services"]["topics"]["image"] == kafka["image"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):  # fmt: skip
        assert env[key] == 1, key
    assert len(env["CLUSTER_ID"].split("#")[0].strip()) == 22  # a base64 UUID, as kafka-storage wants


def test_start_order_uses_health_and_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            # A one-shot job (no restart, no health check) is waited for until it exits 0, a server until healthy.
            one_shot = services[dependency].get("restart") == "no" and "healthcheck" not in services[dependency]
            expected = "service_completed_successfully" if one_shot else "service_healthy"
            assert rule["condition"] == expected, f"{name} -> {dependency}"
    assert set(services["producer"]["depends_on"]) == {"topics", "consumer"}
    assert services["consumer"]["deploy"]["replicas"] == 2
    frames = next(t for t in default_topics(partitions=2) if t.name == "frames")
    # More replicas than frames partitions would leave some idle.
    assert services["consumer"]["deploy"]["replicas"] <= frames.partitions


def test_registry_volume_is_shared_and_data_paths_are_the_packs_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("consumer", "retrainer"):
        assert "registry:/registry" in services[name]["volumes"]
        assert services[name]["environment"]["EDGELOOP_REGISTRY"] == "/registry"
    assert "registry" in compose["volumes"]
    data_mount = "${EDGELOOP_DATA_DIR:-data}:/data"
    assert data_mount in services["data"]["volumes"]
    for name in SETTINGS:
        assert f"{data_mount}:ro" in services[name]["volumes"], name
    assert services["producer"]["environment"]["EDGELOOP_DATA"] == f"/data/{STREAM_FILE}"
    assert services["consumer"]["environment"]["EDGELOOP_TRAINING_DATA"] == f"/data/{TRAINING_FILE}"
    retrainer = services["retrainer"]["environment"]
    assert (retrainer["EDGELOOP_TRAINING_DATA"], retrainer["EDGELOOP_GOLDEN_DATA"]) == (
        f"/data/{TRAINING_FILE}",
        f"/data/{GOLDEN_FILE}",
    )
    assert retrainer["EDGELOOP_MASTER_ANNOTATIONS"] == f"/data/{MASTER_FILE}"


def test_the_data_service_writes_a_synthetic_pack_only_when_none_is_mounted(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    # Run the service's own script (with /data pointed at a temporary directory) twice.
    command = compose["services"]["data"]["command"]
    assert command[:2] == ["python", "-c"]
    script = command[2].replace('Path("/data")', f"Path({str(tmp_path)!r})")
    assert script != command[2]
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 0, first.stderr
    assert "wrote the synthetic pack" in first.stdout
    for name in (TRAINING_FILE, STREAM_FILE, GOLDEN_FILE, MASTER_FILE):
        assert (tmp_path / name).stat().st_size > 1000, name
    stamp = (tmp_path / TRAINING_FILE).stat().st_mtime_ns
    second = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert second.returncode == 0, second.stderr
    assert "using it" in second.stdout
    assert (tmp_path / TRAINING_FILE).stat().st_mtime_ns == stamp


def test_dockerfile_builds_the_locked_environment_without_dev_tools() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert text.count("uv sync --frozen --no-dev") == 2
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"][
        "packages"
    ]
    for package in packages:
        assert f"COPY {package} ./{package}" in text, package
    assert re.search(r"^USER edgeloop$", text, re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored and "tests" in ignored
