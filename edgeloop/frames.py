"""The frame message: encoding, validation on decode, and batch decoding.

A frame is one pose seen by a camera: ``{"schema": 1, "id": int, "kps": [34 floats], "ts": epoch ms}``
plus optional fields (``source``, ``sequence``, ``frame_idx``, ``scores``, ``gt`` ...). Unknown fields
are kept untouched so that producers can be upgraded before consumers.

Bad input is data, not an exception in the poll loop: :func:`decode_batch` splits a batch into the
frames that validated and the ones that did not, each with a precise :class:`FrameError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Annotated, Any, Literal, cast

import msgspec
import numpy as np
import orjson

from edgeloop.errors import EdgeloopError

SCHEMA_VERSION = 1
N_KEYPOINTS = 17
N_COORDS = 2 * N_KEYPOINTS
KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# Bones of the COCO-17 skeleton, for drawing.
SKELETON = (
    (0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10),
    (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)  # fmt: skip

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
DEFAULT_MAX_EXTRA_FIELDS = 32
# Ids above this cannot be stored exactly in the int64 arrays the hot path uses.
MAX_ID = 2**63 - 1


class FrameError(EdgeloopError):
    """A message that is not a valid frame.

    ``reason`` is a short, bounded code (used as a metric label and a dead-letter header);
    the message says exactly what was wrong.
    """

    REASONS = (
        "oversized",
        "empty",
        "not_json",
        "not_object",
        "missing_id",
        "bad_id",
        "missing_kps",
        "bad_kps_length",
        "non_numeric",
        "non_finite",
        "bad_ts",
        "bad_scores",
        "too_many_fields",
        "unsupported_schema",
    )

    def __init__(self, reason: str, message: str) -> None:
        assert reason in self.REASONS, reason
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FrameLimits:
    """Input limits applied on decode."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_extra_fields: int = DEFAULT_MAX_EXTRA_FIELDS


KNOWN_FIELDS = frozenset(
    {"schema", "id", "seq", "kps", "ts", "source", "sequence", "frame_idx", "scores", "gt", "class", "frame_wh"}
)


def encode_frame(frame: dict[str, Any]) -> bytes:
    """Encode a frame as JSON bytes, adding ``schema`` when it is absent."""
    if "schema" not in frame:
        frame = {"schema": SCHEMA_VERSION, **frame}
    return orjson.dumps(frame, option=orjson.OPT_SERIALIZE_NUMPY)


