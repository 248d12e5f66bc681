"""Where and with what a benchmark ran: the machine, the library versions, the time, the command."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine() -> dict[str, Any]:
    """Cores (all, and usable by this process), CPU model, memory, and the load when the run started.

    The load average is recorded because a shared machine's numbers are only comparable side by side.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "load_average_at_start": load,
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions(kafka_broker: str | None) -> dict[str, str | None]:
    """Versions of everything on the measured path (``kafka_broker``: the broker's version, if known)."""
    import confluent_kafka

    return {
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "confluent-kafka": _version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "river": _version("river"),
        "orjson": _version("orjson"),
        "kafka broker": kafka_broker,
        "edgeloop": _version("edgeloop"),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def command(argv: Sequence[str]) -> str:
    """The command that reproduces the run (as typed in the repository root)."""
    return " ".join(["uv", "run", "edgeloop", "bench", *(shlex.quote(a) for a in argv)])


def python_executable() -> str:
    return sys.executable
