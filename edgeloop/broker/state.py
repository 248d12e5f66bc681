"""Which local broker is running: the state file and recognising the broker's process.

``edgeloop kafka start`` leaves a JVM running after the command exits; it records it in
``cache_dir()/kafka-broker.json`` (:class:`BrokerState`). A pid alone is not proof (pids are reused), so a
process counts as that broker only if its command line is ``kafka.Kafka`` with the marker
``-Dedgeloop.broker.home=<data dir>`` that :class:`~edgeloop.broker.local.LocalBroker` puts on every JVM
it starts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeloop.settings import cache_dir

log = logging.getLogger(__name__)

STATE_FILE_NAME = "kafka-broker.json"
# JVM system property naming the broker's data dir: lets us find "our" JVMs among all processes.
HOME_MARKER = "-Dedgeloop.broker.home="
MAIN_CLASS = "kafka.Kafka"


@dataclass(frozen=True)
class BrokerState:
    """What ``edgeloop kafka start`` recorded about the broker it left running."""

    pid: int
    bootstrap: str
    data_dir: str
    log_file: str
    kafka_version: str
    started_at: str
    sasl_bootstrap: str | None = None


def state_file() -> Path:
    """Path of the state file (in :func:`edgeloop.settings.cache_dir`, read at call time)."""
    return cache_dir() / STATE_FILE_NAME


def write_state(state: BrokerState) -> Path:
    """Record ``state`` atomically (write a temporary file, then rename) and return the file's path."""
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_state() -> BrokerState | None:
    """The recorded state, whether or not its process still runs; ``None`` if absent or unreadable."""
    path = state_file()
    try:
        raw = json.loads(path.read_text())
        return BrokerState(**raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        # A corrupt file must not break every service's settings: report it and treat it as absent.
        log.warning("ignoring unreadable broker state file %s: %s", path, exc)
        return None


def clear_state() -> None:
    """Remove the state file if present."""
    with contextlib.suppress(FileNotFoundError):
        state_file().unlink()


def running_state() -> BrokerState | None:
    """The recorded state if its process is alive and is that broker, else ``None``."""
    state = read_state()
    if state is None or not is_broker_process(state.pid, Path(state.data_dir)):
        return None
    return state


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but not yet reaped, does not count)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # vanished meanwhile, or a system without /proc
    except OSError:
        return True
    # The state letter follows the parenthesised command name, which may itself contain ')'.
    return stat[stat.rindex(")") + 2 :][:1] not in ("Z", "X")


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_broker_process(pid: int, data_dir: Path | None = None) -> bool:
    """Whether ``pid`` is alive and is a broker JVM started by edgeloop (on ``data_dir`` if given).

    Without ``/proc`` the command line cannot be checked; a live pid is then taken at its word.
    """
    if not pid_alive(pid):
        return False
    args = _cmdline(pid)
    if args is None:
        return not Path("/proc/self").exists()
    if MAIN_CLASS not in args:
        return False
    if data_dir is None:
        return any(arg.startswith(HOME_MARKER) for arg in args)
    return f"{HOME_MARKER}{Path(data_dir).resolve()}" in args


def broker_processes(data_dir: Path | None = None) -> list[int]:
    """Pids of live edgeloop broker JVMs (only those on ``data_dir`` if given). Linux only (``/proc``)."""
    proc = Path("/proc")
    if not proc.exists():
        return []
    return sorted(
        int(entry.name)
        for entry in proc.iterdir()
        if entry.name.isdigit() and is_broker_process(int(entry.name), data_dir)
    )
