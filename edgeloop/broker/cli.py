"""``edgeloop kafka start | stop | status``: the local broker that outlives the command.

``start`` fetches Kafka on first use (Maven, into the cache), starts a detached broker and records it in
``cache_dir()/kafka-broker.json``; every edgeloop service then defaults to its address. ``start`` prints
just the bootstrap address on stdout (``BOOTSTRAP=$(edgeloop kafka start)`` works) and the details on
stderr. ``status`` exits 0 when the broker runs and answers, 3 when it does not run, 4 when its process
is alive but does not answer (paused or hung). ``stop`` shuts it down cleanly (SIGKILL after
``--timeout``) and leaves no broker process on its data dir. ``fetch`` only fills the cache (for CI).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeloop.broker import BrokerError
from edgeloop.broker.distribution import KAFKA_VERSION, fetch
from edgeloop.broker.local import DEFAULT_HEAP, DEFAULT_STOP_TIMEOUT_S, LocalBroker, terminate
from edgeloop.broker.state import (
    BrokerState,
    broker_processes,
    clear_state,
    read_state,
    running_state,
    state_file,
    write_state,
)
from edgeloop.settings import cache_dir, configure_logging

log = logging.getLogger(__name__)

EXIT_NOT_RUNNING = 3
EXIT_NOT_ANSWERING = 4


def default_data_dir() -> Path:
    """Where ``edgeloop kafka start`` keeps the broker's data unless ``--data-dir`` says otherwise."""
    return cache_dir() / "kafka-broker"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeloop kafka",
        description=f"A local single-node Apache Kafka {KAFKA_VERSION} broker (KRaft) on 127.0.0.1.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{start,stop,status,fetch}")

    start = commands.add_parser(
        "start",
        parents=[common],
        help="fetch (once) and start the broker in the background; print its bootstrap address",
    )
    start.add_argument("--port", type=int, default=9092, help="plaintext client port (default: 9092)")
    start.add_argument("--data-dir", type=Path, default=None, help="broker data dir (default: <cache>/kafka-broker)")
    start.add_argument("--heap", default=DEFAULT_HEAP, help=f"JVM max heap (default: {DEFAULT_HEAP})")
    start.add_argument(
        "--sasl-user",
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="also open a SASL_PLAINTEXT (PLAIN) listener accepting this user; repeatable",
    )
    start.add_argument("--sasl-port", type=int, default=0, help="SASL listener port (default: a free one)")
    start.add_argument("--timeout", type=float, default=60.0, help="seconds to wait until it answers")

    stop = commands.add_parser("stop", parents=[common], help="stop the broker cleanly")
    stop.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="stop the broker on this data dir (default: the recorded one, else <cache>/kafka-broker)",
    )
    stop.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT_S,
        help=f"seconds to wait for a clean shutdown before SIGKILL (default: {DEFAULT_STOP_TIMEOUT_S:.0f})",
    )

    commands.add_parser(
        "fetch", parents=[common], help="only fetch the broker's jars into the cache (once); print where"
    )

    status = commands.add_parser(
        "status", parents=[common], help="say whether the broker runs, and where (exit 0 / 3 / 4)"
    )
    status.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for a metadata answer")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    configure_logging(args.log_level)
    try:
        if args.command == "start":
            return _start(args)
        if args.command == "stop":
            return _stop(args)
        if args.command == "fetch":
            print(fetch())
            return 0
        return _status(args)
    except BrokerError as exc:
        print(f"edgeloop kafka {args.command}: {exc}", file=sys.stderr)
        return 1


def _start(args: argparse.Namespace) -> int:
    state = running_state()
    if state is not None:
        print(
            f"Kafka already running at {state.bootstrap} (pid {state.pid}, data dir {state.data_dir}); "
            "`edgeloop kafka stop` first to restart it",
            file=sys.stderr,
        )
        print(state.bootstrap)
        return 0
    users = dict(_parse_user(text) for text in args.sasl_user)
    broker = LocalBroker(
        args.data_dir or default_data_dir(),
        port=args.port,
        sasl_users=users,
        sasl_port=args.sasl_port,
        heap=args.heap,
        startup_timeout=args.timeout,
    )
    broker.start(detach=True)
    assert broker.pid is not None  # start() returned: it runs
    write_state(
        BrokerState(
            pid=broker.pid,
            bootstrap=broker.bootstrap,
            sasl_bootstrap=broker.sasl_bootstrap,
            data_dir=str(broker.data_dir),
            log_file=str(broker.log_file),
            kafka_version=broker.kafka_version,
            started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
    )
    print(
        f"Kafka {broker.kafka_version} started at {broker.bootstrap} (pid {broker.pid}, answering after "
        f"{broker.startup_seconds or 0:.1f} s)\n  data dir: {broker.data_dir}\n  log:      {broker.log_file}",
        file=sys.stderr,
    )
    if broker.sasl_bootstrap:
        print(f"  SASL_PLAINTEXT (PLAIN) at {broker.sasl_bootstrap} for {', '.join(users)}", file=sys.stderr)
    print(broker.bootstrap)
    return 0


def _stop(args: argparse.Namespace) -> int:
    state = read_state()
    data_dir = Path(args.data_dir or (state.data_dir if state else default_data_dir())).resolve()
    # Everything running on that data dir: the recorded pid, and any broker whose state file was lost.
    pids = broker_processes(data_dir)
    if not pids and state is not None and Path(state.data_dir).resolve() == data_dir and running_state():
        pids = [state.pid]  # no /proc to search: trust the recorded, still-live pid
    if not pids:
        print(f"Kafka is not running (data dir {data_dir})", file=sys.stderr)
        _forget(state, data_dir)
        return 0
    started = time.monotonic()
    for pid in pids:
        clean = terminate(pid, args.timeout)
        how = "cleanly" if clean else f"with SIGKILL after {args.timeout:.0f} s"
        print(f"Kafka stopped {how} (pid {pid}, {time.monotonic() - started:.1f} s)", file=sys.stderr)
    _forget(state, data_dir)
    return 0


def _forget(state: BrokerState | None, data_dir: Path) -> None:
    if state is not None and (Path(state.data_dir).resolve() == data_dir or running_state() is None):
        clear_state()


def _status(args: argparse.Namespace) -> int:
    state = running_state()
    if state is None:
        stale = read_state()
        if stale is not None:
            clear_state()
            print(f"Kafka is not running (pid {stale.pid} recorded in {state_file()} is gone; forgotten)")
        else:
            print("Kafka is not running")
        return EXIT_NOT_RUNNING
    answered = _answers(state.bootstrap, args.timeout)
    where = f"at {state.bootstrap} (pid {state.pid}, Kafka {state.kafka_version}, since {state.started_at})"
    details = f"  data dir: {state.data_dir}\n  log:      {state.log_file}"
    if state.sasl_bootstrap:
        details += f"\n  SASL_PLAINTEXT at {state.sasl_bootstrap}"
    if not answered:
        print(f"Kafka process alive {where} but not answering within {args.timeout:.0f} s\n{details}")
        return EXIT_NOT_ANSWERING
    print(f"Kafka running {where}\n{details}")
    return 0


def _answers(bootstrap: str, timeout: float) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "log_level": 2, "error_cb": lambda _e: None}
    admin = AdminClient(config)
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return False


def _parse_user(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        raise BrokerError(f"--sasl-user wants NAME:PASSWORD, got {text.split(':')[0]!r}...")
    return name, password
