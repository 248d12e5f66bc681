"""The model registry: a directory of versioned, hashed model artifacts.

Layout of ``root`` (one registry holds one model name)::

    v000000.pt                 torch.save of the state dict only (loaded with weights_only=True)
    v000000.json               metadata: version, sha256 of the .pt bytes, features, trained_on,
                               golden accuracies, created_at, training config, additions
    v000001.pt
    v000001.additions.npz      the labelled edge cases this version added to training (kps, gt, ids)
    v000001.json
    .high_water                the highest version number ever reserved
    .lock                      fcntl lock held while publishing

Publishing is atomic and crash-safe. Under the lock, the next number is reserved durably first
(``.high_water``), then each file is written to a temporary name, fsynced, renamed into place and the
directory fsynced; the metadata file is written **last** and is the commit point: a version exists
exactly when its ``.json`` does. A crash at any step leaves at most a temporary file or an artifact
without metadata: both are ignored by readers, and their number is never handed out again (the next
number is one more than the high-water mark *and* than every version number in any file name,
temporary files included).

Loading verifies the artifact's sha256 against the metadata before it deserialises anything, and then
accepts only tensors (``torch.load(weights_only=True)``), so a tampered or malicious file is refused
with a :class:`RegistryError` that names the file.

Examples
--------
>>> import tempfile, numpy as np
>>> from edgeloop.model import TrainingConfig, train_model
>>> registry = ModelRegistry(tempfile.mkdtemp())
>>> kps = np.random.default_rng(0).uniform(0, 400, size=(32, 34))
>>> model = train_model(kps, (kps[:, 1] > 200).astype(int), config=TrainingConfig(epochs=1))
>>> registry.publish(model, golden_accuracy=0.9).version
0
>>> registry.load(0).features
'raw'
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeloop.errors import EdgeloopError
from edgeloop.features import FEATURE_MODES, FeatureMode
from edgeloop.frames import N_COORDS
from edgeloop.serving import ServingError, ServingModel, weights_to_npz

if TYPE_CHECKING:  # torch is imported only where a model is trained or loaded for training
    from edgeloop.model import OrientationModel, TrainingConfig

__all__ = [
    "MESSAGE_SCHEMA",
    "ModelRegistry",
    "ModelVersion",
    "RegistryError",
    "TrainingAdditions",
    "ensure_initial_version",
]

logger = logging.getLogger(__name__)

MESSAGE_SCHEMA = 1
METADATA_SCHEMA = 1
DEFAULT_MODEL_NAME = "orientation"
_VERSION_IN_NAME = re.compile(r"v(\d{6,})")
_HIGH_WATER = ".high_water"
_LOCK = ".lock"


class RegistryError(EdgeloopError):
    """The registry is unusable, a version is missing, or an artifact failed verification."""


@dataclass(frozen=True)
class TrainingAdditions:
    """Labelled frames a version added to training: ``kps (m, 34)``, ``gt (m,)``, ``ids (m,)``."""

    kps: np.ndarray
    gt: np.ndarray
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))

    def __post_init__(self) -> None:
        kps = np.asarray(self.kps, dtype=np.float64).reshape(-1, N_COORDS)
        gt = np.asarray(self.gt, dtype=np.int64).reshape(-1)
        ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)
        if ids.size == 0 and kps.shape[0]:
            ids = np.full(kps.shape[0], -1, dtype=np.int64)  # unknown ids
        if not kps.shape[0] == gt.shape[0] == ids.shape[0]:
            raise RegistryError(
                f"training additions need one gt and one id per row: {kps.shape[0]} rows, "
                f"{gt.shape[0]} labels, {ids.shape[0]} ids"
            )
        object.__setattr__(self, "kps", kps)
        object.__setattr__(self, "gt", gt)
        object.__setattr__(self, "ids", ids)

    def __len__(self) -> int:
        return int(self.kps.shape[0])

    @classmethod
    def empty(cls) -> TrainingAdditions:
        return cls(np.empty((0, N_COORDS)), np.empty(0, dtype=np.int64))


@dataclass(frozen=True)
class ModelVersion:
    """One published version: what the ``model-versions`` message announces, and a little more.

    ``artifact`` and ``additions`` are absolute paths on this machine (the metadata file stores them
    relative to the registry, so a registry directory can be moved).
    """

    model: str
    version: int
    artifact: str
    sha256: str
    trained_on: dict[str, int]
    golden_accuracy: float | None
    previous_golden_accuracy: float | None
    created_at: str
    features: FeatureMode
    config: dict[str, Any] | None = None
    additions: str | None = None
    additions_sha256: str | None = None
    additions_count: int = 0
    weights: str | None = None  # the same weights as numpy arrays, served without torch
    weights_sha256: str | None = None

    def to_message(self) -> dict[str, Any]:
        """The value of the ``model-versions`` message (key: :attr:`model`), ``"schema": 1``.

        ``golden_accuracy`` / ``previous_golden_accuracy`` are ``None`` (JSON null) when there was
        nothing to measure (no golden set at bootstrap; no previous version).
        """
        return {
            "schema": MESSAGE_SCHEMA,
            "model": self.model,
            "version": self.version,
            "artifact": self.artifact,
            "sha256": self.sha256,
            "features": self.features,
            "trained_on": {
                "training": int(self.trained_on["training"]),
                "edge_cases": int(self.trained_on["edge_cases"]),
            },
            "golden_accuracy": self.golden_accuracy,
            "previous_golden_accuracy": self.previous_golden_accuracy,
            "created_at": self.created_at,
        }

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> ModelVersion:
        """Parse a ``model-versions`` message value (a dict decoded from JSON).

        Raises :class:`RegistryError` for an unknown schema or a missing or ill-typed field.
        """
        if not isinstance(message, Mapping):
            raise RegistryError(f"a model-versions message must be a JSON object, got {type(message).__name__}")
        schema = message.get("schema")
        if schema != MESSAGE_SCHEMA:
            raise RegistryError(
                f"model-versions message schema {schema!r} is not supported (expected {MESSAGE_SCHEMA}); "
                "upgrade this service"
            )
        try:
            trained_on = message["trained_on"]
            version = cls(
                model=str(message["model"]),
                version=_as_version(message["version"]),
                artifact=str(message["artifact"]),
                sha256=str(message["sha256"]),
                trained_on={
                    "training": int(trained_on["training"]),
                    "edge_cases": int(trained_on["edge_cases"]),
                },
                golden_accuracy=_optional_float(message["golden_accuracy"]),
                previous_golden_accuracy=_optional_float(message["previous_golden_accuracy"]),
                created_at=str(message["created_at"]),
                features=_as_features(message.get("features", "raw")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"malformed model-versions message ({type(exc).__name__}: {exc})") from None
        return version


def _as_version(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"version must be a non-negative integer, got {value!r}")
    return value


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number or null, got {value!r}")
    return float(value)


def _as_features(value: Any) -> FeatureMode:
    if value == "raw":
        return "raw"
    if value == "pose":
        return "pose"
    raise ValueError(f"unknown feature mode {value!r}; expected one of {FEATURE_MODES}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelRegistry:
    """A directory of versioned model artifacts for one model name.

    Parameters
    ----------
    root
        The registry directory (created if absent).
    model_name
        The name announced in messages (the compacted topic's key).

    Publishing takes an exclusive ``fcntl`` lock on ``root/.lock``, so several processes may publish
    to one registry; readers need no lock (they only see committed versions).
    """

    def __init__(self, root: str | os.PathLike[str], model_name: str = DEFAULT_MODEL_NAME) -> None:
        self.root = Path(root)
        self.model_name = model_name
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create the model registry directory {self.root}: {exc}") from None
        self._thread_lock = threading.RLock()
        self._lock_depth = 0
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r}, model_name={self.model_name!r})"

    # -- paths -------------------------------------------------------------------------------------

    def artifact_path(self, version: int) -> Path:
        return self.root / f"v{version:06d}.pt"

    def metadata_path(self, version: int) -> Path:
        return self.root / f"v{version:06d}.json"

    def additions_path(self, version: int) -> Path:
        return self.root / f"v{version:06d}.additions.npz"

    def weights_path(self, version: int) -> Path:
        return self.root / f"v{version:06d}.weights.npz"

    # -- locking and numbering ---------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry's exclusive publish lock (re-entrant within this object)."""
        with self._thread_lock:
            if self._lock_depth == 0:
                fd = os.open(self.root / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._lock_fd = fd
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def _high_water(self) -> int:
        path = self.root / _HIGH_WATER
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            return -1
        try:
            return int(text)
        except ValueError:
            # Written atomically, so this is damage from outside; the file names still bound the number.
            logger.warning("ignoring unreadable %s (%r); numbering from the file names", path, text[:40])
            return -1

    def next_version(self) -> int:
        """The number the next publish will get: above every number ever reserved or seen in a name."""
        highest = self._high_water()
        for entry in os.listdir(self.root):
            match = _VERSION_IN_NAME.search(entry)
            if match:
                highest = max(highest, int(match.group(1)))
        return highest + 1

    # -- writing -----------------------------------------------------------------------------------

    def _write_atomic(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` so that it is either absent or complete, even across a crash."""
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            with open(tmp, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except Exception:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(self.root)

    def publish(
        self,
        model: OrientationModel,
        *,
        golden_accuracy: float | None = None,
        previous_golden_accuracy: float | None = None,
        additions: TrainingAdditions | None = None,
        trained_on: Mapping[str, int] | None = None,
    ) -> ModelVersion:
        """Publish a model as the next version and return its :class:`ModelVersion`.

        Parameters
        ----------
        model
            The trained model; its feature mode and training config go into the metadata.
        golden_accuracy, previous_golden_accuracy
            This version's and the previous version's accuracy on the golden set (``None``: not
            measured).
        additions
            The labelled frames this version added to training (the consumer absorbs them into its
            reference); stored and hashed alongside the artifact.
        trained_on
            ``{"training", "edge_cases"}`` row counts; default: what the model recorded in training.
        """
        with self.locked():
            return self._publish_locked(
                model,
                golden_accuracy=golden_accuracy,
                previous_golden_accuracy=previous_golden_accuracy,
                additions=additions,
                trained_on=trained_on,
            )

    def _publish_locked(
        self,
        model: OrientationModel,
        *,
        golden_accuracy: float | None,
        previous_golden_accuracy: float | None,
        additions: TrainingAdditions | None,
        trained_on: Mapping[str, int] | None,
    ) -> ModelVersion:
        version = self.next_version()
        # Reserve the number durably before anything else, so a crash below can never lead to it
        # being handed out a second time.
        self._write_atomic(self.root / _HIGH_WATER, f"{version}\n".encode())

        artifact_bytes = model.to_bytes()
        sha = _sha256(artifact_bytes)
        self._write_atomic(self.artifact_path(version), artifact_bytes)
        weights_bytes = weights_to_npz({k: v.numpy() for k, v in model.state_dict().items()})
        self._write_atomic(self.weights_path(version), weights_bytes)

        additions_name: str | None = None
        additions_sha: str | None = None
        count = 0
        if additions is not None and len(additions):
            buffer = io.BytesIO()
            np.savez(buffer, kps=additions.kps, gt=additions.gt, ids=additions.ids)
            additions_bytes = buffer.getvalue()
            additions_sha = _sha256(additions_bytes)
            additions_name = self.additions_path(version).name
            count = len(additions)
            self._write_atomic(self.additions_path(version), additions_bytes)

        counts = dict(trained_on if trained_on is not None else model.trained_on)
        metadata = {
            "schema": METADATA_SCHEMA,
            "model": self.model_name,
            "version": version,
            "artifact": self.artifact_path(version).name,
            "sha256": sha,
            "features": model.features,
            "trained_on": {"training": int(counts["training"]), "edge_cases": int(counts["edge_cases"])},
            "golden_accuracy": None if golden_accuracy is None else float(golden_accuracy),
            "previous_golden_accuracy": (None if previous_golden_accuracy is None else float(previous_golden_accuracy)),
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "config": model.config.to_dict() if model.config is not None else None,
            "additions": additions_name,
            "additions_sha256": additions_sha,
            "additions_count": count,
            "weights": self.weights_path(version).name,
            "weights_sha256": _sha256(weights_bytes),
        }
        # The commit point: the version exists from the moment this rename is durable.
        self._write_atomic(self.metadata_path(version), json.dumps(metadata, indent=1).encode())
        published = self.get(version)  # read back: what readers will see, lists not tuples
        logger.info(
            "published %s v%d (%s features, golden %s, sha256 %s)",
            self.model_name,
            version,
            model.features,
            golden_accuracy,
            sha[:12],
        )
        return published

    # -- reading -----------------------------------------------------------------------------------

    def _from_metadata(self, metadata: Mapping[str, Any]) -> ModelVersion:
        additions = metadata.get("additions")
        return ModelVersion(
            model=str(metadata["model"]),
            version=_as_version(metadata["version"]),
            artifact=str(self.root.resolve() / str(metadata["artifact"])),
            sha256=str(metadata["sha256"]),
            trained_on={
                "training": int(metadata["trained_on"]["training"]),
                "edge_cases": int(metadata["trained_on"]["edge_cases"]),
            },
            golden_accuracy=_optional_float(metadata["golden_accuracy"]),
            previous_golden_accuracy=_optional_float(metadata["previous_golden_accuracy"]),
            created_at=str(metadata["created_at"]),
            features=_as_features(metadata["features"]),
            config=metadata.get("config"),
            additions=None if additions is None else str(self.root.resolve() / str(additions)),
            additions_sha256=metadata.get("additions_sha256"),
            additions_count=int(metadata.get("additions_count", 0)),
            weights=None if metadata.get("weights") is None else str(self.root.resolve() / str(metadata["weights"])),
            weights_sha256=metadata.get("weights_sha256"),
        )

    def get(self, version: int) -> ModelVersion:
        """The metadata of a published version. Raises :class:`RegistryError` when it is not there."""
        path = self.metadata_path(version)
        try:
            metadata = json.loads(path.read_bytes())
            if metadata.get("version") != version:
                raise ValueError(f"it records version {metadata.get('version')!r}")
            return self._from_metadata(metadata)
        except FileNotFoundError:
            published = [v.version for v in self.versions()]
            raise RegistryError(
                f"model version {version} is not in the registry {self.root} (published: {published or 'none'})"
            ) from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RegistryError(f"metadata file {path} is unreadable ({type(exc).__name__}: {exc})") from None

    def versions(self) -> list[ModelVersion]:
        """Every published version, oldest first (files without valid metadata are skipped)."""
        found: list[ModelVersion] = []
        for entry in sorted(os.listdir(self.root)):
            match = re.fullmatch(r"v(\d{6,})\.json", entry)
            if not match:
                continue
            try:
                found.append(self.get(int(match.group(1))))
            except RegistryError as exc:
                logger.warning("skipping version file %s: %s", entry, exc)
        return sorted(found, key=lambda v: v.version)

    def latest(self) -> ModelVersion | None:
        """The newest published version, or ``None`` when the registry is empty."""
        published = self.versions()
        return published[-1] if published else None

    def _verified_bytes(self, path: Path, expected: str | None, what: str) -> bytes:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"cannot read the {what} {path}: {exc}") from None
        actual = _sha256(data)
        if actual != expected:
            raise RegistryError(
                f"{what} {path} failed verification: sha256 is {actual}, but the registry recorded {expected}. "
                "The file was changed or corrupted after publishing; it was not loaded. Restore the file or "
                "publish a new version."
            )
        return data

    def load(self, version: int | ModelVersion) -> OrientationModel:
        """Load a published model after checking its sha256.

        ``version`` may be a :class:`ModelVersion` from a ``model-versions`` message: its hash must then
        match the registry's too.
        """
        if isinstance(version, ModelVersion):
            announced = version
            meta = self.get(version.version)
            if announced.sha256 != meta.sha256:
                raise RegistryError(
                    f"model-versions message for v{announced.version} announces sha256 {announced.sha256}, "
                    f"but the registry {self.root} recorded {meta.sha256}; refusing to load a model that "
                    "is not the announced one"
                )
        else:
            meta = self.get(version)
        from edgeloop.model import ModelError, OrientationModel, TrainingConfig

        data = self._verified_bytes(Path(meta.artifact), meta.sha256, "model artifact")
        try:
            config = TrainingConfig.from_dict(meta.config) if meta.config is not None else None
            return OrientationModel.from_bytes(data, meta.features, config=config, trained_on=meta.trained_on)
        except ModelError as exc:
            raise RegistryError(f"model artifact {meta.artifact} cannot be loaded: {exc}") from None

    def load_serving(self, version: int | ModelVersion) -> ServingModel | OrientationModel:
        """The model to predict with: the numpy weights when the version has them (no torch), else
        the torch artifact. Both are sha256-verified before they are read."""
        meta = self.get(version.version if isinstance(version, ModelVersion) else version)
        if isinstance(version, ModelVersion) and version.sha256 != meta.sha256:
            return self.load(version)  # raises: not the announced model
        if meta.weights is None:
            return self.load(meta)
        # The version as a whole is verified: its torch artifact too, though only the weights are read.
        self._verified_bytes(Path(meta.artifact), meta.sha256, "model artifact")
        data = self._verified_bytes(Path(meta.weights), meta.weights_sha256, "model weights")
        try:
            return ServingModel.from_npz(data, meta.features)
        except ServingError as exc:
            raise RegistryError(f"model weights {meta.weights} cannot be served: {exc}") from None

    def load_training_additions(self, version: int) -> TrainingAdditions:
        """The labelled frames ``version`` added to training (empty when it added none)."""
        meta = self.get(version)
        if meta.additions is None:
            return TrainingAdditions.empty()
        data = self._verified_bytes(Path(meta.additions), meta.additions_sha256, "training additions file")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                return TrainingAdditions(arrays["kps"], arrays["gt"], arrays["ids"])
        except (ValueError, KeyError, OSError) as exc:
            raise RegistryError(f"training additions file {meta.additions} is unreadable: {exc}") from None

    def training_additions(self, version: int) -> np.ndarray:
        """Keypoints ``(m, 34)`` of the frames ``version`` added to training (``(0, 34)`` if none)."""
        return self.load_training_additions(version).kps


def ensure_initial_version(
    registry: ModelRegistry,
    train_kps: np.ndarray,
    train_gt: np.ndarray,
    config: TrainingConfig | None = None,
    golden: tuple[np.ndarray, np.ndarray] | None = None,
) -> ModelVersion:
    """The registry's latest version; when it is empty, train one on the reference data and publish it.

    Several services may call this at start-up: the check and the publish happen under the registry's
    lock, so only one of them trains. ``golden`` (``(kps, gt)``) fills in ``golden_accuracy``.
    """
    with registry.locked():
        latest = registry.latest()
        if latest is not None:
            return latest
        from edgeloop.model import accuracy, train_model

        logger.info("model registry %s is empty: training the initial version on %d rows", registry.root, len(train_gt))
        model = train_model(train_kps, train_gt, config=config)
        golden_accuracy = accuracy(model, golden[0], golden[1]) if golden is not None else None
        return registry._publish_locked(
            model,
            golden_accuracy=golden_accuracy,
            previous_golden_accuracy=None,
            additions=None,
            trained_on=None,
        )
