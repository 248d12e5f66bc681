"""Fixtures of the fault tier: one small synthetic pack, a pre-trained registry, topics, subprocesses.

Every test here is marked ``faults`` and ``kafka`` and bounded by pytest-timeout; the processes it
started are killed (by pid) when it ends, pass or fail.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeloop.datasets import DataPack
from edgeloop.synthetic import synthetic_pack
from tests.faults.ledger import ConsumerRun, Processes
from tests.kafka_helpers import unique_name

STREAM_FRAMES = 2000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def fault_pack(tmp_path_factory: pytest.TempPathFactory) -> DataPack:
    """Training 1000 frames (the reference), a 2000-frame stream with vertical and horizontal blocks."""
    return synthetic_pack(tmp_path_factory.mktemp("fault-pack"), seed=7, training=1000, stream=STREAM_FRAMES, golden=50)


@pytest.fixture(scope="session")
def trained_registry(fault_pack: DataPack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding version 0, trained once like the consumer would (copied per test)."""
    from edgeloop.datasets import read_labelled
    from edgeloop.model import TrainingConfig
    from edgeloop.registry import ModelRegistry, ensure_initial_version

    root = tmp_path_factory.mktemp("registry-template") / "registry"
    kps, gt, _ids = read_labelled(fault_pack.training)
    ensure_initial_version(ModelRegistry(root), kps, gt, TrainingConfig(seed=0))
    return root


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    with Processes(tmp_path) as p:
        yield p


@pytest.fixture
def make_run(
    kafka_config: dict[str, Any],
    new_topic: Callable[..., str],
    fault_pack: DataPack,
    trained_registry: Path,
    tmp_path: Path,
) -> Callable[..., ConsumerRun]:
    """Factory: a :class:`ConsumerRun` on fresh topics (frames with ``partitions``) and a registry copy."""

    def make(partitions: int = 2, batch_size: int = 200, edge_config: dict[str, str] | None = None,
             fresh_registry: bool = False, **changes: Any) -> ConsumerRun:  # fmt: skip
        registry = tmp_path / unique_name("registry")
        if not fresh_registry:
            shutil.copytree(trained_registry, registry)
        run = ConsumerRun(
            bootstrap=kafka_config["bootstrap.servers"],
            topic=new_topic(partitions, prefix="frames"),
            edge_topic=new_topic(2, prefix="edges", config=edge_config),
            dlq_topic=new_topic(1, prefix="dlq"),
            versions_topic=new_topic(1, prefix="versions", config={"cleanup.policy": "compact"}),
            group=unique_name("monitor"),
            registry=registry,
            training=fault_pack.training,
            decision_log=tmp_path / unique_name("decisions"),
            batch_size=batch_size,
        )
        return run.with_(**changes) if changes else run

    return make
