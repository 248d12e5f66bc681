"""``edgeloop demo``: the whole loop end to end on the local broker, as separate processes.

broker (started if none runs) → retrainer, consumer(s), producer as ``python -m`` processes → the stream
is replayed → the retrainer collects edge cases, retrains and publishes → the consumer swaps models and
absorbs the new data → once the stream is scored, everything is stopped with SIGTERM and a report is
written: the original tool's before/after table on stdout, ``report.json``, pictures and ``report.html``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from edgeloop.errors import EdgeloopError
from edgeloop.kafka import MONITOR_GROUP, RETRAINER_GROUP, default_topics, ensure_topics, make_consumer
from edgeloop.settings import configure_logging

log = logging.getLogger(__name__)

PACK_FILES = {
    "training": "training_data.json",
    "stream": "real_world_testing_data.json",
    "golden": "golden_testing_data.json",
    "master": "master_annotation_data.json",
}


# The synthetic demo's training data: vertical poses and people lying flat, no push-ups or planks, so
# that the push-up blocks of the stream are new to the reference (the product's premise).
SYNTHETIC_TRAINING_MIX = {"standing": 0.35, "squatting": 0.25, "lunging": 0.25, "lying": 0.15}


class DemoError(EdgeloopError):
    """The demo could not run (missing data, a service that died, a time-out)."""


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeloop demo", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("EDGELOOP_DATA_DIR"),
        help="a data pack (training, stream, golden, master annotation); default: synthetic data",
    )
    p.add_argument("--out", type=Path, default=Path("edgeloop-run"), help="run directory (default ./edgeloop-run)")
    p.add_argument("--report", type=Path, default=None, help="JSON report path (default: OUT/report.json)")
    p.add_argument("--retrains", type=int, default=1, help="retrains the retrainer may do (default 1)")
    p.add_argument("--retrain-after", type=int, default=200, help="edge cases per retrain (default 200)")
    p.add_argument("--rate", type=float, default=3000.0, help="replay rate in frames/s (0 = full speed)")
    p.add_argument("--limit", type=int, default=0, help="replay at most this many frames (0 = all)")
    p.add_argument("--consumers", type=int, default=1, help="consumer processes in the group (default 1)")
    p.add_argument("--partitions", type=int, default=2, help="partitions of the frames topic (default 2)")
    p.add_argument(
        "--bootstrap-servers", default=None, help="use this broker (default: the running local broker, else start one)"
    )
    p.add_argument("--keep-broker", action="store_true", help="leave a broker the demo started running")
    p.add_argument("--synthetic-seed", type=int, default=7, help="seed of the synthetic pack")
    p.add_argument("--synthetic-frames", type=int, default=18000, help="stream length of the synthetic pack")
    p.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    p.add_argument("--no-pictures", action="store_true", help="skip the PNG/HTML report")
    p.add_argument("--no-metrics", action="store_true", help="serve no /metrics (default: ports 9101-9103)")
    p.add_argument("--log-level", default="INFO")
    return p  # fmt: skip


def pack_paths(args: argparse.Namespace, out: Path) -> dict[str, Path]:
    if args.data_dir is not None:
        paths = {k: Path(args.data_dir) / v for k, v in PACK_FILES.items()}
        missing = [str(p) for p in paths.values() if not p.exists()]
        if missing:
            raise DemoError(f"the data pack is incomplete, missing: {', '.join(missing)}")
        return paths
    from edgeloop.synthetic import synthetic_pack

    pack_dir = out / "data"
    synthetic_pack(
        pack_dir, seed=args.synthetic_seed, stream=args.synthetic_frames, training_mix=SYNTHETIC_TRAINING_MIX
    )
    log.info("no --data-dir: generated a synthetic pack in %s", pack_dir)
    return {k: pack_dir / v for k, v in PACK_FILES.items()}


def reset_topics(config: dict[str, Any], partitions: int) -> None:
    """A clean slate: the demo's topics and groups are deleted and created again."""
    admin = AdminClient(config)
    topics = default_topics(partitions=partitions)
    existing = set(admin.list_topics(timeout=30).topics)
    doomed = [t.name for t in topics if t.name in existing]
    groups = [MONITOR_GROUP, RETRAINER_GROUP]
    for future in admin.delete_consumer_groups(groups, request_timeout=15).values():
        with contextlib.suppress(KafkaException):  # a group that never existed is fine
            future.result()
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()
        deadline = time.monotonic() + 30
        while set(doomed) & set(admin.list_topics(timeout=10).topics):
            if time.monotonic() > deadline:
                raise DemoError(f"topics {doomed} were not deleted in time")
            time.sleep(0.2)
    # Creation right after deletion can race the broker's cleanup: retry for a while.
    for attempt in range(50):
        try:
            ensure_topics(config, topics)
            return
        except EdgeloopError:
            if attempt == 49:
                raise
            time.sleep(0.3)


