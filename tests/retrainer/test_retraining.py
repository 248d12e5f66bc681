"""Retraining at the threshold: when, on what, the publish policy, and exactly one version per crossing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from edgeloop.datasets import DataPack, read_labelled
from edgeloop.model import TrainingConfig
from edgeloop.registry import ModelRegistry
from retrainer.annotation import LabelBook, MasterFileAnnotator
from retrainer.buffer import EdgeCaseBuffer
from retrainer.collector import EdgeCaseCollector
from retrainer.errors import RetrainerError
from retrainer.near_duplicates import NearDuplicateFilter
from retrainer.retraining import RetrainConfig, Retrainer, accept_candidate
from tests.retrainer.conftest import edge_case_message

RETRAIN_AFTER = 20


class SimulatedCrash(BaseException):  # BaseException: nothing in the retrainer may catch it
    """Stands for SIGKILL in-process: the objects are dropped and rebuilt from disk, as after a restart."""


def crash_at(point: str) -> Any:
    def hook(reached: str) -> None:
        if reached == point:
            raise SimulatedCrash(point)

    return hook


class Setup:
    """A registry and a buffer in ``root``, rebuilt from disk on every :meth:`start` (a process start)."""

    def __init__(self, root: Path, pack: DataPack, **config: Any) -> None:
        self.root = root
        self.pack = pack
        self.training = read_labelled(pack.training)[:2]
        self.golden = read_labelled(pack.golden)[:2]
        self.config = RetrainConfig(
            retrain_after=RETRAIN_AFTER, training=TrainingConfig(features="pose", epochs=4), **config
        )
        self.buffer: EdgeCaseBuffer | None = None

    def start(self, crash: Any = None, **overrides: Any) -> tuple[Retrainer, EdgeCaseCollector]:
        if self.buffer is not None:
            self.buffer.close()
        self.registry = ModelRegistry(self.root / "registry")
        self.buffer = EdgeCaseBuffer.open(self.root / "registry" / "edge-cases.jsonl")
        collector = EdgeCaseCollector(
            self.buffer, NearDuplicateFilter(radius=0.05), MasterFileAnnotator(self.pack.master), LabelBook()
        )
        config = RetrainConfig(**{**self.config.__dict__, **overrides})
        retrainer = Retrainer(self.registry, self.buffer, self.training, self.golden, config, crash=crash)
        retrainer.bootstrap()
        return retrainer, collector


def feed(collector: EdgeCaseCollector, frames: list[dict[str, Any]], annotated: int, step: int = 10) -> list[int]:
    """Collect stream frames, ``step`` at a time, until ``annotated`` more annotated edge cases are in the buffer.

    Starts from the first frame every time: what was collected before counts as a duplicate by id.
    """
    target = len(collector.buffer.annotation_order) + annotated
    for i in range(0, len(frames), step):
        collector.collect([edge_case_message(f) for f in frames[i : i + step]])
        if len(collector.buffer.annotation_order) >= target:
            break
    assert len(collector.buffer.annotation_order) >= target, "the stream ran out of distinct frames"
    return list(collector.buffer.annotation_order)


@pytest.mark.parametrize(
    ("policy", "previous", "candidate", "tolerance", "expected"),
    [
        ("always", 0.99, 0.5, 0.0, True),
        ("not-worse", 0.90, 0.90, 0.0, True),
        ("not-worse", 0.90, 0.89, 0.0, False),
        ("not-worse", 0.90, 0.89, 0.02, True),
        ("better", 0.90, 0.90, 0.0, False),
        ("better", 0.90, 0.91, 0.0, True),
        ("better", 0.90, 0.91, 0.02, False),
        ("better", None, 0.10, 0.0, True),
    ],
)
def test_publish_policy(
    policy: Any, previous: float | None, candidate: float, tolerance: float, expected: bool
) -> None:
    assert accept_candidate(policy, previous, candidate, tolerance) is expected


def test_bad_retrain_config_is_refused() -> None:
    with pytest.raises(RetrainerError, match="retrain_after"):
        RetrainConfig(retrain_after=0)
    with pytest.raises(RetrainerError, match="policy"):
        RetrainConfig(policy="sometimes")  # type: ignore[arg-type]


def test_bootstrap_publishes_version_zero_with_its_golden_accuracy(tmp_path: Path, small_pack: DataPack) -> None:
    retrainer, _ = Setup(tmp_path, small_pack).start()
    v0 = retrainer.registry.get(0)
    assert v0.trained_on == {"training": 300, "edge_cases": 0}
    assert v0.features == "pose"  # the consumer's default too: either service may bootstrap the registry
    assert v0.golden_accuracy == pytest.approx(retrainer.golden_accuracy(v0))
    assert retrainer.bootstrap().version == 0  # idempotent


def test_retrains_exactly_at_the_threshold_on_training_plus_every_crossing(
    tmp_path: Path, small_pack: DataPack, stream_frames: list[dict[str, Any]]
) -> None:
    setup = Setup(tmp_path, small_pack, policy="always")
    retrainer, collector = setup.start()
    feed(collector, stream_frames, RETRAIN_AFTER - 1, step=1)
    assert len(collector.buffer.annotation_order) == RETRAIN_AFTER - 1
    assert retrainer.retrain_if_due() is None
    order = feed(collector, stream_frames, 4, step=1)
    assert len(order) == RETRAIN_AFTER + 3
    report = retrainer.retrain_if_due()
    assert report is not None and report.outcome == "published" and report.version == 1
    assert retrainer.retrain_if_due() is None  # one crossing, one version
    v1 = setup.registry.get(1)
    assert v1.trained_on == {"training": 300, "edge_cases": RETRAIN_AFTER}
    assert v1.features == "pose"
    assert v1.golden_accuracy == pytest.approx(report.golden_accuracy)
    assert v1.previous_golden_accuracy == pytest.approx(setup.registry.get(0).golden_accuracy)
    first = order[:RETRAIN_AFTER]  # the crossing is the first RETRAIN_AFTER annotated, in annotation order
    assert sorted(setup.registry.load_training_additions(1).ids.tolist()) == sorted(first)
    assert retrainer.collected_since_last() == 3

    # The next crossing trains on every annotated edge case so far; the consumer absorbs only the new ones.
    order = feed(collector, stream_frames, RETRAIN_AFTER)
    report2 = retrainer.retrain_if_due()
    assert report2 is not None and report2.version == 2
    assert setup.registry.get(2).trained_on["edge_cases"] == 2 * RETRAIN_AFTER
    additions = setup.registry.load_training_additions(2)
    assert sorted(additions.ids.tolist()) == sorted(order[RETRAIN_AFTER : 2 * RETRAIN_AFTER])
    truth = {f["id"]: f["gt"] for f in stream_frames}
    assert additions.gt.tolist() == [truth[i] for i in additions.ids.tolist()]

    # The report of both accuracies is logged, kept in the buffer and written as JSON.
    stored = orjson.loads((setup.registry.root / "retrain-reports" / "attempt-000002.json").read_bytes())
    assert stored["previous_golden_accuracy"] == pytest.approx(report.golden_accuracy)
    assert stored["golden_accuracy"] == pytest.approx(report2.golden_accuracy)
    assert collector.buffer.attempts[-1].report["edge_cases"] == 2 * RETRAIN_AFTER


def test_a_rejected_candidate_consumes_its_crossing_and_its_edge_cases_go_into_the_next_version(
    tmp_path: Path, small_pack: DataPack, stream_frames: list[dict[str, Any]]
) -> None:
    setup = Setup(tmp_path, small_pack, policy="better", tolerance=1.0)  # nothing can beat accuracy + 1
    retrainer, collector = setup.start()
    feed(collector, stream_frames, RETRAIN_AFTER)
    report = retrainer.retrain_if_due()
    assert report is not None and report.outcome == "rejected"
    assert [v.version for v in setup.registry.versions()] == [0]
    assert retrainer.retrain_if_due() is None  # not retried for the same crossing

    retrainer, collector = setup.start(policy="always")
    feed(collector, stream_frames, RETRAIN_AFTER)
    report = retrainer.retrain_if_due()
    assert report is not None and report.outcome == "published" and report.version == 1
    assert setup.registry.get(1).trained_on["edge_cases"] == 2 * RETRAIN_AFTER
    assert setup.registry.get(1).additions_count == 2 * RETRAIN_AFTER  # v0 absorbed none of them


@pytest.mark.parametrize("point", ["before_publish", "after_publish"])
def test_a_crash_mid_retrain_ends_with_exactly_one_version_with_the_same_edge_cases(
    tmp_path: Path, small_pack: DataPack, stream_frames: list[dict[str, Any]], point: str
) -> None:
    clean = Setup(tmp_path / "clean", small_pack, policy="always")
    retrainer, collector = clean.start()
    feed(collector, stream_frames, RETRAIN_AFTER)
    expected = retrainer.retrain_if_due()
    assert expected is not None and expected.published is not None

    setup = Setup(tmp_path / "crashed", small_pack, policy="always")
    retrainer, collector = setup.start(crash=crash_at(point))
    feed(collector, stream_frames, RETRAIN_AFTER)
    with pytest.raises(SimulatedCrash):
        retrainer.retrain_if_due()
    assert [v.version for v in setup.registry.versions()] == ([0] if point == "before_publish" else [0, 1])

    retrainer, collector = setup.start()  # the restart
    recovered = retrainer.recover()
    assert recovered is not None and recovered.outcome == "published" and recovered.version == 1
    assert ("recovered after a crash" in recovered.reason) is (point == "after_publish")  # no second training
    assert retrainer.retrain_if_due() is None
    assert retrainer.recover() is None
    assert [v.version for v in setup.registry.versions()] == [0, 1]
    v1 = setup.registry.get(1)
    assert v1.trained_on == {"training": 300, "edge_cases": RETRAIN_AFTER}
    assert sorted(setup.registry.load_training_additions(1).ids.tolist()) == sorted(
        clean.registry.load_training_additions(1).ids.tolist()
    )
    # Training is deterministic: the version trained again after the crash is the clean run's, byte for byte.
    assert v1.sha256 == expected.published.sha256
    assert [a.outcome for a in collector.buffer.attempts] == ["published"]


def test_a_failed_attempt_is_retried_and_max_retrains_stops_retraining(
    tmp_path: Path, small_pack: DataPack, stream_frames: list[dict[str, Any]]
) -> None:
    failures = []

    def flaky(point: str) -> None:
        if point == "before_publish" and not failures:
            failures.append(point)
            raise OSError("disk full (injected)")

    setup = Setup(tmp_path, small_pack, policy="always", max_retrains=1, retry_after_s=0.0)
    retrainer, collector = setup.start(crash=flaky)
    feed(collector, stream_frames, RETRAIN_AFTER)
    failed = retrainer.retrain_if_due()
    assert failed is not None and failed.outcome == "failed" and "disk full" in failed.reason
    assert [v.version for v in setup.registry.versions()] == [0]
    report = retrainer.retrain_if_due()
    assert report is not None and report.outcome == "published" and report.version == 1
    feed(collector, stream_frames, RETRAIN_AFTER)
    assert retrainer.retrain_if_due() is None  # max_retrains=1
    assert [a.outcome for a in collector.buffer.attempts] == ["failed", "published"]
    assert np.isclose(collector.buffer.attempts[-1].report["golden_accuracy"], setup.registry.get(1).golden_accuracy)
