"""Readers for pose data sets: UpTrain JSON lists, JSON Lines and COCO person keypoints.

Every reader yields *frame dicts*, the value of the ``frames`` message without ``ts``:
``{"id": int, "kps": [34 floats], ...}`` plus whatever else the file carries (``gt``, ``source``,
``sequence``, ``frame_idx``, ``scores``, ``class``, ``frame_wh`` ...). Unknown fields are kept.

Formats
-------
``json_list``
    UpTrain's layout: one top-level JSON array of objects (``training_data.json``,
    ``real_world_testing_data.json``, ...). Read **streaming**: the file is scanned in chunks, the
    top-level objects are located with a vectorised bracket/string scan and each one is decoded on its
    own, so a file larger than memory still replays.
``jsonl``
    JSON Lines: one object per line, blank lines skipped. Streaming, line by line.
``coco``
    A COCO person-keypoints annotation file (``{"images", "annotations", "categories"}``). It is one
    JSON object whose ``images`` may come after its ``annotations``, so it is read whole; one frame per
    annotation. COCO visibility ``v = 0`` (not labelled) becomes the missing point ``(0, 0)`` with score
    0, the project's convention (:mod:`edgeloop.features` treats ``(0, 0)`` as missing); labelled points
    get score ``v / 2`` (1.0 visible, 0.5 labelled but occluded).

Files ending in ``.gz`` are decompressed on the fly. A named pipe works too (give ``format``: detecting
it would consume the pipe's first bytes). :func:`open_dataset` picks the format from the
extension and the first bytes; :func:`read_labelled` returns the arrays for training and evaluation;
:func:`read_master_annotations` reads UpTrain's master annotation file (``[{"id", "gt"}]``).

Examples
--------
>>> import json, pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "frames.json"
>>> _ = path.write_text(json.dumps([{"id": 7, "kps": [1.0] * 34, "gt": 1}]))
>>> [frame["id"] for frame in open_dataset(path)]
[7]
>>> kps, gt, ids = read_labelled(path)
>>> kps.shape, gt.tolist(), ids.tolist()
((1, 34), [1], [7])
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from edgeloop.errors import EdgeloopError
from edgeloop.frames import N_COORDS, N_KEYPOINTS

log = logging.getLogger(__name__)

Format = Literal["auto", "json_list", "jsonl", "coco"]
FORMATS: tuple[str, ...] = ("auto", "json_list", "jsonl", "coco")
_FORMAT_ALIASES = {"json": "json_list", "list": "json_list", "uptrain": "json_list", "ndjson": "jsonl"}

# UpTrain's file names, shared by the real pack and the synthetic one (edgeloop.synthetic).
TRAINING_FILE = "training_data.json"
STREAM_FILE = "real_world_testing_data.json"
GOLDEN_FILE = "golden_testing_data.json"
MASTER_FILE = "master_annotation_data.json"
DATA_DIR_ENV = "EDGELOOP_DATA_DIR"

DEFAULT_CHUNK_BYTES = 1 << 20
_SNIFF_BYTES = 1 << 16
_WHITESPACE = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"
_COCO_KEY = re.compile(rb'"(annotations|images|categories)"\s*:\s*\[')

# Byte classes of the structural scan: everything else is 0 and dropped before the vectorised work.
_QUOTE, _BACKSLASH, _OPEN, _CLOSE = 1, 2, 3, 4
_BYTE_CLASS = np.zeros(256, dtype=np.uint8)
_BYTE_CLASS[ord('"')] = _QUOTE
_BYTE_CLASS[ord("\\")] = _BACKSLASH
_BYTE_CLASS[[ord("{"), ord("[")]] = _OPEN
_BYTE_CLASS[[ord("}"), ord("]")]] = _CLOSE


class DatasetError(EdgeloopError):
    """A data file that cannot be read: missing, of an unknown format, or with a malformed record."""


@dataclass(frozen=True)
class DataPack:
    """The four files of an UpTrain-style data pack (the real one or :func:`edgeloop.synthetic.synthetic_pack`)."""

    root: Path
    training: Path
    stream: Path
    golden: Path
    master: Path

    @classmethod
    def from_dir(cls, root: str | os.PathLike[str]) -> DataPack:
        """The pack in ``root``; raises :class:`DatasetError` naming every file that is absent."""
        root = Path(root)
        pack = cls(root, root / TRAINING_FILE, root / STREAM_FILE, root / GOLDEN_FILE, root / MASTER_FILE)
        missing = [p.name for p in (pack.training, pack.stream, pack.golden, pack.master) if not p.is_file()]
        if missing:
            raise DatasetError(
                f"{root} is not a data pack: {', '.join(missing)} missing; point --data-dir (or "
                f"{DATA_DIR_ENV}) at a directory laid out like ../shared/datasets/orientation, or write "
                "one with edgeloop.synthetic.synthetic_pack"
            )
        return pack


def default_data_dir() -> Path | None:
    """``$EDGELOOP_DATA_DIR`` if set, else ``../shared/datasets/orientation`` next to the repository if present."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    candidate = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "orientation"
    return candidate if candidate.is_dir() else None


