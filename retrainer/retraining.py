"""Retraining at the threshold: train N+1, compare with N on the golden set, publish when the policy allows.

Pure logic over the buffer and the registry (no Kafka): :class:`Retrainer` decides *when* (every
``retrain_after`` annotated edge cases since the last consumed crossing), trains the candidate on the
training data plus **all** annotated edge cases of the crossings so far (weighted), evaluates the
current version and the candidate on the golden set, and publishes the candidate atomically to the
registry if the policy accepts it. Announcing on the ``model-versions`` topic and committing offsets are
the service's job, after :meth:`Retrainer.retrain_if_due` returned.

Exactly one version per threshold crossing, also across crashes:

1. The crossing's edge cases are fixed and written to the buffer (an ``attempt`` record) *before*
   training: a crossing is always the next ``retrain_after`` annotated edge cases in annotation order,
   so a restart computes the same one.
2. Training is deterministic for a seed, so retraining after a crash gives the same candidate.
3. After publishing, the outcome is written to the buffer. If the process dies between the two,
   :meth:`Retrainer.recover` finds the version in the registry by the ids of its training additions
   and records the outcome instead of training again.

Crash points for fault tests: the environment variable ``EDGELOOP_RETRAINER_CRASH_AT`` (see
:data:`CRASH_POINTS`) makes the process kill itself with SIGKILL at that point of the first retrain.
It exists only for fault-injection tests; never set it in production.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import orjson

from edgeloop.model import TrainingConfig, accuracy, train_model
from edgeloop.registry import ModelRegistry, ModelVersion, TrainingAdditions, ensure_initial_version
from retrainer import metrics
from retrainer.buffer import EdgeCaseBuffer, Outcome, RetrainAttempt
from retrainer.errors import RetrainerError

__all__ = [
    "CRASH_ENV",
    "CRASH_POINTS",
    "POLICIES",
    "Policy",
    "RetrainConfig",
    "RetrainReport",
    "Retrainer",
    "accept_candidate",
    "crash_hook_from_env",
]

log = logging.getLogger(__name__)

Policy = Literal["always", "not-worse", "better"]
POLICIES: tuple[str, ...] = get_args(Policy)
CRASH_ENV = "EDGELOOP_RETRAINER_CRASH_AT"
# before_publish: trained and evaluated, registry untouched. after_publish: in the registry, outcome not
# in the buffer, not announced. after_announce: announced, offsets not committed.
CRASH_POINTS = ("before_publish", "after_publish", "after_announce")
CrashHook = Callable[[str], None]


def accept_candidate(policy: Policy, previous: float | None, candidate: float, tolerance: float = 0.0) -> bool:
    """Whether a candidate with golden accuracy ``candidate`` replaces one with ``previous``.

    ``always``: yes. ``not-worse``: ``candidate >= previous - tolerance``. ``better``:
    ``candidate > previous + tolerance``. With no previous accuracy (never measured) every policy accepts.

    Examples
    --------
    >>> accept_candidate("not-worse", 0.95, 0.95), accept_candidate("better", 0.95, 0.95)
    (True, False)
    >>> accept_candidate("not-worse", 0.95, 0.949, tolerance=0.002)
    True
    """
    if policy not in POLICIES:
        raise RetrainerError(f"unknown publish policy {policy!r}; use one of {POLICIES}")
    if policy == "always" or previous is None:
        return True
    if policy == "not-worse":
        return candidate >= previous - tolerance
    return candidate > previous + tolerance


def crash_hook_from_env(environ: dict[str, str] | None = None) -> CrashHook | None:
    """The fault-test crash hook named by ``EDGELOOP_RETRAINER_CRASH_AT`` (None when unset).

    The process kills itself (SIGKILL: no cleanup, like a power cut) the first time it reaches that
    point.
    """
    point = (os.environ if environ is None else environ).get(CRASH_ENV, "").strip()
    if not point:
        return None
    if point not in CRASH_POINTS:
        raise RetrainerError(f"{CRASH_ENV}={point!r} is not a crash point; use one of {CRASH_POINTS}")
    log.warning("fault injection: the retrainer will SIGKILL itself at %s", point)

    def crash(reached: str) -> None:
        if reached == point:
            log.warning("fault injection: SIGKILL at %s", reached)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return crash


@dataclass(frozen=True)
class RetrainConfig:
    """When and how to retrain.

    Parameters
    ----------
    retrain_after
        Annotated edge cases per threshold crossing.
    policy, tolerance
        :func:`accept_candidate`.
    max_retrains
        Most crossings to act on (0 = unlimited); edge cases are still collected afterwards.
    retry_after_s
        Wait after a failed attempt before trying the same crossing again.
    training
        Training configuration of the candidates (edge-case weight, features, epochs, seed).
    initial
        Training configuration of version 0 when the registry is empty. The default, pose features and
        seed 0, is the consumer's default too: whichever service bootstraps the registry, version 0 is
        the same model (training is deterministic). ``TrainingConfig()`` is the original tool's recipe.
    """

    retrain_after: int = 200
    policy: Policy = "not-worse"
    tolerance: float = 0.0
    max_retrains: int = 0
    retry_after_s: float = 30.0
    training: TrainingConfig = field(default_factory=lambda: TrainingConfig(features="pose"))
    initial: TrainingConfig = field(default_factory=lambda: TrainingConfig(features="pose"))

    def __post_init__(self) -> None:
        if self.retrain_after < 1:
            raise RetrainerError(f"retrain_after must be >= 1, got {self.retrain_after}")
        if self.policy not in POLICIES:
            raise RetrainerError(f"unknown publish policy {self.policy!r}; use one of {POLICIES}")
        if self.max_retrains < 0:
            raise RetrainerError(f"max_retrains must be >= 0 (0 = unlimited), got {self.max_retrains}")
        if not self.retry_after_s >= 0:
            raise RetrainerError(f"retry_after_s must be >= 0, got {self.retry_after_s}")
        if not self.tolerance >= 0:
            raise RetrainerError(f"tolerance must be >= 0, got {self.tolerance}")


@dataclass
class RetrainReport:
    """What one retrain did; logged, stored in the buffer and as JSON next to the registry."""

    attempt: int
    version: int
    previous_version: int | None
    outcome: Outcome
    policy: str
    golden_accuracy: float | None
    previous_golden_accuracy: float | None
    golden_frames: int
    training_rows: int
    edge_cases: int
    new_edge_cases: int
    additions: int
    edge_case_sequences: int
    edge_case_labels: dict[str, int]
    training_seconds: float
    evaluation_seconds: float
    finished_at: str
    reason: str = ""
    published: ModelVersion | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["published"] = None if self.published is None else self.published.to_message()
        return data

    def summary(self) -> str:
        def pct(value: float | None) -> str:
            return "n/a" if value is None else f"{100 * value:.2f}%"

        return (
            f"retrain {self.attempt}: v{self.version} {self.outcome} ({self.reason}); golden accuracy "
            f"v{self.previous_version} {pct(self.previous_golden_accuracy)} -> candidate {pct(self.golden_accuracy)} "
            f"on {self.golden_frames} frames; trained on {self.training_rows} training rows + {self.edge_cases} "
            f"edge cases ({self.new_edge_cases} new, {self.edge_case_sequences} sequences) in "
            f"{self.training_seconds:.2f}s"
        )


class Retrainer:
    """Decides, trains, evaluates and publishes; see the module docstring for the crash guarantees.

    Parameters
    ----------
    registry, buffer
        The model registry and the opened edge-case buffer.
    training, golden
        ``(kps, gt)`` of the training data and of the golden set.
    config
        :class:`RetrainConfig`.
    crash
        Fault-test hook called with each crash point name (see :func:`crash_hook_from_env`).
    reports_dir
        Where each report is written as ``attempt-NNNNNN.json`` (default ``registry/retrain-reports``).
    """

    def __init__(
        self,
        registry: ModelRegistry,
        buffer: EdgeCaseBuffer,
        training: tuple[np.ndarray, np.ndarray],
        golden: tuple[np.ndarray, np.ndarray],
        config: RetrainConfig | None = None,
        crash: CrashHook | None = None,
        reports_dir: Path | None = None,
    ) -> None:
        self.registry = registry
        self.buffer = buffer
        self.train_kps, self.train_gt = np.asarray(training[0]), np.asarray(training[1])
        self.golden_kps, self.golden_gt = np.asarray(golden[0]), np.asarray(golden[1])
        if self.golden_gt.size == 0:
            raise RetrainerError("the golden set is empty: candidates cannot be evaluated; pass a labelled file")
        self.config = config or RetrainConfig()
        self.crash = crash or (lambda point: None)
        self.reports_dir = reports_dir or registry.root / "retrain-reports"
        self._golden_cache: dict[tuple[int, str], float] = {}
        self._max_logged = False
        self._failed_at: float | None = None
        metrics.RETRAIN_THRESHOLD.set(self.config.retrain_after)

    # --- start-up -------------------------------------------------------------------------------------
    def bootstrap(self) -> ModelVersion:
        """The latest version; trains and publishes version 0 when the registry is empty."""
        latest = ensure_initial_version(
            self.registry, self.train_kps, self.train_gt, self.config.initial, golden=(self.golden_kps, self.golden_gt)
        )
        metrics.MODEL_VERSION.set(latest.version)
        return latest

    def recover(self) -> RetrainReport | None:
        """Settle an attempt the previous run left open: record its publish, or redo it on the same edge cases."""
        attempt = self.buffer.open_attempt()
        if attempt is None:
            return None
        published = self._find_published(attempt)
        if published is not None:
            log.warning(
                "retrain %d was interrupted after publishing v%d: recording it (no second training)",
                attempt.attempt,
                published.version,
            )
            report = self._report_from_version(attempt, published)
            self._finish(attempt, report)
            return report
        log.warning(
            "retrain %d was interrupted before publishing: training it again on the same %d edge cases",
            attempt.attempt,
            len(attempt.edge_case_ids),
        )
        return self._run(attempt)

    def _published_ids_before(self, attempt: RetrainAttempt) -> set[int]:
        ids: set[int] = set()
        for earlier in self.buffer.attempts:
            if earlier.attempt < attempt.attempt and earlier.outcome == "published":
                ids.update(earlier.edge_case_ids)
        return ids

    def _additions_ids(self, attempt: RetrainAttempt) -> list[int]:
        # What the consumer has not absorbed yet: the edge cases no earlier *published* version trained on
        # (a rejected candidate's crossing is trained on again, and absorbed, with the next published one).
        before = self._published_ids_before(attempt)
        return [i for i in attempt.edge_case_ids if i not in before]

    def _find_published(self, attempt: RetrainAttempt) -> ModelVersion | None:
        expected = sorted(self._additions_ids(attempt))
        for version in self.registry.versions():
            if version.version < attempt.version or version.additions_count != len(expected):
                continue
            ids = self.registry.load_training_additions(version.version).ids
            if sorted(ids.tolist()) == expected:
                return version
        return None

    # --- the threshold --------------------------------------------------------------------------------
    @property
    def retrains_done(self) -> int:
        return len(self.buffer.consumed_attempts())

    def collected_since_last(self) -> int:
        """Annotated edge cases towards the next crossing."""
        return len(self.buffer.unused_annotated_ids())

    def due(self) -> tuple[list[int], list[int]] | None:
        """``(all edge cases to train on, this crossing's new ones)`` when a crossing is due, else None."""
        if self.config.max_retrains and self.retrains_done >= self.config.max_retrains:
            if not self._max_logged and self.collected_since_last() >= self.config.retrain_after:
                log.info("max_retrains=%d reached: collecting, not retraining", self.config.max_retrains)
                self._max_logged = True
            return None
        unused = self.buffer.unused_annotated_ids()
        if len(unused) < self.config.retrain_after:
            return None
        if self._failed_at is not None and time.monotonic() - self._failed_at < self.config.retry_after_s:
            return None
        new = unused[: self.config.retrain_after]
        consumed = self.buffer.consumed_attempts()
        before = list(consumed[-1].edge_case_ids) if consumed else []
        return before + new, new

    def retrain_if_due(self) -> RetrainReport | None:
        """Run one retrain if a crossing is due; returns its report (the caller announces a publish)."""
        plan = self.due()
        if plan is None:
            return None
        all_ids, new_ids = plan
        attempt = self.buffer.start_attempt(self.registry.next_version(), all_ids, new_ids)
        return self._run(attempt)

    # --- one attempt ----------------------------------------------------------------------------------
    def golden_accuracy(self, version: ModelVersion) -> float:
        key = (version.version, version.sha256)
        if key not in self._golden_cache:
            self._golden_cache[key] = accuracy(self.registry.load(version), self.golden_kps, self.golden_gt)
            metrics.GOLDEN_ACCURACY.labels(version=str(version.version)).set(self._golden_cache[key])
        return self._golden_cache[key]

    def _run(self, attempt: RetrainAttempt) -> RetrainReport:
        try:
            report = self._train_evaluate_publish(attempt)
        except Exception as exc:
            # A failed attempt does not consume its crossing: the same edge cases are tried again later.
            log.exception("retrain %d failed: %s", attempt.attempt, exc)
            report = self._empty_report(attempt, "failed", f"{type(exc).__name__}: {exc}")
            self._failed_at = time.monotonic()
        self._finish(attempt, report)
        return report

    def _train_evaluate_publish(self, attempt: RetrainAttempt) -> RetrainReport:
        current = self.registry.latest()
        if current is None:
            raise RetrainerError("the registry is empty: bootstrap version 0 before retraining")
        previous_accuracy = self.golden_accuracy(current)
        edge_kps, edge_gt = self.buffer.arrays(list(attempt.edge_case_ids))

        started = time.perf_counter()
        candidate = train_model(self.train_kps, self.train_gt, edge_kps, edge_gt, config=self.config.training)
        training_s = time.perf_counter() - started
        metrics.TRAINING_SECONDS.observe(training_s)
        metrics.LAST_TRAINING.set(time.time())

        started = time.perf_counter()
        candidate_accuracy = accuracy(candidate, self.golden_kps, self.golden_gt)
        evaluation_s = time.perf_counter() - started
        accepted = accept_candidate(self.config.policy, previous_accuracy, candidate_accuracy, self.config.tolerance)
        additions = self._additions_ids(attempt)
        report = RetrainReport(
            attempt=attempt.attempt,
            version=attempt.version,
            previous_version=current.version,
            outcome="published" if accepted else "rejected",
            policy=self.config.policy,
            golden_accuracy=candidate_accuracy,
            previous_golden_accuracy=previous_accuracy,
            golden_frames=int(self.golden_gt.size),
            training_rows=int(self.train_gt.size),
            edge_cases=len(attempt.edge_case_ids),
            new_edge_cases=len(attempt.new_edge_case_ids),
            additions=len(additions),
            edge_case_sequences=self._sequences(attempt.edge_case_ids),
            edge_case_labels={"0": int((edge_gt == 0).sum()), "1": int((edge_gt == 1).sum())},
            training_seconds=training_s,
            evaluation_seconds=evaluation_s,
            finished_at=_now(),
            reason=self._reason(accepted, previous_accuracy, candidate_accuracy),
        )
        if not accepted:
            return report
        self.crash("before_publish")
        add_kps, add_gt = self.buffer.arrays(additions)
        published = self.registry.publish(
            candidate,
            golden_accuracy=candidate_accuracy,
            previous_golden_accuracy=previous_accuracy,
            additions=TrainingAdditions(add_kps, add_gt, np.asarray(additions, dtype=np.int64)),
        )
        if published.version != attempt.version:
            # Only a crash inside an earlier publish (a number reserved, never committed) skips a number.
            log.warning("retrain %d published as v%d (v%d was reserved before)", attempt.attempt,
                        published.version, attempt.version)  # fmt: skip
            report.version = published.version
        self._golden_cache[(published.version, published.sha256)] = candidate_accuracy
        report.published = published
        self.crash("after_publish")
        return report

    def _reason(self, accepted: bool, previous: float, candidate: float) -> str:
        relation = "better than" if candidate > previous else "equal to" if candidate == previous else "worse than"
        verdict = "published" if accepted else "rejected"
        return f"candidate {relation} the current version, policy {self.config.policy}: {verdict}"

    def _sequences(self, ids: Sequence[int]) -> int:
        return len({self.buffer.edge_cases[i].sequence for i in ids})

    def _empty_report(self, attempt: RetrainAttempt, outcome: Outcome, reason: str) -> RetrainReport:
        current = self.registry.latest()
        return RetrainReport(
            attempt=attempt.attempt,
            version=attempt.version,
            previous_version=None if current is None else current.version,
            outcome=outcome,
            policy=self.config.policy,
            golden_accuracy=None,
            previous_golden_accuracy=None,
            golden_frames=int(self.golden_gt.size),
            training_rows=int(self.train_gt.size),
            edge_cases=len(attempt.edge_case_ids),
            new_edge_cases=len(attempt.new_edge_case_ids),
            additions=0,
            edge_case_sequences=self._sequences(attempt.edge_case_ids),
            edge_case_labels={},
            training_seconds=0.0,
            evaluation_seconds=0.0,
            finished_at=_now(),
            reason=reason,
        )

    def _report_from_version(self, attempt: RetrainAttempt, version: ModelVersion) -> RetrainReport:
        report = self._empty_report(attempt, "published", "recovered after a crash: found in the registry")
        report.version = version.version
        report.previous_version = version.version - 1 if version.version else None
        report.golden_accuracy = version.golden_accuracy
        report.previous_golden_accuracy = version.previous_golden_accuracy
        report.additions = version.additions_count
        report.published = version
        return report

    def _finish(self, attempt: RetrainAttempt, report: RetrainReport) -> None:
        self.buffer.finish_attempt(attempt, report.outcome, report.to_dict())
        metrics.RETRAINS.labels(outcome=report.outcome).inc()
        if report.published is not None:
            metrics.MODEL_VERSION.set(report.published.version)
        if report.golden_accuracy is not None and report.published is not None:
            metrics.GOLDEN_ACCURACY.labels(version=str(report.published.version)).set(report.golden_accuracy)
        metrics.EDGE_CASES_COLLECTED.set(self.collected_since_last())
        self._write_report(report)
        level = logging.WARNING if report.outcome == "failed" else logging.INFO
        log.log(level, "%s", report.summary())

    def _write_report(self, report: RetrainReport) -> None:
        try:
            self.reports_dir.mkdir(parents=True, exist_ok=True)
            path = self.reports_dir / f"attempt-{report.attempt:06d}.json"
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
            os.replace(tmp, path)
        except OSError as exc:  # the buffer holds the report too; a missing copy is not worth stopping for
            log.warning("could not write the retrain report to %s: %s", self.reports_dir, exc)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
