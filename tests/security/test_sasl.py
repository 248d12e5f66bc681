"""SASL/PLAIN on the local broker: credentials from EDGELOOP_KAFKA_* reach every client; secrets never print."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaException, Producer

from edgeloop.broker.local import LocalBroker
from edgeloop.datasets import open_dataset
from edgeloop.synthetic import synthetic_pack
from tests.faults.ledger import ConsumerRun, Processes, producer_argv, read_decisions, read_topic, wait_decided
from tests.kafka_helpers import create_topic, unique_name

USER = "edgeloop"
FRAMES = 200


def _sasl_env(password: str) -> dict[str, str]:
    return {
        "EDGELOOP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "EDGELOOP_KAFKA_SASL_MECHANISM": "PLAIN",
        "EDGELOOP_KAFKA_SASL_USERNAME": USER,
        "EDGELOOP_KAFKA_SASL_PASSWORD": password,
    }


def _refused(config: dict[str, Any]) -> str:
    """Why the broker refuses a client: its metadata request fails; the error callback says why."""
    errors: list[str] = []
    producer = Producer({"log_level": 0, "error_cb": lambda e: errors.append(str(e)), **config})
    deadline = time.monotonic() + 10
    while not errors and time.monotonic() < deadline:
        producer.poll(0.5)
    with pytest.raises(KafkaException) as err:
        producer.list_topics(timeout=3)
    return " | ".join([str(err.value), *errors])


@pytest.mark.timeout(200)
def test_sasl_plain_clients_authenticate_and_strangers_are_refused(
    local_broker_factory: Callable[..., LocalBroker], tmp_path: Path
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    broker = local_broker_factory(sasl_users={USER: password})
    assert broker.sasl_bootstrap is not None
    plain = broker.client_config()
    pack = synthetic_pack(tmp_path / "pack", seed=5, training=300, stream=FRAMES, golden=20)
    topics = {name: create_topic(plain, unique_name(name), 1) for name in ("frames", "edges", "dlq")}
    versions = create_topic(plain, unique_name("versions"), 1, {"cleanup.policy": "compact"})
    env = _sasl_env(password)

    with Processes(tmp_path) as procs:
        producer = procs.start(
            "producer", [*producer_argv(pack.stream, topics["frames"], broker.sasl_bootstrap), "--log-level", "DEBUG"],
            env,
        )  # fmt: skip
        assert producer.wait(90) == 0, producer.output()[-3000:]
        assert f"acked {FRAMES}, failed 0" in producer.output()
        run = ConsumerRun(
            bootstrap=broker.sasl_bootstrap, topic=topics["frames"], edge_topic=topics["edges"],
            dlq_topic=topics["dlq"], versions_topic=versions, group=unique_name("monitor"),
            registry=tmp_path / "registry", training=pack.training, decision_log=tmp_path / "decisions.jsonl",
            batch_size=100,
        )  # fmt: skip
        consumer = procs.start("consumer", run.argv("--log-level", "DEBUG"), env)
        wait_decided(run.decision_log, {(0, o) for o in range(FRAMES)}, 120, consumer)
        consumer.signal(signal.SIGTERM)
        assert consumer.wait(30) == 0, consumer.output()[-3000:]

    # What the SASL clients wrote is really on the broker (read back over plaintext).
    ids = sorted(orjson.loads(m.value())["id"] for m in read_topic(plain, topics["frames"]))
    assert ids == sorted(r["id"] for r in open_dataset(pack.stream))
    assert len(read_decisions(run.decision_log)) == FRAMES
    # Secrets never reach a log line, even at DEBUG (client configs are logged redacted there).
    for proc in (producer, consumer):
        assert password not in proc.output(), f"{proc.name} printed the SASL password"
        # The credentials came through the passthrough: the DEBUG config dump shows the key, value masked.
        assert "'sasl.password': '***'" in proc.output()
    for module in ("producer", "consumer"):
        help_out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                                  timeout=60, env={**_environ(), **env})  # fmt: skip
        assert help_out.returncode == 0
        assert password not in help_out.stdout + help_out.stderr
        assert "EDGELOOP_KAFKA_" in help_out.stdout  # the passthrough is documented

    # Strangers are refused on the SASL listener: no credentials, and a wrong password.
    assert "_TRANSPORT" in _refused({"bootstrap.servers": broker.sasl_bootstrap})
    wrong = broker.client_config(USER) | {"sasl.password": "not-" + password}
    refused = _refused(wrong)
    assert "Authentication failed" in refused, refused


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)
