"""The local broker: the session fixture, the CLI, restarts, pause/resume, SASL, and the Java/Maven checks.

Everything here runs the real Apache Kafka broker; only the first block (Java version parsing, missing
tools) runs without one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from edgeloop.broker import BrokerError, running_bootstrap
from edgeloop.broker.distribution import distribution_dir, fetch, find_java, java_major_version
from edgeloop.broker.local import LocalBroker, free_ports
from edgeloop.broker.state import BrokerState, broker_processes, write_state
from edgeloop.settings import default_bootstrap_servers
from tests.kafka_helpers import (
    committed_offsets,
    consume,
    create_topic,
    group_lag,
    high_watermarks,
    produce,
    unique_name,
    wait_until,
)


def java_processes_mentioning(path: Path) -> list[int]:
    """Pids of java processes whose command line mentions ``path`` (an independent /proc scan)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"java") and any(str(path).encode() in arg for arg in args):
            found.append(int(entry.name))
    return found


# --------------------------------------------------------------------------- without a broker
@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('java version "1.8.0_402"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "11.0.2" 2019-01-15', 11),
    ],
)
def test_java_major_version(output: str, major: int) -> None:
    assert java_major_version(output) == major


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match=r"no `java` found.*Java 17 or newer"):
        find_java()


def test_old_java_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in `java` that reports version 11, to exercise the version gate.
    (tmp_path / "bin").mkdir()
    java = tmp_path / "bin" / "java"
    java.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(BrokerError, match=r"is Java 11, but Kafka .* needs Java 17"):
        find_java()


def test_fetch_without_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="`mvn` is not on PATH"):
        fetch(cache_root=tmp_path / "cache")


def test_sasl_user_names_and_passwords_are_checked(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="user name"):
        LocalBroker(tmp_path, sasl_users={"al ice": "secret"})
    with pytest.raises(BrokerError, match="password"):
        LocalBroker(tmp_path, sasl_users={"alice": 'se"cret'})


def test_running_bootstrap_ignores_dead_and_foreign_pids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGELOOP_CACHE_DIR", str(tmp_path))
    assert running_bootstrap() is None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for pid in (int(dead.stdout), os.getpid()):  # a finished process, and a live one that is no broker
        write_state(BrokerState(pid, "127.0.0.1:1", str(tmp_path), "log", "4.4.0", "now"))
        assert running_bootstrap() is None
    assert default_bootstrap_servers() == "127.0.0.1:9092"


# --------------------------------------------------------------------------- the session broker
def test_session_broker_produce_consume_and_offsets(kafka_config: dict[str, Any], new_topic: Any) -> None:
    topic = new_topic(partitions=2)
    records = {p: [(f"key-{p}-{i}".encode(), f"value-{p}-{i}".encode()) for i in range(10 + 10 * p)] for p in (0, 1)}
    for partition, batch in records.items():
        placed = produce(kafka_config, topic, batch, partition=partition)
        assert placed == [(partition, offset) for offset in range(len(batch))]
    group = unique_name("group")

    messages = consume(kafka_config, topic, 30, group=group, commit=True)

    assert sorted((m.key(), m.value()) for m in messages) == sorted(records[0] + records[1])
    assert all(m.partition() == int(m.key().split(b"-")[1]) for m in messages)  # type: ignore[union-attr]
    assert high_watermarks(kafka_config, topic) == {0: 10, 1: 20}
    assert committed_offsets(kafka_config, group, topic) == {0: 10, 1: 20}
    assert group_lag(kafka_config, group, topic) == {0: 0, 1: 0}
    assert committed_offsets(kafka_config, unique_name("nobody"), topic) == {0: None, 1: None}


def test_new_topic_has_the_partitions_asked_for(kafka_config: dict[str, Any], new_topic: Any) -> None:
    topic = new_topic(partitions=4, prefix="four", config={"cleanup.policy": "compact"})
    metadata = AdminClient(kafka_config).list_topics(topic, timeout=10).topics[topic]
    assert topic.startswith("four-")
    assert sorted(metadata.partitions) == [0, 1, 2, 3]


def test_transactions_work_on_a_single_node(kafka_config: dict[str, Any], new_topic: Any) -> None:
    # transaction.state.log replication 1 / min ISR 1: a single node must accept transactional producers.
    topic = new_topic()
    producer = Producer({**kafka_config, "transactional.id": unique_name("tx"), "log_level": 3})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, value=f"committed-{i}".encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.abort_transaction(30)

    read_committed = {**kafka_config, "isolation.level": "read_committed"}
    messages = consume(read_committed, topic, 3)

    assert [m.value() for m in messages] == [b"committed-0", b"committed-1", b"committed-2"]