# --------------------------------------------------------------------------------------------- opening


def _open_binary(path: Path) -> io.BufferedIOBase:
    if not path.exists():
        raise DatasetError(f"data file {path} does not exist; check the path (or --data-dir)")
    if path.is_dir():
        raise DatasetError(f"{path} is a directory, expected a data file")
    try:
        if path.name.endswith(".gz"):
            return gzip.open(path, "rb")
        return open(path, "rb")
    except OSError as exc:
        raise DatasetError(f"cannot open data file {path}: {exc}") from exc


def _first_bytes(path: Path, n: int = _SNIFF_BYTES) -> bytes:
    with _open_binary(path) as f:
        try:
            head = f.read(n)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"cannot read data file {path}: {exc}") from exc
    return head.removeprefix(_UTF8_BOM).lstrip(_WHITESPACE)


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format of a data file: ``json_list``, ``jsonl`` or ``coco``.

    ``.jsonl`` / ``.ndjson`` mean JSON Lines. Otherwise the first non-space byte decides: ``[`` is a JSON
    list; ``{`` is COCO when a top-level ``"annotations"``/``"images"``/``"categories"`` array appears in
    the first 64 KiB, else JSON Lines.
    """
    path = Path(path)
    name = path.name.removesuffix(".gz").lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    head = _first_bytes(path)
    if not head:
        raise DatasetError(f"data file {path} is empty")
    if head[:1] == b"[":
        return "json_list"
    if head[:1] == b"{":
        return "coco" if _COCO_KEY.search(head) else "jsonl"
    raise DatasetError(
        f"cannot tell the format of {path}: it starts with {head[:20]!r}, expected a JSON list ('['), "
        "JSON Lines or a COCO annotation object ('{'); pass format= explicitly if it is one of those"
    )


def open_dataset(
    path: str | os.PathLike[str],
    format: str = "auto",
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[dict[str, Any]]:
    """Stream the records of a data file as frame dicts.

    Parameters
    ----------
    path
        The file (``.gz`` is decompressed on the fly).
    format
        ``auto`` (see :func:`detect_format`), ``json_list``, ``jsonl`` or ``coco``.
    chunk_bytes
        Read size of the JSON list scanner (tests use tiny ones to cross every boundary).

    Raises
    ------
    DatasetError
        The file is missing, its format is unknown, or a record is malformed (the message names the file
        and the record number, counted from 1). Raised lazily, when iteration reaches the problem.
    """
    path = Path(path)
    fmt = _FORMAT_ALIASES.get(format, format)
    if fmt not in FORMATS:
        raise DatasetError(f"unknown data format {format!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "json_list":
        return iter_json_list(path, chunk_bytes=chunk_bytes)
    if fmt == "jsonl":
        return iter_json_lines(path)
    return iter_coco(path)


# ------------------------------------------------------------------------------------------- JSON list


def _structure(buf: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of the structural brackets of ``buf`` and the depth after each.

    ``buf`` starts outside any string, inside the top-level array (depth 1). Returns
    (positions, is_open, depth_after) for every ``{ [ } ]`` that is not inside a string.
    """
    arr = np.frombuffer(buf, dtype=np.uint8)
    classes = _BYTE_CLASS[arr]
    pos = np.flatnonzero(classes)
    cls = classes[pos]
    quote = cls == _QUOTE
    backslash = cls == _BACKSLASH
    if backslash.any():
        # A quote is escaped when an odd run of backslashes ends right before it. Work on the sparse list
        # of interesting bytes: a run is a stretch of backslash entries at consecutive positions.
        k = np.arange(len(pos))
        contiguous_prev = np.zeros(len(pos), dtype=bool)
        contiguous_prev[1:] = backslash[:-1] & (pos[1:] == pos[:-1] + 1)
        run_start = np.where(backslash & ~contiguous_prev, k, -1)
        run_start = np.maximum.accumulate(run_start)
        run_len_at = np.where(backslash, k - run_start + 1, 0)
        preceding = np.zeros(len(pos), dtype=np.int64)
        preceding[1:] = np.where(contiguous_prev[1:], run_len_at[:-1], 0)
        quote &= (preceding & 1) == 0
    in_string = (np.cumsum(quote) & 1).astype(bool)
    brackets = (cls >= _OPEN) & ~in_string
    bpos = pos[brackets]
    is_open = cls[brackets] == _OPEN
    depth_after = 1 + np.cumsum(np.where(is_open, 1, -1))
    return bpos, is_open, depth_after


def iter_json_list(path: str | os.PathLike[str], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[dict[str, Any]]:
    """Stream the objects of a top-level JSON array, one decoded dict at a time.

    The scan restarts from the byte after the last complete object, where the state is known (outside any
    string, depth 1), so no string/escape state crosses a chunk boundary; a record longer than the chunk
    doubles the read size until it fits.
    """
    path = Path(path)
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    with _open_binary(path) as f:

        def read(n: int) -> bytes:
            try:
                # read1: whatever is available, at most one system call; a pipe's first records are
                # yielded while the writer is still writing.
                return f.read1(n)
            except (OSError, EOFError) as exc:
                raise DatasetError(f"cannot read {path}: {exc}") from exc

        # Preamble: optional BOM and whitespace, then '['.
        buf = read(chunk_bytes)
        while len(buf) < len(_UTF8_BOM) + 1 and (more := read(chunk_bytes)):
            buf += more
        buf = buf.removeprefix(_UTF8_BOM)
        offset = 0  # file offset of buf[0] (after the BOM)
        while True:
            stripped = buf.lstrip(_WHITESPACE)
            offset += len(buf) - len(stripped)
            buf = stripped
            if buf:
                break
            buf = read(chunk_bytes)
            if not buf:
                raise DatasetError(f"{path} is empty, expected a JSON list of records")
        if buf[:1] != b"[":
            raise DatasetError(f"{path} is not a JSON list: it starts with {buf[:20]!r} instead of '['")
        buf = buf[1:]
        offset += 1

        record = 0  # records yielded so far
        read_size = chunk_bytes
        eof = False
        while True:
            bpos, is_open, depth = _structure(buf)
            # The depth first reaches 0 at the list's closing ']'; whatever follows it must be whitespace.
            closes_array = np.flatnonzero(depth == 0)
            limit = int(bpos[closes_array[0]]) if len(closes_array) else len(buf)
            keep = bpos < limit
            starts = bpos[keep & is_open & (depth == 2)]
            ends = bpos[keep & ~is_open & (depth == 1)]
            consumed = 0
            for start, end in zip(starts.tolist(), ends.tolist(), strict=False):
                gap = buf[consumed:start].strip(_WHITESPACE)
                if gap != (b"," if record else b""):
                    raise DatasetError(
                        f"{path}: record {record + 1} (byte {offset + consumed}): expected "
                        f"{'a comma' if record else 'nothing'} before the object, found {gap[:40]!r} (a value "
                        "that is not an object, or a missing comma)"
                    )
                if buf[start] != 0x7B:  # '{'
                    raise DatasetError(
                        f"{path}: record {record + 1} (byte {offset + start}) is an array, expected an object"
                    )
                try:
                    obj = orjson.loads(buf[start : end + 1])
                except orjson.JSONDecodeError as exc:
                    raise DatasetError(
                        f"{path}: record {record + 1} (byte {offset + start}) is not valid JSON: {exc}"
                    ) from None
                record += 1
                consumed = end + 1
                yield obj
            if len(closes_array):
                gap = buf[consumed:limit].strip(_WHITESPACE)
                if buf[limit] != 0x5D:  # ']'
                    raise DatasetError(f"{path}: the list is closed by '}}' at byte {offset + limit}, expected ']'")
                if gap:
                    raise DatasetError(
                        f"{path}: unexpected {gap[:40]!r} before the closing ']' (after record {record})"
                    )
                tail = buf[limit + 1 :]
                while True:
                    if tail.strip(_WHITESPACE):
                        raise DatasetError(
                            f"{path}: unexpected data after the closing ']' of the list: "
                            f"{tail.strip(_WHITESPACE)[:40]!r}"
                        )
                    tail = read(chunk_bytes)
                    if not tail:
                        return
            if eof:
                what = f"inside record {record + 1}" if len(starts) > len(ends) else f"after record {record}"
                raise DatasetError(f"{path} is truncated: the file ends {what} without the closing ']'")
            buf = buf[consumed:]
            offset += consumed
            # A record longer than what is buffered: read more at a time so rescans stay linear.
            read_size = chunk_bytes if consumed else min(read_size * 2, 1 << 28)
            more = read(read_size)
            eof = not more
            buf += more


# ------------------------------------------------------------------------------------------ JSON Lines


def iter_json_lines(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Stream the objects of a JSON Lines file (blank lines skipped)."""
    path = Path(path)
    with _open_binary(path) as f:
        try:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise DatasetError(f"{path}: line {line_no} is not valid JSON: {exc}") from None
                if not isinstance(obj, dict):
                    raise DatasetError(
                        f"{path}: line {line_no} is a JSON {type(obj).__name__}, expected an object per line"
                    )
                yield obj
        except (OSError, EOFError) as exc:
            raise DatasetError(f"cannot read {path}: {exc}") from exc


# ------------------------------------------------------------------------------------------------ COCO


def iter_coco(path: str | os.PathLike[str], *, min_keypoints: int = 1) -> Iterator[dict[str, Any]]:
    """Frames of a COCO person-keypoints file, one per annotation with at least ``min_keypoints`` labelled.

    Each frame: ``id`` = annotation id, ``kps`` (``v = 0`` points at ``(0, 0)``), ``scores`` (``v / 2``),
    ``source="coco"``, ``sequence`` = the image's ``file_name`` (``coco/<image_id>`` without one),
    ``frame_idx`` = the annotation's rank within its image, ``image_id``, ``frame_wh`` when the image
    record has a size, and ``class`` = the category name when known. COCO annotations with no labelled
    keypoint (common for small or crowded people) are skipped, and counted in the log.
    """
    path = Path(path)
    with _open_binary(path) as f:
        try:
            raw = f.read()
        except (OSError, EOFError) as exc:
            raise DatasetError(f"cannot read {path}: {exc}") from exc
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None
    del raw
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        raise DatasetError(f"{path} is not a COCO keypoints file: no top-level 'annotations' list")
    images: dict[Any, dict[str, Any]] = {}
    for image in doc.get("images") or []:
        if isinstance(image, dict) and "id" in image:
            images[image["id"]] = image
    categories = {c["id"]: c.get("name") for c in doc.get("categories") or [] if isinstance(c, dict) and "id" in c}
    rank_in_image: dict[Any, int] = {}
    skipped = 0
    for number, ann in enumerate(doc["annotations"], start=1):
        if not isinstance(ann, dict):
            raise DatasetError(f"{path}: annotation {number} is a {type(ann).__name__}, expected an object")
        values = ann.get("keypoints")
        if not isinstance(values, list) or len(values) != 3 * N_KEYPOINTS:
            raise DatasetError(
                f"{path}: annotation {number} (id {ann.get('id')!r}) needs 'keypoints' with "
                f"{3 * N_KEYPOINTS} numbers [x, y, v] * 17, got "
                f"{len(values) if isinstance(values, list) else type(values).__name__}"
            )
        if "id" not in ann:
            raise DatasetError(f"{path}: annotation {number} has no 'id'")
        try:
            xyv = np.asarray(values, dtype=np.float64).reshape(N_KEYPOINTS, 3)
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: annotation {number} has non-numeric keypoints") from None
        visible = xyv[:, 2] > 0
        if int(visible.sum()) < min_keypoints:
            skipped += 1
            continue
        xy = np.where(visible[:, None], xyv[:, :2], 0.0)
        image_id = ann.get("image_id")
        image = images.get(image_id, {})
        frame_idx = rank_in_image.get(image_id, 0)
        rank_in_image[image_id] = frame_idx + 1
        frame: dict[str, Any] = {
            "id": ann["id"],
            "kps": xy.reshape(N_COORDS).tolist(),
            "scores": np.clip(xyv[:, 2] / 2.0, 0.0, 1.0).tolist(),
            "source": "coco",
            "sequence": str(image.get("file_name") or f"coco/{image_id}"),
            "frame_idx": frame_idx,
            "image_id": image_id,
        }
        if "width" in image and "height" in image:
            frame["frame_wh"] = [image["width"], image["height"]]
        name = categories.get(ann.get("category_id"))
        if name is not None:
            frame["class"] = name
        yield frame
    if skipped:
        log.info("%s: skipped %d annotations with fewer than %d labelled keypoints", path, skipped, min_keypoints)


# ------------------------------------------------------------------------------------------ as arrays


def read_labelled(
    path: str | os.PathLike[str],
    format: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A labelled file as arrays: ``(kps (n, 34) float64, gt (n,) int64, ids (n,) int64)``.

    Every record needs an integer ``id``, 34 numbers in ``kps`` and ``gt`` 0 or 1; the first record that
    lacks one raises :class:`DatasetError` naming it.
    """
    path = Path(path)
    ids: list[Any] = []
    kps: list[Any] = []
    gt: list[Any] = []
    for number, rec in enumerate(open_dataset(path, format), start=1):
        try:
            ids.append(rec["id"])
            kps.append(rec["kps"])
            gt.append(rec["gt"])
        except KeyError as exc:
            raise DatasetError(
                f"{path}: record {number} has no {exc.args[0]!r}; a labelled file needs id, kps and gt"
            ) from None
    n = len(ids)
    try:
        kps_arr = np.asarray(kps, dtype=np.float64).reshape(n, N_COORDS)
    except (TypeError, ValueError):
        bad = next(i for i, k in enumerate(kps) if not _is_numbers(k, N_COORDS))
        raise DatasetError(f"{path}: record {bad + 1} needs 'kps' with {N_COORDS} numbers") from None
    ids_arr = _int_array(ids, path, "id")
    gt_arr = _int_array(gt, path, "gt")
    if n:
        bad_gt = np.flatnonzero((gt_arr != 0) & (gt_arr != 1))
        if len(bad_gt):
            raise DatasetError(f"{path}: record {bad_gt[0] + 1} has gt {gt[bad_gt[0]]!r}, expected 0 or 1")
        non_finite = np.flatnonzero(~np.isfinite(kps_arr).all(axis=1))
        if len(non_finite):
            raise DatasetError(f"{path}: record {non_finite[0] + 1} has non-finite keypoints")
    return kps_arr, gt_arr, ids_arr


def read_master_annotations(path: str | os.PathLike[str], format: str = "auto") -> dict[int, int]:
    """UpTrain's master annotation file (``[{"id", "gt"}]``, or the same as JSON Lines) as ``{id: gt}``.

    An id listed twice with different labels raises :class:`DatasetError`: the annotation would be
    ambiguous.
    """
    path = Path(path)
    labels: dict[int, int] = {}
    for number, rec in enumerate(open_dataset(path, format), start=1):
        frame_id, gt = rec.get("id"), rec.get("gt")
        if not isinstance(frame_id, int) or isinstance(frame_id, bool) or gt not in (0, 1) or isinstance(gt, bool):
            raise DatasetError(
                f"{path}: record {number} needs an integer 'id' and 'gt' 0 or 1, got id={frame_id!r} gt={gt!r}"
            )
        previous = labels.setdefault(frame_id, gt)
        if previous != gt:
            raise DatasetError(f"{path}: id {frame_id} is annotated both {previous} and {gt} (record {number})")
    return labels


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_numbers(values: Any, length: int) -> bool:
    return (
        isinstance(values, list)
        and len(values) == length
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    )


def _int_array(values: list[Any], path: Path, name: str) -> np.ndarray:
    for i, v in enumerate(values):
        if not _is_int(v):
            raise DatasetError(f"{path}: record {i + 1} has {name} {v!r}, expected an integer")
    try:
        return np.asarray(values, dtype=np.int64).reshape(len(values))
    except OverflowError:
        raise DatasetError(f"{path}: an {name} does not fit in 64 bits") from None