def validate_frame(obj: Any, limits: FrameLimits = FrameLimits()) -> dict[str, Any]:
    """Check a decoded JSON value against the frame schema and return it.

    Raises :class:`FrameError` naming the first problem found.
    """
    if type(obj) is not dict:
        raise FrameError("not_object", f"a frame must be a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise FrameError("unsupported_schema", f"frame schema {schema!r} is not supported (expected 1)")
    if "id" not in obj:
        raise FrameError("missing_id", "frame has no 'id'")
    frame_id = obj["id"]
    if type(frame_id) is not int:
        raise FrameError("bad_id", f"'id' must be an integer, got {type(frame_id).__name__}")
    if frame_id < 0 or frame_id > MAX_ID:
        raise FrameError("bad_id", f"'id' must be in [0, 2**63-1], got {frame_id}")
    if "kps" not in obj:
        raise FrameError("missing_kps", "frame has no 'kps'")
    _check_numbers(obj["kps"], N_COORDS, "kps", "bad_kps_length")
    if "ts" in obj:
        ts = obj["ts"]
        if type(ts) not in _NUMBER_TYPES or not math.isfinite(ts) or ts < 0:
            raise FrameError("bad_ts", f"'ts' must be a non-negative epoch in ms, got {ts!r}")
    if obj.get("scores") is not None:
        _check_numbers(obj["scores"], N_KEYPOINTS, "scores", "bad_scores")
    if len(obj) > len(KNOWN_FIELDS):
        extra = len(obj.keys() - KNOWN_FIELDS)
        if extra > limits.max_extra_fields:
            raise FrameError(
                "too_many_fields",
                f"frame has {extra} unknown fields, more than the limit {limits.max_extra_fields}",
            )
    return obj


_NUMBER_TYPES = frozenset({int, float})


def _check_numbers(values: Any, length: int, name: str, length_reason: str) -> None:
    if type(values) is not list:
        raise FrameError(length_reason, f"'{name}' must be a list of {length} numbers, got {type(values).__name__}")
    if len(values) != length:
        raise FrameError(length_reason, f"'{name}' must have {length} numbers, got {len(values)}")
    # One C-level pass over the types; the slow loop below runs only to name the culprit.
    if not set(map(type, values)) <= _NUMBER_TYPES:
        for i, v in enumerate(values):
            if type(v) not in _NUMBER_TYPES:
                raise FrameError("non_numeric", f"'{name}'[{i}] is not a number: {v!r}")
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise FrameError("non_finite", f"'{name}'[{i}] is not finite: {v!r}")


def decode_frame(raw: bytes | None, limits: FrameLimits = FrameLimits()) -> dict[str, Any]:
    """Decode and validate one frame message. Raises :class:`FrameError`."""
    if not raw:
        raise FrameError("empty", "empty message")
    if len(raw) > limits.max_message_bytes:
        raise FrameError("oversized", f"message is {len(raw)} bytes, more than the limit {limits.max_message_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError("not_json", f"not valid JSON: {exc}") from None
    return validate_frame(obj, limits)


class _FrameShape(msgspec.Struct):
    """What the hot path needs of a frame, decoded and type-checked by msgspec in one C pass.

    It accepts exactly what :func:`validate_frame` accepts (a frame it refuses goes to the slow path,
    which names the problem). Unknown fields are skipped here and kept in the raw bytes.
    """

    id: Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
    kps: Annotated[list[float], msgspec.Meta(min_length=N_COORDS, max_length=N_COORDS)]
    schema: Literal[1] = 1  # SCHEMA_VERSION
    seq: Any = None
    ts: Annotated[float, msgspec.Meta(ge=0)] = -1.0  # -1: no timestamp
    scores: Annotated[list[float], msgspec.Meta(min_length=N_KEYPOINTS, max_length=N_KEYPOINTS)] | None = None


_SHAPE_DECODER = msgspec.json.Decoder(_FrameShape)


@dataclass
class FrameBatch:
    """Frames that validated: arrays for the vectorised hot path, and the raw messages for the rest."""

    raws: list[bytes]
    positions: list[int]  # index of each frame in the input batch
    kps: np.ndarray  # (n, 34) float64
    ids: np.ndarray  # (n,) int64
    ts_ms: np.ndarray  # (n,) float64, -1 where the frame has no timestamp
    seqs: list[Any]  # the producer's sequence numbers (None where absent)

    def __len__(self) -> int:
        return len(self.raws)

    def record(self, row: int) -> dict[str, Any]:
        """The whole frame ``row`` as a dict, unknown fields included."""
        return dict(orjson.loads(self.raws[row]))

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every frame as a dict (decoded on demand: the hot path only needs the arrays)."""
        return [self.record(j) for j in range(len(self.raws))]


def _decode_whole_batch(raws: Sequence[bytes | None], max_bytes: int, most_keys: int) -> list[_FrameShape] | None:
    """Every message of the batch through msgspec in one comprehension, or None as soon as one message
    needs a closer look (then :func:`_decode_each` goes message by message).

    The pre-check is :func:`_decode_each`'s, single colons only: a frame whose strings hold colons just
    takes the other way.
    """
    if not all(raw and len(raw) <= max_bytes and raw.count(b":") <= most_keys for raw in raws):
        return None
    decode = _SHAPE_DECODER.decode
    try:
        # Checked non-empty above; no cast() per message in the hot loop.
        return [decode(raw) for raw in raws]  # type: ignore[arg-type]
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _decode_each(
    raws: Sequence[bytes | None], limits: FrameLimits, most_keys: int
) -> tuple[list[_FrameShape], list[bytes], list[int], list[tuple[int, FrameError]]]:
    """Message by message: msgspec when the pre-check allows, else :func:`decode_frame`, which names the
    problem. Returns the frames, their bytes, their positions, and the errors."""
    shapes: list[_FrameShape] = []
    kept: list[bytes] = []
    positions: list[int] = []
    errors: list[tuple[int, FrameError]] = []
    decode = _SHAPE_DECODER.decode
    for i, raw in enumerate(raws):
        if (
            raw
            and len(raw) <= limits.max_message_bytes
            and (raw.count(b":") <= most_keys or raw.count(b'":') <= most_keys)
        ):
            try:
                shapes.append(decode(raw))
                kept.append(raw)
                positions.append(i)
                continue
            except (msgspec.ValidationError, msgspec.DecodeError):
                pass
        try:
            obj = decode_frame(raw, limits)
        except FrameError as exc:
            errors.append((i, exc))
            continue
        assert raw is not None  # decode_frame refuses empty messages
        ts = obj.get("ts")
        shapes.append(_FrameShape(id=obj["id"], kps=obj["kps"], seq=obj.get("seq"), ts=-1.0 if ts is None else ts))
        kept.append(raw)
        positions.append(i)
    return shapes, kept, positions, errors


def decode_batch(
    raws: Sequence[bytes | None], limits: FrameLimits = FrameLimits()
) -> tuple[FrameBatch, list[tuple[int, FrameError]]]:
    """Decode a batch of messages: (valid frames, [(position, error) for each bad one]).

    Errors are sorted by position. Each message is decoded and type-checked by msgspec (the C fast
    path); one it refuses, or one that might carry too many unknown fields, goes through
    :func:`decode_frame`, which gives the precise error. Finiteness is checked for the whole batch.
    """
    # Every key is followed by '":' and a valid frame has at least "id" and "kps": with no more than this
    # many '":' it cannot carry more unknown fields than the limit (else the slow path counts them).
    # Counting single colons is three times faster and never gives fewer, so it decides most frames.
    most_keys = limits.max_extra_fields + 2
    whole = _decode_whole_batch(raws, limits.max_message_bytes, most_keys)
    if whole is not None:
        # _decode_whole_batch checked every message is non-empty.
        shapes, kept, positions = whole, cast(list[bytes], list(raws)), list(range(len(raws)))
        errors: list[tuple[int, FrameError]] = []
    else:
        shapes, kept, positions, errors = _decode_each(raws, limits, most_keys)
    n = len(shapes)
    # One flat pass over the coordinate lists (faster than np.array's nested-list shape discovery).
    kps = np.fromiter(chain.from_iterable(s.kps for s in shapes), dtype=np.float64, count=n * N_COORDS).reshape(
        n, N_COORDS
    )
    finite = np.isfinite(kps).all(axis=1)
    if not finite.all():
        for j in np.flatnonzero(~finite).tolist():
            col = int(np.flatnonzero(~np.isfinite(kps[j]))[0])
            errors.append((positions[j], FrameError("non_finite", f"'kps'[{col}] is not finite: {kps[j, col]!r}")))
        errors.sort(key=lambda e: e[0])
        keep = np.flatnonzero(finite).tolist()
        shapes = [shapes[j] for j in keep]
        kept = [kept[j] for j in keep]
        positions = [positions[j] for j in keep]
        kps = kps[keep]
        n = len(shapes)
    batch = FrameBatch(
        raws=kept,
        positions=positions,
        kps=kps,
        ids=np.fromiter((s.id for s in shapes), dtype=np.int64, count=n),
        ts_ms=np.fromiter((s.ts for s in shapes), dtype=np.float64, count=n),
        seqs=[s.seq for s in shapes],
    )
    return batch, errors
