"""Shared fixtures: the real Kafka broker for the test session, fresh topics, more brokers on demand.

- ``kafka_broker`` (session): a :class:`~edgeloop.broker.local.LocalBroker` in a temporary data dir on
  free ports, started on first use and stopped at the end of the session. It never touches the broker
  ``edgeloop kafka start`` runs (other ports, other data dir, no state file). Set
  ``EDGELOOP_TEST_BOOTSTRAP=host:port`` to run the tests against an existing broker instead.
- ``kafka_config``: ``{"bootstrap.servers": ...}`` of that broker, a fresh dict per test.
- ``new_topic``: factory ``new_topic(partitions=1, prefix="test", config=None) -> name`` creating a
  uniquely named topic and waiting until all its partitions have a leader; deleted after the test.
- ``local_broker_factory``: factory for a test's own broker (for restarts, pauses, SASL), stopped after
  the test; always local, even with ``EDGELOOP_TEST_BOOTSTRAP``.

A test using any of these is marked ``kafka`` automatically (``pytest -m "not kafka"`` skips them).
Reusable helpers (produce/consume, committed offsets, high watermarks) are in ``tests/kafka_helpers.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from edgeloop.broker.local import LocalBroker
from edgeloop.settings import cache_dir
from tests.kafka_helpers import create_topic, delete_topics, unique_name

log = logging.getLogger(__name__)

KAFKA_FIXTURES = frozenset({"kafka_broker", "kafka_config", "new_topic", "local_broker_factory"})
EXTERNAL_BOOTSTRAP_ENV = "EDGELOOP_TEST_BOOTSTRAP"
# The fetched jars, found once: a test that points EDGELOOP_CACHE_DIR elsewhere must not make a broker
# started after it fetch Kafka again.
JARS_CACHE = cache_dir()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kafka = pytest.mark.kafka
    for item in items:
        if KAFKA_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(kafka)


@dataclass(frozen=True)
class ExternalBroker:
    """A broker the tests did not start (``EDGELOOP_TEST_BOOTSTRAP``): only its address is known."""

    bootstrap: str

    def client_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap}


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker | ExternalBroker]:
    """The session's broker: started here unless ``EDGELOOP_TEST_BOOTSTRAP`` names one."""
    external = os.environ.get(EXTERNAL_BOOTSTRAP_ENV)
    if external:
        try:
            AdminClient({"bootstrap.servers": external, "log_level": 2}).list_topics(timeout=15)
        except KafkaException as exc:
            pytest.fail(f"{EXTERNAL_BOOTSTRAP_ENV}={external} does not answer: {exc}")
        yield ExternalBroker(external)
        return
    broker = LocalBroker(tmp_path_factory.mktemp("kafka-session"), cache_root=JARS_CACHE)
    broker.start()
    log.info("session broker %s: log %s", broker.bootstrap, broker.log_file)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_config(kafka_broker: LocalBroker | ExternalBroker) -> dict[str, Any]:
    """Client settings for the session broker (a new dict each time: tests may add to it)."""
    return kafka_broker.client_config()


@pytest.fixture
def new_topic(kafka_config: dict[str, Any]) -> Iterator[Callable[..., str]]:
    """Factory: ``new_topic(partitions=1, prefix="test", config=None)`` -> a fresh topic's name."""
    created: list[str] = []
    admin_config = dict(kafka_config)

    def make(partitions: int = 1, prefix: str = "test", config: Mapping[str, str] | None = None) -> str:
        name = create_topic(admin_config, unique_name(prefix), partitions, config)
        created.append(name)
        return name

    yield make
    delete_topics(admin_config, created)


@pytest.fixture
def local_broker_factory(tmp_path: Path) -> Iterator[Callable[..., LocalBroker]]:
    """Factory: ``local_broker_factory(start=True, **LocalBroker kwargs)`` -> the test's own broker."""
    brokers: list[LocalBroker] = []

    def make(start: bool = True, **kwargs: Any) -> LocalBroker:
        kwargs.setdefault("cache_root", JARS_CACHE)
        broker = LocalBroker(tmp_path / f"broker-{len(brokers)}", **kwargs)
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()
