"""One local, single-node Apache Kafka broker (KRaft, broker and controller in one JVM) on 127.0.0.1.

:class:`LocalBroker` serves two owners:

- ``edgeloop kafka start`` (``start(detach=True)``): the JVM is detached in its own session and outlives
  the command; the CLI records it in the state file (:mod:`edgeloop.broker.state`).
- tests (``start()``): the JVM belongs to the calling process and is sent SIGTERM by the kernel if that
  process dies without stopping it, so a killed test run leaves no broker behind.

A broker lives in one *data dir* (its home)::

    <data dir>/server.properties   generated at every start from the constructor's arguments
    <data dir>/log4j2.properties   broker logging: to logs/server.log (rolled at 20 MB, 5 kept)
    <data dir>/broker.json         cluster id and ports, so a restart reuses them
    <data dir>/kraft/              log.dirs: the metadata log and the topics' partitions
    <data dir>/logs/server.log     the broker's log; logs/jvm.out has the JVM's own stdout/stderr

Configuration choices (see :meth:`LocalBroker.server_properties`):

- listeners: ``PLAINTEXT`` (clients and inter-broker), ``CONTROLLER`` (KRaft quorum, never advertised),
  and optionally ``SASL`` (``SASL_PLAINTEXT`` with the ``PLAIN`` mechanism) for ``sasl_users``.
- replication factor 1 and min ISR 1 for every internal topic (offsets, transaction state, share
  groups): a single node cannot do more.
- ``group.initial.rebalance.delay.ms=0``: a group's first member starts at once (the default waits 3 s).
- ``auto.create.topics.enable`` stays ``true`` (Kafka's default) so that a service writing before an
  admin step still works on a local broker; services and tests create their topics explicitly anyway,
  because an auto-created topic has default settings (one partition, delete cleanup) - wrong for the
  compacted ``model-versions`` topic. ``auto_create_topics=False`` turns it off, e.g. to prove that code
  creates what it needs.
- ``offsets.topic.num.partitions=5`` and ``transaction.state.log.num.partitions=5`` (default 50): on one
  node 50 partitions only slow down the first group join and the first transaction.
- ``log.cleaner.dedupe.buffer.size`` 32 MiB (default 128 MiB) so the cleaner fits the small heap.
- ``message.max.bytes`` and retention stay at Kafka's defaults.

Examples
--------
>>> broker = LocalBroker(tmp_path)          # doctest: +SKIP
>>> broker.start()                          # doctest: +SKIP
>>> broker.bootstrap                        # doctest: +SKIP
'127.0.0.1:40321'
>>> broker.stop()                           # doctest: +SKIP
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from edgeloop.broker import BrokerError
from edgeloop.broker.distribution import KAFKA_VERSION, fetch, find_java
from edgeloop.broker.state import HOME_MARKER, broker_processes, pid_alive

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
NODE_ID = 1
DEFAULT_HEAP = "512m"
DEFAULT_STARTUP_TIMEOUT_S = 60.0
DEFAULT_STOP_TIMEOUT_S = 60.0
SASL_MECHANISM = "PLAIN"
# Kafka's own launch script flags (kafka-run-class.sh), minus JMX and GC logging.
JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    # One logger context for the whole JVM, and no log4j shutdown hook: otherwise log4j closes its
    # appenders while Kafka's own shutdown hook still logs, and the end of a clean shutdown is lost.
    "-Dlog4j2.contextSelector=org.apache.logging.log4j.core.selector.BasicContextSelector",
    "-Dlog4j2.shutdownHookEnabled=false",
)
_USER_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_PR_SET_PDEATHSIG = 1


class LocalBroker:
    """A real Apache Kafka broker in a JVM, in ``data_dir``, on free (or given) ports of 127.0.0.1.

    Parameters
    ----------
    data_dir
        The broker's home (created if absent). Formatted once; later starts reuse its data, cluster id
        and ports.
    port
        Plaintext client port; 0 = the port recorded in ``data_dir`` from an earlier start, else a free one.
    controller_port
        KRaft controller port; 0 = recorded or free. Recorded on the first start and kept: the voter
        set written by the format step names it.
    sasl_users
        ``{user: password}``: when given, a ``SASL_PLAINTEXT`` listener with mechanism ``PLAIN`` on
        ``sasl_port`` accepts exactly these users (the plaintext listener stays, for the controller and
        inter-broker traffic, and for tests that need both).
    sasl_port
        SASL listener port; 0 = recorded or free.
    heap
        JVM maximum heap (``-Xmx``).
    auto_create_topics
        ``auto.create.topics.enable`` (see the module docstring for why it defaults to ``True``).
    extra_properties
        More ``server.properties`` entries; they override the generated ones.
    kafka_version
        Kafka version to fetch and run.
    cache_root
        Cache directory holding the fetched jars (default: :func:`edgeloop.settings.cache_dir`).
    startup_timeout
        Seconds :meth:`start` waits for the broker to answer a metadata request.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int = 0,
        controller_port: int = 0,
        sasl_users: Mapping[str, str] | None = None,
        sasl_port: int = 0,
        heap: str = DEFAULT_HEAP,
        auto_create_topics: bool = True,
        extra_properties: Mapping[str, str | int | float | bool] | None = None,
        kafka_version: str = KAFKA_VERSION,
        cache_root: Path | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.sasl_users = dict(sasl_users or {})
        _check_sasl_users(self.sasl_users)
        self.heap = heap
        self.auto_create_topics = auto_create_topics
        self.extra_properties = dict(extra_properties or {})
        self.kafka_version = kafka_version
        self.cache_root = cache_root
        self.startup_timeout = startup_timeout
        self.startup_seconds: float | None = None  # launch -> answering, of the latest start
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._detached = False
        self._paused = False

        recorded = self._read_identity()
        wanted = {"port": port, "controller_port": controller_port}
        if self.sasl_users:
            wanted["sasl_port"] = sasl_port
        missing = [name for name, value in wanted.items() if not value and not recorded.get(name)]
        fresh = iter(free_ports(len(missing)))
        chosen = {name: value or int(recorded.get(name) or 0) or next(fresh) for name, value in wanted.items()}
        self.port: int = chosen["port"]
        self.controller_port: int = chosen["controller_port"]
        self.sasl_port: int | None = chosen.get("sasl_port")
        self.cluster_id: str = str(recorded.get("cluster_id") or _new_cluster_id())

    # ----------------------------------------------------------------- where things are
    @property
    def bootstrap(self) -> str:
        """Plaintext bootstrap address, ``127.0.0.1:<port>``."""
        return f"{HOST}:{self.port}"

    @property
    def sasl_bootstrap(self) -> str | None:
        """SASL_PLAINTEXT bootstrap address, or ``None`` without ``sasl_users``."""
        return f"{HOST}:{self.sasl_port}" if self.sasl_port else None

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        """The broker's log (log4j2)."""
        return self.data_dir / "logs" / "server.log"

    @property
    def jvm_output_file(self) -> Path:
        """The JVM's stdout and stderr (crashes, the format step's output)."""
        return self.data_dir / "logs" / "jvm.out"

    @property
    def log_dir(self) -> Path:
        """Kafka's ``log.dirs``: metadata log and partition data."""
        return self.data_dir / "kraft"

    @property
    def pid(self) -> int | None:
        """Pid of the broker JVM while it runs, else ``None``."""
        return self._pid if self._pid is not None and self.is_running() else None

    def client_config(self, sasl_user: str | None = None) -> dict[str, Any]:
        """librdkafka settings to reach this broker: plaintext, or SASL as ``sasl_user``."""
        if sasl_user is None:
            return {"bootstrap.servers": self.bootstrap}
        if sasl_user not in self.sasl_users or self.sasl_bootstrap is None:
            raise BrokerError(f"{sasl_user!r} is not one of this broker's sasl_users {sorted(self.sasl_users)}")
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": SASL_MECHANISM,
            "sasl.username": sasl_user,
            "sasl.password": self.sasl_users[sasl_user],
        }

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"LocalBroker({self.bootstrap}, data_dir={str(self.data_dir)!r}, {state})"

    # ----------------------------------------------------------------- configuration
    def server_properties(self) -> dict[str, str]:
        """The ``server.properties`` entries this broker runs with."""
        listeners = [f"PLAINTEXT://{HOST}:{self.port}", f"CONTROLLER://{HOST}:{self.controller_port}"]
        advertised = [f"PLAINTEXT://{HOST}:{self.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        props = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.listener.names": "CONTROLLER",
            "controller.quorum.bootstrap.servers": f"{HOST}:{self.controller_port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": _java_value(self.auto_create_topics),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        }
        if self.sasl_users:
            listeners.append(f"SASL://{HOST}:{self.sasl_port}")
            advertised.append(f"SASL://{HOST}:{self.sasl_port}")
            protocols.append("SASL:SASL_PLAINTEXT")
            users = " ".join(f'user_{name}="{password}"' for name, password in self.sasl_users.items())
            props["listener.name.sasl.sasl.enabled.mechanisms"] = SASL_MECHANISM
            props["listener.name.sasl.plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            )
        props["listeners"] = ",".join(listeners)
        props["advertised.listeners"] = ",".join(advertised)
        props["listener.security.protocol.map"] = ",".join(protocols)
        props.update({key: _java_value(value) for key, value in self.extra_properties.items()})
        return props

    def _write_configuration(self) -> None:
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        lines = ["# Generated by edgeloop.broker.local.LocalBroker at every start; edits are overwritten."]
        lines += [f"{key}={_escape_property(value)}" for key, value in self.server_properties().items()]
        _write_private(self.properties_file, "\n".join(lines) + "\n")
        (self.data_dir / "log4j2.properties").write_text(_log4j2_properties(self.log_file))
        identity = {
            "cluster_id": self.cluster_id,
            "node_id": NODE_ID,
            "port": self.port,
            "controller_port": self.controller_port,
            "sasl_port": self.sasl_port,
            "kafka_version": self.kafka_version,
        }
        (self.data_dir / "broker.json").write_text(json.dumps(identity, indent=2) + "\n")

    def _read_identity(self) -> dict[str, Any]:
        try:
            data = json.loads((self.data_dir / "broker.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    # ----------------------------------------------------------------- lifecycle
    def start(self, *, detach: bool = False) -> None:
        """Fetch Kafka if needed, format the data dir on first use, launch the JVM, wait until it answers.

        Parameters
        ----------
        detach
            Run the JVM in its own session, not tied to this process (for ``edgeloop kafka start``).
            Without it the kernel sends the JVM SIGTERM when this process exits.

        Raises
        ------
        BrokerError
            If Java or the jars are missing, a port is taken, a broker already runs on this data dir, or
            the broker exits or does not answer within ``startup_timeout`` (the log's tail is included).
        """
        if self.is_running():
            return
        running = broker_processes(self.data_dir)
        if running:
            raise BrokerError(
                f"a broker already runs on {self.data_dir} (pid {', '.join(map(str, running))}); stop it "
                "first (`edgeloop kafka stop`, or SIGTERM that pid)"
            )
        java = find_java()
        libs = fetch(self.kafka_version, self.cache_root)
        ports = {"port": self.port, "controller port": self.controller_port}
        if self.sasl_port:
            ports["SASL port"] = self.sasl_port
        for name, number in ports.items():
            if not port_free(number):
                raise BrokerError(
                    f"{name} {number} on {HOST} is already in use by another process: stop what uses it "
                    f"(`ss -ltnp 'sport = :{number}'` shows it) or choose another port"
                )
        self._write_configuration()
        base = [
            str(java),
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}{os.sep}*",
        ]
        if not (self.log_dir / "meta.properties").exists():
            self._format(base)

        command = [
            base[0],
            f"-Xmx{self.heap}",
            "-Xms128m",
            *JVM_FLAGS,
            f"{HOME_MARKER}{self.data_dir}",
            *base[1:],
            "kafka.Kafka",
            str(self.properties_file),
        ]
        launched = time.monotonic()
        with self.jvm_output_file.open("ab") as output:
            output.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {' '.join(command)}\n".encode())
            output.flush()
            self._process = subprocess.Popen(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the owner's terminal is the owner's to handle
                preexec_fn=None if detach else _die_with_parent_hook(),
            )
        self._pid = self._process.pid
        self._detached = detach
        self._paused = False
        try:
            self.wait_ready(self.startup_timeout)
        except BaseException:
            self._kill_quietly()
            raise
        self.startup_seconds = time.monotonic() - launched
        log.info(
            "Kafka %s broker answering at %s after %.1f s (pid %d, data dir %s)",
            self.kafka_version, self.bootstrap, self.startup_seconds, self._pid, self.data_dir,
        )  # fmt: skip

    def _format(self, base: list[str]) -> None:
        command = [
            *base, "kafka.tools.StorageTool", "format", "--standalone",
            "-t", self.cluster_id, "-c", str(self.properties_file),
        ]  # fmt: skip
        log.info("formatting %s (cluster id %s)", self.log_dir, self.cluster_id)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting {self.log_dir} took over 120 s; is the machine overloaded?") from exc
        with self.jvm_output_file.open("a") as output:
            output.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise BrokerError(
                f"`kafka.tools.StorageTool format` failed on {self.log_dir} (exit {done.returncode}): "
                f"{(done.stdout + done.stderr).strip()[-2000:]}\nIf the directory holds another cluster's "
                "data, remove it or choose another --data-dir"
            )

    def wait_ready(self, timeout: float) -> None:
        """Block until the broker answers a metadata request (and an authenticated one on SASL).

        Raises
        ------
        BrokerError
            If the process exits first, or ``timeout`` seconds pass.
        """
        probes = [self.client_config()]
        if self.sasl_users:
            probes.append(self.client_config(next(iter(self.sasl_users))))
        deadline = time.monotonic() + timeout
        for config in probes:
            last_error = _wait_for_metadata(config, deadline, self._exit_code)
            if last_error is not None:
                code = self._exit_code()
                what = f"exited with code {code}" if code is not None else f"did not answer in {timeout:.0f} s"
                raise BrokerError(
                    f"the Kafka broker in {self.data_dir} {what} ({config['bootstrap.servers']}: "
                    f"{last_error}).\nLast lines of {self.log_file}:\n{tail(self.log_file)}\n"
                    f"Last lines of {self.jvm_output_file}:\n{tail(self.jvm_output_file)}"
                )

    def is_running(self) -> bool:
        """Whether the broker JVM is alive (paused counts as alive)."""
        if self._process is not None:
            return self._process.poll() is None
        return self._pid is not None and pid_alive(self._pid)

    def _exit_code(self) -> int | None:
        if self._process is None:
            return None
        return self._process.poll()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """SIGTERM the broker and wait for its clean shutdown; SIGKILL it after ``timeout`` seconds.

        Returns ``True`` if it shut down on SIGTERM in time (or was not running), ``False`` if it had
        to be killed. A paused broker is resumed so that it can shut down.
        """
        if self._pid is None:
            return True
        clean = terminate(self._pid, timeout, self._process)
        self._process = None
        self._pid = None
        self._paused = False
        return clean

    def _kill_quietly(self) -> None:
        with contextlib.suppress(Exception):
            terminate(self._pid or 0, 10.0, self._process)
        self._process = None
        self._pid = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): it keeps its sockets but answers nothing, like a hung broker."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Unfreeze a paused broker (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def restart(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop cleanly and start again on the same data dir and ports (data and topics survive)."""
        detach = self._detached
        self.stop(timeout)
        self.start(detach=detach)

    def _signal(self, signum: signal.Signals) -> None:
        if self._pid is None or not self.is_running():
            raise BrokerError(f"the broker in {self.data_dir} is not running; start() it first")
        os.kill(self._pid, signum)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------- helpers
def terminate(pid: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> bool:
    """SIGTERM ``pid`` (then SIGCONT, in case it is paused), wait ``timeout`` s, then SIGKILL.

    ``process`` is its :class:`subprocess.Popen` when this process started it (it is then reaped).
    Returns ``True`` if it exited on SIGTERM in time, or was already gone.
    """
    if pid <= 0 or not pid_alive(pid):
        if process is not None:
            process.poll()
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)
    if _wait_exit(pid, timeout, process):
        return True
    log.warning("broker pid %d still running %.0f s after SIGTERM; sending SIGKILL", pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_exit(pid, 10.0, process):
        raise BrokerError(f"broker pid {pid} survived SIGKILL for 10 s; check it with `ps -p {pid}`")
    return False


def _wait_exit(pid: int, timeout: float, process: subprocess.Popen[bytes] | None) -> bool:
    if process is not None:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _wait_for_metadata(config: Mapping[str, Any], deadline: float, exit_code: Callable[[], int | None]) -> str | None:
    """Poll ``list_topics`` until it answers (returns ``None``) or the deadline/exit (last error)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[str] = []
    probe_config: dict[str, Any] = {
        **config,
        # While the broker boots every connection is refused: retry fast, and keep librdkafka's
        # "connection refused" lines (log level 3) out of the owner's output.
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 250,
        "log_level": 2,
        "error_cb": lambda error: errors.append(str(error)),
    }
    admin = AdminClient(probe_config)
    last = "no answer yet"
    while True:
        if exit_code() is not None:
            return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return errors[-1] if errors and last == "no answer yet" else last
        try:
            metadata = admin.list_topics(timeout=min(2.0, remaining))
            if metadata.brokers:
                return None
            last = "metadata without brokers"
        except KafkaException as exc:
            last = str(exc.args[0] if exc.args else exc)
        time.sleep(0.1)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (the OS picks them)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_free(port: int) -> bool:
    """Whether a server could listen on ``127.0.0.1:port`` (SO_REUSEADDR, like Kafka's own sockets)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a text file ('' if absent)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _new_cluster_id() -> str:
    # Kafka's Uuid.randomUuid: 16 random bytes, URL-safe base64 without padding, never starting with '-'
    # (it would read as a command-line option).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _check_sasl_users(users: Mapping[str, str]) -> None:
    for name, password in users.items():
        if not _USER_NAME.match(name):
            raise BrokerError(f"SASL user name {name!r} must use only letters, digits, '.', '_' and '-'")
        if not password or any(c in password for c in '"\\\n\r;'):
            raise BrokerError(f"SASL password of {name!r} must be non-empty, without quotes, '\\', ';' or newlines")


def _java_value(value: str | int | float | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _escape_property(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise BrokerError(f"server property value {value!r} must be on one line")
    return value.replace("\\", "\\\\")


def _write_private(path: Path, text: str) -> None:
    # server.properties may hold SASL passwords: readable by the owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def _log4j2_properties(log_file: Path) -> str:
    return "\n".join(
        [
            "# Generated by edgeloop.broker.local.LocalBroker.",
            "status = warn",
            "appender.file.type = RollingFile",
            "appender.file.name = file",
            f"appender.file.fileName = {log_file}",
            f"appender.file.filePattern = {log_file}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 20MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 5",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = file",
            # One line per request at INFO would drown everything else.
            "logger.request.name = kafka.request.logger",
            "logger.request.level = WARN",
            "",
        ]
    )


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies (``None`` elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the child only calls it
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook
