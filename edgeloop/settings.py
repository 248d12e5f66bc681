"""Settings shared by every service.

Each service has one typed settings object (pydantic-settings). A field ``bootstrap_servers`` is read
from ``--bootstrap-servers`` or the environment variable ``EDGELOOP_BOOTSTRAP_SERVERS``: the same names
for every service. librdkafka options pass through untouched from ``EDGELOOP_KAFKA_<KEY>`` variables,
the key lower-cased with ``_`` turned into ``.`` (``EDGELOOP_KAFKA_SASL_MECHANISM=PLAIN`` becomes
``sasl.mechanism=PLAIN``); their values are never printed.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings, CliApp, CliSettingsSource, SettingsConfigDict

ENV_PREFIX = "EDGELOOP_"
KAFKA_ENV_PREFIX = "EDGELOOP_KAFKA_"
FALLBACK_BOOTSTRAP = "127.0.0.1:9092"
# Keys whose values must never reach a log line.
SECRET_KEY_MARKERS = ("password", "secret", "key.pem", "keystore", "token", "sasl.jaas")


def cache_dir() -> Path:
    """Where edgeloop keeps what it downloads and the local broker's state (outside the repository)."""
    base = os.environ.get("EDGELOOP_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgeloop"
    )
    return Path(base)


def default_bootstrap_servers() -> str:
    """The running local broker's address if there is one, else 127.0.0.1:9092."""
    from edgeloop.broker import running_bootstrap  # late import: the broker module is heavier

    return running_bootstrap() or FALLBACK_BOOTSTRAP


def kafka_passthrough(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka options from ``EDGELOOP_KAFKA_*`` environment variables."""
    environ = os.environ if environ is None else environ
    return {
        key[len(KAFKA_ENV_PREFIX) :].lower().replace("_", "."): value
        for key, value in environ.items()
        if key.startswith(KAFKA_ENV_PREFIX) and len(key) > len(KAFKA_ENV_PREFIX)
    }


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a client configuration that is safe to log."""
    return {k: ("***" if any(m in k.lower() for m in SECRET_KEY_MARKERS) else v) for k, v in config.items()}


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclass it per service and add fields."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_avoid_json=True,
        extra="ignore",
        populate_by_name=True,
    )

    bootstrap_servers: str = Field(
        default_factory=default_bootstrap_servers,
        description="Kafka bootstrap servers (default: the local broker's address when it runs).",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the Prometheus /metrics endpoint binds to.")
    metrics_port: int = Field(0, description="Port of the Prometheus /metrics endpoint (0 = off).")
    log_level: str = Field("INFO", description="Logging level: DEBUG, INFO, WARNING, ERROR.")

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """Client configuration: bootstrap + security/librdkafka passthrough + overrides."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        config.update(kafka_passthrough())
        config.update(overrides)
        return config


S = TypeVar("S", bound=ServiceSettings)


def parse_settings(cls: type[S], argv: Sequence[str] | None = None, prog: str | None = None) -> S:
    """Build settings from flags (``argv``) over environment variables over defaults."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(cls.__doc__ or "").strip(),
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source: CliSettingsSource[argparse.ArgumentParser] = CliSettingsSource(cls, root_parser=parser)
    return CliApp.run(cls, cli_args=list(argv) if argv is not None else None, cli_settings_source=source)


ENV_HELP = """\
Every option can also be set by an environment variable: EDGELOOP_ and the option's name in capitals
with '-' as '_' (--bootstrap-servers is EDGELOOP_BOOTSTRAP_SERVERS); a flag wins over the variable.
librdkafka options, security included (security.protocol, sasl.*, ssl.*), pass through from
EDGELOOP_KAFKA_<KEY> variables (EDGELOOP_KAFKA_SASL_MECHANISM=PLAIN is sasl.mechanism=PLAIN);
their values are never printed."""


def configure_logging(level: str) -> None:
    """Configure the root logger; called once, by an entrypoint."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