def metrics_port(args: argparse.Namespace, port: int) -> str:
    return "0" if args.no_metrics else str(port)


def spawn(name: str, module: str, args: list[str], out: Path, env: dict[str, str]) -> Service:
    log_path = out / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "wb")  # noqa: SIM115 - owned by the child for its lifetime
    process = subprocess.Popen([sys.executable, "-m", module, *args], stdout=handle, stderr=subprocess.STDOUT, env=env)
    log.info("started %s (pid %d), log %s", name, process.pid, log_path)
    return Service(name, process, log_path)


def stop_services(services: Sequence[Service], timeout: float = 60.0) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for s in services:
        if s.process.poll() is None:
            s.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for s in services:
        try:
            codes[s.name] = s.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("%s did not stop in %.0fs: killing it", s.name, timeout)
            s.process.kill()
            codes[s.name] = s.process.wait()
    return codes


def group_done(config: dict[str, Any], group: str, topic: str) -> tuple[int, int]:
    """(committed, end) summed over the topic's partitions for a group."""
    consumer = make_consumer(config, group)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        committed = consumer.committed(tps, timeout=10)
        end = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
        return sum(max(tp.offset, 0) for tp in committed), end
    finally:
        consumer.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    configure_logging(args.log_level)
    try:
        return run(args)
    except EdgeloopError as exc:
        print(f"edgeloop demo: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out: Path = args.out.resolve()
    for stale in ("registry", "logs", "pictures", "decisions"):
        shutil.rmtree(out / stale, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    paths = pack_paths(args, out)
    bootstrap, started_broker = ensure_broker(args.bootstrap_servers)
    config = {"bootstrap.servers": bootstrap}
    reset_topics(config, args.partitions)
    registry = out / "registry"
    env = {**os.environ, "EDGELOOP_BOOTSTRAP_SERVERS": bootstrap, "PYTHONUNBUFFERED": "1"}
    common = ["--log-level", args.log_level]
    services: list[Service] = []
    try:
        services.append(spawn("retrainer", "retrainer", [
            *common, "--registry", str(registry), "--training-data", str(paths["training"]),
            "--golden-data", str(paths["golden"]), "--master-annotations", str(paths["master"]),
            "--retrain-after", str(args.retrain_after), "--max-retrains", str(args.retrains),
            "--metrics-port", metrics_port(args, 9103),
        ], out, env))  # fmt: skip
        wait_for_version_zero(registry, services, timeout=180)
        for i in range(args.consumers):
            services.append(spawn(f"consumer-{i}", "consumer", [
                *common, "--registry", str(registry), "--training-data", str(paths["training"]),
                "--decision-log", str(out / "decisions" / f"consumer-{i}.jsonl"),
                "--instance-id", f"demo-{i}", "--metrics-port", metrics_port(args, 9102 + 10 * i),
            ], out, env))  # fmt: skip
        wait_for_members(config, MONITOR_GROUP, args.consumers, services, timeout=180)
        producer = spawn("producer", "producer", [
            *common, "--data", str(paths["stream"]), "--rate", str(args.rate), "--limit", str(args.limit),
            "--partitions", str(args.partitions), "--metrics-port", metrics_port(args, 9101), "--no-progress",
        ], out, env)  # fmt: skip
        services.append(producer)
        wait_until_scored(args, config, services, producer, started)
    finally:
        codes = stop_services(services)
        count_dead_letters(config, out)
        if started_broker and not args.keep_broker:
            from edgeloop.broker.cli import main as kafka_cli

            kafka_cli(["stop"])
    failed = {name: code for name, code in codes.items() if code not in (0, None)}
    write_reference(out, paths, registry)
    if failed:
        log.error("services exited with errors: %s (logs in %s)", failed, out / "logs")
    from edgeloop.demo_report import build_report, print_table

    report = build_report(out, paths, registry, elapsed_s=time.monotonic() - started)
    report_path = args.report or out / "report.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    print_table(report)
    print(f"report: {report_path}")
    if not args.no_pictures:
        from edgeloop.report import write_report

        print(f"pictures: {write_report(out)}")
    return 0 if not failed else 1


def count_dead_letters(config: dict[str, Any], out: Path) -> None:
    """Record how many frames went to the dead-letter topic (before the broker may be stopped)."""
    from edgeloop.kafka import DLQ_TOPIC

    try:
        count = group_done(config, "edgeloop-demo-report", DLQ_TOPIC)[1]
    except Exception as exc:  # the report says 0 and the log says why
        log.warning("could not count dead letters: %s", exc)
        return
    (out / "dead_letters.json").write_bytes(orjson.dumps({"count": count}))


def write_reference(out: Path, paths: dict[str, Path], registry_dir: Path) -> None:
    """The consumer's reference micro-clusters at the end of the run, for the pictures."""
    from consumer.service import build_reference
    from consumer.settings import ConsumerSettings
    from edgeloop.datasets import read_labelled
    from edgeloop.registry import ModelRegistry

    settings = ConsumerSettings(bootstrap_servers="unused", training_data=str(paths["training"]))
    kps, gt, _ids = read_labelled(paths["training"])
    reference = build_reference(settings, kps, gt)
    registry = ModelRegistry(registry_dir)
    for version in registry.versions():
        additions = registry.load_training_additions(version.version)
        if len(additions):
            reference.learn(additions.kps, labels=additions.gt)
    document = {
        "features": reference.mode,
        "centres": reference.centres,
        "weights": reference.weights,
        "radii": reference.radii,
    }
    (out / "reference.json").write_bytes(orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY))


def ensure_broker(bootstrap: str | None) -> tuple[str, bool]:
    """The broker to use, and whether the demo started it."""
    from edgeloop.broker import running_bootstrap

    if bootstrap:
        return bootstrap, False
    running = running_bootstrap()
    if running:
        return running, False
    from edgeloop.broker.cli import main as kafka_cli

    if kafka_cli(["start"]) != 0:
        raise DemoError("could not start the local broker (see `edgeloop kafka status`)")
    running = running_bootstrap()
    if not running:
        raise DemoError("the local broker started but its address is unknown")
    return running, True


def _check_alive(services: Sequence[Service], allow_exit: Sequence[str] = ()) -> None:
    for s in services:
        code = s.process.poll()
        if code is not None and (s.name not in allow_exit or code != 0):
            tail = s.log_path.read_text(errors="replace").splitlines()[-15:]
            raise DemoError(f"{s.name} exited with code {code}; last log lines:\n" + "\n".join(tail))


def wait_for_members(
    config: dict[str, Any], group: str, members: int, services: Sequence[Service], timeout: float
) -> None:
    """Until ``members`` consumers have joined ``group`` (so the replay is not over before they start)."""
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(services)
        try:
            description = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
            if len(description.members) >= members:
                return
        except KafkaException:
            pass  # the group does not exist until its first member joins
        if time.monotonic() > deadline:
            raise DemoError(f"the consumers did not join group {group} within {timeout:.0f}s")
        time.sleep(0.3)


def wait_for_version_zero(registry: Path, services: Sequence[Service], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not list(registry.glob("v000000.json")):
        _check_alive(services)
        if time.monotonic() > deadline:
            raise DemoError(f"no version 0 in {registry} after {timeout:.0f}s")
        time.sleep(0.2)


def wait_until_scored(
    args: argparse.Namespace, config: dict[str, Any], services: Sequence[Service], producer: Service, started: float
) -> None:
    """Until the producer is done, every frame is committed and the retrainer has read every edge case."""
    from edgeloop.kafka import EDGE_CASES_TOPIC, FRAMES_TOPIC

    last_note = 0.0
    while True:
        _check_alive(services, allow_exit=("producer",))
        if time.monotonic() - started > args.timeout:
            raise DemoError(f"the stream was not scored within --timeout {args.timeout:.0f}s")
        if producer.process.poll() == 0:
            scored, end = group_done(config, MONITOR_GROUP, FRAMES_TOPIC)
            read, edges = group_done(config, RETRAINER_GROUP, EDGE_CASES_TOPIC)
            if scored >= end and read >= edges:
                time.sleep(1.0)  # a retrain started on the last edge cases commits after publishing
                if group_done(config, RETRAINER_GROUP, EDGE_CASES_TOPIC)[0] >= edges:
                    return
            if time.monotonic() - last_note > 5:
                last_note = time.monotonic()
                log.info("scored %d/%d frames; retrainer read %d/%d edge cases", scored, end, read, edges)
        time.sleep(0.5)