# --------------------------------------------------------------------------- the CLI
def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeloop.cli", "kafka", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.kafka
def test_cli_start_status_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    # Reuse the fetched jars, but keep state, data and logs in this test's own cache dir.
    real_distribution = distribution_dir()
    fetch()
    (cache / real_distribution.name).symlink_to(real_distribution, target_is_directory=True)
    monkeypatch.setenv("EDGELOOP_CACHE_DIR", str(cache))
    env = {**os.environ, "EDGELOOP_CACHE_DIR": str(cache)}
    data_dir = cache / "kafka-broker"
    port = free_ports(1)[0]
    bootstrap = f"127.0.0.1:{port}"
    try:
        started = time.monotonic()
        start = run_cli(env, "start", "--port", str(port))
        elapsed = time.monotonic() - started
        assert start.returncode == 0, start.stderr
        assert start.stdout.strip() == bootstrap
        assert elapsed < 30, f"start took {elapsed:.1f} s"
        # The command has exited; the broker outlives it and is what settings now default to.
        assert len(broker_processes(data_dir)) == 1
        assert running_bootstrap() == bootstrap
        assert default_bootstrap_servers() == bootstrap
        assert AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers

        again = run_cli(env, "start", "--port", str(port))
        assert again.returncode == 0
        assert again.stdout.strip() == bootstrap
        assert "already running" in again.stderr

        status = run_cli(env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"running at {bootstrap}" in status.stdout
        assert str(data_dir) in status.stdout

        stop = run_cli(env, "stop")
        assert stop.returncode == 0, stop.stderr
        assert "stopped cleanly" in stop.stderr
        assert java_processes_mentioning(data_dir) == []
        assert running_bootstrap() is None

        after = run_cli(env, "status")
        assert after.returncode == 3
        assert "not running" in after.stdout
        assert "[BrokerServer id=1] shut down completed" in (data_dir / "logs" / "server.log").read_text()
    finally:
        for pid in java_processes_mentioning(data_dir):  # never leave a broker behind, even on failure
            os.kill(pid, 9)


# --------------------------------------------------------------------------- an own broker: SASL, restart
SASL_USERS = {"alice": "alice-secret"}


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(tmp_path_factory.mktemp("kafka-sasl"), sasl_users=SASL_USERS)
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.kafka
def test_sasl_authenticated_client_produces_and_consumes(sasl_broker: LocalBroker) -> None:
    assert sasl_broker.sasl_bootstrap is not None
    assert sasl_broker.sasl_bootstrap != sasl_broker.bootstrap
    topic = create_topic(sasl_broker.client_config(), unique_name("sasl"))
    alice = sasl_broker.client_config("alice")

    produce(alice, topic, [b"over-sasl-1", b"over-sasl-2"])
    messages = consume(alice, topic, 2)

    assert [m.value() for m in messages] == [b"over-sasl-1", b"over-sasl-2"]


@pytest.mark.kafka
def test_sasl_listener_refuses_unauthenticated_clients(sasl_broker: LocalBroker) -> None:
    assert sasl_broker.sasl_bootstrap is not None
    no_sasl: dict[str, Any] = {"bootstrap.servers": sasl_broker.sasl_bootstrap, "log_level": 2}
    with pytest.raises(KafkaException):
        AdminClient(no_sasl).list_topics(timeout=5)

    errors: list[KafkaError] = []
    wrong_password: dict[str, Any] = {
        **sasl_broker.client_config("alice"),
        "sasl.password": "not-alice-secret",
        "log_level": 2,
        "error_cb": errors.append,
    }
    admin = AdminClient(wrong_password)
    started = time.monotonic()
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    assert time.monotonic() - started < 10
    # error_cb is served by poll(): the refusal is reported as an authentication error.
    wait_until(
        lambda: admin.poll(0.2) is not None and any(e.code() == KafkaError._AUTHENTICATION for e in errors),
        10,
        what=f"an authentication error (got {errors})",
    )
    # The broker's log (log4j2 through the slf4j binding) records the refusal.
    wait_until(lambda: "Failed authentication" in sasl_broker.log_file.read_text(), 10, what="the refusal in the log")


@pytest.mark.kafka
def test_pause_and_resume(sasl_broker: LocalBroker) -> None:
    config = {**sasl_broker.client_config(), "log_level": 2}
    sasl_broker.pause()
    try:
        assert sasl_broker.paused
        with pytest.raises(KafkaException):
            AdminClient(config).list_topics(timeout=2)
    finally:
        sasl_broker.resume()
    assert AdminClient(config).list_topics(timeout=10).brokers


@pytest.mark.kafka
def test_restart_on_same_data_dir_keeps_messages(sasl_broker: LocalBroker) -> None:
    config = sasl_broker.client_config()
    topic = create_topic(config, unique_name("durable"), partitions=2)
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(20)]
    produce(config, topic, records)
    ports = (sasl_broker.port, sasl_broker.controller_port, sasl_broker.sasl_port)

    assert sasl_broker.stop() is True  # clean shutdown on SIGTERM
    assert java_processes_mentioning(sasl_broker.data_dir) == []
    sasl_broker.start()

    assert (sasl_broker.port, sasl_broker.controller_port, sasl_broker.sasl_port) == ports
    assert sasl_broker.startup_seconds is not None and sasl_broker.startup_seconds < 30
    assert sum(high_watermarks(config, topic).values()) == 20
    assert sorted((m.key(), m.value()) for m in consume(config, topic, 20)) == sorted(records)
    # A new LocalBroker object on the same data dir finds the same ports and cluster.
    again = LocalBroker(sasl_broker.data_dir, sasl_users=SASL_USERS)
    assert (again.port, again.controller_port, again.sasl_port, again.cluster_id) == (
        *ports,
        sasl_broker.cluster_id,
    )
