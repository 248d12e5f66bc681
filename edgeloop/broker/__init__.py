"""A real, local, single-node Apache Kafka broker (KRaft) that edgeloop fetches and runs itself.

Nothing here is a fake: the broker is the Apache Kafka server (``kafka_2.13`` from Maven Central) run in a
JVM on 127.0.0.1. Three modules, one concept each:

- :mod:`edgeloop.broker.distribution` finds Java (17 or newer) and fetches the broker's jars once into
  ``edgeloop.settings.cache_dir()/kafka-<version>/libs`` with Maven.
- :mod:`edgeloop.broker.local` holds :class:`~edgeloop.broker.local.LocalBroker`: write the broker's
  configuration, format its storage once, start it, wait until it answers, stop/pause/resume/restart it.
- :mod:`edgeloop.broker.state` records the broker that ``edgeloop kafka start`` left running (a JSON state
  file in the cache directory) and recognises its process.

:mod:`edgeloop.broker.cli` is ``edgeloop kafka start | stop | status``.

This package's ``__init__`` stays light (no Kafka client import) because
:func:`edgeloop.settings.default_bootstrap_servers` calls :func:`running_bootstrap` whenever a service
builds its settings.
"""

from __future__ import annotations

from edgeloop.errors import EdgeloopError


class BrokerError(EdgeloopError):
    """The local broker could not be fetched, started, reached or stopped."""


def running_bootstrap() -> str | None:
    """Bootstrap address of the broker ``edgeloop kafka start`` left running, or ``None``.

    Read from the state file in :func:`edgeloop.settings.cache_dir`; the address is returned only while
    the recorded process is alive and is still that broker (a reused pid is not mistaken for it).
    Brokers started by tests (:class:`~edgeloop.broker.local.LocalBroker` without ``detach``) never
    write this file.
    """
    from edgeloop.broker.state import running_state

    state = running_state()
    return state.bootstrap if state is not None else None


__all__ = ["BrokerError", "running_bootstrap"]
